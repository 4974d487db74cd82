"""Study configs: one training base, systems as overrides of it, one budget, a test set, an evaluation.

A study YAML (``configs/study_*.yaml``) sets the fields of :class:`StudyConfig`. ``base`` holds
TrainConfig fields shared by every system; each system's ``train`` maps *dotted* TrainConfig
keys to values that replace the base's value at that key (``diffusion.loss.eta: 1.0e-4``,
``model: {preset: mmdiffusion-tiny, overrides: {}}`` replaces the whole model section). Files,
``extends`` and dotted command-line overrides are :mod:`cmmd.config`'s, so a sweep config
``extends`` a study to add systems and reuse its trained runs; ``systems.<name>.train`` is a flat
section (``systems.cmmd.train.diffusion.loss.eta=1e-3`` sets one TrainConfig key). Everything is
checked, naming the key, before any work starts.

A system trains one *run* per seed (``seeds``, study-wide or per system; none: one run with the
base's seed, named after the system) and is evaluated with its own ``sampling``; a system with
``trained_as: other`` trains nothing and samples the other system's runs its own way (the paper's
replacement and reconstruction guidance as two rows of one trained model). A system with
``init_from: other`` is a fine-tune: each of its runs starts (``TrainConfig.init``) from the
final EMA weights of the other system's run with the same seed, which trains first; its budget
counts on top of the other's. ``only_systems`` runs a subset of the listed systems (a config that
``extends`` a study to fine-tune one of its systems need not train the others).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from cmmd.assets import DEMO_VAE
from cmmd.config import ConfigError, apply_overrides, from_dict, read_config_mapping, set_dotted
from cmmd.data.synth import MAX_OBJECTS
from cmmd.data.splits import TRAIN
from cmmd.errors import CmmdError
from cmmd.eval.evaluate import METRICS
from cmmd.pipeline import SamplingSettings
from cmmd.train.config import TrainConfig
from cmmd.models.presets import build_model
from cmmd.video.loading import VIDEO_CODECS, parse_spec

STUDY_OWNED = ("out_dir", "max_minutes", "data.root")  # set by the study for every system
SYSTEM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # a folder name without dots (dotted keys)
SYSTEM_TRAIN = ("systems.*.train",)  # its keys are whole dotted TrainConfig keys
DEMO_CODEC = "demo-vae"  # data.codec naming the shipped VAE (cmmd.assets.DEMO_VAE), as the demo trains


@dataclass(frozen=True)
class Primary:
    """The per-clip metric a study tests, tracks in its curves and states the power of, for one
    scene and direction: its key in ``cmmd.eval.evaluate``'s metrics, the evaluation stage that
    makes it, a label, the factor and unit of its table values, and its direction."""

    key: str
    stage: str
    label: str
    scale: float
    unit: str
    lower_is_better: bool = False


# Impacts clips have exact event times for both directions (event F1). Dance clips are scored by
# the beats of the generated audio against the sidecar's beat times (v2a) and by the
# audio-video offset of the generated frames (a2v): the event detectors know impacts only.
PRIMARY: dict[tuple[str, str], Primary] = {
    ("impacts", "v2a"): Primary("sync_v2a_f1", "sync", "v2a sync F1", 100.0, "pts"),
    ("impacts", "a2v"): Primary("sync_a2v_f1", "sync", "a2v sync F1", 100.0, "pts"),
    ("dance", "v2a"): Primary("beat_hit_rate_100ms[sidecar]", "beat", "v2a beat hit rate @100ms", 100.0, "pts"),
    ("dance", "a2v"): Primary("abs_av_offset_ms", "offset", "a2v abs. AV offset", 1.0, "ms", lower_is_better=True),
}


@dataclass(frozen=True)
class Budget:
    """A system's training budget: ``steps`` optimizer steps (steps x batch then equal across
    systems) or ``minutes`` of wall-clock training (``TrainConfig.max_minutes``; ``base.steps``
    stays the step cap and the learning-rate schedule's horizon). Exactly one is set."""

    steps: int | None = None
    minutes: float | None = None

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.minutes is None):
            raise ConfigError(f"set exactly one of steps and minutes, got steps={self.steps}, "
                              f"minutes={self.minutes}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if self.minutes is not None and self.minutes <= 0:
            raise ConfigError(f"minutes must be > 0, got {self.minutes}")

    def describe(self) -> str:
        return f"{self.steps} steps" if self.steps is not None else f"{self.minutes:g} min wall clock"


def check_scene(scene: str, objects: int, tempo_changes: bool) -> None:
    """Raise a ConfigError unless ``objects`` and ``tempo_changes`` fit ``scene``."""
    if scene == "impacts" and not 1 <= objects <= MAX_OBJECTS:
        raise ConfigError(f"objects: the impacts scene takes 1 to {MAX_OBJECTS} objects, got {objects}")
    if scene == "dance" and objects != 1:
        raise ConfigError(f"objects: the dance scene has one figure, got {objects}")
    if tempo_changes and scene != "dance":
        raise ConfigError(f"tempo_changes: applies to the dance scene only, not to {scene}")


@dataclass
class TrainingSet:
    """The synthetic training set: ``clips`` clips of ``seconds`` s of ``scene`` (``objects``
    discs for impacts; ``tempo_changes`` inside each dance clip) at ``size`` px, clip seeds from
    ``seed`` (``cmmd.data.synth.write_benchmark``; a TRAIN seed of ``cmmd.data.splits``),
    prepared into windows of the base's ``data.clip_frames``. ``codec``: ``pixel`` (frames only),
    ``demo-vae`` (the shipped VAE, as ``cmmd demo --train``) or a ``cmmd prepare --codec`` spec
    whose latents are added to the prepared set for systems with ``data.video: latents``."""

    scene: Literal["impacts", "dance"] = "impacts"
    clips: int = 400
    seconds: float = 3.6
    size: int = 32
    seed: int = 0
    objects: int = 1
    tempo_changes: bool = False
    codec: str = "pixel"

    def __post_init__(self) -> None:
        if self.clips < 2 or self.seconds <= 0 or self.size < 8:
            raise ConfigError(f"need clips >= 2, seconds > 0 and size >= 8, got {self}")
        if self.seed not in TRAIN.set_seeds:
            raise ConfigError(f"seed {self.seed} is not a TRAIN seed of cmmd.data.splits "
                              f"({TRAIN.set_seeds.start}..{TRAIN.set_seeds.stop - 1}); the others are held out")
        check_scene(self.scene, self.objects, self.tempo_changes)
        if self.codec not in ("pixel", DEMO_CODEC) and parse_spec(self.codec)[0] not in VIDEO_CODECS:
            raise ConfigError(f"codec: {self.codec!r} is not pixel, {DEMO_CODEC} or a codec spec "
                              f"({', '.join(VIDEO_CODECS)}:<path>)")

    def codec_spec(self) -> str | None:
        """The ``load_video_codec`` spec of the latents to prepare, None for pixels only."""
        if self.codec == "pixel":
            return None
        return f"cmmd-vae:{DEMO_VAE}" if self.codec == DEMO_CODEC else self.codec


@dataclass(frozen=True)
class ClipSpec:
    """What held-out clips show: scene, impacts objects, dance tempo changes."""

    scene: str
    objects: int
    tempo_changes: bool


@dataclass
class TestSet:
    """Held-out clips (the TEST split of ``cmmd.data.splits``): how many, how long, and how many
    go through the sampler at once; ``scene``, ``objects`` and ``tempo_changes`` default to the
    training set's."""

    clips: int = 16
    seconds: float = 1.8
    batch: int = 8
    scene: Literal["impacts", "dance"] | None = None
    objects: int | None = None
    tempo_changes: bool | None = None

    def __post_init__(self) -> None:
        if self.clips < 2 or self.seconds < 1.0 or self.batch < 1:
            raise ConfigError(f"need clips >= 2, seconds >= 1.0 (beat tracking) and batch >= 1, got {self}")

    def spec(self, data: TrainingSet) -> ClipSpec:
        """The clips' scene settings, the training set's where unset."""
        return ClipSpec(self.scene or data.scene, data.objects if self.objects is None else self.objects,
                        data.tempo_changes if self.tempo_changes is None else self.tempo_changes)


@dataclass
class Curve:
    """Validation learning curves: every ``every`` training steps (0: none) and at the last
    step, the run's checkpoint samples ``clips`` VALIDATION clips of ``seconds`` s (the test
    set's scene) with ``steps`` sampler steps, ``batch`` at a time, and the primary metrics are
    scored. Cheap by design: a few clips and few steps, a trend rather than a headline."""

    every: int = 0
    clips: int = 8
    seconds: float = 1.8
    steps: int = 20
    batch: int = 8

    def __post_init__(self) -> None:
        if self.every < 0 or self.clips < 2 or self.seconds < 1.0 or self.steps < 1 or self.batch < 1:
            raise ConfigError(f"need every >= 0, clips >= 2, seconds >= 1.0, steps >= 1 and batch >= 1, got {self}")


@dataclass
class SystemSpec:
    """One system: a label for tables, dotted TrainConfig overrides of the base, how it samples,
    the vocoder of a mel model (a ``cmmd.pipeline`` spec such as ``cmmd-gan:<run>``; default
    Griffin-Lim), optionally its own budget and training seeds (default: the study's), or
    ``trained_as`` another system, whose runs it samples instead of training its own.
    ``init_from``: another training system whose run of the same seed each run of this one
    fine-tunes (its final EMA weights are ``TrainConfig.init``, and the DPO reference)."""

    label: str = ""
    train: dict[str, Any] = field(default_factory=dict)
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    vocoder: str | None = None
    budget: Budget | None = None
    seeds: list[int] | None = None
    trained_as: str | None = None
    init_from: str | None = None


@dataclass(frozen=True)
class Run:
    """One training run: its folder under ``OUT/runs``, the system whose recipe it trains and
    the training seed (``TrainConfig.seed``: initialisation and the order of training windows;
    None: the base's seed, in a study without seeds)."""

    name: str
    system: str
    seed: int | None


@dataclass
class Evaluation:
    """What ``cmmd.eval.evaluate`` computes (audio metrics on v2a outputs, video metrics on a2v
    outputs, sync and offset on both) and its statistics settings."""

    metrics: tuple[str, ...] = METRICS
    fad_embedder: str = "crepe-tiny"
    sync_tolerance: float = 0.1
    n_boot: int = 2000
    set_boot: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.metrics) - set(METRICS))
        if unknown:
            raise ConfigError(f"unknown metrics {unknown}; choose from {list(METRICS)}")


@dataclass
class LambdaSweep:
    """Re-sample one trained system at several reconstruction-guidance strengths (Eq. 3's lambda)
    with the known modality given as ``known_level`` (the paper's re-noised replacement)."""

    system: str = "cmmd"
    values: tuple[float, ...] = ()
    known_level: Literal["renoised", "clean"] = "renoised"

    def __post_init__(self) -> None:
        if any(v < 0 for v in self.values) or len(set(self.values)) != len(self.values):
            raise ConfigError(f"values must be distinct and >= 0, got {list(self.values)}")


@dataclass
class StudyConfig:
    """A whole study; ``systems`` maps a name (a folder name) to a :class:`SystemSpec`;
    ``only_systems`` (empty: all) keeps those systems only (:func:`select_systems`)."""

    title: str = "cmmd study"
    out: str = "outputs/study"
    data: TrainingSet = field(default_factory=TrainingSet)
    test: TestSet = field(default_factory=TestSet)
    base: dict[str, Any] = field(default_factory=dict)
    budget: Budget | None = None
    systems: dict[str, SystemSpec] = field(default_factory=dict)
    compare: list[tuple[str, str]] = field(default_factory=list)
    evaluation: Evaluation = field(default_factory=Evaluation)
    lambda_sweep: LambdaSweep = field(default_factory=LambdaSweep)
    seeds: list[int] = field(default_factory=list)
    curve: Curve = field(default_factory=Curve)
    parallel: int = 1
    threads: int = 1
    only_systems: list[str] = field(default_factory=list)

    def trainer_of(self, name: str) -> str:
        """The system whose runs ``name`` samples: itself, or its ``trained_as``."""
        return self.systems[name].trained_as or name

    def budget_of(self, name: str) -> Budget:
        """The (training) system's own budget, else the study's."""
        name = self.trainer_of(name)
        budget = self.systems[name].budget or self.budget
        assert budget is not None  # checked in validate()
        return budget

    def label_of(self, name: str) -> str:
        return self.systems[name].label or name

    def runs_of(self, name: str) -> list[Run]:
        """The runs a system is evaluated on: one per seed of its (training) system, named
        ``<system>-seed<k>``, or the one run named after the system in a study without seeds."""
        trainer = self.trainer_of(name)
        spec = self.systems[trainer]
        seeds = spec.seeds if spec.seeds is not None else self.seeds
        if not seeds:
            return [Run(trainer, trainer, None)]
        return [Run(f"{trainer}-seed{seed}", trainer, seed) for seed in seeds]

    def runs(self) -> list[Run]:
        """Every training run of the study, in config order except that a fine-tune's runs come
        after those of the system it starts from (``init_from``; checked acyclic in validate)."""
        trainers = [name for name, spec in self.systems.items() if spec.trained_as is None]
        ordered = sorted(trainers, key=lambda name: len(self.lineage(name)))  # stable: config order within a depth
        return [run for name in ordered for run in self.runs_of(name)]

    def lineage(self, name: str) -> list[str]:
        """The systems a (training) system's runs descend from through ``init_from``, the
        nearest first (empty for a system trained from scratch)."""
        chain: list[str] = []
        source = self.systems[self.trainer_of(name)].init_from
        while source is not None and source not in chain and source in self.systems:
            chain.append(source)
            source = self.systems[source].init_from
        return chain

    def source_run(self, name: str, seed: int | None) -> Run | None:
        """The run that a (training) system's run of training seed ``seed`` starts from: the
        ``init_from`` system's run of the same seed (None: no ``init_from``, or no such run,
        which validate refuses)."""
        source = self.systems[self.trainer_of(name)].init_from
        if source is None:
            return None
        return next((r for r in self.runs_of(source) if r.seed == seed), None)

    def budget_text(self, name: str) -> str:
        """The training budget in words, a fine-tune's after its source's (``800 steps + 200 steps
        fine-tune``)."""
        own = self.budget_of(name).describe()
        source = self.systems[self.trainer_of(name)].init_from
        return own if source is None else f"{self.budget_text(source)} + {own} fine-tune"

    def primary(self, mode: str) -> Primary:
        """The per-clip metric tested for ``mode`` outputs of the test set's scene."""
        return PRIMARY[(self.test.spec(self.data).scene, mode)]


# ----------------------------------------------------------------------------- reading


def load_study_config(path: str | Path, overrides: list[str] | None = None) -> StudyConfig:
    """Read, merge ``extends``, apply overrides and validate (:func:`validate`)."""
    data = read_config_mapping(Path(path), SYSTEM_TRAIN)
    _check_system_overrides(data, overrides or [])
    apply_overrides(data, overrides or [], StudyConfig, SYSTEM_TRAIN)
    try:
        cfg = select_systems(from_dict(StudyConfig, data))
        validate(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return cfg


def _check_system_overrides(data: dict[str, Any], overrides: list[str]) -> None:
    """An override of a system's training keys needs the system: a misspelt name would add one."""
    systems = data.get("systems") or {}
    for item in overrides:
        match = re.match(r"systems\.([^.=]+)\.train\.", item)
        if match and not isinstance(systems.get(match[1]), dict):
            raise ConfigError(f"override {item.split('=', 1)[0]}: no system {match[1]!r} in the config")


# ----------------------------------------------------------------------------- checks and resolution


def select_systems(cfg: StudyConfig) -> StudyConfig:
    """``cfg`` with only the systems ``only_systems`` names (all when it is empty), in config
    order; a ConfigError for an unknown name or a kept system whose ``trained_as`` or
    ``init_from`` system is left out (its runs would be missing)."""
    if not cfg.only_systems:
        return cfg
    keep = set(cfg.only_systems)
    unknown = [n for n in cfg.only_systems if n not in cfg.systems]
    if unknown or len(keep) != len(cfg.only_systems):
        raise ConfigError(f"only_systems: {cfg.only_systems} must be distinct names of systems "
                          f"({', '.join(cfg.systems)}); unknown: {', '.join(unknown) or 'none'}")
    for name in cfg.only_systems:
        spec = cfg.systems[name]
        for key, other in (("trained_as", spec.trained_as), ("init_from", spec.init_from)):
            if other is not None and other not in keep:
                raise ConfigError(f"only_systems: {name} needs the runs of {other} ({key}); list {other} too")
    return replace(cfg, systems={n: s for n, s in cfg.systems.items() if n in keep})


def validate(cfg: StudyConfig) -> None:
    """Everything that can be checked before any data or training: names, budgets, every
    system's TrainConfig and model, comparisons, the lambda sweep."""
    if not cfg.systems:
        raise ConfigError("systems: the study lists no system")
    test = cfg.test.spec(cfg.data)
    try:
        check_scene(test.scene, test.objects, test.tempo_changes)
    except ConfigError as exc:
        raise ConfigError(f"test.{exc}") from None
    for mode in ("v2a", "a2v"):
        primary = cfg.primary(mode)
        if primary.stage not in cfg.evaluation.metrics:
            raise ConfigError(f"evaluation: metrics must include {primary.stage}: the paired tests and curves of "
                              f"{cfg.test.spec(cfg.data).scene} clips are built on its {primary.key}")
    _check_seeds("seeds", cfg.seeds)
    if cfg.parallel < 1 or cfg.threads < 1:
        raise ConfigError(f"parallel and threads must be >= 1, got {cfg.parallel} and {cfg.threads}")
    for key in STUDY_OWNED:
        if _has_dotted(cfg.base, key):
            raise ConfigError(f"base.{key}: set by the study (runs go to OUT/runs/<system>, data to OUT/prepared, "
                              "time through budget.minutes); remove it")
    try:
        from_dict(TrainConfig, cfg.base)
    except (ConfigError, CmmdError) as exc:
        raise ConfigError(f"base: {exc}") from None
    for name, spec in cfg.systems.items():
        if not SYSTEM_NAME.match(name):
            raise ConfigError(f"systems.{name}: a system name must be letters, digits, '_' or '-' (it names a "
                              "folder and appears in dotted overrides)")
        if spec.trained_as is not None:
            _check_trained_as(cfg, name, spec)
            continue
        if spec.seeds is not None:
            _check_seeds(f"systems.{name}.seeds", spec.seeds)
        if spec.init_from is not None:
            _check_init_from(cfg, name, spec)
        if (spec.seeds if spec.seeds is not None else cfg.seeds) and "seed" in spec.train:
            raise ConfigError(f"systems.{name}.train.seed: set by seeds (one run per seed)")
        if spec.budget is None and cfg.budget is None:
            raise ConfigError(f"systems.{name}.budget: no budget; set budget.steps or budget.minutes for the "
                              "study or for this system")
        for key in spec.train:
            if key == "steps" or any(key == k or key.startswith(f"{k}.") for k in STUDY_OWNED):
                raise ConfigError(f"systems.{name}.train.{key}: set by the study (use budget.steps / budget.minutes)")
            if key == "init" and spec.init_from is not None:
                raise ConfigError(f"systems.{name}.train.init: set by init_from ({spec.init_from}'s runs)")
        if spec.sampling.steps < 1 or spec.sampling.guidance_scale < 0:
            raise ConfigError(f"systems.{name}.sampling: need steps >= 1 and guidance_scale >= 0, got "
                              f"{spec.sampling.steps} and {spec.sampling.guidance_scale}")
        train_cfg = train_config(cfg, cfg.runs_of(name)[0], Path("OUT"))
        if train_cfg.diffusion.loss.contrastive == "dpo" and not train_cfg.init:
            raise ConfigError(f"systems.{name}.init_from: diffusion.loss.contrastive dpo fine-tunes against a frozen "
                              "reference; name the system whose runs it starts from")
        if train_cfg.data.audio == "wave" and spec.vocoder is not None:
            raise ConfigError(f"systems.{name}.vocoder: the system generates waveforms; it takes no vocoder")
        if train_cfg.data.video == "latents" and cfg.data.codec == "pixel":
            raise ConfigError(f"data.codec: systems.{name} trains on latents (data.video: latents) but the training "
                              f"set is prepared with pixels only; set data.codec: {DEMO_CODEC} (or a codec spec)")
    for name, spec in cfg.systems.items():  # after every system is checked: the source's config is sound
        if spec.init_from is not None:
            mine, theirs = (train_config(cfg, cfg.runs_of(n)[0], Path("OUT")).model for n in (name, spec.init_from))
            if mine != theirs:
                raise ConfigError(f"systems.{name}.init_from: its model ({asdict(mine)}) is not that of "
                                  f"{spec.init_from} ({asdict(theirs)}), whose weights it starts from")
    names = [run.name for run in cfg.runs()]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ConfigError(f"systems: run folder name(s) {', '.join(clash)} would be used twice (a system without "
                          "seeds named like another's seed run); rename the system")
    for a, b in cfg.compare:
        for side in (a, b):
            if side not in cfg.systems:
                raise ConfigError(f"compare: unknown system {side!r}; systems are {', '.join(cfg.systems)}")
        if a == b:
            raise ConfigError(f"compare: {a!r} is compared with itself")
    if cfg.lambda_sweep.values and cfg.lambda_sweep.system not in cfg.systems:
        raise ConfigError(f"lambda_sweep.system: unknown system {cfg.lambda_sweep.system!r}; systems are "
                          f"{', '.join(cfg.systems)}")


def _check_seeds(key: str, seeds: list[int]) -> None:
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"{key}: training seeds must be distinct and >= 0, got {seeds}")


def _check_trained_as(cfg: StudyConfig, name: str, spec: SystemSpec) -> None:
    """A system sampling another's runs names a training system and sets nothing of training."""
    other = cfg.systems.get(spec.trained_as or "")
    if other is None or other.trained_as is not None:
        trainers = [n for n, s in cfg.systems.items() if s.trained_as is None]
        raise ConfigError(f"systems.{name}.trained_as: {spec.trained_as!r} is not a system that trains "
                          f"(choose from {', '.join(trainers)})")
    for key, value in (("train", spec.train), ("budget", spec.budget), ("seeds", spec.seeds),
                       ("init_from", spec.init_from)):
        if value:
            raise ConfigError(f"systems.{name}.{key}: the system samples the runs of {spec.trained_as} "
                              "(trained_as); training settings go there")
    if spec.sampling.steps < 1 or spec.sampling.guidance_scale < 0:
        raise ConfigError(f"systems.{name}.sampling: need steps >= 1 and guidance_scale >= 0, got "
                          f"{spec.sampling.steps} and {spec.sampling.guidance_scale}")


def _check_init_from(cfg: StudyConfig, name: str, spec: SystemSpec) -> None:
    """A fine-tune starts from another system that trains, not in a cycle, with a run per seed."""
    source = spec.init_from
    key = f"systems.{name}.init_from"
    if source == name:
        raise ConfigError(f"{key}: {name} cannot start from its own runs")
    other = cfg.systems.get(source or "")
    if other is None or other.trained_as is not None:
        trainers = [n for n, s in cfg.systems.items() if s.trained_as is None and n != name]
        raise ConfigError(f"{key}: {source!r} is not a system that trains "
                          f"({'it samples the runs of ' + other.trained_as + '; ' if other else ''}"
                          f"choose from {', '.join(trainers)})")
    chain = [name]
    while source is not None and source not in chain:
        chain.append(source)
        source = cfg.systems[source].init_from if source in cfg.systems else None
    if source is not None:
        raise ConfigError(f"{key}: init_from forms a cycle ({' -> '.join([*chain, source])})")
    assert spec.init_from is not None
    theirs = {run.seed for run in cfg.runs_of(spec.init_from)}
    missing = [run.seed for run in cfg.runs_of(name) if run.seed not in theirs]
    if missing:
        seeds = ", ".join("none (one run)" if s is None else str(s) for s in missing)
        raise ConfigError(f"{key}: {spec.init_from} has no run for seed(s) {seeds} of {name}; a fine-tune starts from "
                          f"the run of the same seed (set systems.{name}.seeds or systems.{spec.init_from}.seeds)")


def _has_dotted(data: dict[str, Any], key: str) -> bool:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def system_train_dict(cfg: StudyConfig, name: str, seed: int | None = None) -> dict[str, Any]:
    """The user-level TrainConfig mapping of a (training) system's run with training seed
    ``seed`` (None: the base's): base, its overrides, its budget, the seed, and for a fine-tune
    ``init`` as ``runs/<source run>`` (relative to the study's folder; :func:`train_config`
    makes it a path). Stored with each run and compared on reuse (TrainConfig defaults are not
    part of it)."""
    name = cfg.trainer_of(name)
    data = copy.deepcopy(cfg.base)
    for key, value in cfg.systems[name].train.items():
        set_dotted(data, key, value)
    budget = cfg.budget_of(name)
    if budget.steps is not None:
        data["steps"] = budget.steps
    if seed is not None:
        data["seed"] = seed
    source = cfg.systems[name].init_from
    if source is not None:
        run = cfg.source_run(name, seed)
        data["init"] = f"runs/{run.name if run is not None else source}"  # no run: a seedless identity (eta_family)
    return data


def curve_points(cfg: StudyConfig, steps: int) -> list[int]:
    """The steps of a run of ``steps`` steps whose checkpoints the validation curve scores:
    every ``curve.every`` and the last (none without a curve)."""
    every = cfg.curve.every
    return sorted({*range(every, steps + 1, every), steps}) if every > 0 else []


def train_config(cfg: StudyConfig, run: Run, out: Path) -> TrainConfig:
    """The run's TrainConfig: its :func:`system_train_dict` in ``out/runs/<run>``, the data in
    ``out/prepared`` and ``max_minutes`` from a minutes budget; with a curve, checkpoints every
    ``curve.every`` steps, all kept until the curve has scored them. The model is built on the
    meta device to check its preset and overrides."""
    try:
        data = system_train_dict(cfg, run.system, run.seed)
        data["out_dir"] = str(out / "runs" / run.name)
        data.setdefault("data", {})["root"] = str(out / "prepared")
        source = cfg.source_run(run.system, run.seed)
        if source is not None:
            data["init"] = str(out / "runs" / source.name)
        minutes = cfg.budget_of(run.system).minutes
        data["max_minutes"] = minutes if minutes is not None else 0.0
        train_cfg = from_dict(TrainConfig, data)
        if cfg.curve.every > 0:
            train_cfg.checkpoint_every = cfg.curve.every
            train_cfg.keep_checkpoints = len(curve_points(cfg, train_cfg.steps)) + 1
        with torch.device("meta"):
            build_model(train_cfg.model.preset, train_cfg.model.overrides)
    except (ConfigError, CmmdError) as exc:
        raise ConfigError(f"systems.{run.system}.train: {exc}") from None
    return train_cfg


def base_train_config(cfg: StudyConfig) -> TrainConfig:
    """The base alone as a TrainConfig (its training window, for one)."""
    return from_dict(TrainConfig, cfg.base)


def base_fingerprint(cfg: StudyConfig) -> dict[str, Any]:
    """What every run of an OUT folder must share: the training set and the base, with its digest.
    Training-set fields at their defaults that older studies did not have are left out, so their
    folders keep their digest."""
    data = asdict(cfg.data)
    for key, default in (("objects", 1), ("tempo_changes", False), ("codec", "pixel")):
        if data[key] == default:
            del data[key]
    content = {"data": data, "base": cfg.base}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"digest": digest, **content}
