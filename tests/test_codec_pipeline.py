"""Latent codecs end to end: `cmmd prepare --codec`, training on precomputed latents, checkpoints
that record their codec and mel configuration, and sampling that refuses a mismatched codec or
vocoder while old pixel checkpoints keep loading."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import conftest
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from cmmd.audio.melgan import MelGanConfig, MelGanGenerator
from cmmd.audio.mel import CMMD_MEL, HIFIGAN_MEL
from cmmd.audio.vocoders import GriffinLim, NeuralVocoder
from cmmd.cli import main
from cmmd.config import from_dict
from cmmd.data.dataset import ClipDataset
from cmmd.data.media import read_media, write_media
from cmmd.data.synth import render_clip
from cmmd.errors import CmmdError
from cmmd.pipeline import Pipeline, SamplingSettings, recorded_codec
from cmmd.checkpoint import latest_checkpoint, load_weights, read_info
from cmmd.train.config import TrainConfig
from cmmd.train.loop import train
from cmmd.apps.preview import write_preview
from cmmd.assets import DEMO_CHECKPOINT
from cmmd.video.codecs import PixelCodec, VideoCodec
from cmmd.video.loading import load_video_codec
from cmmd.video.latents import CODEC_FILE, encode_prepared_dataset, load_latent_clip
from cmmd.video.vae import CmmdVaeCodec, VaeConfig
from cmmd.train.vae import VaeTrainConfig, train_vae

LATENT_MODEL = {"preset": "tiny", "overrides": {**conftest.MICRO_MODEL["overrides"], "video_channels": 4,
                                                "patch_size": 1}}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models: intra-op threads only add barrier waits on a busy shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train_tiny_vae(data: Path, out: Path, seed: int) -> str:
    """A 4x cmmd-vae (8 base channels) after 2 steps on ``data``; returns its codec spec."""
    cfg = VaeTrainConfig(data=str(data), out_dir=str(out), vae=VaeConfig(downsampling=4, base_channels=8,
                                                                         norm_groups=4),
                         steps=2, batch_size=2, checkpoint_every=2, eval_frames=4, seed=seed, device="cpu")
    train_vae(cfg, progress=False)
    return f"cmmd-vae:{out}"


@pytest.fixture(scope="module")
def vae_spec(prepared_impacts: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    return train_tiny_vae(prepared_impacts, tmp_path_factory.mktemp("vae") / "run", seed=0)


@pytest.fixture(scope="module")
def other_vae_spec(prepared_impacts: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Same architecture as ``vae_spec``, other weights."""
    return train_tiny_vae(prepared_impacts, tmp_path_factory.mktemp("vae2") / "run", seed=1)


@pytest.fixture(scope="module")
def latent_data(prepared_impacts: Path, vae_spec: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the 16x16 impacts shards with the tiny VAE's 4x4x4 latents precomputed."""
    data = tmp_path_factory.mktemp("latent_data") / "data"
    shutil.copytree(prepared_impacts, data)
    encode_prepared_dataset(data, load_video_codec(vae_spec), progress=False)
    return data


def train_config(data: Path, out: Path, steps: int, **data_fields) -> TrainConfig:
    return from_dict(TrainConfig, {"out_dir": str(out), "steps": steps, "batch_size": 4, "log_every": 2,
                                   "data": {"root": str(data), "clip_frames": 8, "num_workers": 0, "video": "latents",
                                            **data_fields},
                                   "model": LATENT_MODEL, "optim": {"warmup_steps": 2, "lr": 1e-3}})


def _no_encoding(*_args, **_kwargs):
    raise AssertionError("training on latents must not encode frames")


@pytest.fixture(scope="module")
def latent_run(latent_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A micro model trained 6 steps on the precomputed latents, with frame encoding forbidden."""
    out = tmp_path_factory.mktemp("latent_run") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(VideoCodec, "encode", _no_encoding)
        train(train_config(latent_data, out, steps=6), progress=False)
    return out


# -- cmmd prepare --codec ----------------------------------------------------------------------
def test_prepare_with_codec_writes_latents_resumes_and_refuses_another_codec(
        tmp_path: Path, vae_spec: str, other_vae_spec: str, capsys: pytest.CaptureFixture) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    for i in range(2):
        clip = render_clip("impacts", seed=i, duration=2.0, size=16)
        write_media(src / f"clip{i}.mp4", clip.frames, clip.audio, 10, 16000)
    args = ["prepare", str(src), str(out), "--size", "16", "--workers", "1", "--no-progress"]
    assert main([*args, "--codec", vae_spec]) == 0
    assert f"latents ({vae_spec}): 2 item(s) encoded" in capsys.readouterr().out
    codec = load_video_codec(vae_spec)
    assert json.loads((out / CODEC_FILE).read_text()) == codec.describe()
    for item in (out / "items").iterdir():
        video, latents = np.load(item / "video.npy"), np.load(item / "latents.npy")
        assert latents.dtype == np.float16 and latents.shape == (len(video), 4, 4, 4)
        expected = codec.encode(video[None])[0]
        assert torch.allclose(torch.from_numpy(latents.astype(np.float32)), expected, atol=2e-3, rtol=2e-3)
    assert main([*args, "--codec", vae_spec]) == 0  # resumes: nothing left to do
    assert "0 item(s) encoded (0 frames, 0.0 s), 2 already done" in capsys.readouterr().out
    # Refused before any decoding: another codec's latents, a size the codec cannot take.
    assert main([*args, "--codec", other_vae_spec]) == 2
    assert "already holds latents of another codec" in capsys.readouterr().err
    assert main(["prepare", str(src), str(tmp_path / "odd"), "--size", "18", "--codec", vae_spec]) == 2
    assert "not a multiple of 4" in capsys.readouterr().err and not (tmp_path / "odd").exists()


# -- training on latents -------------------------------------------------------------------------
def test_latent_clips_are_the_pixel_windows_of_the_precomputed_latents(latent_data: Path) -> None:
    pixels = ClipDataset(latent_data, clip_frames=8, seed=3)
    latents = ClipDataset(latent_data, clip_frames=8, seed=3, video="latents")
    assert latents.video_shape == (4, 4, 4) and pixels.video_shape == (3, 16, 16) and len(latents) == len(pixels)
    for index in range(len(latents)):
        key, frame = latents.window(index, 1)
        assert (key, frame) == pixels.window(index, 1)
        a, b = latents.get(index, 1), pixels.get(index, 1)
        assert torch.equal(a["mel"], b["mel"]) and a["start"] == b["start"]
        assert torch.equal(a["video"], load_latent_clip(latent_data / "items" / key, frame, 8))


def test_training_on_latents_records_codec_and_mel_and_resumes_exactly(latent_run: Path, latent_data: Path,
                                                                       vae_spec: str, tmp_path: Path) -> None:
    info = read_info(latent_run)
    assert info.step == 6 and info.config["data"]["video"] == "latents"
    assert info.extra["codec"] == json.loads(json.dumps(load_video_codec(vae_spec).describe()))
    assert info.extra["mel"] == CMMD_MEL.describe()
    out = tmp_path / "resumed"
    train(train_config(latent_data, out, steps=3), progress=False)
    train(train_config(latent_data, out, steps=6), resume=True, progress=False)
    straight, resumed = load_weights(latent_run, "model"), load_weights(out, "model")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_training_refuses_video_the_model_cannot_take(latent_data: Path, prepared_impacts: Path,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "run"
    pixel_model = train_config(latent_data, out, steps=2)
    pixel_model.model = from_dict(TrainConfig, {"model": conftest.MICRO_MODEL}).model
    with pytest.raises(CmmdError, match=r"video_channels=3 but the cmmd-vae latents .* have 4 channels"):
        train(pixel_model, progress=False)
    with pytest.raises(CmmdError, match=r"video_channels=4 but data.video=pixels gives 3-channel frames.*"
                                        r"data.video=latents"):
        train(train_config(latent_data, out, steps=2, video="pixels"), progress=False)
    with pytest.raises(CmmdError, match=r"data.root \(data.video=latents\): .* has no codec.json"):
        train(train_config(prepared_impacts, out, steps=2), progress=False)
    partial = tmp_path / "partial"
    shutil.copytree(latent_data, partial)
    (partial / "items" / "clip3" / "latents.npy").unlink()
    with pytest.raises(CmmdError, match=r"1 item\(s\) have no latents.npy \(e.g. clip3\); encode them with "
                                        r"`cmmd vae encode"):
        train(train_config(partial, out, steps=2), progress=False)
    previews = train_config(latent_data, out, steps=2)
    previews.preview.every = 1
    with pytest.raises(CmmdError, match="preview.every"):
        train(previews, progress=False, preview=write_preview)
    assert not out.exists()  # all refused before any work


# -- sampling through the codec ------------------------------------------------------------------
def test_pipeline_generates_through_the_recorded_codec(latent_run: Path, vae_spec: str) -> None:
    pipe = Pipeline.from_checkpoint(latent_run)  # the codec comes from the spec the checkpoint records
    codec = load_video_codec(vae_spec)
    assert isinstance(pipe.codec, CmmdVaeCodec) and pipe.codec.weights == codec.weights
    assert isinstance(pipe.vocoder, GriffinLim)
    clip = render_clip("impacts", seed=9, duration=0.8, size=16)
    s = SamplingSettings(steps=2, seed=1)
    v2a = pipe.generate("v2a", s, frames=clip.frames[None])
    assert v2a.mel.shape == (1, 80, 50) and v2a.wave.shape == (1, 50 * 256)
    # the condition went through the codec: its frames come back as the codec's round trip
    np.testing.assert_array_equal(v2a.frames, codec.decode(codec.encode(clip.frames[None])))
    a2v = pipe.generate("a2v", s, wave=clip.audio[None])
    assert a2v.frames.shape == (1, 8, 16, 16, 3) and a2v.frames.dtype == np.uint8
    joint = pipe.generate("joint", s, num_frames=8, batch=2)
    assert joint.frames.shape == (2, 8, 16, 16, 3) and joint.mel.shape == (2, 80, 50)
    explicit = Pipeline.from_checkpoint(latent_run, codec=vae_spec, vocoder="griffinlim")
    np.testing.assert_array_equal(explicit.generate("joint", s, num_frames=8, batch=2).frames, joint.frames)


def test_pipeline_refuses_another_codec_or_a_vocoder_for_other_mels(latent_run: Path, other_vae_spec: str) -> None:
    with pytest.raises(CmmdError, match=r"video codec mismatch: the model was trained with codec 'cmmd-vae' "
                                        r"\(it was loaded as 'cmmd-vae:.*'\) but codec 'pixel' was given"):
        Pipeline.from_checkpoint(latent_run, codec="pixel")
    with pytest.raises(CmmdError, match=rf"but codec '{other_vae_spec}' was given: weights"):
        Pipeline.from_checkpoint(latent_run, codec=other_vae_spec)
    torch.manual_seed(0)
    hifigan_mels = NeuralVocoder(MelGanGenerator(MelGanConfig(channels=16)), HIFIGAN_MEL, "cmmd-gan", "cmmd-gan:x")
    with pytest.raises(CmmdError, match=r"vocoder 'cmmd-gan:x' takes other mels than the model produces: "
                                        r"sample_rate 16000 there, 22050 here"):
        Pipeline.from_checkpoint(latent_run, vocoder=hifigan_mels)
    with pytest.raises(CmmdError, match=r"pass the codec: --codec cmmd-vae:<path>"):
        recorded_codec({"codec": {"name": "cmmd-vae", "spec": "cmmd-vae:/nonexistent/vae"}})


def with_codec_spec(src: Path, dst: Path, spec: str) -> Path:
    """A single-file copy of checkpoint ``src``'s EMA weights whose codec record names ``spec``."""
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    info = json.loads(meta["cmmd"])
    info["extra"]["codec"]["spec"] = spec
    meta["cmmd"] = json.dumps(info)
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dst), metadata=meta)
    return dst


def test_a_checkpoint_finds_its_codec_beside_it_when_the_recorded_path_is_gone(
        latent_run: Path, vae_spec: str, other_vae_spec: str, tmp_path: Path) -> None:
    """How a checkpoint ships with its VAE: the recorded path is another machine's, the VAE lies
    beside the checkpoint under the same name, and its weights must be the recorded ones."""
    ema = latest_checkpoint(latent_run) / "ema.safetensors"
    vae_dir = Path(vae_spec.partition(":")[2])
    shipped = with_codec_spec(ema, tmp_path / "ship" / "model.safetensors", f"cmmd-vae:/elsewhere/{vae_dir.name}")
    with pytest.raises(CmmdError, match=r"nor beside the checkpoint"):
        Pipeline.from_checkpoint(shipped)
    shutil.copytree(vae_dir, tmp_path / "ship" / vae_dir.name)
    pipe = Pipeline.from_checkpoint(shipped)
    assert pipe.codec.weights == load_video_codec(vae_spec).weights
    other = with_codec_spec(ema, tmp_path / "other" / "model.safetensors", f"cmmd-vae:/elsewhere/{vae_dir.name}")
    shutil.copytree(Path(other_vae_spec.partition(":")[2]), tmp_path / "other" / vae_dir.name)
    with pytest.raises(CmmdError, match="video codec mismatch"):
        Pipeline.from_checkpoint(other)


def as_old_pixel_checkpoint(src: Path, dst: Path) -> Path:
    """A copy of ``src`` with the record older checkpoints carry: ``"codec": "pixel"``, no ``mel``."""
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    info = json.loads(meta["cmmd"])
    info["extra"]["codec"] = "pixel"
    info["extra"].pop("mel", None)
    meta["cmmd"] = json.dumps(info)
    save_file(tensors, str(dst), metadata=meta)
    return dst


def test_shipped_checkpoint_loads_its_vae_and_old_pixel_records_still_load(
        prepared_impacts: Path, tmp_path: Path) -> None:
    """The shipped demo model records the shipped VAE (found beside it, digest-checked); a pixel
    checkpoint with the bare ``"pixel"`` record older checkpoints carry loads as pixels."""
    from cmmd.assets import DEMO_VAE

    shipped = Pipeline.from_checkpoint(DEMO_CHECKPOINT)
    assert isinstance(shipped.codec, CmmdVaeCodec)
    assert shipped.codec.weights == load_video_codec(f"cmmd-vae:{DEMO_VAE}").weights
    with pytest.raises(CmmdError, match="sample_rate 16000 there, 22050 here"):
        Pipeline.from_checkpoint(DEMO_CHECKPOINT, vocoder=GriffinLim(22050))
    run = tmp_path / "pixel_run"
    cfg = train_config(prepared_impacts, run, steps=2, video="pixels")
    cfg.model.overrides = dict(conftest.MICRO_MODEL["overrides"])
    train(cfg, progress=False)
    old = as_old_pixel_checkpoint(latest_checkpoint(run) / "ema.safetensors", tmp_path / "old.safetensors")
    extra = read_info(old).extra
    assert extra["codec"] == "pixel" and "mel" not in extra  # as written before codecs were recorded in full
    pipe = Pipeline.from_checkpoint(old)
    assert isinstance(pipe.codec, PixelCodec)
    out = pipe.generate("joint", SamplingSettings(steps=2), num_frames=4)
    assert out.frames.shape == (1, 4, 16, 16, 3) and out.mel.shape == (1, 80, 25)
    with pytest.raises(CmmdError, match="sample_rate 16000 there, 22050 here"):
        Pipeline.from_checkpoint(old, vocoder=GriffinLim(22050))


def test_generate_cli_codec_and_vocoder_flags(latent_run: Path, vae_spec: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert main(["generate", str(latent_run), "--mode", "joint", "--steps", "2", "--seconds", "0.8",
                 "--codec", vae_spec, "--vocoder", "griffinlim", "--out", str(out)]) == 0
    settings = json.loads((out / "joint_0000.json").read_text())
    assert (settings["codec"], settings["vocoder"]) == (vae_spec, "griffinlim")
    assert read_media(out / "joint_0000.mp4").frames.shape == (8, 16, 16, 3)
    assert main(["generate", str(latent_run), "--mode", "joint", "--codec", "pixel", "--out", str(out)]) == 2
    assert "video codec mismatch" in capsys.readouterr().err


def test_a_run_on_the_shipped_vae_finds_this_installs_copy_when_its_checkout_is_gone(tmp_path: Path) -> None:
    """A run trained on ``demo-vae`` latents under another checkout (its recorded VAE path gone, no
    copy beside it) loads this install's shipped VAE, whose digest must be the recorded one."""
    from cmmd.assets import DEMO_VAE

    moved = with_codec_spec(DEMO_CHECKPOINT, tmp_path / "run" / "model.safetensors",
                            f"cmmd-vae:/removed/checkout/src/cmmd/assets/{DEMO_VAE.name}")
    assert not (moved.parent / DEMO_VAE.name).exists()
    pipe = Pipeline.from_checkpoint(moved)
    assert pipe.codec.weights == load_video_codec(f"cmmd-vae:{DEMO_VAE}").weights
    other_name = with_codec_spec(DEMO_CHECKPOINT, tmp_path / "other" / "model.safetensors",
                                 "cmmd-vae:/removed/checkout/my-vae.safetensors")
    with pytest.raises(CmmdError, match=r"nor beside the checkpoint"):
        Pipeline.from_checkpoint(other_name)
