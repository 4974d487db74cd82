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

import numpy as np
import torch

from cmmd.config import flatten_dotted
from cmmd.conventions import FPS
from cmmd.apps.study.config import StudyConfig, base_train_config, system_train_dict
from cmmd.apps.study.tables import (chance_tests, curve_table, eta_table, lambda_table, main_table, paired_tests,
                                    pool_seeds, seeds_table, steps_cell, summary_entry, tests_table)
from cmmd.data.splits import TEST, VALIDATION
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
    """How the systems' training budgets compare, in one sentence (a fine-tune's counts its
    source's too: :meth:`StudyConfig.budget_text`)."""
    budgets = {name: cfg.budget_of(name) for name in cfg.systems}
    fine_tunes = any(cfg.lineage(name) for name in cfg.systems)
    batches = {t.batch_size for t in train_cfgs.values()}
    batch = f"batch {batches.pop()}" if len(batches) == 1 else "batch sizes differ"
    values = set(budgets.values())
    processes = "1 process" if cfg.parallel == 1 else f"{cfg.parallel} processes"
    threads = "1 torch thread" if cfg.threads == 1 else f"{cfg.threads} torch threads"
    together = f"{processes} of {threads} each run the trainings, then sampling and evaluation"
    if len(values) == 1 and not fine_tunes:
        b = values.pop()
        if b.minutes is not None:
            return (f"equal wall-clock training time: {b.minutes:g} min per system, {batch}; the steps each "
                    f"system reached in that time are in the table; {together}")
        return f"equal training steps: {b.steps} steps x {batch} per system; {together}"
    listed = ", ".join(f"{cfg.label_of(n)} {cfg.budget_text(n)}" for n in budgets)
    return f"budgets differ per system ({listed}), {batch}; {together}"


def _scene(scene: str, objects: int, tempo_changes: bool) -> str:
    if scene == "impacts":
        return f"impacts, {objects} object{'s' if objects > 1 else ''}"
    return "dance with tempo changes" if tempo_changes else "dance"


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


def pooled_rows(cfg: StudyConfig, rows: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per system, its runs' rows pooled over seeds (:func:`pool_seeds` of the primary metrics),
    with the label, eta, form and steps of its first run."""
    keys = {mode: cfg.primary(mode).key for mode in ("v2a", "a2v")}
    out = {}
    for name in cfg.systems:
        runs = [r for r in rows.values() if r["system"] == name]
        first = runs[0]
        out[name] = {**pool_seeds(runs, keys, cfg.evaluation.n_boot, cfg.evaluation.seed), "system": name,
                     "label": cfg.label_of(name), "eta": first["eta"], "contrastive": first["contrastive"],
                     "steps": "/".join(sorted({steps_cell(r) for r in runs}))}
    return out


def write_curve_plot(cfg: StudyConfig, curves: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """Validation metric against steps, one panel per mode, a line per run (thin) and per system
    (the mean over its seeds, thick); PNG via matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, mode in zip(axes, ("v2a", "a2v")):
        primary = cfg.primary(mode)
        for i, (system, runs) in enumerate(curves.items()):
            colour = f"C{i}"
            by_step: dict[int, list[float]] = {}
            for curve in runs.values():
                pts = sorted((int(s), p[mode]["point"]) for s, p in curve["points"].items() if mode in p)
                if len(runs) > 1:
                    ax.plot([s for s, _ in pts], [primary.scale * v for _, v in pts], color=colour, lw=0.7, alpha=0.4)
                for s, v in pts:
                    by_step.setdefault(s, []).append(v)
            steps = sorted(by_step)
            ax.plot(steps, [primary.scale * float(np.nanmean(by_step[s])) for s in steps], color=colour, lw=2,
                    marker="o", ms=3, label=cfg.label_of(system))
        ax.set_xlabel("training step")
        ax.set_ylabel(f"{primary.label} ({primary.unit})")
        ax.set_title(f"{mode}: {cfg.curve.clips} validation clips, {cfg.curve.steps} sampler steps", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def build_report(cfg: StudyConfig, out: Path, rows: Mapping[str, Mapping[str, Any]],
                 lambda_rows: Sequence[Mapping[str, Any]], reference: Mapping[str, Any],
                 train_cfgs: Mapping[str, TrainConfig], notes: Sequence[str], command: str,
                 timing: Mapping[str, Any], curves: Mapping[str, Mapping[str, Any]] | None = None,
                 say: Callable[[str], None] = print) -> dict[str, Any]:
    """Compose the tables, write ``study.md`` / ``study.json`` (and ``curves.png`` with a curve)
    into ``out``, print the tables. ``rows`` are per run; paired tests, power and the eta table
    use the seeds pooled per system."""
    hw = hardware()
    labels = {name: cfg.label_of(name) for name in cfg.systems}
    budget = budget_sentence(cfg, train_cfgs)
    keys = {mode: cfg.primary(mode).key for mode in ("v2a", "a2v")}
    units = {mode: (cfg.primary(mode).label, cfg.primary(mode).scale, cfg.primary(mode).unit) for mode in keys}
    pooled = pooled_rows(cfg, rows)
    seeded = any(r["seed"] is not None for r in rows.values())
    tests = paired_tests(pooled, cfg.compare, cfg.evaluation.n_boot, cfg.evaluation.seed, keys)
    chance = chance_tests(pooled, keys, cfg.evaluation.n_boot, cfg.evaluation.seed)
    family = eta_family(cfg, cfg.compare[0][0]) if cfg.compare else []
    eta_rows = {n: pooled[n] for n in family} if len({pooled[n]["eta"] for n in family}) >= 3 else {}
    tol = int(round(cfg.evaluation.sync_tolerance * 1000))
    window = base_train_config(cfg).data.clip_frames
    lower = [f"{units[m][0]} is lower-better" for m in keys if cfg.primary(m).lower_is_better]

    results = [f"**Budget:** {budget}.", "", *main_table(rows, reference), "",
               f"Sync F1: events detected in the generated audio (v2a) or frames (a2v) against the clip's exact "
               f"event times, +-{tol} ms, mean over {cfg.test.clips} clips [95% bootstrap CI]; *chance*: the same "
               "outputs scored against another clip's events (shuffled pairs); *class acc.*: matched v2a events "
               "whose pitch class is the object's; beat hit rate: beats tracked in the generated audio vs in the "
               "real audio; FAD: generated audio of the v2a outputs vs the real test audio (per set); FVD: generated "
               "frames of the a2v outputs vs the real test frames (per set; with fewer clips than feature "
               "dimensions it is biased upwards and comparable only at equal N); sampling time per clip includes "
               "decoding (the vocoder for mel models, Griffin-Lim unless the recipe names one). *Real clips*: the "
               "detector on the real test clips."
               + (" A fine-tune's *steps* read `source + fine-tune (ft)` and its *train min* is the wall time of "
                  "both runs added up (the parts in brackets), what it cost to reach its result: compare it at "
                  "equal wall-clock with that sum." if any(r.get("init") for r in rows.values()) else "")]
    sections = [("Results", results)]
    if seeded:
        sections.append(("Seeds", [
            *seeds_table(pooled, keys, units), "",
            "Each training seed is one run (TrainConfig.seed: initialisation and the order of training windows; "
            "the training set is the same). Per-seed means over the test clips, their SD (the seed-level spread), "
            "and the pooled per-clip mean: each clip's score averaged over the seeds, mean over clips with its "
            "bootstrap 95 % CI over clips."]))
    if tests:
        sections.append(("Paired tests" + (" (seeds pooled per clip)" if seeded else ""), [
            *tests_table(tests, labels, units), "",
            "Wilcoxon signed-rank test (Pratt zeros) on the per-clip scores of the clips both systems have"
            + (" (each clip's score the mean over the system's seeds)" if seeded else "")
            + ", Holm-adjusted over all tests in this table; mean difference a - b with its bootstrap 95 % CI"
            + (f" ({'; '.join(lower)}: a negative difference favours a)" if lower else "") + ". *MDE*: the smallest "
            f"mean paired difference detectable with 80 % power at the Holm family's strictest level (0.05 / "
            f"{len(tests)} tests), from the observed SD of the paired differences and the number of pairs: "
            "(z_(1-alpha/2) + z_0.8) * SD / sqrt(n), a normal approximation (for the Wilcoxon test itself an "
            "approximation; its efficiency relative to the t test is 0.955 for normal differences)."]))
    if chance:
        chance_labels = {**labels, **{t["b"]: "shuffled pairs" for t in chance}}
        sections.append(("Against shuffled pairs" + (" (seeds pooled per clip)" if seeded else ""), [
            *tests_table(chance, chance_labels, units), "",
            "Has each system learned sync at all? Its per-clip score against the same outputs scored against "
            "another test clip's reference (a fixed derangement: the *chance* column above)"
            + (", both averaged over the system's seeds" if seeded else "")
            + f"; Wilcoxon signed-rank (Pratt zeros), Holm-adjusted over the {len(chance)} tests of this table (a "
            "family of its own), MDE as above."]))
    if curves:
        curve_lines = []
        for mode in ("v2a", "a2v"):
            curve_lines += [f"**{units[mode][0]}** ({units[mode][2]}):", "",
                            *curve_table(curves, labels, mode, units[mode][1]), ""]
        plot = write_curve_plot(cfg, curves, out / "curves.png")
        curve_lines += [f"![learning curves]({plot.name})", "",
                        f"Validation learning curves: every {cfg.curve.every} steps (and the last) each run's "
                        f"checkpoint (EMA weights) samples {cfg.curve.clips} VALIDATION clips (set seed "
                        f"{VALIDATION.seed}, never the test clips) with {cfg.curve.steps} sampler steps, the system's "
                        "own sampling otherwise; mean over seeds +- SD over seeds. A trend, not a headline: few clips "
                        "and few steps."
                        + (" A fine-tune's points are placed after its source's training: step = source steps + "
                           "fine-tune steps, `train_seconds` = the source's training minutes + the fine-tune's "
                           "seconds." if any(cfg.lineage(n) for n in curves) else "")]
        timed = []
        for system, runs in curves.items():
            rates = [p["train_seconds"] / int(step) for c in runs.values() for step, p in c["points"].items()
                     if p.get("train_seconds")]
            if rates:
                timed.append(f"{labels[system]} {1000 * float(np.mean(rates)) / 60:.1f} min")
        if timed:
            curve_lines += ["", "Training wall time per 1000 steps (mean over the curve points and seeds; each point's "
                            "`train_seconds` is in study.json, for reading the curves at equal wall-clock time): "
                            f"{', '.join(timed)}."]
        gone = [f"{run}: {', '.join(map(str, c['missing']))}" for runs in curves.values() for run, c in runs.items()
                if c["missing"]]
        if gone:
            curve_lines += ["", "Curve steps without a checkpoint (the run was trained without this curve, or its "
                            f"checkpoints were removed after a curve with other settings): {'; '.join(gone)}."]
        sections.append(("Learning curves (validation)", curve_lines))
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
        row = next(r for r in rows.values() if r["system"] == name)
        seeds = [run.seed for run in cfg.runs_of(name)]
        dpo = spec.init_from and train_cfgs[cfg.runs_of(name)[0].name].diffusion.loss.contrastive == "dpo"
        source = (f"starts from the final EMA weights of **{labels[spec.init_from]}**'s run of the same seed "
                  f"(init_from{', also the frozen DPO reference' if dpo else ''}); " if spec.init_from else "")
        trained = (f"the runs of **{labels[spec.trained_as]}**" if spec.trained_as else
                   f"{source}{_overrides(spec.train)}; budget {cfg.budget_text(name)}")
        seed_note = f"; seeds {', '.join(map(str, seeds))}" if seeds != [None] else ""
        recipes.append(f"- **{labels[name]}** (`{name}`): {trained}{seed_note}; sampling {_sampling(row)}")
    sections.append(("Recipes", recipes))
    if notes:
        sections.append(("Notes", [f"- {n}" for n in notes]))

    wall = (time.time() - timing["started"]) / 60
    load_end = os.getloadavg()
    d = cfg.data
    test_scene = cfg.test.spec(d)
    gpu = f", GPU {hw['gpu']}" if hw["gpu"] else ""
    head = [f"# {cfg.title}", "",
            f"Command: `{command}`", "",
            f"Hardware: {hw['cpu']}, {hw['cores']} cores{gpu}; torch {hw['torch']}, Python {hw['python']}; "
            f"load average (1 min) {timing['load_start'][0]:.1f} at the start, {load_end[0]:.1f} at the end; "
            f"this invocation took {wall:.1f} min.", "",
            f"Training set: {d.clips} synthetic *{_scene(d.scene, d.objects, d.tempo_changes)}* clips of "
            f"{d.seconds:g} s at {d.size}x{d.size} px (clip seeds from {d.seed}; video as "
            f"{'pixels' if d.codec == 'pixel' else d.codec + ' latents where a recipe says data.video: latents'}), "
            f"training windows of {window / FPS:g} s. Test set: {cfg.test.clips} held-out "
            f"*{_scene(test_scene.scene, test_scene.objects, test_scene.tempo_changes)}* clips of "
            f"{cfg.test.seconds:g} s (TEST split, seeds from {TEST.seed}).", ""]
    lines = list(head)
    for title, body in sections:
        lines += [f"## {title}", "", *body, ""]
    (out / "study.md").write_text("\n".join(lines))

    study = {
        "title": cfg.title, "command": command, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "hardware": hw,
        "load_average_start": list(timing["load_start"]), "load_average_end": list(load_end), "wall_minutes": wall,
        "budget": budget, "config": asdict(cfg),
        "systems": {name: _system_json(row) for name, row in rows.items()},
        "pooled": {name: {k: v for k, v in row.items()} for name, row in pooled.items()} if seeded else None,
        "primary": {mode: asdict(cfg.primary(mode)) for mode in ("v2a", "a2v")},
        "curves": {name: {run: c["points"] for run, c in runs.items()} for name, runs in (curves or {}).items()} or None,
        "real_clips": {mode: {k: summary_entry(e) for k, e in reference["metrics"][mode].items()}
                       for mode in ("v2a", "a2v")},
        "paired_tests": tests,
        "chance_tests": chance,
        "eta_sweep": sorted(eta_rows, key=lambda n: pooled[n]["eta"]) if eta_rows else None,
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
