"""Training-step cost of a study's fine-tunes, through the study's own configs and training loop.

For ``configs/study_sync_dpo_cpu.yaml`` (default): a small training set made as the study makes
its own (``--clips`` clips instead of 400; a step's cost does not depend on the number of clips),
the source system's seed-0 run trained ``--source-steps`` steps, then each fine-tune system's
seed-0 run (its TrainConfig from ``cmmd.apps.study.config.train_config``, ``steps`` and
``log_every`` changed, no periodic checkpoints) trained ``--steps`` steps from it, the systems
alternating for ``--rounds`` rounds. Per run: wall seconds per step from its ``log.csv`` (the
steps after the first logged one, so startup is left out) and CPU seconds per step
(``time.process_time`` of the whole call, startup included). Medians over rounds.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/finetune_step_cost.py
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from cmmd.apps.study import load_study_config
from cmmd.apps.study.config import train_config
from cmmd.apps.study.run import prepare_training_set
from cmmd.train.loop import train


def log_seconds(run_dir: Path) -> dict[int, float]:
    with (run_dir / "log.csv").open() as f:
        return {int(row["step"]): float(row["seconds"]) for row in csv.DictReader(f)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/study_sync_dpo_cpu.yaml")
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--source-steps", type=int, default=10)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--log-every", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = load_study_config(args.config)
    cfg = replace(cfg, data=replace(cfg.data, clips=args.clips))
    fine_tunes = [name for name, spec in cfg.systems.items() if spec.init_from is not None]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        prepare_training_set(cfg, out, {})
        runs = {run.system: run for run in cfg.runs() if run.seed in (0, None)}
        for name in fine_tunes:  # each source once, its last checkpoint being the fine-tunes' init
            source = cfg.source_run(name, runs[name].seed)
            assert source is not None
            if not (out / "runs" / source.name / "checkpoints").is_dir():
                train(replace(train_config(cfg, source, out), steps=args.source_steps, checkpoint_every=0),
                      progress=False)
        wall: dict[str, list[float]] = {n: [] for n in fine_tunes}
        cpu: dict[str, list[float]] = {n: [] for n in fine_tunes}
        for r in range(args.rounds):
            for name in fine_tunes:
                tc = train_config(cfg, runs[name], out)
                tc = replace(tc, out_dir=f"{tc.out_dir}-round{r}", steps=args.steps, log_every=args.log_every,
                             checkpoint_every=0)
                c0 = time.process_time()
                train(tc, progress=False)
                cpu[name].append((time.process_time() - c0) / args.steps)
                seconds = log_seconds(Path(tc.out_dir))
                first, last = min(seconds), max(seconds)
                wall[name].append((seconds[last] - seconds[first]) / (last - first))
                print(f"round {r}: {name}: {wall[name][-1]:.3f} s/step wall, {cpu[name][-1]:.3f} s/step CPU, "
                      f"1-min load {os.getloadavg()[0]:.1f}", flush=True)
    base = fine_tunes[0]
    print(f"\n{args.config}: {args.rounds} rounds x {args.steps} steps per system, 1 thread, medians")
    print("| system | contrastive | wall s/step | x first | CPU s/step (with startup) | x first |")
    print("|---|---|---|---|---|---|")
    for name in fine_tunes:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        contrastive = train_config(cfg, runs[name], Path("OUT")).diffusion.loss.contrastive
        print(f"| {name} | {contrastive} | {w:.3f} | {w / statistics.median(wall[base]):.2f} | {c:.3f} | "
              f"{c / statistics.median(cpu[base]):.2f} |")


if __name__ == "__main__":
    main()
