"""The demo end to end on a micro checkpoint: clips, generation, metrics with baseline, page."""

from __future__ import annotations

import json
from pathlib import Path

from cmmd.demo import DemoSettings, run_demo


def test_demo_writes_page_metrics_and_media(micro_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = run_demo(out, micro_run, DemoSettings(clips=2, steps=2, seconds=2.0))
    page = (out / "index.html").read_text()
    assert "shuffled pairs" in page and "impacts_00000_v2a.mp4" in page
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("v2a", "v2a_shuffled", "a2v", "a2v_shuffled"):
        f1 = saved["table"][key]["f1"]
        assert 0.0 <= f1["mean"] <= 1.0 and f1["n"] == 2
    assert len(result["per_clip"]) == 2
    for name in ("impacts_00000", "impacts_00001"):
        for suffix in ("_gt.mp4", "_v2a.mp4", "_a2v.mp4", "_spec.png", "_frames.png"):
            assert (out / f"{name}{suffix}").is_file()
