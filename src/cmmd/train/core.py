"""The loop all trainers share (diffusion model, VAE, vocoder), and nothing model-specific.

A trainer opens its run directory (:func:`open_run`: refuse to overwrite, find the checkpoint to
resume from), restores its state, and hands :meth:`TrainingLoop.run` two callables: one
optimisation step and one checkpoint writer. The loop owns what must behave alike everywhere:
the EMA update after each step, periodic, final and interrupt checkpoints, SIGINT/SIGTERM as a
graceful stop, the ``max_minutes`` budget, the progress bar and the scalar log (``log.csv``).
Under DDP, stop decisions are taken on all ranks together and rank 0 alone writes.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from tqdm import tqdm

from cmmd.checkpoint import latest_checkpoint
from cmmd.errors import CmmdError
from cmmd.train import distributed as D
from cmmd.train.ema import update_ema
from cmmd.train.scalar_log import ScalarLog

StepFn = Callable[[int], dict[str, float]]
"""Runs optimisation step ``step`` (0-based) and returns its scalars for the log and the bar."""
SaveFn = Callable[[int], Path]
"""Writes the checkpoint after ``step`` steps (on rank 0 only) and returns its directory."""


def open_run(run_dir: Path, resume: bool, option: str, name: str) -> Path | None:
    """The checkpoint to resume from (the newest intact one), None for a fresh run.

    Without ``resume``, a run directory that holds checkpoints is refused (CmmdError naming
    ``option``, the setting that chose the directory): nothing is ever overwritten.
    """
    existing = latest_checkpoint(run_dir)
    if existing is not None and not resume:
        raise CmmdError(f"{option}: {run_dir} already holds a run (checkpoint {existing.name}); pass --resume to "
                        f"continue it or choose another {option} (nothing is overwritten)")
    if resume and existing is None:
        print(f"{name}: --resume given but {run_dir} has no checkpoint yet; starting fresh", file=sys.stderr)
    return existing


def check_finite(scalars: dict[str, float], step: int, run_dir: Path, hint: str,
                 dist: D.DistInfo | None = None) -> None:
    """Raise CmmdError (on every rank) when a scalar of ``step`` is NaN or infinite, naming the
    last good checkpoint; called before the optimizer step, no checkpoint holds the bad weights."""
    bad = not all(math.isfinite(v) for v in scalars.values())
    if dist is not None:
        bad = D.all_ranks_flag(dist, bad)
    if bad:
        last = latest_checkpoint(run_dir)
        where = f"last good checkpoint: {last}" if last is not None else "no checkpoint was written yet"
        shown = ", ".join(f"{k}={v:.4g}" for k, v in scalars.items())
        raise CmmdError(f"loss became non-finite at step {step} ({shown}); stopped without saving; {where}. {hint}")


def ignore_stop_signals(_worker_id: int) -> None:
    """DataLoader worker init: leave SIGINT/SIGTERM to the main process.

    A terminal's Ctrl-C and a cluster scheduler's SIGTERM reach every process of the job; a
    worker dying of it would abort the main process mid-step instead of letting it finish the
    step and save a checkpoint. The main process shuts its workers down itself.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class StopSignals:
    """While entered, SIGINT/SIGTERM set ``requested`` instead of killing the process, so the
    loop finishes its step and checkpoints; the previous handlers come back on exit."""

    def __init__(self) -> None:
        self.requested, self.signum = False, 0
        self._previous: dict[int, Any] = {}  # what signal.signal returned: a handler, SIG_DFL...

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.requested, self.signum = True, signum

    def __enter__(self) -> StopSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. inside a test runner thread)
                pass
        return self

    def __exit__(self, *_exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclass(frozen=True)
class Ema:
    """The average to update after every step: ``average <- EMA(model)`` (:func:`update_ema`)."""

    average: torch.nn.Module
    model: torch.nn.Module
    decay: float


@dataclass(frozen=True)
class LoopSettings:
    """What the shared loop needs to know of a run.

    ``name`` prefixes its messages (``cmmd train``); ``checkpoint_every`` 0 checkpoints only at
    the end and on a stop; ``max_minutes`` 0 is no budget; ``show`` names the scalars on the bar.
    """

    name: str
    run_dir: Path
    steps: int
    checkpoint_every: int
    log_every: int = 1
    max_minutes: float = 0.0
    progress: bool = True
    show: tuple[str, ...] = ("loss",)


@dataclass(frozen=True)
class LoopEnd:
    """Where a run stopped: the step, the newest checkpoint (written or resumed from; None on
    ranks other than 0), why it stopped early (None when it reached ``total``), and seconds."""

    step: int
    checkpoint: Path | None
    stopped_by: str | None
    seconds: float


class TrainingLoop:
    """Steps from ``start_step`` to ``total`` (a trainer may lower ``total`` mid-run with
    :meth:`set_total`, e.g. to fit a time budget)."""

    def __init__(self, settings: LoopSettings, start_step: int, resumed: Path | None = None,
                 dist: D.DistInfo | None = None) -> None:
        self.settings, self.step, self.total = settings, start_step, settings.steps
        self.resumed, self.dist = resumed, dist
        self.is_main = dist is None or dist.is_main
        self.t0 = time.time()
        self._bar: tqdm | None = None

    def set_total(self, total: int) -> None:
        """End the run at ``total`` steps instead."""
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def say(self, message: str) -> None:
        """Print a line on rank 0 without breaking the progress bar."""
        if self.is_main:
            tqdm.write(message)

    def _agree(self, flag: bool) -> bool:
        return flag if self.dist is None else D.all_ranks_flag(self.dist, flag)

    def run(self, step_fn: StepFn, save_fn: SaveFn, ema: Ema | None = None,
            after_step: Callable[[int], None] | None = None) -> LoopEnd:
        """Run the steps; ``after_step(step)`` is called after each (``step`` steps done), before
        logging and checkpointing."""
        s = self.settings
        last = self.resumed
        if self.step >= self.total:
            self.say(f"{s.name}: run already at step {self.step} >= steps={self.total}; nothing to do")
            return LoopEnd(self.step, last, None, 0.0)
        if self.is_main:
            s.run_dir.mkdir(parents=True, exist_ok=True)
        log = ScalarLog(s.run_dir) if self.is_main else None
        self._bar = tqdm(total=self.total, initial=self.step, disable=not (s.progress and self.is_main),
                         desc=s.name.removeprefix("cmmd "), dynamic_ncols=True, unit="step", file=sys.stderr)
        self.t0 = last_log_t = time.time()
        stopped_by = None
        try:
            with StopSignals() as signals:
                while self.step < self.total:
                    scalars = step_fn(self.step)
                    if ema is not None:
                        update_ema(ema.average, ema.model, ema.decay, self.step)
                    self.step += 1
                    self._bar.update(1)
                    self._bar.set_postfix({k: f"{scalars[k]:.4g}" for k in s.show})
                    if after_step is not None:
                        after_step(self.step)
                    if log is not None and (self.step % s.log_every == 0 or self.step == self.total):
                        now = time.time()
                        log.write(self.step, {**scalars, "seconds": now - self.t0,
                                              "steps_per_s": s.log_every / max(1e-9, now - last_log_t)})
                        last_log_t = now
                    out_of_time = s.max_minutes > 0 and (time.time() - self.t0) / 60 >= s.max_minutes
                    stop = self._agree(signals.requested or out_of_time)
                    periodic = s.checkpoint_every > 0 and self.step % s.checkpoint_every == 0
                    if periodic or stop or self.step == self.total:
                        if self.is_main:
                            last = save_fn(self.step)
                        if self.dist is not None:
                            D.barrier(self.dist)
                    if stop:
                        stopped_by = f"signal {signals.signum}" if signals.requested else f"max_minutes={s.max_minutes:g}"
                        self.say(f"{s.name}: stopped at step {self.step} ({stopped_by}); checkpoint saved, "
                                 "resume with --resume")
                        break
        finally:
            self._bar.close()
            self._bar = None
            if log is not None:
                log.close()
        return LoopEnd(self.step, last, stopped_by, time.time() - self.t0)
