"""Video codecs: the shared contract, the cmmd-vae (training, checkpoints, resume), sd-vae loading
from local diffusers folders and single files, precomputed latents, and codec/model mismatch checks."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from cmmd.cli import main
from cmmd.errors import CmmdError
from cmmd.video.codecs import PixelCodec, VideoCodec, psnr, round_trip_quality, ssim
from cmmd.video.loading import load_video_codec
from cmmd.video.latents import CODEC_FILE, encode_prepared_dataset, load_latent_clip, read_codec_record
from cmmd.video.vae import CmmdVaeCodec, KlVae, VaeConfig
from cmmd.train.vae import VaeTrainConfig, train_vae


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """The models here are tiny: intra-op threads only add barrier waits (seconds per step on a
    busy shared CPU), so the module runs single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY_VAE = VaeConfig(downsampling=4, base_channels=8, norm_groups=4)


def tiny_vae_codec(seed: int = 0, downsampling: int = 4, scale: float = 1.0) -> CmmdVaeCodec:
    torch.manual_seed(seed)
    return CmmdVaeCodec(KlVae(VaeConfig(downsampling=downsampling, base_channels=8, norm_groups=4)), scale)


def tiny_sd_vae_config() -> dict:
    from cmmd.video.sdvae import SD_VAE_FT_MSE_CONFIG

    cfg = {k: v for k, v in SD_VAE_FT_MSE_CONFIG.items() if k != "sample_size"}
    cfg.update(block_out_channels=[32, 32, 32, 32], layers_per_block=1)
    return cfg


@pytest.fixture(scope="module")
def sd_vae_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init AutoencoderKL with sd-vae-ft-mse's layout (narrow widths), saved by diffusers."""
    diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install 'cmmd[sdvae]')")
    torch.manual_seed(0)
    model = diffusers.AutoencoderKL(**tiny_sd_vae_config())
    folder = tmp_path_factory.mktemp("sdvae") / "sd-vae-tiny"
    model.save_pretrained(folder)
    return folder


def frames(b: int = 2, t: int = 3, size: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (b, t, size, size, 3), dtype=np.uint8)


def codec_cases() -> list:
    return [pytest.param("pixel", id="pixel"), pytest.param("cmmd-vae", id="cmmd-vae"),
            pytest.param("sd-vae", id="sd-vae")]


@pytest.fixture
def any_codec(request: pytest.FixtureRequest) -> VideoCodec:
    if request.param == "pixel":
        return PixelCodec()
    if request.param == "cmmd-vae":
        return tiny_vae_codec()
    return load_video_codec(f"sd-vae:{request.getfixturevalue('sd_vae_folder')}")


# -- the contract every codec keeps -----------------------------------------------------------
@pytest.mark.parametrize("any_codec", codec_cases(), indirect=True)
def test_codec_contract_shapes_dtypes_device(any_codec: VideoCodec) -> None:
    x = frames(size=16)
    z = any_codec.encode(x)
    d = any_codec.downsampling
    assert z.shape == (2, 3, any_codec.channels, 16 // d, 16 // d)
    assert z.dtype == torch.float32 and z.device == any_codec.device
    assert any_codec.latent_shape(16, 16) == tuple(z.shape[2:])
    out = any_codec.decode(z)
    assert out.shape == x.shape and out.dtype == np.uint8
    # (T, H, W, 3) is a batch of one; the chunking by max_batch does not change results
    assert torch.allclose(any_codec.encode(x[0]), z[:1], atol=1e-5)
    any_codec.max_batch = 2
    assert torch.allclose(any_codec.encode(x), z, atol=1e-5)
    desc = any_codec.describe()
    assert json.loads(json.dumps(desc)) == desc
    assert {desc["name"], desc["channels"], desc["downsampling"]} == {any_codec.name, any_codec.channels, d}
    any_codec.check_compatible(desc)


@pytest.mark.parametrize("any_codec", codec_cases(), indirect=True)
def test_codec_contract_errors(any_codec: VideoCodec) -> None:
    with pytest.raises(CmmdError, match="uint8"):
        any_codec.encode(frames().astype(np.float32))
    with pytest.raises(CmmdError, match=r"\(B, T, H, W, 3\)"):
        any_codec.encode(np.zeros((2, 16, 16), np.uint8))
    with pytest.raises(CmmdError, match="decodes latents"):
        any_codec.decode(torch.zeros(1, 2, any_codec.channels + 1, 2, 2))
    if any_codec.downsampling > 1:
        with pytest.raises(CmmdError, match="not a multiple"):
            any_codec.encode(frames(size=any_codec.downsampling * 2 + 2))


def test_pixel_codec_is_exact_and_keeps_its_api() -> None:
    x = frames()
    codec = load_video_codec("pixel")
    assert isinstance(codec, PixelCodec) and (codec.channels, codec.downsampling, codec.scaling_factor) == (3, 1, 1.0)
    z = codec.encode(x)
    assert float(z.min()) >= -1.0 and float(z.max()) <= 1.0
    assert np.array_equal(codec.decode(z), x)
    assert (codec.decode(torch.full((1, 1, 3, 2, 2), 5.0)) == 255).all()  # clipped to [-1, 1]
    assert (codec.decode(torch.full((1, 1, 3, 2, 2), -5.0)) == 0).all()
    assert round_trip_quality(codec, x[0]) == {"psnr": float("inf"), "ssim": pytest.approx(1.0)}


def test_latent_scaling_factor_is_applied_and_removed() -> None:
    x = frames()
    one, two = tiny_vae_codec(scale=1.0), tiny_vae_codec(scale=2.0)
    z1, z2 = one.encode(x), two.encode(x)
    assert torch.allclose(z2, 2 * z1)
    assert np.array_equal(one.decode(z1), two.decode(z2))


def test_psnr_and_ssim_reference_values() -> None:
    x = frames(1, 4, 32)[0]
    y = np.clip(x.astype(int) + 4, 0, 255).astype(np.uint8)
    mse = np.mean((x.astype(float) - y) ** 2)
    assert psnr(x, y) == pytest.approx(10 * np.log10(255**2 / mse))
    assert ssim(x, x) == pytest.approx(1.0)
    noisy = np.clip(x + np.random.default_rng(1).normal(0, 40, x.shape), 0, 255).astype(np.uint8)
    assert ssim(x, y) > ssim(x, noisy)
    with pytest.raises(CmmdError, match="11x11"):
        ssim(x[:, :8, :8], x[:, :8, :8])


# -- codec specs and compatibility ----------------------------------------------------------------
def test_unknown_or_incomplete_specs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CmmdError, match="unknown video codec"):
        load_video_codec("jpeg")
    with pytest.raises(CmmdError, match="needs a path"):
        load_video_codec("cmmd-vae")
    with pytest.raises(CmmdError, match="does not exist"):
        load_video_codec(f"cmmd-vae:{tmp_path / 'nothing'}")
    with pytest.raises(CmmdError, match="takes no argument"):
        load_video_codec("pixel:x")


def test_check_compatible_refuses_other_codecs_with_a_clear_message() -> None:
    a, b = tiny_vae_codec(seed=0), tiny_vae_codec(seed=1)
    a.check_compatible(a.describe())
    with pytest.raises(CmmdError, match="weights"):
        b.check_compatible(a.describe())
    with pytest.raises(CmmdError, match="downsampling 4 there, 8 here"):
        tiny_vae_codec(downsampling=8).check_compatible(a.describe())
    with pytest.raises(CmmdError, match="scaling_factor"):
        tiny_vae_codec(scale=2.0).check_compatible(a.describe())
    # diffusion checkpoints written before codecs were recorded in full store the bare name
    PixelCodec().check_compatible("pixel")
    with pytest.raises(CmmdError, match="trained with codec 'pixel'"):
        a.check_compatible("pixel")


def test_diffusion_checkpoint_codec_record_refuses_a_mismatched_codec(tmp_path: Path) -> None:
    from cmmd.checkpoint import read_info, save_checkpoint

    vae = tiny_vae_codec()
    net = torch.nn.Linear(2, 2)
    for name, record in (("legacy", "pixel"), ("pixel", PixelCodec().describe()), ("vae", vae.describe())):
        save_checkpoint(tmp_path / name, 1, net, net, torch.optim.SGD(net.parameters(), 0.1), {}, {"codec": record})
    PixelCodec().check_compatible(read_info(tmp_path / "legacy").extra["codec"])
    PixelCodec().check_compatible(read_info(tmp_path / "pixel").extra["codec"])
    vae.check_compatible(read_info(tmp_path / "vae").extra["codec"])
    for name, codec in (("legacy", vae), ("pixel", vae), ("vae", PixelCodec()), ("vae", tiny_vae_codec(seed=3))):
        with pytest.raises(CmmdError, match="video codec mismatch: the model was trained with codec"):
            codec.check_compatible(read_info(tmp_path / name).extra["codec"])


# -- cmmd-vae training -------------------------------------------------------------------------
def vae_cfg(data: Path, out: Path, steps: int) -> VaeTrainConfig:
    return VaeTrainConfig(data=str(data), out_dir=str(out), vae=TINY_VAE, steps=steps, batch_size=4, lr=2e-3,
                          checkpoint_every=3, eval_frames=8, device="cpu")


def test_vae_training_learns_checkpoints_and_loads_as_codec(prepared_impacts: Path, tmp_path: Path) -> None:
    untrained = round_trip_quality(tiny_vae_codec(), frames(1, 8, 16)[0])
    result = train_vae(vae_cfg(prepared_impacts, tmp_path / "run", steps=6), progress=False)
    assert result.step == 6 and result.checkpoint.name == "step_00000006"
    assert np.isfinite(result.psnr) and result.psnr > untrained["psnr"] and 0 < result.ssim <= 1
    assert result.codec.scaling_factor > 0
    codec = load_video_codec(f"cmmd-vae:{tmp_path / 'run'}")
    assert isinstance(codec, CmmdVaeCodec) and codec.downsampling == 4 and codec.channels == 4
    assert codec.weights == result.codec.weights and codec.scaling_factor == result.codec.scaling_factor
    single = load_video_codec(f"cmmd-vae:{result.checkpoint / 'ema.safetensors'}")
    assert single.weights == codec.weights
    assert codec.describe()["psnr"] == pytest.approx(result.psnr)
    with pytest.raises(CmmdError, match="already holds a run"):
        train_vae(vae_cfg(prepared_impacts, tmp_path / "run", steps=8), progress=False)


def test_vae_resume_matches_an_uninterrupted_run(prepared_impacts: Path, tmp_path: Path) -> None:
    straight = train_vae(vae_cfg(prepared_impacts, tmp_path / "a", steps=6), progress=False)
    train_vae(vae_cfg(prepared_impacts, tmp_path / "b", steps=3), progress=False)
    resumed = train_vae(vae_cfg(prepared_impacts, tmp_path / "b", steps=6), resume=True, progress=False)
    assert resumed.step == 6
    assert resumed.codec.weights == straight.codec.weights
    with pytest.raises(CmmdError, match="same architecture"):
        cfg = vae_cfg(prepared_impacts, tmp_path / "b", steps=9)
        cfg.vae = VaeConfig(downsampling=8, base_channels=8, norm_groups=4)
        train_vae(cfg, resume=True, progress=False)


def test_vae_training_input_errors(prepared_impacts: Path, tmp_path: Path) -> None:
    with pytest.raises(CmmdError, match="no prepared items"):
        train_vae(vae_cfg(tmp_path, tmp_path / "run", steps=2), progress=False)
    with pytest.raises(CmmdError, match="downsampling must be 4 or 8"):
        cfg = vae_cfg(prepared_impacts, tmp_path / "run", steps=2)
        cfg.vae = VaeConfig(downsampling=2)
        train_vae(cfg, progress=False)


def test_cli_vae_train_test_encode(prepared_impacts: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "data"
    shutil.copytree(prepared_impacts, data)
    run = tmp_path / "run"
    assert main(["vae", "train", str(data), "--out", str(run), "--downsample", "4", "--base-channels", "8",
                 "--steps", "2", "--batch-size", "2", "--checkpoint-every", "2", "--device", "cpu",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"held-out PSNR \d+\.\d+ dB", out) and f"cmmd-vae:{run}" in out
    assert main(["vae", "test", str(data), "--codec", f"cmmd-vae:{run}", "--frames", "8"]) == 0
    assert "SSIM" in capsys.readouterr().out
    assert main(["vae", "encode", str(data), "--codec", f"cmmd-vae:{run}", "--no-progress"]) == 0
    assert "6 item(s) encoded" in capsys.readouterr().out
    assert main(["vae", "train", str(tmp_path / "missing"), "--out", str(tmp_path / "r2")]) == 2
    assert "no prepared items" in capsys.readouterr().err


# -- precomputed latents -------------------------------------------------------------------------
def test_encode_prepared_dataset_writes_resumes_and_refuses_another_codec(prepared_impacts: Path,
                                                                          tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(prepared_impacts, data)
    codec = tiny_vae_codec()
    summary = encode_prepared_dataset(data, codec, progress=False)
    assert (summary.encoded, summary.skipped) == (6, 0)
    video = np.load(data / "items" / "clip0" / "video.npy")
    latents = np.load(data / "items" / "clip0" / "latents.npy")
    assert latents.dtype == np.float16 and latents.shape == (len(video), 4, 4, 4)
    expected = codec.encode(video[None])[0]
    assert torch.allclose(torch.from_numpy(latents.astype(np.float32)), expected, atol=2e-3, rtol=2e-3)
    assert read_codec_record(data) == json.loads((data / CODEC_FILE).read_text()) == codec.describe()
    clip = load_latent_clip(data / "items" / "clip0", 2, 5)
    assert clip.shape == (5, 4, 4, 4) and clip.dtype == torch.float32
    assert encode_prepared_dataset(data, codec, progress=False).skipped == 6
    with pytest.raises(CmmdError, match="already holds latents of another codec"):
        encode_prepared_dataset(data, tiny_vae_codec(seed=1), progress=False)
    with pytest.raises(CmmdError, match="cannot start at frame"):
        load_latent_clip(data / "items" / "clip0", len(video) - 2, 5)


class _Pool(VideoCodec):
    """A weight-free codec downsampling by 32 (average pooling), for size checks."""

    name, channels, downsampling, scaling_factor = "pool32", 3, 32, 1.0

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(images, 32)

    def decode_images(self, latents: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(latents, scale_factor=32)


def test_encode_prepared_dataset_refuses_non_divisible_frames(prepared_impacts: Path, tmp_path: Path) -> None:
    with pytest.raises(CmmdError, match="not a multiple of 32"):
        encode_prepared_dataset(prepared_impacts, _Pool(), out=tmp_path / "latents", progress=False)
    with pytest.raises(CmmdError, match="no prepared items"):
        encode_prepared_dataset(tmp_path, _Pool(), progress=False)


# -- sd-vae from local paths -----------------------------------------------------------------------
def test_sd_vae_folder_loads_and_matches_diffusers(sd_vae_folder: Path) -> None:
    from diffusers import AutoencoderKL

    codec = load_video_codec(f"sd-vae:{sd_vae_folder}")
    assert (codec.channels, codec.downsampling, codec.scaling_factor) == (4, 8, 0.18215)
    x = frames(1, 2, 16)
    model = AutoencoderKL.from_pretrained(str(sd_vae_folder)).eval()
    unit = torch.from_numpy(x[0]).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        expected = model.encode(unit).latent_dist.mean * 0.18215
    assert torch.allclose(codec.encode(x)[0], expected, atol=1e-5)


def _to_ldm_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL keys -> original LDM keys (the inverse of diffusers' converter)."""
    levels = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"encoder\.down_blocks\.(\d+)", k)))
    out = {}
    for key, value in state.items():
        k = key
        k = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", k)
        k = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", k)
        k = re.sub(r"decoder\.up_blocks\.(\d+)\.resnets\.",
                   lambda m: f"decoder.up.{levels - 1 - int(m.group(1))}.block.", k)
        k = re.sub(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
                   lambda m: f"decoder.up.{levels - 1 - int(m.group(1))}.upsample.", k)
        k = re.sub(r"mid_block\.resnets\.(\d+)\.", lambda m: f"mid.block_{int(m.group(1)) + 1}.", k)
        k = k.replace("mid_block.attentions.0.group_norm", "mid.attn_1.norm")
        for new, old in (("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")):
            if f"mid_block.attentions.0.{new}." in k:
                k = k.replace(f"mid_block.attentions.0.{new}.", f"mid.attn_1.{old}.")
                if k.endswith("weight"):
                    value = value[:, :, None, None]
        k = k.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        out["first_stage_model." + k] = value
    return out


def test_sd_vae_single_file_diffusers_and_ldm_layouts(sd_vae_folder: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    reference = load_video_codec(f"sd-vae:{sd_vae_folder}")
    state = load_file(str(sd_vae_folder / "diffusion_pytorch_model.safetensors"))
    x = frames(1, 2, 16)
    z = reference.encode(x)
    flat = tmp_path / "diffusers-layout.safetensors"
    save_file(state, str(flat))
    ldm = tmp_path / "ldm" / "sd-v1-vae.safetensors"
    ldm.parent.mkdir()
    save_file(_to_ldm_keys(state), str(ldm))
    for path in (flat, ldm):
        codec = load_video_codec(f"sd-vae:{path}")
        assert (codec.channels, codec.downsampling) == (4, 8)
        assert codec.weights == reference.weights, path
        assert torch.allclose(codec.encode(x), z, atol=1e-5)
        reference.check_compatible(codec.describe())


def test_sd_vae_missing_or_mismatched_weights_are_clear_errors(sd_vae_folder: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    with pytest.raises(CmmdError, match="does not exist"):
        load_video_codec(f"sd-vae:{tmp_path / 'nowhere'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CmmdError, match="no config.json"):
        load_video_codec(f"sd-vae:{tmp_path / 'empty'}")
    state = load_file(str(sd_vae_folder / "diffusion_pytorch_model.safetensors"))
    broken = dict(state)
    broken.pop("decoder.conv_in.bias")
    save_file(broken, str(tmp_path / "missing-key.safetensors"))
    with pytest.raises(CmmdError, match="do not match an AutoencoderKL"):
        load_video_codec(f"sd-vae:{tmp_path / 'missing-key.safetensors'}")
    save_file({"unet.conv.weight": torch.zeros(2, 2)}, str(tmp_path / "not-a-vae.safetensors"))
    with pytest.raises(CmmdError, match="not an AutoencoderKL"):
        load_video_codec(f"sd-vae:{tmp_path / 'not-a-vae.safetensors'}")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CmmdError, match="not a readable safetensors"):
        load_video_codec(f"sd-vae:{tmp_path / 'garbage.safetensors'}")
    folder = tmp_path / "folder"
    shutil.copytree(sd_vae_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    config["block_out_channels"] = [64, 64, 64, 64]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CmmdError, match=str(folder)):
        load_video_codec(f"sd-vae:{folder}")
