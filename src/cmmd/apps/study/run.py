"""Running a study: from a :class:`StudyConfig` to ``study.md`` / ``study.json``.

Layout of ``OUT``::

    study_base.json                  training set + base of this folder (other bases are refused)
    study.lock                       held by the `cmmd study` working in OUT (a second one is refused)
    train_clips/ prepared/           synthetic training set and its shards (and codec latents)
    test_clips/<name>.mp4|.json      held-out TEST clips with their ground truth
    curve_clips/                     VALIDATION clips of the learning curves
    runs/<run>/                      a training run (<system>, or <system>-seed<k> with seeds);
                                     study_done.json once it reached its budget, curve.json
    generated/<system>[/seed<k>]/<mode>/  <name>.mp4 (v2a: real video + generated audio; a2v: real
                                     audio + generated video) and done.json; a lambda sweep in
                                     generated/<system>[/seed<k>]/lambda_<value>/<mode>/
    evaluation/<same as generated>/  metrics.json of ``cmmd.eval.evaluate``
    curves/<run>/step_<n>/<mode>/    the curve's generated validation clips and metrics.json
    logs/<task>.log                  each task's output
    study.md, study.json, curves.*   the tables and the learning-curve plot

Order of work: check the config and every run in OUT (refusing mismatches before anything
runs), make the training set, test and curve clips, then train, score the curve, generate and
evaluate as tasks (:mod:`cmmd.apps.study.tasks`), then the tables (:mod:`cmmd.apps.study.tables`).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from cmmd.config import ConfigError, flatten_dotted
from cmmd.device import resolve_device
from cmmd.conventions import FPS
from cmmd.errors import CmmdError
from cmmd.eval.evaluate import EvalSettings
from cmmd.pipeline import SamplingSettings
from cmmd.apps.study.config import (Budget, ClipSpec, Run, StudyConfig, base_fingerprint, base_train_config,
                                    system_train_dict, train_config)
from cmmd.apps.study.report import build_report, eta_of
from cmmd.apps.study.tasks import (DONE, SYSTEM_FILE, CurveJob, EvaluateJob, GenerateJob, Mode, Progress, Task,
                                   TrainJob, evaluate_clips, generate_clips, read_json, run_tasks, score_curve,
                                   train_system, write_json)
from cmmd.data.splits import Split
from cmmd.train.config import TrainConfig

MODES: tuple[Mode, ...] = ("v2a", "a2v")
# Which metrics read which output: audio metrics the generated audio of v2a outputs, video
# metrics the generated frames of a2v outputs; sync and offset apply to both.
MODE_METRICS: dict[Mode, tuple[str, ...]] = {"v2a": ("fad", "beat", "sync", "offset"),
                                             "a2v": ("fvd", "kvd", "sync", "offset")}


# ----------------------------------------------------------------------------- OUT and training plans


@contextmanager
def holding(out: Path) -> Iterator[None]:
    """Hold ``OUT/study.lock`` while a study works in ``out``, or refuse: a second ``cmmd study`` in the
    same folder would re-prepare the training set under the first one's running trainings and race
    on the shared outputs. The operating system drops the lock when the process ends, however."""
    with open(out / "study.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise CmmdError(f"{out} is in use by another `cmmd study` ({holder}); wait for it to finish, "
                            "or give this one another --out") from None
        handle.truncate(0)
        handle.write(f"pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        yield


def claim_out(cfg: StudyConfig, out: Path) -> None:
    """Record this study's training set and base in ``out``, or refuse a folder made with others."""
    mine = base_fingerprint(cfg)
    theirs = read_json(out / "study_base.json")
    if theirs is None:
        write_json(out / "study_base.json", mine)
        return
    if theirs["digest"] != mine["digest"]:
        diff = _differences({k: theirs[k] for k in ("data", "base")}, {k: mine[k] for k in ("data", "base")})
        raise CmmdError(f"{out} holds a study with another training set or base config ({diff}); "
                        "its runs would not be comparable: choose another --out")


def _differences(there: dict[str, Any], here: dict[str, Any], limit: int = 5) -> str:
    """The first ``limit`` dotted keys whose values differ, as ``key: old there, new here``."""
    a, b = flatten_dotted(there), flatten_dotted(here)
    diff = [f"{k}: {a.get(k, '(unset)')!r} there, {b.get(k, '(unset)')!r} here"
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return "; ".join(diff[:limit])


@dataclass(frozen=True)
class TrainPlan:
    """What to do with a system's run: ``reuse`` (complete), ``train`` (fresh) or ``resume``."""

    action: Literal["reuse", "train", "resume"]
    done: dict[str, Any] | None = None


def plan_training(cfg: StudyConfig, out: Path, resume: bool) -> dict[str, TrainPlan]:
    """Decide per run, before any work, whether it is reused, trained or resumed; refuse runs
    made with another config and interrupted runs without ``--resume``."""
    from cmmd.checkpoint import latest_checkpoint

    plans = {}
    for run in cfg.runs():
        name = run.name
        run_dir = out / "runs" / name
        identity = system_train_dict(cfg, run.system, run.seed)
        recorded = read_json(run_dir / SYSTEM_FILE)
        if recorded is not None and recorded["identity"] != identity:
            raise CmmdError(f"systems.{run.system}: {run_dir} was trained with another config "
                            f"({_differences(recorded['identity'], identity)}); rename the system or choose another "
                            "--out")
        budget = cfg.budget_of(run.system)
        done = read_json(run_dir / DONE)
        checkpoint = latest_checkpoint(run_dir)
        if done is not None:
            trained = Budget(**done["budget"])
            if trained == budget:
                plans[name] = TrainPlan("reuse", done)
                continue
            more_time = trained.minutes is not None and budget.minutes is not None and budget.minutes > trained.minutes
            if not more_time:
                raise CmmdError(f"systems.{name}: {run_dir} was trained for {trained.describe()}, the budget is now "
                                f"{budget.describe()}; choose another --out")
            if not resume:
                raise CmmdError(f"systems.{name}: {run_dir} was trained for {trained.describe()}, the budget is now "
                                f"{budget.describe()}; pass --resume to continue it")
            plans[name] = TrainPlan("resume")
        elif checkpoint is not None:
            if not resume:
                raise CmmdError(f"systems.{name}: {run_dir} was interrupted (checkpoint {checkpoint.name}); pass "
                                "--resume to continue it")
            plans[name] = TrainPlan("resume")
        else:
            plans[name] = TrainPlan("train")
    for run in cfg.runs():
        _check_fine_tune(cfg, out, run, plans)
    return plans


def _check_fine_tune(cfg: StudyConfig, out: Path, run: Run, plans: dict[str, TrainPlan]) -> None:
    """Refuse a fine-tune's existing work (reused or resumed) whose source run will be trained
    again, or that started from another step of the source than the source's final one."""
    source = cfg.source_run(run.system, run.seed)
    plan = plans[run.name]
    if source is None or plan.action == "train":
        return
    where = out / "runs" / run.name
    if plans[source.name].action != "reuse":
        raise CmmdError(f"systems.{run.system}: {where} was fine-tuned from runs/{source.name}, which this study "
                        f"would {plans[source.name].action}; its weights would change under the fine-tune: move "
                        f"{where} aside or choose another --out")
    started = (plan.done or {}).get("init", {}).get("step")
    source_done = plans[source.name].done
    assert source_done is not None  # a reused run has its record
    final = source_done["steps"]
    if started is not None and started != final:
        raise CmmdError(f"systems.{run.system}: {where} was fine-tuned from step {started} of runs/{source.name}, "
                        f"which now ends at step {final}; move {where} aside or choose another --out")


# ----------------------------------------------------------------------------- data


def prepare_training_set(cfg: StudyConfig, out: Path, train_cfgs: dict[str, TrainConfig]) -> None:
    """Synthesise and prepare the training set, with the codec's latents when ``data.codec`` names
    one (all three resume), then check every run against it."""
    from cmmd.data.prepare import PrepareSettings, prepare_dataset
    from cmmd.data.synth import write_benchmark
    from cmmd.train.loop import check_config
    from cmmd.video.latents import encode_prepared_dataset
    from cmmd.video.loading import load_video_codec

    d = cfg.data
    workers = max(cfg.parallel, cfg.threads)
    write_benchmark(out / "train_clips", d.scene, d.clips, seed=d.seed, duration=d.seconds, size=d.size,
                    n_objects=d.objects, tempo_changes=d.tempo_changes, workers=workers)
    # The shards hold whole clips and training cuts windows anywhere in them; the prepared index
    # is made for the base's window length, as `cmmd demo --train` does.
    clip_seconds = base_train_config(cfg).data.clip_frames / FPS
    prepare_dataset(out / "train_clips", out / "prepared", PrepareSettings(size=d.size, clip_seconds=clip_seconds),
                    workers=workers, progress=False)
    codec = d.codec_spec()
    if codec is not None:
        encode_prepared_dataset(out / "prepared", load_video_codec(codec), progress=False)
    for run in cfg.runs():
        source = cfg.source_run(run.system, run.seed)
        if source is not None:  # trained before the fine-tune starts; its folder exists now for init's check
            (out / "runs" / source.name).mkdir(parents=True, exist_ok=True)
    for name, train_cfg in train_cfgs.items():
        try:
            check_config(train_cfg, 1)
        except (CmmdError, ConfigError) as exc:
            raise CmmdError(f"runs/{name}: {exc}") from None


def clip_spec(cfg: StudyConfig, clips: int, seconds: float) -> dict[str, Any]:
    """What identifies a set of held-out clips (their sampling outputs are reused only for the same);
    scene settings are listed where they differ from one-object impacts, as older studies recorded."""
    spec: dict[str, Any] = {"clips": clips, "seconds": seconds, "size": cfg.data.size}
    scene = cfg.test.spec(cfg.data)
    if scene != ClipSpec("impacts", 1, False):
        spec.update(scene=scene.scene, objects=scene.objects, tempo_changes=scene.tempo_changes)
    return spec


def prepare_heldout_clips(cfg: StudyConfig, split: Split, folder: Path, clips: int,
                          seconds: float) -> tuple[Path, list[str]]:
    """``clips`` clips of ``split`` (its default seed; the test set's scene) in ``folder``, made
    once per spec (``study_test.json`` records it and the names)."""
    from cmmd.data.synth import clip_name, write_benchmark

    spec = {**clip_spec(cfg, clips, seconds), "seed": split.seed}
    marker = folder / "study_test.json"
    recorded = read_json(marker)
    if recorded is not None and recorded["spec"] == spec:
        return folder, recorded["names"]
    if folder.exists():
        shutil.rmtree(folder)
    scene = cfg.test.spec(cfg.data)
    write_benchmark(folder, scene.scene, clips, seed=split.seed, duration=seconds, size=cfg.data.size,
                    n_objects=scene.objects, tempo_changes=scene.tempo_changes, overwrite=True)
    names = [clip_name(scene.scene, i) for i in range(clips)]
    write_json(marker, {"spec": spec, "names": names})
    return folder, names


def prepare_test_clips(cfg: StudyConfig, out: Path) -> tuple[Path, list[str]]:
    """The held-out clips of the headline tables: the TEST split of :mod:`cmmd.data.splits`."""
    from cmmd.data.splits import TEST

    return prepare_heldout_clips(cfg, TEST, out / "test_clips", cfg.test.clips, cfg.test.seconds)


# ----------------------------------------------------------------------------- metrics and tasks


def available_metrics(cfg: StudyConfig) -> tuple[tuple[str, ...], list[str]]:
    """The configured metrics whose feature networks are in the cache, and a skip note per other."""
    from cmmd.eval.embedders import get_embedder
    from cmmd.weights import crepe_weights_path, i3d_weights_path

    wanted = list(cfg.evaluation.metrics)
    notes = []
    if {"fvd", "kvd"} & set(wanted):
        try:
            i3d_weights_path()
        except CmmdError as exc:
            wanted = [m for m in wanted if m not in ("fvd", "kvd")]
            notes.append(f"FVD/KVD skipped: {exc}")
    if "fad" in wanted:
        spec = cfg.evaluation.fad_embedder
        try:
            if spec in ("crepe-tiny", "crepe-full"):
                crepe_weights_path(spec.split("-")[1])
            else:
                get_embedder(spec)
        except CmmdError as exc:
            wanted.remove("fad")
            notes.append(f"FAD skipped: {exc}")
    return tuple(wanted), notes


def eval_settings(cfg: StudyConfig, metrics: tuple[str, ...], mode: Mode) -> EvalSettings:
    """Settings of the evaluation of ``mode`` outputs: the metrics that read that output."""
    ev = cfg.evaluation
    return EvalSettings(metrics=tuple(m for m in metrics if m in MODE_METRICS[mode]), fad_embedder=ev.fad_embedder,
                        sync_tolerance=ev.sync_tolerance, n_boot=ev.n_boot, set_boot=ev.set_boot, seed=ev.seed)


@dataclass(frozen=True)
class Output:
    """One set of generated outputs to make and score: a system, the run it samples, a sampling,
    a folder tag."""

    system: str
    run: Run
    tag: str  # "" for the system's own sampling, "lambda_<v>" in the lambda sweep
    sampling: SamplingSettings

    @property
    def seed_part(self) -> str:
        return "" if self.run.seed is None else f"seed{self.run.seed}"

    def folder(self, root: Path, mode: Mode) -> Path:
        parts = [p for p in (self.seed_part, self.tag) if p]
        return root.joinpath(self.system, *parts, mode)

    def key(self, what: str, mode: Mode) -> str:
        parts = [p for p in (self.seed_part, self.tag) if p]
        return " ".join((what, self.system, *parts, mode))

    @property
    def row_key(self) -> str:
        """The row's name in study.json: the system, with ``-seed<k>`` in a study with seeds."""
        return self.system if self.run.seed is None else f"{self.system}-seed{self.run.seed}"


def curve_job(cfg: StudyConfig, out: Path, run: Run, train_cfg: TrainConfig, clips: Path, names: list[str],
              metrics: tuple[str, ...]) -> CurveJob:
    """Scoring of a run's curve checkpoints: its system's sampling with the curve's sampler steps."""
    spec = cfg.systems[run.system]
    keys = {mode: cfg.primary(mode).key for mode in MODES}
    settings = {mode: replace(eval_settings(cfg, metrics, mode),
                              metrics=tuple(m for m in metrics if m == cfg.primary(mode).stage)) for mode in MODES}
    return CurveJob(str(out / "runs" / run.name), replace(spec.sampling, steps=cfg.curve.steps), cfg.curve.every,
                    str(clips), tuple(names), clip_spec(cfg, cfg.curve.clips, cfg.curve.seconds),
                    str(out / "curves" / run.name), cfg.curve.batch, str(resolve_device(train_cfg.device)),
                    spec.vocoder, keys, settings)


def build_tasks(cfg: StudyConfig, out: Path, plans: dict[str, TrainPlan], train_cfgs: dict[str, TrainConfig],
                outputs: list[Output], clips: Path, names: list[str], metrics: tuple[str, ...],
                curve_clips: tuple[Path, list[str]] | None = None) -> list[Task]:
    """Trainings, each followed by its curve, then generations, then evaluations (the order in
    which ready tasks start: a curve starts as soon as its run is trained, before later
    trainings, so at most a few runs hold their curve checkpoints at once)."""
    logs = out / "logs"
    trains, gens, evals = [], [], []
    for run in cfg.runs():  # a fine-tune after its source (StudyConfig.runs)
        plan = plans[run.name]
        if plan.action != "reuse":
            source = cfg.source_run(run.system, run.seed)
            after = (f"train {source.name}",) if source is not None and plans[source.name].action != "reuse" else ()
            trains.append(Task(f"train {run.name}", train_system,
                               TrainJob(run.name, train_cfgs[run.name], cfg.budget_of(run.system),
                                        system_train_dict(cfg, run.system, run.seed), plan.action == "resume"),
                               logs / f"train_{run.name}.log", after))
        if curve_clips is not None:
            after = (f"train {run.name}",) if plan.action != "reuse" else ()
            trains.append(Task(f"curve {run.name}", score_curve,
                               curve_job(cfg, out, run, train_cfgs[run.name], *curve_clips, metrics),
                               logs / f"curve_{run.name}.log", after))
    trained = {t.job.system for t in trains if t.fn is train_system}
    spec = clip_spec(cfg, cfg.test.clips, cfg.test.seconds)
    for o in outputs:
        for mode in MODES:
            after = (f"train {o.run.name}",) if o.run.name in trained else ()
            gen_key = o.key("generate", mode)
            gens.append(Task(gen_key, generate_clips, GenerateJob(
                str(out / "runs" / o.run.name), mode, o.sampling, str(clips), tuple(names), spec,
                str(o.folder(out / "generated", mode)), cfg.test.batch,
                str(resolve_device(train_cfgs[o.run.name].device)), cfg.systems[o.system].vocoder),
                logs / f"{gen_key.replace(' ', '_')}.log", after))
            eval_key = o.key("evaluate", mode)
            evals.append(Task(eval_key, evaluate_clips, EvaluateJob(
                str(o.folder(out / "generated", mode)), str(clips), str(o.folder(out / "evaluation", mode)),
                eval_settings(cfg, metrics, mode)), logs / f"{eval_key.replace(' ', '_')}.log", (gen_key,)))
    real_metrics = tuple(m for m in metrics if m in {cfg.primary(mode).stage for mode in MODES} | {"sync"})
    reference = EvaluateJob(str(clips), str(clips), str(out / "evaluation" / "real_clips"),
                            replace(eval_settings(cfg, metrics, "v2a"), metrics=real_metrics))
    evals.append(Task("evaluate real clips", evaluate_clips, reference, logs / "evaluate_real_clips.log"))
    return trains + gens + evals


def _describe(task: Task, result: dict[str, Any]) -> str:
    """One line about a finished task for the progress log."""
    if task.fn is train_system:
        return f"{result['steps']} steps in {result['train_minutes']:.1f} min"
    if task.fn is generate_clips:
        return f"{'reused, ' if result['reused'] else ''}{result['seconds_per_clip']:.2f} s/clip"
    if task.fn is score_curve:
        last = result["points"][str(max(int(s) for s in result["points"]))] if result["points"] else {}
        return f"{len(result['points'])} points; last " + (", ".join(
            f"{m} {last[m]['point']:.3f}" for m in MODES if m in last) or "n/a")
    mode = task.key.rsplit(" ", 1)[-1]
    keys = [f"sync_{mode}_f1"] if mode in MODES else ["sync_v2a_f1", "sync_a2v_f1"]
    return ", ".join(f"{k} {result['metrics'][k]['point']:.3f}" for k in keys if k in result["metrics"]) or "done"


# ----------------------------------------------------------------------------- the study


def training_before(cfg: StudyConfig, run: Run, done: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The training a fine-tune's run stands on (None for a run from scratch): its source run
    and the steps and wall minutes of every run of its lineage (``done`` records), added up."""
    source = cfg.source_run(run.system, run.seed)
    if source is None:
        return None
    lineage, steps, minutes = [], 0, 0.0
    current: Run | None = source
    while current is not None:
        lineage.append(current.name)
        steps += done[current.name]["steps"]
        minutes += done[current.name]["train_minutes"]
        current = cfg.source_run(current.system, current.seed)
    return {"run": source.name, "lineage": lineage, "steps": steps, "train_minutes": minutes}


def after_source(curve: dict[str, Any], before: dict[str, Any] | None) -> dict[str, Any]:
    """A fine-tune's curve on its lineage's axes: each point's step and ``train_seconds`` after the
    source's (``before``: :func:`training_before`); a run from scratch's curve as it is."""
    if before is None:
        return curve
    points = {str(int(step) + before["steps"]): {**point, **({"train_seconds": point["train_seconds"] +
                                                              60 * before["train_minutes"]}
                                                           if "train_seconds" in point else {})}
              for step, point in curve["points"].items()}
    return {**curve, "points": points, "missing": [step + before["steps"] for step in curve["missing"]]}


def _own_metrics(metrics: dict[str, Any], mode: Mode) -> dict[str, Any]:
    """The metrics of ``mode`` outputs without the other direction's sync scores, which score the
    real half of the file (the v2a file's frames are the condition, not an output)."""
    other = "a2v" if mode == "v2a" else "v2a"
    return {k: v for k, v in metrics.items() if not k.startswith(f"sync_{other}_")}


def run_study(cfg: StudyConfig, out: Path, resume: bool = False, command: str = "cmmd study",
              say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or complete) the study into ``out``; returns what ``study.json`` holds."""
    out.mkdir(parents=True, exist_ok=True)
    with holding(out):
        return _run_study(cfg, out, resume, command, say)


def _run_study(cfg: StudyConfig, out: Path, resume: bool, command: str,
               say: Callable[[str], None]) -> dict[str, Any]:
    """:func:`run_study` once ``out`` is held."""
    from cmmd.data.splits import VALIDATION

    started, load_start = time.time(), os.getloadavg()
    runs = cfg.runs()
    train_cfgs = {run.name: train_config(cfg, run, out) for run in runs}
    claim_out(cfg, out)
    plans = plan_training(cfg, out, resume)
    metrics, notes = available_metrics(cfg)
    for note in notes:
        say(f"note: {note}")
    say(f"study: {len(cfg.systems)} systems, {len(runs)} training runs "
        f"({', '.join(f'{n}: {p.action}' for n, p in plans.items())}); "
        f"{cfg.parallel} process(es) x {cfg.threads} thread(s); output in {out}")
    prepare_training_set(cfg, out, train_cfgs)
    clips, names = prepare_test_clips(cfg, out)
    curve_clips = (prepare_heldout_clips(cfg, VALIDATION, out / "curve_clips", cfg.curve.clips, cfg.curve.seconds)
                   if cfg.curve.every > 0 else None)
    say(f"study: training set in {out / 'prepared'}, {len(names)} test clips in {clips}"
        f"{f', {cfg.curve.clips} validation clips for the curves' if curve_clips else ''} "
        f"({(time.time() - started) / 60:.1f} min)")
    outputs = [Output(name, run, "", spec.sampling) for name, spec in cfg.systems.items() for run in cfg.runs_of(name)]
    sweep = cfg.lambda_sweep
    sweep_outputs = [Output(sweep.system, run, f"lambda_{value:g}",
                            replace(cfg.systems[sweep.system].sampling, guidance_scale=value,
                                    known_level=sweep.known_level))
                     for value in sweep.values for run in cfg.runs_of(sweep.system)]
    tasks = build_tasks(cfg, out, plans, train_cfgs, outputs + sweep_outputs, clips, names, metrics, curve_clips)
    results = run_tasks(tasks, cfg.parallel, cfg.threads, Progress(say, _describe, started))

    done = {run.name: plans[run.name].done or results[f"train {run.name}"] for run in runs}
    before = {run.name: training_before(cfg, run, done) for run in runs}

    def row(o: Output, label: str) -> dict[str, Any]:
        gen = {mode: results[o.key("generate", mode)] for mode in MODES}
        ev = {mode: results[o.key("evaluate", mode)] for mode in MODES}
        trained = done[o.run.name]
        return {"system": o.system, "run": o.run.name, "seed": o.run.seed, "label": label,
                "steps": trained["steps"], "train_minutes": trained["train_minutes"], "budget": trained["budget"],
                "init": before[o.run.name],
                "sampling": asdict(o.sampling), "known_level": {m: gen[m]["known_level"] for m in MODES},
                "vocoder": cfg.systems[o.system].vocoder,
                "sampling_seconds": {m: gen[m]["seconds_per_clip"] for m in MODES},
                "metrics": {m: _own_metrics(ev[m]["metrics"], m) for m in MODES},
                "metrics_json": {m: str(o.folder(out / "evaluation", m) / "metrics.json") for m in MODES},
                "eta": eta_of(train_cfgs[o.run.name]),
                "contrastive": train_cfgs[o.run.name].diffusion.loss.contrastive}

    def label(o: Output) -> str:
        return cfg.label_of(o.system) + ("" if o.run.seed is None else f" (seed {o.run.seed})")

    rows = {o.row_key: row(o, label(o)) for o in outputs}
    lambda_rows = [{**row(o, label(o)), "lambda": o.sampling.guidance_scale} for o in sweep_outputs]
    curves = {name: {run.name: after_source(results[f"curve {run.name}"], before[run.name])
                     for run in cfg.runs_of(name)}
              for name in cfg.systems if cfg.systems[name].trained_as is None} if curve_clips else {}
    real = results["evaluate real clips"]
    reference = {"label": "real clips", "metrics": {"v2a": real["metrics"], "a2v": real["metrics"]}}
    return build_report(cfg, out, rows, lambda_rows, reference, train_cfgs, notes, command,
                        {"started": started, "load_start": load_start}, curves, say)
