"""Time and peak memory of v2a and a2v on long inputs, whole clip vs windowed, per preset.

Every case runs in a fresh subprocess (``--case``), so its peak resident memory (``ru_maxrss``)
is its own; the child also reports its resident memory just before sampling (model, inputs and
libraries loaded), so ``peak - before`` is what sampling that length costs.

* ``tiny``: the shipped demo checkpoint through :meth:`cmmd.pipeline.Pipeline.generate`, the
  path ``cmmd generate`` takes: VAE encode of the frames or log-mel of the sound, the sampler,
  VAE decode and Griffin-Lim. Inputs are random frames / noise of the given length.
* ``small`` and ``paper``: randomly initialised networks (no trained checkpoint exists; time and
  memory do not depend on the weights) on SD-VAE-sized latents (4 x 16 x 16 a frame, 80 mel
  bins), through :func:`cmmd.diffusion.samplers.sample` with the known modality given (no codec
  or vocoder: the SD-VAE is not shipped).

Sampler steps are timed one by one (the sampler's callback), in wall time and in this process's
CPU time: on a machine shared with other jobs the wall time stretches with the load, the CPU
time (one thread) much less, so it is the better estimate of the wall time on an idle core.
``s/step`` is the mean over the steps after the first (the first also holds the encoding) and
``other s`` the rest of the run (encoding, decoding, vocoder), so a ``k``-step run takes about
``other + k * s/step``. A case is skipped, and says so, when the previous length of the
same preset and windowing predicts a step over ``--max-step-s`` or a peak over ``--max-gib``
(linear in the input's length). For ``small`` and ``paper`` a2v runs at the shortest length
only: without a codec or vocoder it is the same network computation as v2a on the same shapes
(only which modality the sampler replaces differs), which that one measurement checks.

``--sync N``: instead, sync of the shipped demo model on ``N`` rendered impacts clips of each
``--seconds`` length (one object, as it was trained), whole clip vs windowed, 25 DDIM steps:
event F1 (``cmmd.eval.sync.score.clip_sync_scores``) over the clip and over the events within
0.25 s of a window edge (detected or ground truth), where a seam would show.

The longest whole-clip input that fits a memory budget (``--budget-gib``, 24) is *estimated*
per preset by extending the line through the two longest measured whole-clip peaks.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/long_inputs.py --out docs/results/long_inputs.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

WINDOW_S = 1.8  # the models' training length (18 frames at 10 fps)
FPS, SAMPLE_RATE, HOP = 10, 16_000, 256


def _rss_mib() -> float:
    """Current resident memory of this process in MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """One measurement, in this process: returns seconds per step, other seconds, memory."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    seconds, mode, steps = case["seconds"], case["mode"], case["steps"]
    window = WINDOW_S if case["windowed"] else None
    stamps: list[tuple[float, float]] = []

    def callback(info: dict[str, Any]) -> None:
        stamps.append((time.perf_counter(), time.process_time()))

    num_frames = round(seconds * FPS)
    if case["preset"] == "tiny":
        from cmmd.assets import DEMO_CHECKPOINT
        from cmmd.pipeline import Pipeline, SamplingSettings

        pipe = Pipeline.from_checkpoint(DEMO_CHECKPOINT)
        rng = np.random.default_rng(0)
        frames = rng.integers(0, 256, (1, num_frames, pipe.size, pipe.size, 3), dtype=np.uint8)
        wave = (0.1 * rng.standard_normal((1, round(seconds * pipe.sample_rate)))).astype(np.float32)
        before = _rss_mib()
        callback({})
        pipe.generate(mode, SamplingSettings(steps=steps, window=window), frames=frames if mode == "v2a" else None,
                      wave=wave if mode == "a2v" else None, callback=callback)
    else:
        from cmmd.diffusion.denoiser import JointDenoiser
        from cmmd.diffusion.guidance import Condition
        from cmmd.diffusion.samplers import sample
        from cmmd.diffusion.schedules import make_schedule
        from cmmd.diffusion.windows import WindowedDenoiser
        from cmmd.models.presets import build_model

        torch.manual_seed(0)
        model = build_model(case["preset"]).eval()
        schedule = make_schedule("cosine", 1000)
        denoiser = JointDenoiser(model, schedule, "v")
        video_shape = (1, num_frames, 4, 16, 16)
        audio_shape = (1, 80, round(seconds * SAMPLE_RATE) // HOP)
        if window is not None:
            frames_w = round(window * FPS)
            denoiser = WindowedDenoiser(denoiser, num_frames, audio_shape[-1], frames_w, frames_w // 2)
        known = torch.randn(video_shape if mode == "v2a" else audio_shape)
        condition = Condition(mode, **{"video0" if mode == "v2a" else "audio0": known})
        before = _rss_mib()
        callback({})
        sample(denoiser, schedule, video_shape, audio_shape, steps=steps, condition=condition,
               generator=torch.Generator().manual_seed(0), callback=callback)
    callback({})
    result = {**case, "rss_before_mib": before, "peak_mib": _peak_mib()}
    for clock, name in ((0, "wall"), (1, "cpu")):
        times = [b[clock] - a[clock] for a, b in zip(stamps[:-1], stamps[1:])]  # encode+step 1, ..., step k, rest
        per_step = sum(times[1:steps]) / (steps - 1)
        result[f"{name}_s_per_step"] = per_step
        result[f"{name}_other_s"] = sum(times) - per_step * steps
    return result


def near_seam_f1(pred: list[float], truth: list[float], seams: list[float], within: float = 0.25,
                 tolerance: float = 0.1) -> tuple[float, int]:
    """Event F1 (one-to-one matching within ``tolerance`` s over the whole clip) counted over the
    events within ``within`` s of a seam, and how many ground-truth events that is."""
    from cmmd.eval.sync.score import match_events

    matches, _ = match_events(pred, truth, tolerance)
    hit_pred, hit_truth = {i for i, _ in matches}, {j for _, j in matches}
    near_pred = [i for i, t in enumerate(pred) if any(abs(t - s) <= within for s in seams)]
    near_truth = [j for j, t in enumerate(truth) if any(abs(t - s) <= within for s in seams)]
    p = sum(i in hit_pred for i in near_pred) / len(near_pred) if near_pred else 1.0
    r = sum(j in hit_truth for j in near_truth) / len(near_truth) if near_truth else 1.0
    return (2 * p * r / (p + r) if p + r else 0.0), len(near_truth)


def sync_comparison(clips: int, lengths: list[float], steps: int = 25) -> list[dict[str, Any]]:
    """Whole clip vs windowed sync of the demo model (module docstring, ``--sync``)."""
    import numpy as np
    import torch

    from cmmd.assets import DEMO_CHECKPOINT
    from cmmd.data.synth import render_clip
    from cmmd.diffusion.windows import window_spans
    from cmmd.eval.sync.audio import detect_audio_events_mel
    from cmmd.eval.sync.score import clip_sync_scores
    from cmmd.eval.sync.video import detect_video_events
    from cmmd.pipeline import Pipeline, SamplingSettings

    torch.set_num_threads(1)
    pipe = Pipeline.from_checkpoint(DEMO_CHECKPOINT)
    rows = []
    for seconds in lengths:
        rendered = [render_clip("impacts", 1000 + i, duration=seconds, size=pipe.size, fps=round(pipe.fps),
                                sample_rate=pipe.sample_rate) for i in range(clips)]
        frames = np.stack([c.frames for c in rendered])
        waves = np.stack([c.audio for c in rendered])
        num_frames = frames.shape[1]
        spans = window_spans(num_frames, round(WINDOW_S * pipe.fps), round(WINDOW_S * pipe.fps) // 2)
        seams = sorted({a for a, _ in spans[1:]} | {b for _, b in spans[:-1]})
        seams_s = [f / pipe.fps for f in seams]
        for mode in ("v2a", "a2v"):
            for window in (None, WINDOW_S):
                start = time.process_time()
                gen = pipe.generate(mode, SamplingSettings(steps=steps, window=window),
                                    **({"frames": frames} if mode == "v2a" else {"wave": waves}))
                cpu = time.process_time() - start
                f1, seam_f1, n_near = [], [], 0
                for i, clip in enumerate(rendered):
                    scores = clip_sync_scores(gen.mel[i] if mode == "v2a" else None,
                                              gen.frames[i] if mode == "a2v" else None, clip.meta, mode)
                    f1.append(scores["f1"])
                    if mode == "v2a":
                        pred = [e.time for e in detect_audio_events_mel(gen.mel[i], pipe.sample_rate, HOP)]
                    else:
                        pred = [e.time for e in detect_video_events(gen.frames[i], pipe.fps)]
                    near, n = near_seam_f1(pred, [e["time"] for e in clip.meta["events"]], seams_s)
                    seam_f1.append(near)
                    n_near += n
                rows.append({"seconds": seconds, "mode": mode, "windowed": window is not None, "clips": clips,
                             "steps": steps, "f1": float(np.mean(f1)), "f1_near_seams": float(np.mean(seam_f1)),
                             "events_near_seams": n_near, "seams_per_clip": len(seams), "cpu_s": cpu})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def sync_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| input s | mode | sampling | clips | event F1 | F1 near window edges | GT events near edges | "
             "CPU s (all clips) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        how = f"windowed {WINDOW_S:g} s / {WINDOW_S / 2:g} s overlap" if r["windowed"] else "whole clip"
        lines.append(f"| {r['seconds']:g} | {r['mode']} | {how} | {r['clips']} | {r['f1']:.3f} | "
                     f"{r['f1_near_seams']:.3f} | {r['events_near_seams']} | {r['cpu_s']:.0f} |")
    return "\n".join(lines)


def _child(case: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)], capture_output=True, text=True,
                          env=env, check=False)
    if done.returncode != 0:
        return {**case, "skipped": f"failed: {done.stderr.strip().splitlines()[-1:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "paper"])
    parser.add_argument("--seconds", nargs="+", type=float, default=[30.0, 90.0, 180.0])
    parser.add_argument("--windowed-seconds", nargs="+", type=float, default=None,
                        help="lengths for windowed sampling (default: --seconds)")
    parser.add_argument("--modes", nargs="+", default=["v2a", "a2v"])
    parser.add_argument("--steps", type=int, default=3, help="sampler steps per case, >= 2")
    parser.add_argument("--max-step-s", type=float, default=180.0)
    parser.add_argument("--max-gib", type=float, default=8.0, help="skip cases predicted to peak above this here")
    parser.add_argument("--budget-gib", type=float, default=24.0, help="memory budget for the longest-input estimate")
    parser.add_argument("--out", type=Path, default=Path("docs/results/long_inputs.json"))
    parser.add_argument("--sync", type=int, default=0, metavar="N",
                        help="instead: whole vs windowed sync of the demo model on N clips of each --seconds")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case is not None:
        print(json.dumps(run_case(json.loads(args.case))))
        return
    if args.sync:
        rows = sync_comparison(args.sync, args.seconds)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))
        print(sync_markdown(rows))
        return
    results: list[dict[str, Any]] = []
    for preset in args.presets:
        for windowed in (False, True):
            for mode in args.modes:
                last: dict[str, Any] | None = None
                for seconds in sorted(args.windowed_seconds or args.seconds if windowed else args.seconds):
                    case = {"preset": preset, "mode": mode, "windowed": windowed, "seconds": seconds,
                            "steps": args.steps}
                    if last is not None and "skipped" not in last:
                        ratio = seconds / last["seconds"]
                        step = last["cpu_s_per_step"] * ratio
                        peak = (last["rss_before_mib"] + (last["peak_mib"] - last["rss_before_mib"]) * ratio) / 1024
                        if step > args.max_step_s or peak > args.max_gib:
                            case["skipped"] = (f"predicted {step:.0f} s/step, {peak:.1f} GiB peak from "
                                               f"{last['seconds']:g} s (limits {args.max_step_s:g} s, "
                                               f"{args.max_gib:g} GiB)")
                    elif last is not None:
                        case["skipped"] = "a shorter input was skipped"
                    if preset != "tiny" and mode == "a2v" and seconds != min(args.seconds):
                        case["skipped"] = "same network computation as v2a (a2v measured at the shortest length)"
                    result = case if "skipped" in case else _child(case)
                    print(json.dumps(result), flush=True)
                    results.append(result)
                    last = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(markdown(results, args.steps, args.budget_gib))


def longest_fitting(results: list[dict[str, Any]], preset: str, budget_gib: float) -> float | None:
    """Seconds of input whose whole-clip v2a peak reaches ``budget_gib``, on the line through the
    two longest measured whole-clip peaks of ``preset`` (None with fewer than two)."""
    points = sorted((r["seconds"], r["peak_mib"]) for r in results
                    if r["preset"] == preset and r["mode"] == "v2a" and not r["windowed"] and "skipped" not in r)
    if len(points) < 2:
        return None
    (s0, p0), (s1, p1) = points[-2:]
    slope = (p1 - p0) / (s1 - s0)
    return s1 + (budget_gib * 1024 - p1) / slope if slope > 0 else float("inf")


def markdown(results: list[dict[str, Any]], steps: int, budget_gib: float) -> str:
    """The results as a Markdown table, then the estimated longest whole-clip input per preset."""
    lines = ["| preset | mode | sampling | input s | CPU s/step | wall s/step | CPU other s | est. 25 steps s "
             "| peak RSS MiB | RSS before sampling MiB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        how = f"windowed {WINDOW_S:g} s / {WINDOW_S / 2:g} s overlap" if r["windowed"] else "whole clip"
        head = f"| {r['preset']} | {r['mode']} | {how} | {r['seconds']:g} |"
        if "skipped" in r:
            lines.append(f"{head} skipped: {r['skipped']} | | | | | |")
            continue
        total = max(0.0, r["cpu_other_s"]) + 25 * r["cpu_s_per_step"]
        lines.append(f"{head} {r['cpu_s_per_step']:.2f} | {r['wall_s_per_step']:.2f} | {r['cpu_other_s']:.1f} | "
                     f"{total:.0f} | {r['peak_mib']:.0f} | {r['rss_before_mib']:.0f} |")
    lines.append("")
    lines.append(f"Measured with {steps} sampler steps per case; est. 25 steps = CPU other + 25 x CPU s/step. "
                 f"Estimated longest whole-clip input within {budget_gib:g} GiB (line through the two longest "
                 "measured whole-clip v2a peaks):")
    for preset in dict.fromkeys(r["preset"] for r in results):
        longest = longest_fitting(results, preset, budget_gib)
        text = "not enough measurements" if longest is None else f"about {longest / 60:.0f} min"
        lines.append(f"- {preset}: {text}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
