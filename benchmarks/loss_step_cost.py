"""Training-step cost of each objective beyond the paper against nCMMD (``contrastive: none``), one run.

Writes a small synthetic impacts set (24 clips of 3.6 s at 32 x 32) and uses the study's tiny CPU
model (configs/study_contrastive_cpu.yaml's base: batch 8, 1.8 s windows, clean conditioning 0.8).

1. Smoke: each recipe trains ``--smoke-steps`` steps through ``cmmd.train.loop.train``, exactly as
   ``cmmd train`` runs it (negatives drawn, K draws for InfoNCE, DPO from the ``none`` run's
   checkpoint as ``init`` with its frozen reference); the last logged loss must be finite.
2. Cost: one model per recipe, its optimizer step timed as the loop runs it (negatives,
   ``training_loss``, backward, AdamW), recipes alternating ``--steps-per-round`` steps at a time
   for ``--rounds`` rounds so that a change in machine load hits all of them; the median CPU
   time (``time.process_time``) and wall time per step, and their ratio to ``none``.
3. v2a sampling (DDIM, 25 steps) from the ``none`` run with and without sync guidance, alternately.

With one thread the CPU time hardly depends on other jobs' load; wall time does.

    OMP_NUM_THREADS=1 python benchmarks/loss_step_cost.py
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from cmmd.audio.mel import MelStats
from cmmd.config import from_dict
from cmmd.data.dataset import ClipDataset
from cmmd.data.negatives import make_negatives
from cmmd.data.prepare import load_item_metas, write_item, write_mel_stats
from cmmd.data.synth import render_clip
from cmmd.diffusion.losses import concat_negatives, training_loss
from cmmd.diffusion.schedules import make_schedule
from cmmd.models.presets import build_model
from cmmd.train.config import TrainConfig
from cmmd.train.loop import load_init, train
from cmmd.train.scalar_log import read_log

BASE = {
    "batch_size": 8, "log_every": 1, "checkpoint_every": 0, "ema_decay": 0.995, "device": "cpu",
    "data": {"clip_frames": 18, "num_workers": 0},
    "model": {"preset": "tiny", "overrides": {"patch_size": 4, "fusion_pool": "meanmax", "audio_width_mult": 2}},
    "optim": {"lr": 1e-3, "warmup_steps": 5},
}
CLEAN = {"prediction": "v", "clean_condition_prob": 0.8}
SHIFTS = {"kinds": ["shift"], "shift_ms": [40.0, 400.0]}
# name -> (diffusion.loss fields, negatives fields, needs init)
RECIPES: dict[str, tuple[dict, dict, bool]] = {
    "none": ({}, {}, False),
    "paper (K=1)": ({"contrastive": "paper", "eta": 1e-4}, {}, False),
    "bounded (K=1)": ({"contrastive": "bounded", "eta": 0.1}, {}, False),
    "infonce K=2": ({"contrastive": "infonce", "num_negatives": 2, "eta": 0.1}, {}, False),
    "infonce K=4": ({"contrastive": "infonce", "num_negatives": 4, "eta": 0.1}, {}, False),
    "sync term": ({"sync_weight": 0.1}, {}, False),
    "dpo (K=1, shifts)": ({"contrastive": "dpo", "eta": 1.0}, SHIFTS, True),
}


# Rows through the network per step at batch B = 8: B positives + K audio + K video negatives per
# sample (+ the same rows again without gradient through the DPO reference).
ROWS = {"none": "8", "paper (K=1)": "24", "bounded (K=1)": "24", "infonce K=2": "40", "infonce K=4": "72",
        "sync term": "8", "dpo (K=1, shifts)": "24 + 24 no-grad"}


def write_data(root: Path, clips: int = 24) -> Path:
    for i in range(clips):
        clip = render_clip("impacts", seed=i, duration=3.6, size=32)
        meta = {"source": f"clip{i}.mp4", "fps": 10, "sample_rate": 16000, "size": 32,
                "num_frames": len(clip.frames), "num_samples": len(clip.audio), "duration": 3.6}
        write_item(root / "items" / f"clip{i}", clip.frames, clip.audio, meta)
    write_mel_stats(root, load_item_metas(root))
    return root


def recipe_config(name: str, out: Path, data: Path, steps: int, init: Path | None) -> TrainConfig:
    loss, negatives, needs_init = RECIPES[name]
    cfg = {**BASE, "out_dir": str(out), "steps": steps, "data": {**BASE["data"], "root": str(data)},
           "diffusion": {"loss": {**CLEAN, **loss}}, "negatives": negatives}
    if needs_init:
        cfg["init"] = str(init)
    return from_dict(TrainConfig, cfg)


def smoke(name: str, out: Path, data: Path, steps: int, init: Path | None) -> float:
    """Train ``steps`` steps with the loop; the last logged loss."""
    train(recipe_config(name, out, data, steps, init), progress=False)
    return read_log(out)[-1]["loss"]


def step_function(cfg: TrainConfig, data: Path, init: Path) -> Callable[[int], None]:
    """One optimizer step of ``cfg``'s objective as ``cmmd.train.loop`` runs it, on a fixed batch."""
    clips = ClipDataset(data, clip_frames=cfg.data.clip_frames, seed=0)
    batch = [clips.get(i, 0) for i in range(cfg.batch_size)]
    video = torch.stack([b["video"] for b in batch])
    audio = MelStats.load(data / "mel_stats.json").normalize(torch.stack([b["mel"] for b in batch]))
    torch.manual_seed(0)
    model = build_model(cfg.model.preset, cfg.model.overrides)
    reference = None
    if cfg.diffusion.loss.contrastive == "dpo":
        load_init(model, init)
        reference = build_model(cfg.model.preset, cfg.model.overrides)
        load_init(reference, init)
        reference.eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr)
    schedule = make_schedule(cfg.diffusion.schedule, cfg.diffusion.num_steps)
    loss_cfg = cfg.diffusion.loss

    def step(seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        negatives = None
        if loss_cfg.contrastive != "none":
            negatives = concat_negatives([make_negatives(video, audio, cfg.negatives, gen, fps=clips.fps,
                                                         sample_rate=clips.sample_rate)
                                          for _ in range(loss_cfg.num_negatives or 1)])
        loss, _ = training_loss(model, video, audio, negatives, schedule, loss_cfg, gen, reference)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def sampling_cost(run: Path, data: Path, repeats: int) -> dict[str, float]:
    from cmmd.pipeline import Pipeline, SamplingSettings

    pipe = Pipeline.from_checkpoint(run)
    frames = ClipDataset(data, clip_frames=18, seed=0).get(0, 0)["video"]
    frames = ((frames.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()[None]
    times: dict[str, list[float]] = {"v2a DDIM 25": [], "v2a DDIM 25 + sync guidance 1.0": []}
    for _ in range(repeats):
        for name, w in (("v2a DDIM 25", 0.0), ("v2a DDIM 25 + sync guidance 1.0", 1.0)):
            t0 = time.perf_counter()
            pipe.generate("v2a", SamplingSettings(steps=25, sync_guidance=w), frames=frames)
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke-steps", type=int, default=4)
    parser.add_argument("--steps-per-round", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = write_data(work / "data")
        init = work / "smoke" / "none"
        last_loss = {}
        for name in RECIPES:
            last_loss[name] = smoke(name, work / "smoke" / name.replace(" ", "_"), data, args.smoke_steps, init)
            print(f"smoke: {name}: {args.smoke_steps} steps, last loss {last_loss[name]:.4g}", flush=True)
        steps = {name: step_function(recipe_config(name, work / "unused", data, 1, init), data, init)
                 for name in RECIPES}
        for fn in steps.values():  # warm-up
            fn(0)
        cpu: dict[str, list[float]] = {name: [] for name in RECIPES}
        wall: dict[str, list[float]] = {name: [] for name in RECIPES}
        for r in range(args.rounds):
            for name, fn in steps.items():
                for k in range(args.steps_per_round):
                    c0, w0 = time.process_time(), time.perf_counter()
                    fn(1 + r * args.steps_per_round + k)
                    cpu[name].append(time.process_time() - c0)
                    wall[name].append(time.perf_counter() - w0)
        base_cpu, base_wall = statistics.median(cpu["none"]), statistics.median(wall["none"])
        load = os.getloadavg()[0]
        print(f"\n{args.threads} thread(s); batch 8, 18 x 3 x 32 x 32 video + 80 x 112 mels; "
              f"{args.rounds} rounds x {args.steps_per_round} steps per recipe, alternating; 1-min load {load:.1f}")
        print("| recipe | network rows / step | CPU s/step | x none | wall s/step | x none | smoke loss |")
        print("|---|---|---|---|---|---|---|")
        for name in RECIPES:
            c, w = statistics.median(cpu[name]), statistics.median(wall[name])
            print(f"| {name} | {ROWS[name]} | {c:.3f} | {c / base_cpu:.2f} | {w:.3f} | {w / base_wall:.2f} | "
                  f"{last_loss[name]:.4g}{'' if math.isfinite(last_loss[name]) else ' (NOT FINITE)'} |")
        sampling = sampling_cost(init, data, repeats=2)
        plain = sampling["v2a DDIM 25"]
        print("\n| sampling | wall s/clip | x plain |\n|---|---|---|")
        for name, seconds in sampling.items():
            print(f"| {name} | {seconds:.2f} | {seconds / plain:.2f} |")


if __name__ == "__main__":
    main()
