"""A study's units of work and the scheduler that runs them in worker processes.

Four task functions, each taking one picklable job and safe to re-run: :func:`train_system`
(to the budget, resuming where a run stopped), :func:`score_curve` (a run's validation learning
curve from its checkpoints, which it then removes), :func:`generate_clips` (v2a or a2v outputs
of the held-out clips, reused when its ``done.json`` matches) and :func:`evaluate_clips`
(``cmmd.eval.evaluate``, whose features are cached by content). :func:`run_tasks` runs them on
``parallel`` worker processes of ``threads`` torch threads each (inline when ``parallel == 1``),
each task once the tasks it needs are done, in the order given (trainings first).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

import torch

from cmmd.config import ConfigError
from cmmd.errors import CmmdError
from cmmd.eval.evaluate import EvalSettings, evaluate, write_metrics
from cmmd.pipeline import SamplingSettings
from cmmd.apps.study.config import Budget
from cmmd.train.config import TrainConfig

Mode = Literal["v2a", "a2v"]
DONE = "study_done.json"
SYSTEM_FILE = "study_system.json"
SEGMENTS = "study_segments.json"
CURVE = "curve.json"


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None if there is no such file."""
    return json.loads(path.read_text()) if path.is_file() else None


def write_json(path: Path, data: Any) -> None:
    """Atomic write, so an interrupted study never leaves half a marker."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(path)


# ----------------------------------------------------------------------------- tasks (run in workers)


@dataclass(frozen=True)
class TrainJob:
    """Train (or resume) one system to its budget."""

    system: str
    config: TrainConfig
    budget: Budget
    identity: dict[str, Any]
    resume: bool


def _checkpoint_time(checkpoint: Path) -> float:
    return (checkpoint / "state.json").stat().st_mtime


def train_system(job: TrainJob) -> dict[str, Any]:
    """Train until the budget is spent; write ``study_done.json`` (steps reached, wall minutes;
    for a fine-tune, ``init``: the weights it started from and their step).

    Wall time is counted over segments: a resumed run keeps the time up to its last checkpoint
    (the work after it was lost) and gets the rest of a minutes budget. A fine-tune records its
    ``init`` when it starts and keeps that record when resumed (training ignores ``init`` then).
    """
    from cmmd.checkpoint import latest_checkpoint, read_info
    from cmmd.train.loop import train

    run_dir = Path(job.config.out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = latest_checkpoint(run_dir) if job.resume else None
    init = None
    if checkpoint is not None:
        init = (read_json(run_dir / SYSTEM_FILE) or {}).get("init")
    elif job.config.init:
        init = {"path": job.config.init, "step": read_info(Path(job.config.init)).step}
    write_json(run_dir / SYSTEM_FILE, {"identity": job.identity, **({"init": init} if init else {})})
    start_step = read_info(checkpoint).step if checkpoint is not None else 0
    segments: list[dict[str, Any]] = (read_json(run_dir / SEGMENTS) or []) if checkpoint is not None else []
    if segments and segments[-1].get("end") is None:  # the segment that was interrupted
        last = segments[-1]
        last["end"] = _checkpoint_time(checkpoint) if checkpoint and start_step > last["from_step"] else last["start"]
    used = sum(s["end"] - s["start"] for s in segments) / 60
    cfg = job.config
    remaining = None
    if job.budget.minutes is not None:
        remaining = job.budget.minutes - used
        cfg = replace(cfg, max_minutes=remaining)
    start = time.time()
    segments.append({"start": start, "from_step": start_step, "end": None})
    write_json(run_dir / SEGMENTS, segments)
    print(f"study: training {job.system} from step {start_step}, {used:.2f} min used, budget {job.budget.describe()}")
    step = start_step
    if remaining is None or remaining > 0:
        step = train(cfg, resume=checkpoint is not None, progress=False).step
    end = time.time()
    segments[-1]["end"] = end
    write_json(run_dir / SEGMENTS, segments)
    minutes = used + (end - start) / 60
    complete = step >= cfg.steps or (remaining is not None and end - start >= remaining * 60)
    if not complete:
        raise CmmdError(f"training of {job.system} stopped at step {step} before its budget "
                        f"({job.budget.describe()}); run the study again with --resume to continue it")
    done = {"system": job.system, "steps": step, "train_minutes": minutes, "budget": asdict(job.budget),
            "batch_size": cfg.batch_size, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **({"init": init} if init else {})}
    write_json(run_dir / DONE, done)
    return done


@dataclass(frozen=True)
class GenerateJob:
    """Generate ``mode`` outputs for the test clips ``names`` with the run's EMA weights."""

    run_dir: str
    mode: Mode
    sampling: SamplingSettings
    clips_dir: str
    names: tuple[str, ...]
    clip_spec: dict[str, Any]
    out_dir: str
    batch: int
    device: str
    vocoder: str | None = None


def generate_clips(job: GenerateJob) -> dict[str, Any]:
    """Write ``<name>.mp4`` per test clip (v2a: the clip's video + generated audio; a2v:
    generated video + the clip's audio) and ``done.json`` with the sampling time; reused when it
    matches. A clip that cannot be used fails the task, naming it."""
    from cmmd.checkpoint import read_info
    from cmmd.generation import generate_files, write_sample
    from cmmd.pipeline import Pipeline

    out = Path(job.out_dir)
    spec = {"checkpoint_step": read_info(Path(job.run_dir)).step, "sampling": asdict(job.sampling),
            "names": list(job.names), "clips": job.clip_spec, "batch": job.batch, "mode": job.mode,
            "vocoder": job.vocoder}
    recorded = read_json(out / "done.json")
    if recorded is not None and recorded["spec"] == spec:
        return {**recorded, "reused": True}
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    pipe = Pipeline.from_checkpoint(job.run_dir, device=job.device, vocoder=job.vocoder)
    files = [Path(job.clips_dir) / f"{n}.mp4" for n in job.names]
    result = generate_files(pipe, job.mode, files, job.sampling, batch=job.batch)
    if result.failures:
        first = result.failures[0]
        raise CmmdError(f"{len(result.failures)} test clip(s) unusable, e.g. {first.source}: {first.reason}")
    for sample in result.samples:
        write_sample(sample, pipe, out, details=False, overwrite=True)
    done = {"spec": spec, "seconds": result.seconds, "seconds_per_clip": result.seconds / len(job.names),
            "n": len(job.names), "known_level": result.samples[-1].settings["known_level"]}
    write_json(out / "done.json", done)
    return {**done, "reused": False}


@dataclass(frozen=True)
class EvaluateJob:
    """``cmmd.eval.evaluate`` of a generated folder against the test clips; metrics.json into ``out``."""

    generated: str
    reference: str
    out: str
    settings: EvalSettings


def evaluate_clips(job: EvaluateJob) -> dict[str, Any]:
    """The evaluation result (as in metrics.json); also written to ``out/metrics.json``."""
    result = evaluate(job.generated, job.reference, job.settings, explicit_metrics=True, progress=False)
    write_metrics(result, Path(job.out) / "metrics.json")
    return result


@dataclass(frozen=True)
class CurveJob:
    """Score the checkpoints of a trained run every ``every`` steps (and the last) on validation
    clips: ``sampling`` (few steps) for both modes, ``settings[mode]`` computing ``keys[mode]``."""

    run_dir: str
    sampling: SamplingSettings
    every: int
    clips_dir: str
    names: tuple[str, ...]
    clip_spec: dict[str, Any]
    out_dir: str
    batch: int
    device: str
    vocoder: str | None
    keys: dict[str, str]
    settings: dict[str, EvalSettings]


def train_seconds(run_dir: Path) -> dict[int, float]:
    """Training wall seconds at each logged step of a run (its ``log.csv``); a resumed run's
    segments are added up (each from the last logged step of the one before, so approximately)."""
    path = run_dir / "log.csv"
    if not path.is_file():
        return {}
    out: dict[int, float] = {}
    offset = last = 0.0
    with path.open() as f:
        for row in csv.DictReader(f):
            seconds = float(row["seconds"])
            if seconds < last:
                offset += last
            last = seconds
            out[int(row["step"])] = offset + seconds
    return out


def score_curve(job: CurveJob) -> dict[str, Any]:
    """The run's learning curve: for each curve step, the primary metric of v2a and a2v outputs
    of the validation clips (point, CI, per clip) and the training seconds up to that step (where
    the log has the step: ``train_seconds``), written to ``<run>/curve.json`` after each point.
    Afterwards the run's checkpoints other than its newest are removed (the curve is what they
    were kept for); a point whose checkpoint is gone (removed after an earlier curve with
    other settings) is listed in ``missing``. A curve recorded with other settings is moved to
    ``curve.previous-<k>.json``, not overwritten."""
    from cmmd.checkpoint import STEP_PREFIX, latest_checkpoint

    run_dir = Path(job.run_dir)
    steps = read_json(run_dir / DONE)["steps"]
    points_at = sorted({*range(job.every, steps + 1, job.every), steps})
    spec = {"sampling": asdict(job.sampling), "names": list(job.names), "clips": job.clip_spec,
            "keys": job.keys, "settings": {m: asdict(s) for m, s in job.settings.items()}, "vocoder": job.vocoder}
    spec = json.loads(json.dumps(spec, default=str))  # as read back (tuples become lists)
    recorded = read_json(run_dir / CURVE)
    points: dict[str, Any] = recorded["points"] if recorded is not None and recorded["spec"] == spec else {}
    if recorded is not None and recorded["spec"] != spec:  # other settings: keep the old curve, never lose it
        backup = next(run_dir / f"curve.previous-{k}.json" for k in range(1, 10_000)
                      if not (run_dir / f"curve.previous-{k}.json").exists())
        (run_dir / CURVE).rename(backup)
        print(f"study: {run_dir.name}: curve settings changed; the earlier curve is kept as {backup.name}", flush=True)
    missing = []
    for step in points_at:
        checkpoint = run_dir / "checkpoints" / f"{STEP_PREFIX}{step:08d}"
        if str(step) in points:
            continue
        if not checkpoint.is_dir():
            missing.append(step)
            continue
        point = {}
        for mode, key in job.keys.items():
            out = Path(job.out_dir) / f"step_{step}" / mode
            generate_clips(GenerateJob(str(checkpoint), mode, job.sampling, job.clips_dir, job.names, job.clip_spec,
                                       str(out / "generated"), job.batch, job.device, job.vocoder))
            result = evaluate_clips(EvaluateJob(str(out / "generated"), job.clips_dir, str(out), job.settings[mode]))
            entry = result["metrics"].get(key)
            point[mode] = ({k: entry[k] for k in ("point", "lo", "hi", "n", "per_item")} if entry is not None
                           else {"point": float("nan"), "reason": f"{key} not computed: {result.get('notes')}"})
        seconds = train_seconds(run_dir).get(step)
        points[str(step)] = {**point, **({"train_seconds": seconds} if seconds is not None else {})}
        write_json(run_dir / CURVE, {"spec": spec, "points": points})
        print(f"study: curve of {run_dir.name} at step {step}: "
              + ", ".join(f"{m} {p['point']:.3f}" for m, p in point.items()), flush=True)
    write_json(run_dir / CURVE, {"spec": spec, "points": points})
    newest = latest_checkpoint(run_dir)
    for step in points_at:
        checkpoint = run_dir / "checkpoints" / f"{STEP_PREFIX}{step:08d}"
        if checkpoint.is_dir() and newest is not None and checkpoint != newest and str(step) in points:
            shutil.rmtree(checkpoint)
    return {"run": run_dir.name, "points": points, "missing": missing}


# ----------------------------------------------------------------------------- the scheduler


@dataclass(frozen=True)
class Task:
    """A unit of work: ``fn(job)`` after the tasks named in ``after``, output in ``log``."""

    key: str
    fn: Callable[[Any], dict[str, Any]]
    job: Any
    log: Path
    after: tuple[str, ...] = ()


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _call_logged(fn: Callable[[Any], dict[str, Any]], job: Any, log: Path) -> dict[str, Any]:
    """``fn(job)`` with its output (and a traceback if it fails) appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f, redirect_stdout(f), redirect_stderr(f):
        print(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} ===", flush=True)
        try:
            return fn(job)
        except Exception:
            traceback.print_exc()
            raise


@dataclass
class Progress:
    """Prints ``[minutes since start] message``; ``describe(task, result)`` sums up a finished task."""

    say: Callable[[str], None]
    describe: Callable[[Task, dict[str, Any]], str]
    start: float = field(default_factory=time.time)

    def __call__(self, message: str) -> None:
        minutes = (time.time() - self.start) / 60
        self.say(f"[{minutes:5.1f} min] {message}")


def run_tasks(tasks: Sequence[Task], parallel: int, threads: int, progress: Progress) -> dict[str, dict[str, Any]]:
    """Run ``tasks`` (listed in priority order, dependencies before dependants) on ``parallel``
    workers; returns each task's result by key. After a failure no new task starts, the running
    ones finish (a training saves its checkpoint), then a :class:`CmmdError` names the task."""
    results: dict[str, dict[str, Any]] = {}
    if parallel == 1:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for task in tasks:
                progress(f"start {task.key}")
                results[task.key] = _run_inline(task)
                progress(f"done  {task.key}: {progress.describe(task, results[task.key])}")
        finally:
            torch.set_num_threads(previous)
        return results
    env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.update({k: str(threads) for k in env})  # spawned workers read these at start
    failure: tuple[Task, BaseException] | None = None
    try:
        with ProcessPoolExecutor(parallel, mp_context=get_context("spawn"), initializer=_init_worker,
                                 initargs=(threads,)) as pool:
            pending = list(tasks)
            running: dict[Future[dict[str, Any]], Task] = {}
            while pending or running:
                for task in list(pending):
                    if failure is not None or len(running) >= parallel:
                        break
                    if all(k in results for k in task.after):
                        pending.remove(task)
                        running[pool.submit(_call_logged, task.fn, task.job, task.log)] = task
                        progress(f"start {task.key}")
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    task = running.pop(future)
                    try:
                        results[task.key] = future.result()
                        progress(f"done  {task.key}: {progress.describe(task, results[task.key])}")
                    except Exception as exc:  # reported after the running tasks finish
                        progress(f"FAILED {task.key}: {exc}")
                        failure = failure or (task, exc)
    finally:
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if failure is not None:
        task, exc = failure
        raise CmmdError(f"study task '{task.key}' failed: {exc} (log: {task.log})") from None
    return results


def _run_inline(task: Task) -> dict[str, Any]:
    try:
        return _call_logged(task.fn, task.job, task.log)
    except (CmmdError, ConfigError) as exc:
        raise CmmdError(f"study task '{task.key}' failed: {exc} (log: {task.log})") from None
