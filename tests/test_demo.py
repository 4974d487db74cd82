"""The demo end to end on a micro checkpoint: clips, generation, metrics with baseline, page."""

from __future__ import annotations

import json
from pathlib import Path

from cmmd.apps.demo import DemoSettings, run_demo

ROOT = Path(__file__).resolve().parents[1]


def test_demo_writes_page_metrics_and_media(micro_run: Path, tmp_path: Path) -> None:
    """metrics.json is what was computed (each table row the summary of the per-clip scores, the
    shuffled baseline beside each model row), the page shows those numbers, and every mp4 decodes
    with the clip's frames and an audio track of the same length."""
    import html

    import numpy as np

    from cmmd.apps.demo import metrics_rows
    from cmmd.data.media import read_media
    from cmmd.eval.sync.heldout import TABLE_KEYS, summary

    out = tmp_path / "demo"
    settings = DemoSettings(clips=2, steps=2, seconds=2.0)
    result = run_demo(out, micro_run, settings)
    saved = json.loads((out / "metrics.json").read_text())
    np.testing.assert_equal(saved["table"], json.loads(json.dumps(result["table"], default=float)))  # NaN == NaN
    names = [row["name"] for row in saved["per_clip"]]
    assert names == ["impacts_00000", "impacts_00001"]
    for mode in ("v2a", "a2v"):
        for key in TABLE_KEYS:
            values = [row[mode][key] for row in saved["per_clip"]]
            expected = summary(values)
            row = saved["table"][mode][key]
            assert row["n"] == expected["n"] == sum(np.isfinite(v) for v in values), (mode, key)
            np.testing.assert_equal(row["mean"], expected["mean"], err_msg=f"{mode} {key}")
            assert set(saved["table"][f"{mode}_shuffled"][key]) == {"mean", "lo", "hi", "n"}
        assert saved["table"][f"{mode}_shuffled"]["f1"]["n"] == 2  # each clip scored against the other's truth
        assert 0.0 <= saved["table"][mode]["f1"]["mean"] <= 1.0

    page = (out / "index.html").read_text()
    assert "shuffled pairs" in page
    for row in metrics_rows(result):  # the numbers on the page are the saved ones, row by row
        assert "".join(f"<td>{html.escape(c)}</td>" for c in row) in page
    for clip in saved["per_clip"]:
        assert f"{clip['name']}: v->a F1 {clip['v2a']['f1']:.2f}, a->v F1 {clip['a2v']['f1']:.2f}" in page

    frames = round(settings.seconds * 10)
    for name in names:
        for suffix in ("_gt.mp4", "_v2a.mp4", "_a2v.mp4"):
            media = read_media(out / f"{name}{suffix}", fps=10, sample_rate=16000)
            assert media.frames is not None and media.frames.shape[0] == frames, (name, suffix)
            assert media.audio is not None and abs(len(media.audio) - frames * 1600) <= 1600, (name, suffix)
            assert f'src="{name}{suffix}"' in page
        for suffix in ("_spec.png", "_frames.png"):
            assert (out / f"{name}{suffix}").stat().st_size > 0 and f'src="{name}{suffix}"' in page


def test_shipped_checkpoint_syncs_held_out_clips_in_both_directions(tmp_path: Path) -> None:
    """The shipped demo model on 4 TEST clips at twice the training length, 25 DDIM steps: from
    video, nearly every impact sounded at the right time and pitch; from audio, the ball seen to
    land at each impact in the right colour; both far above the shuffled-pairs chance level
    (measured: F1 1.0 and class accuracy 1.0 both ways; shuffled 0.41 v->a, 0.54 a->v)."""
    import torch

    from cmmd.apps.demo import evaluate_sync
    from cmmd.assets import DEMO_CHECKPOINT
    from cmmd.data.splits import TEST, write_split_clips
    from cmmd.pipeline import Pipeline

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pipe = Pipeline.from_checkpoint(DEMO_CHECKPOINT)
        names = write_split_clips(TEST, tmp_path, 4, 3.6, pipe.size)
        table = evaluate_sync(pipe, tmp_path, names, DemoSettings(clips=4, seconds=3.6, steps=25))["table"]
    finally:
        torch.set_num_threads(threads)
    for mode in ("v2a", "a2v"):
        f1, chance = table[mode]["f1"]["mean"], table[f"{mode}_shuffled"]["f1"]["mean"]
        assert f1 >= 0.85 and table[mode]["class_accuracy"]["mean"] >= 0.9, (mode, table[mode])
        assert f1 - chance >= 0.3, (mode, f1, chance)


def test_shipped_checkpoint_joint_samples_are_in_sync() -> None:
    """Unconditional joint samples of the shipped model with the default sampler (video-first, 2
    redraws): each sample's video events match its own audio's well above another sample's
    (TEST sampling seeds; measured with these settings: 0.81 own, 0.23 shuffled; the paper's
    simultaneous sampling, --joint-order together, gives 0.46 here)."""
    import torch

    from cmmd.assets import DEMO_CHECKPOINT
    from cmmd.data.splits import TEST
    from cmmd.eval.sync.joint import self_consistency
    from cmmd.pipeline import Pipeline, SamplingSettings

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pipe = Pipeline.from_checkpoint(DEMO_CHECKPOINT)
        gen = pipe.generate("joint", SamplingSettings(steps=25, seed=TEST.seed), num_frames=36, batch=6)
    finally:
        torch.set_num_threads(threads)
    sc = self_consistency(list(gen.frames), list(gen.wave), pipe.fps, pipe.sample_rate)
    assert sc["own"]["mean"] >= 0.7 and sc["own"]["mean"] - sc["shuffled"]["mean"] >= 0.4, sc


def test_demo_assets_ship_in_the_package_not_the_checkout() -> None:
    """`pip install .` then `cmmd demo` anywhere: the config and checkpoint resolve through
    importlib.resources inside the package, the wheel's package data lists them, and the
    checkout's configs/demo_tiny.yaml (for `cmmd train`) is that very file."""
    import tomllib
    from importlib.resources import files

    import cmmd.apps.demo
    from cmmd.assets import DEMO_CHECKPOINT, DEMO_CONFIG, DEMO_VAE

    package = Path(str(files("cmmd")))
    for asset in (DEMO_CONFIG, DEMO_CHECKPOINT, DEMO_VAE):
        assert asset.is_file() and asset.parent == package / "assets"
    assert "__file__" not in Path(cmmd.apps.demo.__file__).read_text()
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["cmmd"]
    for asset in (DEMO_CONFIG, DEMO_CHECKPOINT, DEMO_VAE):
        assert any(asset.relative_to(package).match(p) for p in patterns), (asset, patterns)
    assert (ROOT / "configs" / "demo_tiny.yaml").resolve() == DEMO_CONFIG.resolve()
