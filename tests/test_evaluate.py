"""``cmmd evaluate`` / ``cmmd compare``: pairing, metrics on identical sets, pairwise rounds,
caching, bad inputs, reports (cmmd.eval.evaluate, cmmd.eval.report, cmmd.commands.*).

No network weights are needed: a cheap stand-in replaces I3D (the real port is tested in
test_i3d.py) and CREPE runs with random weights (test_fad.py covers the real ones).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import wavfile

from cmmd.cli import main
from cmmd.data.media import write_media
from cmmd.data.synth import write_benchmark
from cmmd.errors import CmmdError
from cmmd.eval.embedders import CrepeEmbedder, CrepeNet
from cmmd.eval.evaluate import EvalSettings, evaluate, load_metrics, write_metrics
from cmmd.eval.pairing import pair_folders
from cmmd.eval.report import write_report

FAST = {"n_boot": 200, "set_boot": 5, "fvd_frames": 9}


class ColourStatsNet(torch.nn.Module):
    """Stands in for I3D: 1024-d 'pool' features from per-channel statistics of the clip."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.proj = torch.nn.Parameter(torch.randn(6, 1024, generator=generator))
        self.logits = torch.nn.Linear(1024, 400)

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stats = torch.cat([video.mean(dim=(2, 3, 4)), video.std(dim=(2, 3, 4))], dim=1)
        pool = torch.tanh(stats @ self.proj)
        return self.logits(pool), pool


@pytest.fixture(scope="module")
def nets() -> dict[str, object]:
    torch.manual_seed(0)
    return {"i3d_model": ColourStatsNet().eval(), "embedder": CrepeEmbedder("tiny", hop=0.25, model=CrepeNet(4).eval())}


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """ref: 4 impacts + 2 dance clips (2 s, 32 px) with sidecars; other: the same names, other seeds;
    pairs: other as generation 1 and ref as generation 2 of each condition."""
    root = tmp_path_factory.mktemp("bench")
    for name, seed in (("ref", 0), ("other", 7)):
        write_benchmark(root / name, "impacts", 4, seed=seed, duration=2.0, size=32)
        write_benchmark(root / name, "dance", 2, seed=seed, duration=2.0, size=32)
    pairs = root / "pairs"
    pairs.mkdir()
    for clip in sorted((root / "ref").glob("*.mp4")):
        shutil.copy(root / "other" / clip.name, pairs / f"{clip.stem}__g1.mp4")
        shutil.copy(clip, pairs / f"{clip.stem}__g2.mp4")
    return {"root": root, "ref": root / "ref", "other": root / "other", "pairs": pairs}


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CMMD_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_reference_against_itself_scores_perfectly(bench: dict[str, Path], nets: dict[str, object]) -> None:
    result = evaluate(bench["ref"], bench["ref"], EvalSettings(**FAST), progress=False, **nets)
    m = result["metrics"]
    assert abs(m["fvd[i3d-logits]"]["point"]) < 1e-6
    assert m["kvd[i3d-logits]"]["point"] == pytest.approx(0.0, abs=1e-9)
    assert abs(m["fad[crepe-tiny]"]["point"]) < 1e-6
    per_sample = m["fad_per_sample[crepe-tiny]"]
    assert per_sample["point"] == pytest.approx(per_sample["baseline"]["point"])
    for key in ("beat_hit_rate_100ms", "beat_hit_rate_500ms", "sync_v2a_recall", "sync_a2v_recall"):
        assert m[key]["point"] == 1.0, key
    assert m["sync_v2a_f1"]["n"] == 4 and m["beat_hit_rate_100ms[sidecar]"]["n"] == 2
    assert m["sync_v2a_f1"]["baseline"]["point"] < 0.8
    assert m["av_offset_ms"]["point"] == pytest.approx(m["av_offset_ms"]["baseline"]["point"])
    assert result["items"] == {"names": result["items"]["names"], "conditions": 6, "generations_per_condition": 1,
                               "sidecars": 6}
    assert result["embedders"]["audio"] == "crepe-tiny"


def test_pairwise_rounds_caching_and_reports(bench: dict[str, Path], nets: dict[str, object], tmp_path: Path) -> None:
    settings = EvalSettings(metrics=("fvd", "kvd", "fad"), **FAST)
    result = evaluate(bench["pairs"], bench["ref"], settings, progress=False, **nets)
    assert result["items"]["generations_per_condition"] == 2
    fvd = result["metrics"]["fvd[i3d-logits]"]
    assert len(fvd["per_round"]) == 2 and abs(fvd["per_round"][1]) < 1e-6 < fvd["per_round"][0]
    assert fvd["point"] == pytest.approx(np.mean(fvd["per_round"]))
    per_sample = result["metrics"]["fad_per_sample[crepe-tiny]"]
    name = result["items"]["names"][0]
    assert per_sample["per_generation"][name][1] == pytest.approx(per_sample["baseline"]["values"][0])
    assert per_sample["per_item"][name] == pytest.approx(np.mean(per_sample["per_generation"][name]))
    again = evaluate(bench["pairs"], bench["ref"], settings, progress=False, **nets)
    assert again["cache"]["misses"] == 0 and again["cache"]["hits"] > 0
    assert again["metrics"]["fad[crepe-tiny]"]["point"] == result["metrics"]["fad[crepe-tiny]"]["point"]
    path = write_metrics(result, tmp_path / "out" / "metrics.json")
    assert "NaN" not in path.read_text()
    assert load_metrics(path.parent)["metrics"].keys() == result["metrics"].keys()
    md, html = write_report(result, tmp_path / "out")
    assert "fvd[i3d-logits]" in md.read_text() and "plots/per_item.png" in html.read_text()
    assert (tmp_path / "out" / "plots" / "set_metrics.png").is_file()


def test_pairing_errors_say_what_is_missing(bench: dict[str, Path], tmp_path: Path) -> None:
    gen = tmp_path / "gen"
    gen.mkdir()
    for clip in sorted(bench["ref"].glob("impacts_*.mp4"))[:3]:
        shutil.copy(clip, gen / clip.name)
    shutil.copy(clip, gen / "stray.mp4")
    with pytest.raises(CmmdError) as err:
        pair_folders(gen, bench["ref"])
    message = str(err.value)
    assert "no generated clip for 3 reference item(s): dance_00000, dance_00001, impacts_00003" in message
    assert "no reference clip for 1 generated item(s): stray" in message
    uneven = tmp_path / "uneven"
    shutil.copytree(bench["pairs"], uneven)
    next(uneven.glob("*__g2.mp4")).unlink()
    with pytest.raises(CmmdError, match=r"every condition needs 2 generation.*\(1\)"):
        pair_folders(uneven, bench["ref"])
    with pytest.raises(CmmdError, match="--pairwise"):
        pair_folders(bench["pairs"], bench["ref"], pairwise=5)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CmmdError, match="no media files"):
        pair_folders(tmp_path / "empty", bench["ref"])
    with pytest.raises(CmmdError, match="unknown metric"):
        EvalSettings(metrics=("fvd", "clip-score"))


def test_bad_clips_give_clear_errors_or_nan(tmp_path: Path, nets: dict[str, object]) -> None:
    ref, gen = tmp_path / "ref", tmp_path / "gen"
    ref.mkdir()
    gen.mkdir()
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (20, 32, 32, 3), dtype=np.uint8)
    for i in range(3):
        audio = (0.1 * rng.standard_normal(32_000)).astype(np.float32)
        write_media(ref / f"c{i}.mp4", frames, audio, 10, 16_000)
        write_media(gen / f"c{i}.mp4", frames, np.zeros(32_000, dtype=np.float32), 10, 16_000)  # silent
    result = evaluate(gen, ref, EvalSettings(metrics=("fad", "beat", "offset"), **FAST), progress=False, **nets)
    m = result["metrics"]
    assert np.isfinite(m["fad[crepe-tiny]"]["point"]) and np.isfinite(m["fad_per_sample[crepe-tiny]"]["point"])
    assert m["beat_gen_precision_100ms"]["n_dropped"] == 3  # no beat tracked in silence: NaN, dropped
    assert m["av_offset_ms"]["n_dropped"] == 3 and np.isnan(m["av_offset_ms"]["point"])
    write_media(gen / "c1.mp4", frames[:1], np.zeros(1600, dtype=np.float32), 10, 16_000, overwrite=True)
    result = evaluate(gen, ref, EvalSettings(metrics=("fvd",), **FAST), progress=False, **nets)
    assert result["items"]["names"] == ["c0", "c2"]
    assert [(s["source"], s["kind"]) for s in result["skipped"]] == [(str(gen / "c1.mp4"), "too_short")]
    assert "1 frame(s) at 10 fps" in result["skipped"][0]["reason"]


def test_audio_only_folders_skip_video_metrics_or_refuse_them(tmp_path: Path, nets: dict[str, object]) -> None:
    rng = np.random.default_rng(1)
    for folder in ("ref", "gen"):
        (tmp_path / folder).mkdir()
        for i in range(2):
            wave = (3000 * rng.standard_normal(24_000)).astype(np.int16)
            wavfile.write(tmp_path / folder / f"a{i}.wav", 16_000, wave)
    result = evaluate(tmp_path / "gen", tmp_path / "ref", EvalSettings(metrics=("fvd", "fad"), **FAST),
                      progress=False, **nets)
    assert list(result["metrics"]) == ["fad[crepe-tiny]", "fad_per_sample[crepe-tiny]"]
    assert result["notes"][0].startswith("fvd: skipped")
    with pytest.raises(CmmdError, match="need video"):
        evaluate(tmp_path / "gen", tmp_path / "ref", EvalSettings(metrics=("fvd",), **FAST), explicit_metrics=True,
                 progress=False, **nets)


def test_cli_evaluate_and_compare(bench: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The commands end to end with the weight-free metrics; compare pairs items by name."""
    common = ["--metrics", "beat,sync,offset", "--boot", "200", "--quiet"]
    assert main(["evaluate", str(bench["ref"]), str(bench["ref"]), "--out", str(tmp_path / "same"), *common]) == 0
    assert main(["evaluate", str(bench["other"]), str(bench["ref"]), "--out", str(tmp_path / "other"), *common]) == 0
    printed = capsys.readouterr().out
    assert "beat_hit_rate_100ms" in printed and "metrics.json" in printed
    data = json.loads((tmp_path / "same" / "metrics.json").read_text())
    assert data["settings"]["metrics"] == ["beat", "sync", "offset"] and data["code"]["version"]
    assert (tmp_path / "same" / "report.html").is_file() and (tmp_path / "same" / "report.md").is_file()
    assert main(["compare", str(tmp_path / "same"), str(tmp_path / "other" / "metrics.json")]) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("beat_hit_rate_100ms "))
    assert row.split()[-1] == "6"  # pairs tested
    assert "need at least 6" in next(line for line in table.splitlines() if line.startswith("sync_v2a_f1 "))
    assert main(["evaluate", str(bench["ref"]), str(tmp_path), "--quiet"]) == 2
    assert "no media files" in capsys.readouterr().err


@pytest.fixture
def mixed_folders(tmp_path: Path, bad_media: dict[str, Path], noise_clip) -> tuple[Path, Path]:
    """ref: six good clips c0..c5 and the bad kinds by name; gen: the same names, good for c0..c5,
    and for three conditions the bad file is on the reference side instead (good generated file)."""
    ref, gen = tmp_path / "ref", tmp_path / "gen"
    ref.mkdir()
    gen.mkdir()
    for i in range(6):
        frames, audio = noise_clip(2.0, seed=i)
        write_media(ref / f"c{i}.mp4", frames, audio, 10, 16_000)
        write_media(gen / f"c{i}.mp4", frames, audio[::-1].copy(), 10, 16_000)
    frames, audio = noise_clip(2.0, seed=9)
    ref_side = {"zero_byte", "no_audio", "unknown_codec"}
    for kind, path in bad_media.items():
        if kind in ("silent", "too_short"):
            continue  # usable for evaluation (silence is scored, too short is only short)
        bad_dir, good_dir = (ref, gen) if kind in ref_side else (gen, ref)
        shutil.copy(path, bad_dir / path.name)
        write_media(good_dir / f"{path.stem}.mp4", frames, audio, 10, 16_000)
    return gen, ref


SKIPPED_KINDS = {"zero_byte": "empty", "corrupt": "unreadable", "truncated": "truncated", "no_audio": "no_audio",
                 "no_video": "no_video", "unknown_codec": "no_decoder"}


def test_a_folder_mixing_good_and_bad_files_is_evaluated_with_the_bad_ones_skipped(
        mixed_folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gen, ref = mixed_folders
    out = tmp_path / "eval"
    code = main(["evaluate", str(gen), str(ref), "--metrics", "beat,offset", "--boot", "50", "--quiet",
                 "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rows = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert {Path(r["source"]).stem: r["kind"] for r in rows} == SKIPPED_KINDS
    for r in rows:  # named on the side where it is bad, with its reason printed
        assert f"skipped {r['source']}: [{r['kind']}] {r['reason']}" in captured.err
    assert Path(next(r for r in rows if r["kind"] == "no_audio")["source"]).parent == ref
    data = json.loads((out / "metrics.json").read_text())
    assert data["items"]["names"] == [f"c{i}" for i in range(6)]
    assert data["metrics"]["beat_hit_rate_100ms"]["n"] + data["metrics"]["beat_hit_rate_100ms"]["n_dropped"] == 6
    assert "6 condition(s) evaluated, 6 file(s) skipped" in captured.out


def test_evaluate_fails_only_when_no_condition_is_left(bad_media: dict[str, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    gen.mkdir()
    ref.mkdir()
    for kind in ("corrupt", "truncated"):
        shutil.copy(bad_media[kind], gen / bad_media[kind].name)
        shutil.copy(bad_media["silent"], ref / bad_media[kind].name)
    assert main(["evaluate", str(gen), str(ref), "--metrics", "beat", "--quiet", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cmmd evaluate: error: nothing to evaluate: every one of the 2")


def test_generate_then_evaluate_on_a_mixed_folder(micro_run: Path, bad_media: dict[str, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """`cmmd generate CKPT REF --mode v2a --out OUT` on a folder with a broken file, then
    `cmmd evaluate OUT REF`: the input generate skipped is reported as skipped again (from
    OUT/failures.jsonl), not as a pairing error, and the rest is evaluated."""
    ref = tmp_path / "ref"
    write_benchmark(ref, "impacts", 2, seed=5, duration=1.2, size=16)
    shutil.copy(bad_media["truncated"], ref / "truncated.mp4")
    out = tmp_path / "out"
    assert main(["generate", str(micro_run), str(ref), "--mode", "v2a", "--steps", "2", "--out", str(out)]) == 0
    assert json.loads((out / "failures.jsonl").read_text())["kind"] == "truncated"
    capsys.readouterr()
    assert main(["evaluate", str(out), str(ref), "--out", str(tmp_path / "e"), "--metrics", "beat,sync,offset",
                 "--boot", "50", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert f"skipped {ref / 'truncated.mp4'}: [not_generated] cmmd generate skipped it (truncated" in captured.err
    data = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert data["items"]["names"] == ["impacts_00000", "impacts_00001"]
    assert [row["kind"] for row in data["skipped"]] == ["not_generated"]
    assert "beat_hit_rate_100ms" in data["metrics"]
