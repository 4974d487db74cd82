"""Study configs: one training base, systems as overrides of it, one budget, a test set, an evaluation.

A study YAML (``configs/study_*.yaml``) sets the fields of :class:`StudyConfig`. ``base`` holds
TrainConfig fields shared by every system; each system's ``train`` maps *dotted* TrainConfig
keys to values that replace the base's value at that key (``diffusion.loss.eta: 1.0e-4``,
``model: {preset: mmdiffusion-tiny, overrides: {}}`` replaces the whole model section). Files,
``extends`` and dotted command-line overrides are :mod:`cmmd.config`'s, so a sweep config
``extends`` a study to add systems and reuse its trained runs; ``systems.<name>.train`` is a flat
section (``systems.cmmd.train.diffusion.loss.eta=1e-3`` sets one TrainConfig key). Everything is
checked, naming the key, before any work starts.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from cmmd.config import ConfigError, apply_overrides, from_dict, read_config_mapping, set_dotted
from cmmd.data.splits import TRAIN
from cmmd.errors import CmmdError
from cmmd.eval.evaluate import METRICS
from cmmd.pipeline import SamplingSettings
from cmmd.train.config import TrainConfig
from cmmd.models.presets import build_model

STUDY_OWNED = ("out_dir", "max_minutes", "data.root")  # set by the study for every system
SYSTEM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # a folder name without dots (dotted keys)
SYSTEM_TRAIN = ("systems.*.train",)  # its keys are whole dotted TrainConfig keys


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


@dataclass
class TrainingSet:
    """The synthetic training set: ``clips`` clips of ``seconds`` s of ``scene`` at ``size`` px,
    clip seeds from ``seed`` (``cmmd.data.synth.write_benchmark``; a TRAIN seed of
    ``cmmd.data.splits``), prepared into windows of the base's ``data.clip_frames``."""

    scene: Literal["impacts"] = "impacts"
    clips: int = 400
    seconds: float = 3.6
    size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.clips < 2 or self.seconds <= 0 or self.size < 8:
            raise ConfigError(f"need clips >= 2, seconds > 0 and size >= 8, got {self}")
        if self.seed not in TRAIN.set_seeds:
            raise ConfigError(f"seed {self.seed} is not a TRAIN seed of cmmd.data.splits "
                              f"({TRAIN.set_seeds.start}..{TRAIN.set_seeds.stop - 1}); the others are held out")


@dataclass
class TestSet:
    """Held-out *impacts* clips (the TEST split of ``cmmd.data.splits``): how many, how long, and
    how many go through the sampler at once."""

    clips: int = 16
    seconds: float = 1.8
    batch: int = 8

    def __post_init__(self) -> None:
        if self.clips < 2 or self.seconds < 1.0 or self.batch < 1:
            raise ConfigError(f"need clips >= 2, seconds >= 1.0 (beat tracking) and batch >= 1, got {self}")


@dataclass
class SystemSpec:
    """One system: a label for tables, dotted TrainConfig overrides of the base, how it samples,
    the vocoder of a mel model (a ``cmmd.pipeline`` spec such as ``cmmd-gan:<run>``; default
    Griffin-Lim), and optionally its own budget (default: the study's)."""

    label: str = ""
    train: dict[str, Any] = field(default_factory=dict)
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    vocoder: str | None = None
    budget: Budget | None = None


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
        if "sync" not in self.metrics:
            raise ConfigError("metrics must include sync: the tables and paired tests are built on it")


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
    """A whole study; ``systems`` maps a name (a folder name) to a :class:`SystemSpec`."""

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
    parallel: int = 1
    threads: int = 1

    def budget_of(self, name: str) -> Budget:
        """The system's own budget, else the study's."""
        budget = self.systems[name].budget or self.budget
        assert budget is not None  # checked in validate()
        return budget

    def label_of(self, name: str) -> str:
        return self.systems[name].label or name


# ----------------------------------------------------------------------------- reading


def load_study_config(path: str | Path, overrides: list[str] | None = None) -> StudyConfig:
    """Read, merge ``extends``, apply overrides and validate (:func:`validate`)."""
    data = read_config_mapping(Path(path), SYSTEM_TRAIN)
    _check_system_overrides(data, overrides or [])
    apply_overrides(data, overrides or [], StudyConfig, SYSTEM_TRAIN)
    try:
        cfg = from_dict(StudyConfig, data)
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


def validate(cfg: StudyConfig) -> None:
    """Everything that can be checked before any data or training: names, budgets, every
    system's TrainConfig and model, comparisons, the lambda sweep."""
    if not cfg.systems:
        raise ConfigError("systems: the study lists no system")
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
        if spec.budget is None and cfg.budget is None:
            raise ConfigError(f"systems.{name}.budget: no budget; set budget.steps or budget.minutes for the "
                              "study or for this system")
        for key in spec.train:
            if key == "steps" or any(key == k or key.startswith(f"{k}.") for k in STUDY_OWNED):
                raise ConfigError(f"systems.{name}.train.{key}: set by the study (use budget.steps / budget.minutes)")
        if spec.sampling.steps < 1 or spec.sampling.guidance_scale < 0:
            raise ConfigError(f"systems.{name}.sampling: need steps >= 1 and guidance_scale >= 0, got "
                              f"{spec.sampling.steps} and {spec.sampling.guidance_scale}")
        if train_config(cfg, name, Path("OUT")).data.audio == "wave" and spec.vocoder is not None:
            raise ConfigError(f"systems.{name}.vocoder: the system generates waveforms; it takes no vocoder")
    for a, b in cfg.compare:
        for side in (a, b):
            if side not in cfg.systems:
                raise ConfigError(f"compare: unknown system {side!r}; systems are {', '.join(cfg.systems)}")
        if a == b:
            raise ConfigError(f"compare: {a!r} is compared with itself")
    if cfg.lambda_sweep.values and cfg.lambda_sweep.system not in cfg.systems:
        raise ConfigError(f"lambda_sweep.system: unknown system {cfg.lambda_sweep.system!r}; systems are "
                          f"{', '.join(cfg.systems)}")


def _has_dotted(data: dict[str, Any], key: str) -> bool:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def system_train_dict(cfg: StudyConfig, name: str) -> dict[str, Any]:
    """The user-level TrainConfig mapping of a system: base, then its overrides, then its budget.
    Stored with each run and compared on reuse (TrainConfig defaults are not part of it)."""
    data = copy.deepcopy(cfg.base)
    for key, value in cfg.systems[name].train.items():
        set_dotted(data, key, value)
    budget = cfg.budget_of(name)
    if budget.steps is not None:
        data["steps"] = budget.steps
    return data


def train_config(cfg: StudyConfig, name: str, out: Path) -> TrainConfig:
    """The system's TrainConfig: its :func:`system_train_dict` with the run in ``out/runs/<name>``,
    the data in ``out/prepared`` and ``max_minutes`` from a minutes budget. The model is built on
    the meta device to check its preset and overrides."""
    try:
        data = system_train_dict(cfg, name)
        data["out_dir"] = str(out / "runs" / name)
        data.setdefault("data", {})["root"] = str(out / "prepared")
        minutes = cfg.budget_of(name).minutes
        data["max_minutes"] = minutes if minutes is not None else 0.0
        train_cfg = from_dict(TrainConfig, data)
        with torch.device("meta"):
            build_model(train_cfg.model.preset, train_cfg.model.overrides)
    except (ConfigError, CmmdError) as exc:
        raise ConfigError(f"systems.{name}.train: {exc}") from None
    return train_cfg


def base_train_config(cfg: StudyConfig) -> TrainConfig:
    """The base alone as a TrainConfig (its training window, for one)."""
    return from_dict(TrainConfig, cfg.base)


def base_fingerprint(cfg: StudyConfig) -> dict[str, Any]:
    """What every run of an OUT folder must share: the training set and the base, with its digest."""
    content = {"data": asdict(cfg.data), "base": cfg.base}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"digest": digest, **content}
