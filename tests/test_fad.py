"""FAD per set and per sample, the CREPE embedder and the CLAP loaders (cmmd.eval.fad, .embedders)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from cmmd.errors import CmmdError
from cmmd.eval.embedders import CrepeEmbedder, CrepeNet, LaionClapEmbedder, get_embedder
from cmmd.eval.fad import EmbeddingStats, fad_per_sample, fad_set
from cmmd.weights import crepe_weights_path


@pytest.fixture(scope="module")
def tiny_random_crepe() -> CrepeEmbedder:
    torch.manual_seed(0)
    return CrepeEmbedder("tiny", hop=0.02, model=CrepeNet(capacity=4).eval())


def tone(freq: float, seconds: float = 1.0, rate: int = 16_000) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_crepe_frames_are_centred_normalised_windows(tiny_random_crepe: CrepeEmbedder) -> None:
    wave = tone(440.0)
    frames = tiny_random_crepe.frames(wave)
    assert frames.shape == (1 + 16_000 // 320, 1024)
    torch.testing.assert_close(frames.mean(dim=1), torch.zeros(frames.shape[0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(frames.std(dim=1), torch.ones(frames.shape[0]), atol=1e-4, rtol=0)
    # frame k is centred on sample k * hop: frame 10 starts 512 samples before sample 3200
    window = wave[3200 - 512 : 3200 + 512]
    expected = (window - window.mean()) / window.std(ddof=1)
    np.testing.assert_allclose(frames[10].numpy(), expected, atol=1e-4)
    assert torch.count_nonzero(tiny_random_crepe.frames(np.zeros(4000, dtype=np.float32))) == 0


def test_crepe_embedding_shape_and_name(tiny_random_crepe: CrepeEmbedder) -> None:
    emb = tiny_random_crepe.embed(tone(220.0, 0.5))
    assert emb.shape == (1 + 8000 // 320, 256) and emb.dtype == np.float32
    assert tiny_random_crepe.name == "crepe-tiny"
    assert tiny_random_crepe.settings["hop_samples"] == 320
    with pytest.raises(CmmdError, match="mono"):
        tiny_random_crepe.embed(np.zeros((2, 100), dtype=np.float32))
    with pytest.raises(CmmdError, match="NaN"):
        tiny_random_crepe.embed(np.full(100, np.nan, dtype=np.float32))


def test_fad_of_identical_sets_is_zero_and_grows_with_a_difference() -> None:
    rng = np.random.default_rng(0)
    ref = [rng.standard_normal((40, 6)) for _ in range(5)]
    same = [rng.standard_normal((40, 6)) for _ in range(5)]
    shifted = [rng.standard_normal((40, 6)) + 1.0 for _ in range(5)]
    stats = EmbeddingStats.from_frames(ref)
    assert stats.n_frames == 200
    assert abs(fad_set(ref, stats)) < 1e-9
    assert fad_set(shifted, stats) == pytest.approx(6.0, rel=0.3)
    assert fad_set(same, ref) < 0.1 * fad_set(shifted, ref)
    per_sample = fad_per_sample(same + shifted, stats)
    assert per_sample.shape == (10,) and np.all(np.isfinite(per_sample))
    assert per_sample[5:].min() > per_sample[:5].max()


def test_fad_per_sample_nan_for_a_single_frame_and_silence_is_finite(tiny_random_crepe: CrepeEmbedder) -> None:
    ref = [np.random.default_rng(i).standard_normal((30, 8)) for i in range(3)]
    values = fad_per_sample([np.zeros((1, 8)), np.ones((5, 8))], ref)
    assert np.isnan(values[0]) and np.isfinite(values[1])
    silent = tiny_random_crepe.embed(np.zeros(16_000, dtype=np.float32))
    noise = [tiny_random_crepe.embed(tone(f)) for f in (200.0, 400.0)]
    assert np.isfinite(fad_per_sample([silent], noise)[0])
    with pytest.raises(CmmdError, match="at least 2"):
        EmbeddingStats.from_frames([np.zeros((1, 8))])
    with pytest.raises(CmmdError, match="expected"):
        fad_per_sample([np.zeros((4, 3))], ref)


def test_get_embedder_errors_name_the_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CmmdError, match="unknown FAD embedder"):
        get_embedder("vggish")
    with pytest.raises(CmmdError, match="needs a local checkpoint"):
        get_embedder("clap-2023")
    missing = tmp_path / "nope.pt"
    with pytest.raises(CmmdError, match=str(missing)):
        get_embedder(f"clap-laion-audio={missing}")
    checkpoint = tmp_path / "630k-audioset-best.pt"
    checkpoint.write_bytes(b"0")
    monkeypatch.setitem(sys.modules, "laion_clap", None)  # import fails as if not installed
    with pytest.raises(CmmdError, match=r"laion-clap.*630k-audioset-best.pt|630k-audioset-best.pt.*laion-clap"):
        get_embedder(f"clap-laion-audio={checkpoint}")
    monkeypatch.setitem(sys.modules, "msclap", None)
    with pytest.raises(CmmdError, match="'msclap'"):
        get_embedder(f"clap-2023={checkpoint}")


def test_laion_clap_embedder_windows_like_fadtk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """10 s windows every 1 s, zero-padded, int16-quantised, through the laion_clap API."""
    calls: list[torch.Tensor] = []

    class FakeModule:
        def __init__(self, enable_fusion: bool, amodel: str) -> None:
            assert not enable_fusion and amodel == "HTSAT-base"

        def load_ckpt(self, path: str) -> None:
            assert path.endswith("music.pt")

        def get_audio_embedding_from_data(self, x: torch.Tensor, use_tensor: bool) -> torch.Tensor:
            calls.append(x)
            return torch.full((1, 512), float(x.abs().sum()))

    monkeypatch.setitem(sys.modules, "laion_clap", types.SimpleNamespace(CLAP_Module=FakeModule))
    checkpoint = tmp_path / "music.pt"
    checkpoint.write_bytes(b"0")
    embedder = get_embedder(f"clap-laion-music={checkpoint}")
    assert isinstance(embedder, LaionClapEmbedder) and embedder.name == "clap-laion-music"
    out = embedder.embed(np.full(int(2.5 * 48_000), 0.5, dtype=np.float32))
    assert out.shape == (3, 512)
    assert [tuple(c.shape) for c in calls] == [(1, 480_000)] * 3
    assert float(calls[2][0, : 48_000 // 2].min()) == pytest.approx(16383 / 32767)
    assert float(calls[2][0, 48_000 // 2 :].abs().max()) == 0.0


def test_real_crepe_weights_load_and_separate_pitches() -> None:
    """With the fetched weights, two pitches are farther apart than one pitch at two loudnesses."""
    try:
        crepe_weights_path("tiny")
    except CmmdError as exc:
        pytest.skip(str(exc))
    embedder = get_embedder("crepe-tiny")
    a, b, c = (embedder.embed(w).mean(axis=0) for w in (tone(300.0), 0.2 * tone(300.0), tone(1200.0)))
    assert np.linalg.norm(a - b) < 0.2 * np.linalg.norm(a - c)
