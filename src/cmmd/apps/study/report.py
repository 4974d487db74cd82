"""``study.md`` and ``study.json``: the setting (command, hardware, data, budget, recipes) and the tables."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from cmmd.config import flatten_dotted
from cmmd.conventions import FPS
from cmmd.apps.study.config import StudyConfig, base_train_config, system_train_dict
from cmmd.apps.study.tables import (eta_table, lambda_table, main_table, paired_tests, summary_entry,
                                    tests_table)
from cmmd.data.splits import TEST
from cmmd.eval.report import json_safe
from cmmd.train.config import TrainConfig


def hardware() -> dict[str, Any]:
    """CPU model and cores, GPU if any, torch version, load average."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "torch": torch.__version__,
            "python": platform.python_version(), "load_average": list(os.getloadavg())}


def eta_of(train_cfg: TrainConfig) -> float:
    """The contrastive weight in effect: eta, or 0 without a contrastive loss."""
    loss = train_cfg.diffusion.loss
    return 0.0 if loss.contrastive == "none" else loss.eta


def eta_family(cfg: StudyConfig, reference: str) -> list[str]:
    """Systems identical to ``reference`` (training overrides, budget, sampling) except for the
    contrastive weight and form: the rows of the eta sweep."""
    ignore = {"diffusion.loss.eta", "diffusion.loss.contrastive"}

    def identity(name: str) -> Any:
        flat = {k: v for k, v in flatten_dotted(system_train_dict(cfg, name)).items() if k not in ignore}
        return flat, asdict(cfg.budget_of(name)), asdict(cfg.systems[name].sampling)

    return [n for n in cfg.systems if identity(n) == identity(reference)]


def budget_sentence(cfg: StudyConfig, train_cfgs: Mapping[str, TrainConfig]) -> str:
    """How the systems' training budgets compare, in one sentence."""
    budgets = {name: cfg.budget_of(name) for name in cfg.systems}
    batches = {t.batch_size for t in train_cfgs.values()}
    batch = f"batch {batches.pop()}" if len(batches) == 1 else "batch sizes differ"
    values = set(budgets.values())
    processes = "1 process" if cfg.parallel == 1 else f"{cfg.parallel} processes"
    threads = "1 torch thread" if cfg.threads == 1 else f"{cfg.threads} torch threads"
    together = f"{processes} of {threads} each run the trainings, then sampling and evaluation"
    if len(values) == 1:
        b = values.pop()
        if b.minutes is not None:
            return (f"equal wall-clock training time: {b.minutes:g} min per system, {batch}; the steps each "
                    f"system reached in that time are in the table; {together}")
        return f"equal training steps: {b.steps} steps x {batch} per system; {together}"
    listed = ", ".join(f"{cfg.label_of(n)} {b.describe()}" for n, b in budgets.items())
    return f"budgets differ per system ({listed}), {batch}; {together}"


def _overrides(data: Mapping[str, Any]) -> str:
    """``key=value`` list of a (nested or dotted) mapping, for the recipes."""
    flat = flatten_dotted(dict(data))
    return ", ".join(f"`{k}={json.dumps(v)}`" for k, v in flat.items()) or "(none)"


def _sampling(row: Mapping[str, Any]) -> str:
    """The sampler (and vocoder) of a row in words."""
    s, known_level = row["sampling"], row["known_level"]
    levels = set(known_level.values())
    level = levels.pop() if len(levels) == 1 else f"{known_level['v2a']} (v2a) / {known_level['a2v']} (a2v)"
    vocoder = f", vocoder {row['vocoder']}" if row["vocoder"] else ""
    return (f"{s['method']} {s['steps']} steps, lambda {s['guidance_scale']:g}, known modality {level}, "
            f"seed {s['seed']}{vocoder}")


def _system_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A table row for study.json: summaries of every metric and the per-clip sync F1."""
    out = {k: v for k, v in row.items() if k != "metrics"}
    out["metrics"] = {mode: {k: summary_entry(e) for k, e in entries.items()} for mode, entries in row["metrics"].items()}
    out["per_clip_f1"] = {mode: row["metrics"][mode].get(f"sync_{mode}_f1", {}).get("per_item", {})
                          for mode in row["metrics"]}
    return out


def build_report(cfg: StudyConfig, out: Path, rows: Mapping[str, Mapping[str, Any]],
                 lambda_rows: Sequence[Mapping[str, Any]], reference: Mapping[str, Any],
                 train_cfgs: Mapping[str, TrainConfig], notes: Sequence[str], command: str,
                 timing: Mapping[str, Any], say: Callable[[str], None] = print) -> dict[str, Any]:
    """Compose the tables, write ``study.md`` / ``study.json`` into ``out``, print the tables."""
    hw = hardware()
    labels = {name: cfg.label_of(name) for name in cfg.systems}
    budget = budget_sentence(cfg, train_cfgs)
    tests = paired_tests(rows, cfg.compare, cfg.evaluation.n_boot, cfg.evaluation.seed)
    family = eta_family(cfg, cfg.compare[0][0]) if cfg.compare else []
    eta_rows = {n: rows[n] for n in family} if len({rows[n]["eta"] for n in family}) >= 3 else {}
    tol = int(round(cfg.evaluation.sync_tolerance * 1000))
    window = base_train_config(cfg).data.clip_frames

    results = [f"**Budget:** {budget}.", "", *main_table(rows, reference), "",
               f"Sync F1: events detected in the generated audio (v2a) or frames (a2v) against the clip's exact "
               f"event times, +-{tol} ms, mean over {cfg.test.clips} clips [95% bootstrap CI]; *chance*: the same "
               "outputs scored against another clip's events (shuffled pairs); *class acc.*: matched v2a events "
               "whose pitch class is the object's; beat hit rate: beats tracked in the generated audio vs in the "
               "real audio; FAD: generated audio of the v2a outputs vs the real test audio (per set); FVD: generated "
               "frames of the a2v outputs vs the real test frames (per set; with fewer clips than feature "
               "dimensions it is biased upwards and comparable only at equal N); sampling time per clip includes "
               "decoding (the vocoder for mel models, Griffin-Lim unless the recipe names one). *Real clips*: the "
               "detector on the real test clips."]
    sections = [("Results", results)]
    if tests:
        sections.append(("Paired tests (per-clip sync F1)", [
            *tests_table(tests, labels), "",
            "Wilcoxon signed-rank test (Pratt zeros) on the per-clip F1 of the clips both systems have, "
            "Holm-adjusted over all tests in this table; mean difference in F1 points with its bootstrap 95 % CI."]))
    if eta_rows:
        sections.append(("Contrastive weight (eta) sweep", [
            *eta_table(eta_rows), "", "Systems identical except for the contrastive loss weight eta (Eq. 6); "
            "eta 0 is nCMMD."]))
    if lambda_rows:
        sweep = cfg.lambda_sweep
        first = lambda_rows[0]["sampling"]
        sections.append((f"Reconstruction guidance (lambda) sweep: {labels[sweep.system]}", [
            *lambda_table(lambda_rows), "",
            f"The trained {labels[sweep.system]} run re-sampled ({first['method']}, {first['steps']} steps) with "
            f"the known modality {sweep.known_level} and guidance strength lambda (Eq. 3); no retraining. "
            "Re-noised known modality: the paper's replacement plus reconstruction guidance; with the known "
            "modality given clean at level 0 the guidance gradient passes through sqrt(1 - alpha_bar_0) "
            "(0.0064 for the cosine schedule) and is close to a no-op, so the sweep uses re-noised conditioning. "
            "lambda 0 here is therefore not the same sampling as the main table's row when that one uses "
            "clean conditioning."]))
    recipes = [f"- base (every system): {_overrides(cfg.base)}"]
    for name, spec in cfg.systems.items():
        row = rows[name]
        recipes.append(f"- **{labels[name]}** (`{name}`): {_overrides(spec.train)}; budget "
                       f"{cfg.budget_of(name).describe()}; sampling {_sampling(row)}")
    sections.append(("Recipes", recipes))
    if notes:
        sections.append(("Notes", [f"- {n}" for n in notes]))

    wall = (time.time() - timing["started"]) / 60
    load_end = os.getloadavg()
    d = cfg.data
    gpu = f", GPU {hw['gpu']}" if hw["gpu"] else ""
    head = [f"# {cfg.title}", "",
            f"Command: `{command}`", "",
            f"Hardware: {hw['cpu']}, {hw['cores']} cores{gpu}; torch {hw['torch']}, Python {hw['python']}; "
            f"load average (1 min) {timing['load_start'][0]:.1f} at the start, {load_end[0]:.1f} at the end; "
            f"this invocation took {wall:.1f} min.", "",
            f"Training set: {d.clips} synthetic *{d.scene}* clips of {d.seconds:g} s at {d.size}x{d.size} px "
            f"(clip seeds from {d.seed}), training windows of {window / FPS:g} s. Test set: {cfg.test.clips} held-out "
            f"clips of {cfg.test.seconds:g} s (TEST split, seeds from {TEST.seed}).", ""]
    lines = list(head)
    for title, body in sections:
        lines += [f"## {title}", "", *body, ""]
    (out / "study.md").write_text("\n".join(lines))

    study = {
        "title": cfg.title, "command": command, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "hardware": hw,
        "load_average_start": list(timing["load_start"]), "load_average_end": list(load_end), "wall_minutes": wall,
        "budget": budget, "config": asdict(cfg),
        "systems": {name: _system_json(row) for name, row in rows.items()},
        "real_clips": {mode: {k: summary_entry(e) for k, e in reference["metrics"][mode].items()}
                       for mode in ("v2a", "a2v")},
        "paired_tests": tests,
        "eta_sweep": sorted(eta_rows, key=lambda n: rows[n]["eta"]) if eta_rows else None,
        "lambda_sweep": {"system": cfg.lambda_sweep.system, "known_level": cfg.lambda_sweep.known_level,
                         "rows": [_system_json(r) for r in lambda_rows]} if lambda_rows else None,
        "notes": list(notes),
    }
    (out / "study.json").write_text(json.dumps(json_safe(study), indent=1, allow_nan=False) + "\n")
    for title, body in sections:
        if title != "Recipes":
            say(f"\n## {title}\n")
            for line in body:
                say(line)
    say(f"\ncmmd study: wrote {out / 'study.md'} and {out / 'study.json'} ({wall:.1f} min)")
    return study
