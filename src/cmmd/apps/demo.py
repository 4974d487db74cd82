"""The one-command demo: held-out synthetic clips -> v->a and a->v -> sync metrics -> HTML page.

``run_demo`` generates held-out *impacts* clips (the TEST split of :mod:`cmmd.data.splits`), samples
audio for their videos and videos for their audios with a trained checkpoint, scores event sync
against the exact ground truth next to a shuffled-pairs baseline, and writes
``index.html`` with side-by-side videos with sound, spectrograms and the metrics table.
``train_demo_model`` makes the checkpoint from scratch (``cmmd demo --train``).
"""

from __future__ import annotations

import html
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cmmd.assets import DEMO_CONFIG, DEMO_VAE
from cmmd.conventions import FPS, HOP
from cmmd.data.media import write_media
from cmmd.data.splits import TEST, TRAIN, read_clips, write_split_clips
from cmmd.data.synth import write_benchmark
from cmmd.errors import CmmdError
from cmmd.eval.plots import save_frame_strip, save_spectrograms
from cmmd.eval.sync.heldout import score_heldout
from cmmd.generation import trim_to_frames
from cmmd.pipeline import Pipeline, SamplingSettings


@dataclass
class DemoSettings:
    """What the demo generates and how: held-out clips, their length, and the sampler."""

    clips: int = 8
    seconds: float = 3.6  # twice the 1.8 s training length, as the paper tests
    method: str = "ddim"
    steps: int = 50
    guidance_scale: float = 0.0
    seed: int = 0
    tolerance: float = 0.1


def evaluate_sync(pipe: Pipeline, clips_dir: Path, names: list[str], settings: DemoSettings,
                  out_dir: Path | None = None) -> dict[str, Any]:
    """Generate v->a and a->v for ``names`` and score them against their JSON ground truth
    (:func:`cmmd.eval.sync.heldout.score_heldout`).

    Returns per-clip and aggregated scores (mean with bootstrap 95 % CI) for the model and for
    the shuffled-pairs baseline. With ``out_dir``, also writes each clip's media and figures.
    """
    clips = read_clips(clips_dir, names, pipe.fps, pipe.sample_rate, pipe.size)
    frames, waves, metas = clips.frames, clips.waves, clips.metas
    sampling = SamplingSettings(settings.method, settings.steps, settings.guidance_scale, 0.0, settings.seed)
    t0 = time.time()
    v2a = pipe.generate("v2a", sampling, frames=frames)
    t_v2a = time.time() - t0
    t0 = time.time()
    a2v = pipe.generate("a2v", sampling, wave=waves)
    t_a2v = time.time() - t0
    gt_mels = pipe.log_mel(waves).cpu().numpy()
    scores = score_heldout(names, metas, v2a.mel, a2v.frames, settings.tolerance)
    result = {"settings": asdict(settings), "checkpoint_step": pipe.step, "checkpoint_version": pipe.version,
              "seconds_v2a": t_v2a, "seconds_a2v": t_a2v, **scores}
    if out_dir is not None:
        _write_media(out_dir, names, metas, frames, waves, gt_mels, v2a, a2v, pipe)
    return result


def _write_media(out_dir: Path, names: list[str], metas: list[dict], frames: np.ndarray, waves: np.ndarray,
                 gt_mels: np.ndarray, v2a: Any, a2v: Any, pipe: Pipeline) -> None:
    mel_rate = pipe.sample_rate / HOP
    for i, name in enumerate(names):
        events = [e["time"] for e in metas[i]["events"]]
        v2a_wave = trim_to_frames(v2a.wave[i], len(frames[i]), pipe.fps, pipe.sample_rate)
        a2v_wave = trim_to_frames(waves[i], len(a2v.frames[i]), pipe.fps, pipe.sample_rate)
        write_media(out_dir / f"{name}_v2a.mp4", frames[i], v2a_wave, pipe.fps, pipe.sample_rate, overwrite=True)
        write_media(out_dir / f"{name}_a2v.mp4", a2v.frames[i], a2v_wave, pipe.fps, pipe.sample_rate, overwrite=True)
        write_media(out_dir / f"{name}_gt.mp4", frames[i], waves[i], pipe.fps, pipe.sample_rate, overwrite=True)
        save_spectrograms([("ground truth", gt_mels[i]), ("generated from video (v->a)", v2a.mel[i])],
                          out_dir / f"{name}_spec.png", mel_rate, events)
        save_frame_strip([("ground truth", frames[i]), ("generated from audio (a->v)", a2v.frames[i])],
                         out_dir / f"{name}_frames.png", pipe.fps)


def _fmt(s: dict[str, float], pct: bool) -> str:
    if not np.isfinite(s["mean"]):
        return "n/a"
    k = 100.0 if pct else 1.0
    unit = "%" if pct else " ms"
    return f"{s['mean'] * k:.1f}{unit} [{s['lo'] * k:.1f}, {s['hi'] * k:.1f}]"


def metrics_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(task, F1, precision/recall, class accuracy, median offset) rows, model then baseline."""
    rows = []
    labels = {"v2a": "video -> audio", "a2v": "audio -> video"}
    for mode in ("v2a", "a2v"):
        for key, label in ((mode, labels[mode]), (f"{mode}_shuffled", f"{labels[mode]}, shuffled pairs")):
            t = result["table"][key]
            rows.append((label, _fmt(t["f1"], True),
                         f"{_fmt(t['precision'], True)} / {_fmt(t['recall'], True)}",
                         _fmt(t["class_accuracy"], True), _fmt(t["median_offset_ms"], False)))
    return rows


def print_metrics(result: dict[str, Any]) -> None:
    """The metrics table on stdout."""
    tol = int(result["settings"]["tolerance"] * 1000)
    print(f"event sync on {result['settings']['clips']} held-out clips of {result['settings']['seconds']} s "
          f"(+-{tol} ms; mean [95% bootstrap CI]):")
    head = ("task", f"F1@{tol}ms", "precision / recall", "class acc.", "median offset")
    widths = [34, 24, 48, 24, 24]
    print("  " + "".join(h.ljust(w) for h, w in zip(head, widths)))
    for row in metrics_rows(result):
        print("  " + "".join(c.ljust(w) for c, w in zip(row, widths)))


def write_html(out_dir: Path, result: dict[str, Any], names: list[str], title: str) -> Path:
    """``index.html``: metrics table, then per clip the three videos and the figures."""
    tol = int(result["settings"]["tolerance"] * 1000)
    head = ("task", f"event F1 @ +-{tol} ms", "precision / recall", "class accuracy", "median offset")
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in metrics_rows(result))
    clips = []
    for row in result["per_clip"]:
        n = row["name"]
        clips.append(f"""
<section><h3>{html.escape(n)}: v->a F1 {row['v2a']['f1']:.2f}, a->v F1 {row['a2v']['f1']:.2f}</h3>
<div class="row">
<figure><video controls src="{n}_gt.mp4"></video><figcaption>ground truth</figcaption></figure>
<figure><video controls src="{n}_v2a.mp4"></video><figcaption>real video + generated audio</figcaption></figure>
<figure><video controls src="{n}_a2v.mp4"></video><figcaption>generated video + real audio</figcaption></figure>
</div>
<img src="{n}_spec.png" alt="spectrograms"><img src="{n}_frames.png" alt="frames">
</section>""")
    s = result["settings"]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px}} video{{width:256px;image-rendering:pixelated}}
.row{{display:flex;gap:12px}} img{{max-width:100%}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Checkpoint step {result['checkpoint_step']} ({html.escape(str(result['checkpoint_version']))}).
{s['clips']} held-out <i>impacts</i> clips of {s['seconds']} s (twice the training length), sampler
{html.escape(s['method'])} with {s['steps']} steps, guidance lambda {s['guidance_scale']}. Events in generated
audio are detected on the generated log-mel (no vocoder in the loop); events in generated video are
floor contacts of the tracked object. Shuffled pairs score each output against another clip's ground
truth: the chance level.</p>
<table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{rows}</table>
<p>Sampling time: v->a {result['seconds_v2a']:.1f} s, a->v {result['seconds_a2v']:.1f} s for all clips.</p>
{''.join(clips)}
</body></html>"""
    path = out_dir / "index.html"
    path.write_text(page)
    return path


def run_demo(out_dir: Path, checkpoint: Path, settings: DemoSettings, device: str = "cpu") -> dict[str, Any]:
    """Generate, evaluate and write the page for ``checkpoint``; returns the metrics."""
    if not Path(checkpoint).exists():
        raise CmmdError(f"checkpoint {checkpoint} does not exist; run `cmmd demo --train` to make one")
    pipe = Pipeline.from_checkpoint(checkpoint, device=device)
    out_dir.mkdir(parents=True, exist_ok=True)
    clips_dir = out_dir / "clips"
    names = write_split_clips(TEST, clips_dir, settings.clips, settings.seconds, pipe.size)
    result = evaluate_sync(pipe, clips_dir, names, settings, out_dir)
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=1, default=float))
    write_html(out_dir, result, names, "cmmd demo: video <-> audio on the synthetic impacts benchmark")
    return result


def train_demo_model(work_dir: Path, minutes: float, n_train: int = 400, overrides: list[str] | None = None) -> Path:
    """Synthesise the training set, prepare it with the shipped VAE's latents (when the config
    trains on latents), and train the demo model for ``minutes``.

    Returns the run directory. The run lives in ``work_dir/run``; an existing one is moved
    aside to ``run.<timestamp>`` rather than overwritten.
    """
    from cmmd.config import load_config
    from cmmd.data.prepare import PrepareSettings, prepare_dataset
    from cmmd.train.config import TrainConfig
    from cmmd.train.loop import train
    from cmmd.video.latents import encode_prepared_dataset
    from cmmd.video.loading import load_video_codec

    cfg = load_config(TrainConfig, DEMO_CONFIG, overrides or [])
    size = 32
    synth_dir, prepared, run_dir = work_dir / "train_clips", work_dir / "prepared", work_dir / "run"
    write_benchmark(synth_dir, "impacts", n_train, seed=TRAIN.seed, duration=3.6, size=size)
    prepare_dataset(synth_dir, prepared, PrepareSettings(size=size, clip_seconds=cfg.data.clip_frames / FPS))
    if cfg.data.video == "latents":
        encode_prepared_dataset(prepared, load_video_codec(f"cmmd-vae:{DEMO_VAE}"))
    if run_dir.exists():
        aside = run_dir.with_name(f"run.{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.move(str(run_dir), aside)
        print(f"cmmd demo: moved the previous run to {aside}")
    cfg = load_config(TrainConfig, DEMO_CONFIG,
                      [f"data.root={prepared}", f"out_dir={run_dir}", f"max_minutes={minutes}", *(overrides or [])])
    t0 = time.time()
    result = train(cfg)
    print(f"cmmd demo: trained {result.step} steps in {(time.time() - t0) / 60:.1f} min")
    return run_dir
