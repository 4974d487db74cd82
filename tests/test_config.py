"""cmmd.config: one reader (YAML 1.2 scalars, ``extends``) and one dotted override parser, used by
train, study, vae and vocoder configs alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cmmd.apps.study import load_study_config
from cmmd.cli import build_parser, main
from cmmd.commands import train as train_command
from cmmd.commands import vae as vae_command
from cmmd.commands import vocoder as vocoder_command
from cmmd.config import (ConfigError, apply_overrides, flatten_dotted, from_dict, load_config, merge, save_config,
                         set_dotted)
from cmmd.train.config import TrainConfig
from cmmd.train.vae import VaeTrainConfig
from cmmd.train.vocoder import VocoderTrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@dataclass
class Inner:
    rate: float = 0.1
    count: int = 1
    enabled: bool = False
    sizes: tuple[int, ...] = (1,)
    table: dict[str, float] = field(default_factory=dict)


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    steps: int = 10
    label: str = "a"
    root: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ConfigError(f"steps must be >= 0, got {self.steps}")


@pytest.mark.parametrize(("raw", "value"), [
    ("1e-4", 1e-4), (".5", 0.5), ("1_000", 1000.0), ("-2", -2.0), ("-3", -3.0), ("1E3", 1000.0),
    ("1E+3", 1000.0), ("1.0e-5", 1e-5), ("+.5e1", 5.0), ("2.", 2.0),
])
def test_yaml12_numbers_in_overrides_and_files(tmp_path: Path, raw: str, value: float) -> None:
    assert load_config(Outer, None, [f"inner.rate={raw}"]).inner.rate == value
    path = tmp_path / "c.yaml"
    path.write_text(f"inner:\n  rate: {raw}\n  table: {{a: {raw}}}\n")
    cfg = load_config(Outer, path)
    assert cfg.inner.rate == value and cfg.inner.table == {"a": value}


@pytest.mark.parametrize(("raw", "value"), [("1_000", 1000), ("-3", -3), ("1E3", 1000), ("1E+3", 1000), ("1e0", 1),
                                            ("010", 10), ("0x10", 16)])
def test_int_fields_take_integral_numbers(raw: str, value: int) -> None:
    cfg = load_config(Outer, None, [f"inner.count={raw}"])
    assert cfg.inner.count == value and type(cfg.inner.count) is int


@pytest.mark.parametrize(("override", "message"), [
    ("steps=1.5", r"^steps: expected an integer, got 1\.5$"),
    ("inner.count=1e-4", r"^inner\.count: expected an integer, got 0\.0001$"),
    ("inner.rate=fast", r"^inner\.rate: expected a number, got 'fast'$"),
    ("inner.rate=true", r"^inner\.rate: expected a number, got True$"),
    ("inner.enabled=yes", r"^inner\.enabled: expected true or false, got 'yes'$"),  # YAML 1.2: a string
    ("inner.enabled=1", r"^inner\.enabled: expected true or false, got 1$"),
    ("inner.sizes=[1, 2.5]", r"^inner\.sizes\[1\]: expected an integer, got 2\.5$"),
    ("inner.table={a: x}", r"^inner\.table\.a: expected a number, got 'x'$"),
    ("inner.rat=1", r"^unknown config key inner\.rat; valid keys here: count, enabled, rate, sizes, table$"),
    ("steps=-1", r"^steps must be >= 0, got -1$"),
    ("inner.rate.x=1", r"^inner\.rate: expected a number, got \{'x': 1\}$"),
    ("inner.rate", r"^override 'inner\.rate' is not of the form key=value$"),
    ("inner.rate=[1", r"^override inner\.rate: value '\[1' is not valid YAML"),
])
def test_override_errors_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(Outer, None, [override])


def test_booleans_lists_dicts_and_text_fields() -> None:
    cfg = load_config(Outer, None, ["inner.enabled=true", "inner.sizes=[1, 2_0]", "inner.table={a: 1e-3, b: 2}",
                                    "extra={k: [1, .5]}", "label=1e-4", "root=2026"])
    assert cfg.inner.enabled is True and cfg.inner.sizes == (1, 20) and cfg.inner.table == {"a": 1e-3, "b": 2.0}
    assert cfg.extra == {"k": [1, 0.5]}
    assert cfg.label == "1e-4" and cfg.root == Path("2026")  # a str or path field keeps the text of a number
    assert load_config(Outer, None, ["label=on"]).label == "on" and load_config(Outer, None, ["root=null"]).root is None
    with pytest.raises(ConfigError, match=r"^override extra\.a\.b: extra\.a is not a section$"):
        load_config(Outer, None, ["extra={a: 1}", "extra.a.b=2"])


def test_post_init_errors_get_the_section_key() -> None:
    @dataclass
    class Wrapper:
        outer: Outer = field(default_factory=Outer)

    with pytest.raises(ConfigError, match=r"^outer: steps must be >= 0, got -1$"):
        from_dict(Wrapper, {"outer": {"steps": -1}})


def test_extends_merges_mappings_and_replaces_the_rest(tmp_path: Path) -> None:
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "base.yaml").write_text("steps: 5\nlabel: base\ninner: {rate: 1e-2, sizes: [1, 2, 3], "
                                                    "table: {a: 1, b: 2}}\n")
    (tmp_path / "child.yaml").write_text("extends: presets/base.yaml\nlabel: child\ninner: {sizes: [4], "
                                         "table: {b: 3}}\n")
    cfg = load_config(Outer, tmp_path / "child.yaml", ["inner.count=7"])
    assert cfg == Outer(inner=Inner(rate=1e-2, count=7, sizes=(4,), table={"a": 1.0, "b": 3.0}), steps=5, label="child")
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="levels of `extends`"):
        load_config(Outer, tmp_path / "loop.yaml")
    (tmp_path / "bad.yaml").write_text("extends: [a.yaml]\n")
    with pytest.raises(ConfigError, match="extends must be the path of another config file"):
        load_config(Outer, tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="missing.yaml does not exist"):
        load_config(Outer, tmp_path / "missing.yaml")


def test_flat_sections_hold_whole_dotted_keys() -> None:
    flat = ("systems.*.train",)
    parent = {"systems": {"a": {"train": {"optim.lr": 1e-3, "model": {"preset": "tiny", "overrides": {"x": 1}}}}}}
    child = {"systems": {"a": {"train": {"model": {"preset": "other"}}, "label": "A"}}}
    merged = merge(parent, child, flat)
    assert merged["systems"]["a"] == {"train": {"optim.lr": 1e-3, "model": {"preset": "other"}}, "label": "A"}
    assert parent["systems"]["a"]["train"]["model"]["overrides"] == {"x": 1}  # inputs untouched
    apply_overrides(merged, ["systems.a.train.diffusion.loss.eta=1e-5"], flat=flat)
    assert merged["systems"]["a"]["train"]["diffusion.loss.eta"] == 1e-5
    data: dict[str, Any] = {}
    set_dotted(data, "a.b.c", [1])
    assert data == {"a": {"b": {"c": [1]}}}
    assert flatten_dotted({"a": {"b": {"c": [1]}, "d": 2}}) == {"a.b.c": [1], "a.d": 2}


def test_save_config_round_trips_strings_that_look_like_numbers(tmp_path: Path) -> None:
    cfg = Outer(inner=Inner(rate=1e-5, table={"x": 2.5}), label="1e-4", extra={"flag": "on", "n": 1e-6})
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(Outer, tmp_path / "saved.yaml") == cfg


# ----------------------------------------------------------------------------- the four commands


def test_cli_train_config_takes_exponent_overrides(tmp_path: Path) -> None:
    argv = ["train", str(CONFIGS / "demo_tiny.yaml"), "optim.lr=1e-4", "steps=1_000", "diffusion.loss.eta=1E-3",
            f"out_dir={tmp_path}", "--no-progress"]
    cfg = train_command.config_from_args(build_parser(argv).parse_args(argv))
    assert isinstance(cfg, TrainConfig) and cfg.optim.lr == 1e-4 and cfg.steps == 1000
    assert cfg.diffusion.loss.eta == 1e-3 and cfg.out_dir == str(tmp_path)
    assert cfg.model == load_config(TrainConfig, CONFIGS / "demo_tiny.yaml").model
    with pytest.raises(ConfigError, match=r"demo_tiny\.yaml: steps: expected an integer, got 1\.5"):
        load_config(TrainConfig, CONFIGS / "demo_tiny.yaml", ["steps=1.5"])


def test_cli_overrides_may_follow_flags(capsys: pytest.CaptureFixture[str]) -> None:
    # Stops at the config check, before any data or training; steps=1.5 comes after a flag.
    assert main(["train", str(CONFIGS / "demo_tiny.yaml"), "optim.lr=1e-4", "--no-progress", "steps=1.5"]) == 2
    assert "steps: expected an integer, got 1.5" in capsys.readouterr().err
    assert main(["vae", "train", "d", "--out", "r", "steps=1.5", "--lr", "1e-4"]) == 2
    assert "steps: expected an integer, got 1.5" in capsys.readouterr().err
    assert main(["train", str(CONFIGS / "demo_tiny.yaml"), "--no-progress", "stray"]) == 2
    assert "cmmd train: error: unrecognized arguments: stray" in capsys.readouterr().err


def test_study_configs_go_through_the_same_parser(tmp_path: Path) -> None:
    cfg = load_study_config(CONFIGS / "study_eta_sweep_cpu.yaml",
                            ["systems.cmmd.train.optim.lr=5e-4", "test.seconds=2E0", "budget.minutes=1_0",
                             "evaluation.n_boot=1e3", "base.optim.lr=2e-3"])
    assert cfg.systems["cmmd"].train["optim.lr"] == 5e-4 and cfg.test.seconds == 2.0
    assert cfg.budget_of("cmmd").minutes == 10.0 and cfg.evaluation.n_boot == 1000
    assert cfg.base["optim"]["lr"] == 2e-3 and cfg.title.startswith("Contrastive weight sweep")
    with pytest.raises(ConfigError, match=r"test\.clips: expected an integer, got 2\.5"):
        load_study_config(CONFIGS / "study_cpu.yaml", ["test.clips=2.5"])
    with pytest.raises(ConfigError, match=r"study_cpu\.yaml: evaluation: metrics must include sync"):
        load_study_config(CONFIGS / "study_cpu.yaml", ["evaluation.metrics=[fad]"])
    with pytest.raises(ConfigError, match=r"study_cpu\.yaml: systems\.cmmd\.budget: set exactly one of steps"):
        load_study_config(CONFIGS / "study_cpu.yaml", ["systems.cmmd.budget={steps: 5, minutes: 1}"])


def test_vae_preset_and_cli_flags(tmp_path: Path) -> None:
    preset = load_config(VaeTrainConfig, CONFIGS / "vae_tiny.yaml", [f"data={tmp_path}", "out_dir=run"])
    assert preset == VaeTrainConfig(data=str(tmp_path), out_dir="run")  # the CLI's defaults
    argv = ["vae", "train", "123", "kl_weight=1e-5", "vae.base_channels=16", "--out", "456", "--downsample", "4",
            "--lr", "1e-3", "--steps", "5", "--config", str(CONFIGS / "vae_tiny.yaml")]
    cfg = vae_command.config_from_args(build_parser(argv).parse_args(argv))
    assert (cfg.data, cfg.out_dir, cfg.vae.downsampling, cfg.vae.base_channels) == ("123", "456", 4, 16)
    assert (cfg.lr, cfg.steps, cfg.kl_weight, cfg.batch_size) == (1e-3, 5, 1e-5, 16)
    argv = ["vae", "train", "data", "--out", "run", "--steps", "2.5"]
    with pytest.raises(ConfigError, match=r"^steps: expected an integer, got 2\.5$"):
        vae_command.config_from_args(build_parser(argv).parse_args(argv))


def test_vocoder_presets_and_cli_flags(tmp_path: Path) -> None:
    melgan = load_config(VocoderTrainConfig, CONFIGS / "vocoder_melgan.yaml", ["audio_dir=a", "out_dir=r"])
    assert melgan == VocoderTrainConfig(audio_dir="a", out_dir="r")  # the CLI's defaults
    universal = load_config(VocoderTrainConfig, CONFIGS / "vocoder_hifigan_universal.yaml",
                            ["audio_dir=a", "out_dir=r"])
    universal.validate()
    argv = ["vocoder", "train", "a", "--out", "r", "--init", "hifigan-universal"]
    assert vocoder_command.config_from_args(build_parser(argv).parse_args(argv)) == universal
    argv = ["vocoder", "train", "a", "lr=1e-4", "melgan.upsample_rates=[8, 8, 4]", "--out", "r", "--channels", "32",
            "--segment-seconds", ".5", "--config", str(CONFIGS / "vocoder_melgan.yaml")]
    cfg = vocoder_command.config_from_args(build_parser(argv).parse_args(argv))
    assert (cfg.lr, cfg.melgan.channels, cfg.melgan.upsample_rates, cfg.segment_seconds) == (1e-4, 32, (8, 8, 4), 0.5)
    argv = ["vocoder", "train", "a", "--out", "r", "--generator", "wavenet"]
    with pytest.raises(ConfigError, match=r"generator: expected one of \['melgan', 'hifigan-v1'\], got 'wavenet'"):
        vocoder_command.config_from_args(build_parser(argv).parse_args(argv))


def test_mmdiffusion_memorize_config_is_the_study_baseline_on_waveforms() -> None:
    cfg = load_config(TrainConfig, CONFIGS / "mmdiffusion_memorize_cpu.yaml")
    assert cfg.model.preset == "mmdiffusion-tiny" and cfg.data.audio == "wave"
    assert cfg.diffusion.loss.prediction == "eps" and cfg.diffusion.schedule == "linear"
