"""Onset F1 (cmmd.eval.onsets, the ``onset`` stage) and the shuffled-pairs baseline with its paired
test on ``onset_*`` and ``beat_hit_rate_*`` (cmmd.eval.entries), through ``cmmd evaluate``.

Audio-only wav click tracks written in tmp_path; no network weights.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from cmmd.cli import main
from cmmd.eval.entries import SHUFFLED_LABEL
from cmmd.eval.evaluate import EvalSettings, evaluate
from cmmd.eval.onsets import detect_onsets
from cmmd.eval.report import metric_rows
from cmmd.eval.sync.score import event_sync_metrics

SR = 16_000
SECONDS = 4.0
FAST = {"n_boot": 200, "metrics": ("beat", "onset")}


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMMD_CACHE", str(tmp_path / "cache"))


def clicks(times: Sequence[float], seconds: float = SECONDS) -> np.ndarray:
    """A waveform ``(S,)`` of 20 ms decaying noise bursts starting at ``times`` (s), silence between."""
    burst = np.random.default_rng(0).standard_normal(int(0.02 * SR)) * np.exp(-np.arange(int(0.02 * SR)) / (0.004 * SR))
    wave = np.zeros(int(seconds * SR))
    for t in times:
        start = round(t * SR)
        wave[start : start + burst.size] += 0.5 * burst[: wave.size - start]
    return wave.astype(np.float32)


def random_times(rng: np.random.Generator, n: int = 6, gap: float = 0.3) -> np.ndarray:
    """``n`` sorted times in [0.2, SECONDS - 0.3] at least ``gap`` s apart."""
    while True:
        times = np.sort(rng.uniform(0.2, SECONDS - 0.3, n))
        if np.diff(times).min() >= gap:
            return times


def write_wavs(folder: Path, waves: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, wave in waves.items():
        wavfile.write(folder / f"{name}.wav", SR, (np.clip(wave, -1, 1) * 32767).astype(np.int16))
    return folder


def test_detector_finds_clicks_at_their_times_and_a_shifted_copy_scores_zero() -> None:
    times = np.array([0.25, 0.8, 1.4, 1.95, 2.6, 3.2])  # gaps >= 0.55 s: a 0.3 s shift meets no other click
    found = detect_onsets(clicks(times), SR)
    assert found.shape == times.shape
    assert np.all((found - times >= -0.017) & (found - times <= 0.001))  # within the 16 ms frame before
    assert event_sync_metrics(found, times, 0.1)["f1"] == 1.0
    shifted = detect_onsets(clicks(times + 0.3), SR)
    assert event_sync_metrics(shifted, found, 0.1)["f1"] == 0.0
    assert detect_onsets(np.zeros(2 * SR, dtype=np.float32), SR).size == 0
    assert np.array_equal(detect_onsets(clicks(times), SR), found)  # deterministic


def test_matching_onsets_beat_the_shuffled_pairs_with_a_significant_paired_test(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(1)
    waves = {f"c{i}": clicks(random_times(rng)) for i in range(8)}
    ref, gen = write_wavs(tmp_path / "ref", waves), write_wavs(tmp_path / "gen", waves)
    assert main(["evaluate", str(gen), str(ref), "--metrics", "onset", "--boot", "200", "--quiet",
                 "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    f1 = json.loads((tmp_path / "out" / "metrics.json").read_text())["metrics"]["onset_f1"]
    assert f1["point"] == 1.0 and f1["n"] == 8
    assert f1["baseline"]["label"] == SHUFFLED_LABEL and f1["baseline"]["point"] < 0.5
    vs = f1["vs_baseline"]
    assert vs["n"] == 8 and vs["p"] < 0.05 and vs["lo"] > 0.3
    assert vs["diff"] == pytest.approx(f1["point"] - f1["baseline"]["point"])
    assert "own - baseline" in printed and "Wilcoxon p=" in printed
    report = (tmp_path / "out" / "report.md").read_text()
    assert "own - baseline [95% CI], paired test" in report and SHUFFLED_LABEL in report
    assert main(["compare", str(tmp_path / "out"), str(tmp_path / "out")]) == 0
    assert next(line for line in capsys.readouterr().out.splitlines() if line.startswith("onset_f1 "))


def test_unrelated_onsets_are_no_better_than_the_shuffled_pairs(tmp_path: Path) -> None:
    """Generated clicks drawn independently of the reference's (one fixed random draw): the own
    pairs are chance level too (F1 ~0.3 at 6 clicks in 4 s, +-100 ms), so no difference shows."""
    rng = np.random.default_rng(5)
    ref = write_wavs(tmp_path / "ref", {f"c{i}": clicks(random_times(rng)) for i in range(8)})
    gen = write_wavs(tmp_path / "gen", {f"c{i}": clicks(random_times(rng)) for i in range(8)})
    f1 = evaluate(gen, ref, EvalSettings(**{**FAST, "metrics": ("onset",)}), progress=False)["metrics"]["onset_f1"]
    vs = f1["vs_baseline"]
    assert f1["point"] < 0.6 and vs["lo"] < 0.0 < vs["hi"] and vs["p"] > 0.2


def test_beat_hit_rate_has_a_lower_shuffled_baseline_at_different_tempi(tmp_path: Path) -> None:
    """Generated == reference click tracks at 70-150 BPM: hit rate 1, chance level lower, p < 0.05."""
    waves = {f"t{bpm}": clicks(np.arange(0.1, SECONDS - 0.1, 60.0 / bpm)) for bpm in range(70, 151, 11)}
    ref, gen = write_wavs(tmp_path / "ref", waves), write_wavs(tmp_path / "gen", waves)
    m = evaluate(gen, ref, EvalSettings(**FAST), progress=False)["metrics"]
    hit = m["beat_hit_rate_100ms"]
    assert hit["point"] == 1.0 and hit["n"] == len(waves)
    assert hit["baseline"]["label"] == SHUFFLED_LABEL and hit["baseline"]["point"] < 0.7
    assert hit["vs_baseline"]["p"] < 0.05 and hit["vs_baseline"]["lo"] > 0.0
    assert "vs_baseline" in m["beat_hit_rate_500ms"] and "baseline" not in m["beat_gen_precision_100ms"]


def test_one_condition_has_no_baseline_and_few_conditions_no_p(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    waves = {f"c{i}": clicks(random_times(rng)) for i in range(3)}
    one = evaluate(write_wavs(tmp_path / "gen1", {"c0": waves["c0"]}), write_wavs(tmp_path / "ref1", {"c0": waves["c0"]}),
                   EvalSettings(**FAST), progress=False)
    for key in ("onset_f1", "onset_recall", "beat_hit_rate_100ms"):
        assert one["metrics"][key]["n"] == 1
        assert "baseline" not in one["metrics"][key] and "vs_baseline" not in one["metrics"][key]
    assert one["metrics"]["onset_f1"]["point"] == 1.0
    assert all(row[4] == "" for row in metric_rows(one))
    three = evaluate(write_wavs(tmp_path / "gen3", waves), write_wavs(tmp_path / "ref3", waves),
                     EvalSettings(**{**FAST, "metrics": ("onset",)}), progress=False)
    vs = three["metrics"]["onset_f1"]["vs_baseline"]
    assert vs["n"] == 3 and np.isnan(vs["p"]) and "at least 6" in vs["why"] and vs["diff"] > 0
    row = next(r for r in metric_rows(three) if r[0] == "onset_f1")
    assert "p n/a (3 complete pair(s)" in row[4]
