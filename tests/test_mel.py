"""Tests for cmmd.audio.mel (log-mel front-end, MelStats) and cmmd.audio.griffinlim."""

from __future__ import annotations

import json

import librosa
import numpy as np
import pytest
import torch

from cmmd.audio.griffinlim import griffin_lim
from cmmd.audio.mel import (
    CMMD_MEL,
    HIFIGAN_MEL,
    MIN_STD,
    MelConfig,
    MelStats,
    cmmd_mel,
    log_mel,
    mel_config_from,
    mel_filterbank,
    mel_frequencies,
    recorded_mel,
)
from cmmd.audio.vocoders import GriffinLim
from cmmd.conventions import HOP, LOG_FLOOR, N_MELS, SAMPLE_RATE
from cmmd.errors import CmmdError

SR = SAMPLE_RATE


def _librosa_log_mel(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference: librosa magnitude mel with the last centred frame dropped, and its log."""
    mel = librosa.feature.melspectrogram(
        y=y, sr=SR, n_fft=512, hop_length=256, win_length=512, power=1.0, n_mels=80,
        fmin=0.0, fmax=8000.0, center=True,
    )[:, :-1]
    return mel, np.log(np.maximum(mel, LOG_FLOOR))


def _tone(freq: float, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _percussive(seconds: float = 1.8, seed: int = 0) -> np.ndarray:
    """Decaying tone bursts plus a noise click every 300 ms, like the synthetic impacts scene."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    y = np.zeros(n, dtype=np.float32)
    for k, start in enumerate(range(800, n - 4000, int(0.3 * SR))):
        t = np.arange(4000) / SR
        pitch = (392.0, 784.0, 1568.0, 3136.0)[k % 4]
        y[start : start + 4000] += 0.5 * np.exp(-t * 30) * np.sin(2 * np.pi * pitch * t)
        y[start : start + 200] += 0.3 * rng.standard_normal(200) * np.exp(-np.arange(200) / 40)
    return y


# Impact-class pitches plus a low and a high tone; none lies near the midpoint of two centres,
# where Slaney area normalisation (wider filters are lower) can favour the lower bin.
@pytest.mark.parametrize("freq", [100.0, 392.0, 784.0, 1568.0, 3136.0, 5000.0])
def test_pure_tone_peaks_in_nearest_bin(freq: float) -> None:
    mel = log_mel(torch.from_numpy(_tone(freq)))
    centres = mel_frequencies()
    assert int(mel[:, 10:-10].mean(dim=1).argmax()) == int((centres - freq).abs().argmin())


@pytest.mark.parametrize("num_samples", [28800, 28800 + 37, 57600, 511, 256])
def test_matches_librosa(num_samples: int) -> None:
    rng = np.random.default_rng(num_samples)
    y = np.concatenate([_percussive(4.0), _tone(440.0, 4.0)])[:num_samples]
    y = y + 0.01 * rng.standard_normal(num_samples).astype(np.float32)
    ref, ref_log = _librosa_log_mel(y)
    out = log_mel(torch.from_numpy(y)).numpy()
    assert out.shape == ref.shape == (N_MELS, num_samples // HOP)
    mask = ref > 1e-4
    assert np.abs(out - ref_log)[mask].max() < 1e-3


def test_matches_librosa_batched_and_in_float64() -> None:
    ys = np.stack([_percussive(1.8, seed=s)[: 28800 + 37] for s in range(3)])
    ys[1] += _tone(1000.0, 1.9)[: ys.shape[1]]
    out = log_mel(torch.from_numpy(ys))
    out64 = log_mel(torch.from_numpy(ys).double())
    assert out.shape == (3, N_MELS, 112) and out.dtype == torch.float32
    assert out64.dtype == torch.float64
    for b in range(3):
        ref, ref_log = _librosa_log_mel(ys[b])
        assert np.abs(out[b].numpy() - ref_log)[ref > 1e-4].max() < 1e-3
        assert np.abs(out64[b].numpy() - ref_log).max() < 1e-5
        assert torch.allclose(out[b], log_mel(torch.from_numpy(ys[b])), atol=1e-5)


def test_frame_counts_follow_conventions() -> None:
    assert log_mel(torch.zeros(int(1.8 * SR))).shape == (N_MELS, 112)
    assert log_mel(torch.zeros(2, int(3.6 * SR))).shape == (2, N_MELS, 225)
    assert float(log_mel(torch.zeros(SR)).max()) == pytest.approx(np.log(LOG_FLOOR))


def test_rejects_too_short_and_bad_shapes() -> None:
    with pytest.raises(CmmdError, match="shorter than one mel hop"):
        log_mel(torch.zeros(HOP - 1))
    with pytest.raises(CmmdError, match=r"\(S,\) or \(B, S\)"):
        log_mel(torch.zeros(1, 2, 1000))
    with pytest.raises(CmmdError, match="float waveform"):
        log_mel(torch.zeros(1000, dtype=torch.int16))
    with pytest.raises(CmmdError, match="does not fit sample rate"):
        mel_filterbank(sample_rate=8000)


def test_log_mel_is_differentiable() -> None:
    wave = torch.from_numpy(_percussive(0.5)).unsqueeze(0).repeat(2, 1).requires_grad_(True)
    out = log_mel(wave)
    out.sum().backward()
    assert wave.grad is not None and torch.isfinite(wave.grad).all() and wave.grad.abs().sum() > 0
    x = torch.randn(1, 600, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w: log_mel(w), (x,), eps=1e-6, atol=1e-4)


def test_half_and_double_precision() -> None:
    y = torch.from_numpy(_percussive(0.5))
    ref = log_mel(y)
    out = log_mel(y.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs()[ref > -4].max() < 0.1
    out64 = log_mel(y.double())
    assert out64.dtype == torch.float64
    assert (out64.float() - ref).abs()[ref > np.log(1e-4)].max() < 1e-3


def test_filterbank_is_librosa_slaney() -> None:
    fb = mel_filterbank()
    ref = librosa.filters.mel(sr=SR, n_fft=512, n_mels=80, fmin=0, fmax=8000, htk=False, norm="slaney")
    assert fb.shape == (80, 257)
    assert np.allclose(fb.numpy(), ref, atol=1e-7)
    assert bool((fb.sum(dim=1) > 0).all())


def test_one_filterbank_per_config_and_librosas() -> None:
    assert torch.equal(CMMD_MEL.filterbank(), mel_filterbank())
    assert CMMD_MEL.filterbank(dtype=torch.float32).dtype == torch.float32
    ref = librosa.filters.mel(sr=22050, n_fft=1024, n_mels=80, fmin=0, fmax=8000, htk=False, norm="slaney")
    assert HIFIGAN_MEL.filterbank().shape == (80, 513)
    assert np.allclose(HIFIGAN_MEL.filterbank().numpy(), ref, atol=1e-7)
    fb = CMMD_MEL.filterbank()
    fb.zero_()  # a copy: the cached filterbank is not touched
    assert float(CMMD_MEL.filterbank().sum()) > 0


def test_mel_config_validates_and_round_trips_through_its_record() -> None:
    assert cmmd_mel() is CMMD_MEL and cmmd_mel(22050).sample_rate == 22050
    assert mel_config_from(CMMD_MEL.describe()) == CMMD_MEL
    assert mel_config_from(json.loads(json.dumps(HIFIGAN_MEL.describe()))) == HIFIGAN_MEL
    assert recorded_mel({"sample_rate": 22050}) == cmmd_mel(22050).describe()
    assert recorded_mel({"mel": HIFIGAN_MEL.describe()}) == HIFIGAN_MEL.describe()
    with pytest.raises(CmmdError, match="does not fit sample rate 8000"):
        cmmd_mel(8000)
    with pytest.raises(CmmdError, match="framing"):
        MelConfig(framing="htk")  # type: ignore[arg-type]
    with pytest.raises(CmmdError, match="hop <= win_length"):
        MelConfig(hop=1024)
    with pytest.raises(CmmdError, match="not a mel configuration.*hop_length"):
        mel_config_from({**CMMD_MEL.describe(), "hop_length": 256})


def test_log_mel_is_cmmd_mel_config_log_mel_at_its_rate() -> None:
    wave = torch.from_numpy(_percussive(0.5))
    assert torch.equal(log_mel(wave), CMMD_MEL.log_mel(wave))
    assert torch.equal(log_mel(wave, 22050), cmmd_mel(22050).log_mel(wave))
    assert not torch.equal(log_mel(wave, 22050), log_mel(wave))
    with pytest.raises(CmmdError, match="shorter than one mel hop"):
        HIFIGAN_MEL.log_mel(torch.zeros(255))
    with pytest.raises(CmmdError, match="more than 384 samples"):
        HIFIGAN_MEL.log_mel(torch.zeros(300))


def test_dataset_checkpoint_pipeline_and_vocoder_compute_one_log_mel(
    micro_run, prepared_impacts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mel a checkpoint records is the one its training data, its pipeline and its vocoder
    compute with, and all of them go through MelConfig.log_mel."""
    from cmmd.checkpoint import read_info
    from cmmd.data.dataset import ClipDataset
    from cmmd.pipeline import Pipeline

    clips = ClipDataset(prepared_impacts, clip_frames=8)
    recorded = mel_config_from(recorded_mel(read_info(micro_run).extra))
    pipe = Pipeline.from_checkpoint(micro_run)
    assert recorded == clips.mel == pipe.vocoder.mel == CMMD_MEL

    calls: list[MelConfig] = []
    implementation = MelConfig.log_mel

    def spy(self: MelConfig, wave: torch.Tensor) -> torch.Tensor:
        calls.append(self)
        return implementation(self, wave)

    monkeypatch.setattr(MelConfig, "log_mel", spy)
    item = clips.get(0, 0)
    expected = implementation(recorded, item["wave"])
    assert torch.equal(item["mel"], expected)
    assert torch.equal(pipe.log_mel(item["wave"][None].numpy())[0], expected)
    assert torch.equal(pipe.vocoder.mel.log_mel(item["wave"]), expected)
    assert calls == [recorded] * 3


def _random_mels(seed: int, count: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.5, 3.0, N_MELS)[:, None]
    return [
        torch.randn(int(torch.randint(1, 4, (1,), generator=g)), N_MELS, 37, generator=g) * scale - 4.0
        for _ in range(count)
    ]


def test_melstats_streaming_equals_one_shot() -> None:
    mels = _random_mels(0, 7) + [torch.randn(N_MELS, 11, dtype=torch.float64).numpy()]
    stats = MelStats.compute(iter(mels))
    flat = torch.cat([torch.as_tensor(m).reshape(-1, N_MELS, m.shape[-1]).transpose(0, 1).reshape(N_MELS, -1).double()
                      for m in mels], dim=1)
    assert stats.count == flat.shape[1]
    assert torch.allclose(stats.mean.double(), flat.mean(dim=1), atol=1e-6)
    assert torch.allclose(stats.std.double(), flat.std(dim=1, unbiased=False), atol=1e-6)


def test_melstats_normalize_roundtrip_and_save_load(tmp_path) -> None:
    mels = _random_mels(1, 5)
    stats = MelStats.compute(mels)
    batch = mels[0]
    z = stats.normalize(batch)
    assert z.shape == batch.shape
    assert torch.allclose(stats.denormalize(z), batch, atol=1e-5)
    pooled = stats.normalize(torch.cat([m.transpose(0, 1).reshape(N_MELS, -1) for m in mels], dim=1))
    assert torch.allclose(pooled.mean(dim=1), torch.zeros(N_MELS), atol=1e-4)
    assert torch.allclose(pooled.std(dim=1, unbiased=False), torch.ones(N_MELS), atol=1e-4)
    assert stats.normalize(batch.double()).dtype == torch.float64

    path = tmp_path / "mel_stats.json"
    stats.save(path)
    data = json.loads(path.read_text())
    assert len(data["mean"]) == len(data["std"]) == N_MELS
    loaded = MelStats.load(path)
    assert torch.equal(loaded.mean, stats.mean) and torch.equal(loaded.std, stats.std)
    assert loaded.count == stats.count


def test_melstats_floors_constant_bins_and_rejects_bad_input(tmp_path) -> None:
    stats = MelStats.compute([torch.full((N_MELS, 20), float(np.log(LOG_FLOOR)))])
    assert torch.allclose(stats.std, torch.full((N_MELS,), MIN_STD))
    with pytest.raises(CmmdError, match="no frames"):
        MelStats.compute([])
    with pytest.raises(CmmdError, match=r"\(80, L\)"):
        MelStats.compute([torch.zeros(40, 10)])
    with pytest.raises(CmmdError, match="does not exist"):
        MelStats.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"mean": [0.0] * 80}))
    with pytest.raises(CmmdError, match="'mean' and 'std'"):
        MelStats.load(tmp_path / "bad.json")
    with pytest.raises(CmmdError, match="bins on dim -2"):
        stats.normalize(torch.zeros(2, 40, 10))


@pytest.mark.parametrize("signal", ["percussive", "tone"])
def test_griffin_lim_round_trip_error_is_bounded(signal: str) -> None:
    y = _percussive(1.8) if signal == "percussive" else _tone(440.0, 1.8)
    mel = log_mel(torch.from_numpy(y))
    wave = griffin_lim(mel)
    assert wave.shape == (112 * HOP,) and wave.dtype == torch.float32
    assert float(wave.abs().max()) <= 1.0
    diff = (log_mel(wave) - mel).abs()
    # Measured at 32 iterations: 0.33 / 0.23 over all bins, 0.013 / 0.035 over loud bins.
    assert float(diff.mean()) < 0.4
    assert float(diff[mel > -2].mean()) < 0.1


def test_griffin_lim_is_deterministic_batch_invariant_and_a_vocoder() -> None:
    mels = torch.stack([log_mel(torch.from_numpy(_percussive(0.6, seed=s))) for s in range(3)])
    vocoder = GriffinLim(n_iter=8)
    assert vocoder.sample_rate == SR
    batched = vocoder(mels)
    assert batched.shape == (3, mels.shape[-1] * HOP)
    assert torch.equal(batched, vocoder(mels))
    assert torch.allclose(batched[1], vocoder(mels[1]), atol=1e-6)
    zeros = griffin_lim(mels[0], n_iter=8, init_phase="zeros")
    assert torch.equal(zeros, griffin_lim(mels[0], n_iter=8, init_phase="zeros"))
    assert not torch.equal(zeros, batched[0])
    wave64 = griffin_lim(mels[0].double(), n_iter=8)
    assert wave64.dtype == torch.float64 and torch.allclose(wave64.float(), batched[0], atol=1e-3)


def test_griffin_lim_rejects_bad_input() -> None:
    with pytest.raises(CmmdError, match=r"\(80, L\)"):
        griffin_lim(torch.zeros(40, 10))
    with pytest.raises(CmmdError, match="momentum"):
        griffin_lim(torch.zeros(80, 10), momentum=1.0)
    with pytest.raises(CmmdError, match="init_phase"):
        griffin_lim(torch.zeros(80, 10), init_phase="ones")  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    y = torch.from_numpy(_percussive(1.0)).unsqueeze(0).repeat(2, 1)
    ref = log_mel(y)
    out = log_mel(y.cuda())
    assert out.device.type == "cuda"
    assert (out.cpu() - ref).abs()[ref > np.log(1e-4)].max() < 1e-3
    wave = griffin_lim(ref.cuda(), n_iter=8)
    assert wave.device.type == "cuda"
    assert (wave.cpu() - griffin_lim(ref, n_iter=8)).abs().max() < 1e-2
