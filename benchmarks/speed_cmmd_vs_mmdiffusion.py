"""Training and sampling speed of CMMD against the MM-Diffusion baseline, same machine, one run.

For each pair of models prints parameters, forward GFLOP (counted on the meta device, attention
included), the training step time (forward + backward + AdamW), the forward time under
``no_grad`` and the sampling time per clip as forward time x sampler steps (50-step DDIM for
CMMD, 20-step DPM-Solver for MM-Diffusion), each also per second of clip; then the ratios.

A training step is :func:`cmmd.train.objective.step_objective`, the function ``cmmd train``
calls: each method's objective (v/cosine for CMMD, eps/linear for MM-Diffusion) and, for CMMD with
the contrastive loss, the step's negatives drawn by ``cmmd.data.negatives.make_negatives`` and
run through the network with the positives. CMMD is timed in several training schemes
(:data:`SCHEMES`) beside MM-Diffusion:

* nCMMD: no contrastive loss, ``B`` rows through the network per step of batch ``B``;
* CMMD: the paper's Eq. 6 (``contrastive="paper"``, eta 1e-4) with training's default negatives,
  one audio and one video negative per sample: ``3B`` rows;
* cheaper negatives: on a quarter of the batch (``negatives.num_per_step = ceil(B / 4)``,
  ``B + 2 ceil(B / 4)`` rows); one modality per step (``negatives.modalities = alternate``, ``2B``
  rows); both (``B + ceil(B / 4)`` rows).

The rows the network sees per step are counted during the run and printed with each row.

Pairs (``--quick``: the tiny ones only, 2 repeats; default: tiny and small; ``--full``: also
each paper's own configuration; ``--paper``: that one alone, 2 repeats):

* matched parameters at 1.6 s, each method's input: CMMD on 16 x 4 x 16 x 16 SD-VAE latents +
  80 x 100 mels; MM-Diffusion on 16 x 3 x 64 x 64 pixels + 25,600 samples;
* matched parameters at 1.6 s, same video input: both on 16 x 3 x 32 x 32 pixels (CMMD through its
  2x2 space-to-depth stem), audio as each method takes it;
* paper configurations: CMMD ``paper`` on 18 x 4 x 16 x 16 + 80 x 112 (1.8 s) vs
  ``mmdiffusion-aist`` on 16 x 3 x 64 x 64 + 25,600 (1.6 s).

The models of a pair are timed alternately (warm-up, then each CMMD scheme, MM-Diffusion, each
CMMD scheme, ...) so that a change in machine load hits all; calls shorter than a second are
looped so that each timed sample lasts about a second. Wall time is the median per call; CPU time
(``time.process_time``, all threads of this process) and the 1-minute load average are reported
next to it. The CMMD schemes of a pair share one network and optimizer (the time of a step does
not depend on the weights' values).

On a machine shared with other jobs use ``--threads 1``: a single-threaded process's CPU time
hardly depends on the load, while with more threads than free cores OpenMP threads spin at
barriers and both wall and CPU time inflate (most for small models, whose many small operations
mean many barriers).

    python benchmarks/speed_cmmd_vs_mmdiffusion.py --quick
    python benchmarks/speed_cmmd_vs_mmdiffusion.py --threads 1 --repeats 2 --output docs/results/speed_cmmd_vs_mmdiffusion.md
    python benchmarks/speed_cmmd_vs_mmdiffusion.py --paper --batch-size 1 --repeats 1 --threads 1

The paper pair at batch 1 peaks at about 13 GB resident (both networks with AdamW, MM-Diffusion's
64x64 activations); batch 2 did not fit in 23 GB.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cmmd.data.negatives import NegativeConfig
from cmmd.diffusion import DiffusionLossConfig, make_schedule
from cmmd.models import build_unet, count_parameters
from cmmd.models.mmdiffusion import build_mmdiffusion
from cmmd.train.objective import step_objective

# Official MM-Diffusion code at its AIST++ configuration, batch 1, 2 idle CPU cores (MMDIFFUSION.md).
REFERENCE_TRAIN_S = 71.0
REFERENCE_FORWARD_S = 17.4
TRAIN_TARGET = 3.0  # CMMD training throughput >= 3x MM-Diffusion at matched parameters
ETA = 1e-4  # the paper's contrastive weight, as configs/study_*.yaml train CMMD


@dataclass(frozen=True)
class Setup:
    """One model on one clip: ``video`` is (F, C, H, W), ``audio`` (M, L); ``seconds`` of clip."""

    method: str
    preset: str
    video: tuple[int, int, int, int]
    audio: tuple[int, int]
    seconds: float
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def is_cmmd(self) -> bool:
        return self.method == "CMMD"

    @property
    def sampler(self) -> tuple[str, int]:
        """The sampler each paper uses: 50-step DDIM (CMMD), 20-step DPM-Solver (MM-Diffusion)."""
        return ("DDIM", 50) if self.is_cmmd else ("DPM-Solver", 20)

    def build(self) -> nn.Module:
        if self.is_cmmd:
            return build_unet(self.preset, **self.overrides)
        return build_mmdiffusion(self.preset, **self.overrides)

    def describe(self) -> str:
        f, c, h, w = self.video
        m, length = self.audio
        audio = f"{m}x{length} mel" if self.is_cmmd else f"{length} samples"
        return f"{f}x{c}x{h}x{w} + {audio}"


@dataclass(frozen=True)
class Pair:
    """A CMMD model and an MM-Diffusion model compared side by side."""

    name: str
    cmmd: Setup
    mmdiffusion: Setup
    matched: bool


LATENTS = {"video_channels": 4, "patch_size": 1}
PIXELS_32 = {"video_channels": 3, "patch_size": 2}


def pairs(which: str) -> list[Pair]:
    """The comparisons run by ``--quick`` / default / ``--full`` / ``--paper`` (module docstring)."""
    mel_16, wave_16 = (80, 100), (1, 25_600)
    paper = Pair("paper configurations", Setup("CMMD", "paper", (18, 4, 16, 16), (80, 112), 1.8),
                 Setup("MM-Diffusion", "mmdiffusion-aist", (16, 3, 64, 64), wave_16, 1.6), False)
    if which == "paper":
        return [paper]
    out = [
        Pair("tiny, own inputs, 1.6 s", Setup("CMMD", "tiny", (16, 4, 16, 16), mel_16, 1.6, LATENTS),
             Setup("MM-Diffusion", "mmdiffusion-tiny", (16, 3, 64, 64), wave_16, 1.6), True),
        Pair("tiny, 32x32 pixels, 1.6 s", Setup("CMMD", "tiny", (16, 3, 32, 32), mel_16, 1.6, PIXELS_32),
             Setup("MM-Diffusion", "mmdiffusion-tiny", (16, 3, 32, 32), wave_16, 1.6), True),
    ]
    if which == "quick":
        return out
    out += [
        Pair("small, own inputs, 1.6 s", Setup("CMMD", "small", (16, 4, 16, 16), mel_16, 1.6, LATENTS),
             Setup("MM-Diffusion", "mmdiffusion-matched-small", (16, 3, 64, 64), wave_16, 1.6), True),
        Pair("small, 32x32 pixels, 1.6 s", Setup("CMMD", "small", (16, 3, 32, 32), mel_16, 1.6, PIXELS_32),
             Setup("MM-Diffusion", "mmdiffusion-matched-small", (16, 3, 32, 32), wave_16, 1.6), True),
    ]
    if which == "full":
        out.append(paper)
    return out


def forward_gflop(setup: Setup) -> float:
    """GFLOP of one batch-1 forward pass, counted on the meta device (no memory, no time)."""
    with torch.device("meta"):
        model = setup.build()
        video, audio = torch.empty(1, *setup.video), torch.empty(1, *setup.audio)
        t = torch.zeros(1)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(video, audio, t)
    return counter.get_total_flops() / 1e9


@dataclass(frozen=True)
class Scheme:
    """How a training step treats negatives (module docstring).

    ``contrastive``: ``DiffusionLossConfig.contrastive`` (``"none"``: no negatives drawn);
    ``fraction``: share of the batch given a negative of each modality, as
    ``negatives.num_per_step = ceil(fraction * B)`` (1: all rows, training's default);
    ``modalities``: ``negatives.modalities``.
    """

    name: str
    contrastive: str = "none"
    fraction: float = 1.0
    modalities: str = "both"

    def loss_config(self, setup: Setup) -> DiffusionLossConfig:
        return DiffusionLossConfig(prediction="v" if setup.is_cmmd else "eps", contrastive=self.contrastive, eta=ETA)

    def negative_config(self, batch: int) -> NegativeConfig:
        count = None if self.fraction >= 1 else math.ceil(self.fraction * batch)
        return NegativeConfig(num_per_step=count, modalities=self.modalities)

    def describe(self, batch: int) -> str:
        if self.contrastive == "none":
            return "no negatives"
        cfg = self.negative_config(batch)
        rows = "every row" if cfg.num_per_step is None else f"{cfg.num_per_step} of {batch} rows"
        which = "audio + video" if self.modalities == "both" else self.modalities
        return f"Eq. 6, eta {ETA:.0e}; {which} negatives on {rows}"


SCHEMES = (
    Scheme("nCMMD"),
    Scheme("CMMD", "paper"),
    Scheme("CMMD, negatives on 1/4 of the batch", "paper", fraction=0.25),
    Scheme("CMMD, one modality per step", "paper", modalities="alternate"),
    Scheme("CMMD, 1/4 of the batch, one modality per step", "paper", fraction=0.25, modalities="alternate"),
)
MMDIFFUSION = Scheme("MM-Diffusion")


class Network:
    """A model and its AdamW optimizer; ``rows`` counts the batch rows of every forward pass."""

    def __init__(self, setup: Setup) -> None:
        torch.manual_seed(0)
        self.model = setup.build()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.rows = 0
        self.model.register_forward_pre_hook(self._count)

    def _count(self, _module: nn.Module, args: tuple[Any, ...]) -> None:
        self.rows += int(args[0].shape[0])


class Runner:
    """One training scheme of a network on a batch: a timed training step and a timed forward pass.

    ``train_step`` is a training step as ``cmmd train`` runs it (:func:`step_objective`, then
    backward and AdamW); ``rows_per_step`` is the rows its forward pass saw (``None`` before).
    """

    def __init__(self, setup: Setup, network: Network, scheme: Scheme, batch: int) -> None:
        self.setup, self.network, self.scheme, self.batch = setup, network, scheme, batch
        self.model = network.model
        g = torch.Generator().manual_seed(0)
        self.video = torch.randn(batch, *setup.video, generator=g)
        self.audio = torch.randn(batch, *setup.audio, generator=g)
        self.schedule = make_schedule("cosine" if setup.is_cmmd else "linear")
        self.loss_cfg = scheme.loss_config(setup)
        self.negative_cfg = scheme.negative_config(batch)
        self.generator = torch.Generator().manual_seed(1)
        self.step = 0
        self.rows_per_step: int | None = None

    def train_step(self) -> None:
        net = self.network
        net.model.train()
        net.optimizer.zero_grad(set_to_none=True)
        before = net.rows
        loss, _ = step_objective(net.model, self.video, self.audio, self.schedule, self.loss_cfg, self.negative_cfg,
                                 self.generator, self.step)
        self.rows_per_step = net.rows - before
        loss.backward()
        net.optimizer.step()
        self.step += 1

    def forward(self) -> None:
        self.model.eval()
        with torch.no_grad():
            self.model(self.video[:1], self.audio[:1], torch.full((1,), 500.0))


def runners(pair: Pair, batch: int, schemes: tuple[Scheme, ...] = SCHEMES) -> list[Runner]:
    """One runner per CMMD scheme (all on one network), then MM-Diffusion's."""
    cmmd = Network(pair.cmmd)
    out = [Runner(pair.cmmd, cmmd, scheme, batch) for scheme in schemes]
    return out + [Runner(pair.mmdiffusion, Network(pair.mmdiffusion), MMDIFFUSION, batch)]


def _clock(fn: Callable[[], None]) -> tuple[float, float, float]:
    """(wall s, CPU s of this process, 1-minute load average at the end) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu, os.getloadavg()[0]


def _alternate(fns: list[Callable[[], None]], repeats: int, min_sample_s: float = 1.0) -> list[dict[str, float]]:
    """Per-call wall/CPU time of each function, timed in turns; the median of ``repeats`` samples.

    Each function is warmed up once; a sample runs it ``n`` times in a row, ``n`` chosen from the
    warm-up so that a sample lasts about ``min_sample_s`` (sub-second calls are noisy on a shared
    machine).
    """
    calls = [max(1, round(min_sample_s / _clock(fn)[0])) for fn in fns]

    def run(fn: Callable[[], None], n: int) -> Callable[[], None]:
        def loop() -> None:
            for _ in range(n):
                fn()

        return loop

    samples: list[list[tuple[float, float, float]]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, n, out in zip(fns, calls, samples):
            wall, cpu, load = _clock(run(fn, n))
            out.append((wall / n, cpu / n, load))
    result = []
    for out in samples:
        median = statistics.median(s[0] for s in out)
        closest = min(out, key=lambda s: abs(s[0] - median))
        result.append({"wall": median, "cpu": closest[1], "load": statistics.mean(s[2] for s in out)})
    return result


def measure_pair(pair: Pair, batch: int, repeats: int) -> list[dict[str, Any]]:
    """All numbers for each runner of a pair, CMMD schemes first; times in s, each ``{"wall", "cpu"}``.

    ``train``: one training step per clip (step time / batch); ``rows``: rows through the
    network per step; ``forward``: one batch-1 forward pass (one per network: nCMMD's network
    serves every CMMD scheme); ``sampling``: forward x the method's sampler steps; ``load``: mean
    1-minute load average while timing training and forward.
    """
    rs = runners(pair, batch)
    train = _alternate([r.train_step for r in rs], repeats)
    fwd_cmmd, fwd_mm = _alternate([rs[0].forward, rs[-1].forward], repeats)
    gflop = {s.method: forward_gflop(s) for s in (pair.cmmd, pair.mmdiffusion)}
    out = []
    for runner, tr in zip(rs, train):
        s = runner.setup
        _, steps = s.sampler
        fw = fwd_cmmd if s.is_cmmd else fwd_mm
        out.append({
            "setup": s,
            "scheme": runner.scheme,
            "params": count_parameters(runner.model),
            "gflop": gflop[s.method],
            "rows": runner.rows_per_step,
            "train": {k: tr[k] / batch for k in ("wall", "cpu")},
            "forward": {k: fw[k] for k in ("wall", "cpu")},
            "sampling": {k: fw[k] * steps for k in ("wall", "cpu")},
            "load": (tr["load"], fw["load"]),
        })
    del rs
    return out


def _row(name: str, r: dict[str, Any], batch: int) -> str:
    s: Setup = r["setup"]
    scheme: Scheme = r["scheme"]
    sampler, steps = s.sampler
    tr, fw, sm = r["train"], r["forward"], r["sampling"]
    if scheme.contrastive == "none":
        fwd = (f"{fw['wall']:.3f} / {fw['cpu']:.3f} | {sm['wall']:.1f} / {sm['cpu']:.1f} ({steps}-step {sampler}) "
               f"| {sm['cpu'] / s.seconds:.1f}")
    else:
        fwd = "as nCMMD | as nCMMD | as nCMMD"
    return (
        f"| {name} | {scheme.name} | `{s.preset}` | {scheme.describe(batch)} | {r['rows']} | {r['params'] / 1e6:.2f} "
        f"| {s.describe()} | {s.seconds:.1f} | {r['gflop']:.1f} | {tr['wall']:.2f} / {tr['cpu']:.2f} "
        f"| {tr['cpu'] / s.seconds:.2f} | {fwd} | {r['load'][0]:.1f} / {r['load'][1]:.1f} |"
    )


def _ratio(m: dict[str, float], c: dict[str, float], m_seconds: float = 1.0, c_seconds: float = 1.0) -> str:
    """MM-Diffusion / CMMD time ratio, wall and CPU, optionally per second of each clip."""
    wall = (m["wall"] / m_seconds) / (c["wall"] / c_seconds)
    cpu = (m["cpu"] / m_seconds) / (c["cpu"] / c_seconds)
    return f"{wall:.1f}x / {cpu:.1f}x"


def train_ratio_cpu(m: dict[str, Any], c: dict[str, Any]) -> float:
    """MM-Diffusion / CMMD training CPU time per clip-second (> 1: CMMD trains faster)."""
    return (m["train"]["cpu"] / m["setup"].seconds) / (c["train"]["cpu"] / c["setup"].seconds)


def report(results: list[tuple[Pair, list[dict[str, Any]]]], args: argparse.Namespace, header: str) -> str:
    """The markdown tables: one line per model and scheme, then the MM-Diffusion / CMMD ratios."""
    batch = args.batch_size
    lines = [
        header,
        "",
        "Times are wall / CPU seconds (CPU: `time.process_time`, all threads of the process). Rows/step: "
        f"batch rows through the network per training step of {batch} clips, counted during the run.",
        "",
        "| pair | row | model | negatives | rows/step | params (M) | clip (batch 1) | clip s | GFLOP/fwd "
        "| train s/clip | train CPU s per clip-s | fwd s | sampling s/clip | sampling CPU s per clip-s "
        "| load 1 min (train / fwd) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for pair, rows in results:
        lines += [_row(pair.name, r, batch) for r in rows]
    lines += [
        "",
        "Training: ratios MM-Diffusion / CMMD, wall / CPU (> 1: CMMD is faster; per clip-s divides each "
        "time by its clip's length). FLOP/step: forward GFLOP x rows/step. Target: CMMD >= "
        f"{TRAIN_TARGET:.0f}x per training clip-second at matched parameters, judged on CPU time.",
        "",
        "| pair | CMMD scheme | FLOP/step | training step | training per clip-s | >= 3x? |",
        "|---|---|---|---|---|---|",
    ]
    for pair, rows in results:
        m = rows[-1]
        for c in rows[:-1]:
            ratio = train_ratio_cpu(m, c)
            verdict = ("yes" if ratio >= TRAIN_TARGET else "NO") if pair.matched else "n/a (not matched)"
            cells = [
                c["scheme"].name,
                f"{(m['gflop'] * m['rows']) / (c['gflop'] * c['rows']):.1f}x",
                _ratio(m["train"], c["train"]),
                _ratio(m["train"], c["train"], m["setup"].seconds, c["setup"].seconds),
                verdict,
            ]
            lines.append(f"| {pair.name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Sampling (no negatives: the same for every CMMD scheme): ratios MM-Diffusion / nCMMD, wall / CPU.",
        "",
        "| pair | FLOP/fwd | forward | sampling/clip | sampling per clip-s |",
        "|---|---|---|---|---|",
    ]
    for pair, rows in results:
        c, m = rows[0], rows[-1]
        cs, ms = c["setup"].seconds, m["setup"].seconds
        cells = [
            f"{m['gflop'] / c['gflop']:.1f}x",
            _ratio(m["forward"], c["forward"]),
            _ratio(m["sampling"], c["sampling"]),
            _ratio(m["sampling"], c["sampling"], ms, cs),
        ]
        lines.append(f"| {pair.name} | " + " | ".join(cells) + " |")
    for pair, rows in results:
        m = rows[-1]
        if m["setup"].preset == "mmdiffusion-aist" and batch == 1:
            lines += [
                "",
                f"MM-Diffusion AIST++ configuration, batch 1: {m['train']['wall']:.1f} s per training step "
                f"(CPU {m['train']['cpu']:.1f} s), {m['forward']['wall']:.1f} s per forward pass "
                f"(CPU {m['forward']['cpu']:.1f} s) with {torch.get_num_threads()} torch thread(s); official code on "
                f"2 idle cores: {REFERENCE_TRAIN_S:.0f} s and {REFERENCE_FORWARD_S:.1f} s.",
            ]
    return "\n".join(lines)


def machine() -> str:
    """CPU model, cores, threads, torch version."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    threads = torch.get_num_threads()
    return (
        f"{model}, {os.cpu_count()} logical cores, torch {torch.__version__} on {threads} "
        f"thread{'s' if threads > 1 else ''}, Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="matched tiny pairs only, 2 repeats")
    size.add_argument("--full", action="store_true", help="add the paper configurations (minutes per step on CPU)")
    size.add_argument("--paper", action="store_true", help="the paper configurations only")
    parser.add_argument("--batch-size", type=int, default=4,
                        help="training batch (forward passes use 1 clip); at least 2 for swap/segment negatives")
    parser.add_argument("--repeats", type=int, default=0, help="timed repeats (default: 2 with --quick/--full, else 3)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--output", help="also write the report (markdown) to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (2 if args.quick or args.full or args.paper else 3)
    which = "quick" if args.quick else "full" if args.full else "paper" if args.paper else "default"

    started = datetime.datetime.now().astimezone()
    load_start = os.getloadavg()
    print(f"{machine()}; load average at start {load_start[0]:.1f}", flush=True)
    results = []
    for pair in pairs(which):
        print(f"... {pair.name}", flush=True)
        results.append((pair, measure_pair(pair, args.batch_size, repeats)))
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    minutes = (datetime.datetime.now().astimezone() - started).total_seconds() / 60
    header = "\n".join(
        [
            f"Command: `{command}`",
            f"Date: {started:%Y-%m-%d %H:%M %Z} (run took {minutes:.1f} min)",
            f"Machine: {machine()}",
            f"Load average (1/5/15 min) at start {load_start[0]:.1f}/{load_start[1]:.1f}/{load_start[2]:.1f}, "
            f"at end {'/'.join(f'{x:.1f}' for x in os.getloadavg())}",
            f"Training batch {args.batch_size}, {repeats} timed repeats after one warm-up, median wall time; "
            "forward passes on 1 clip under no_grad; sampling = forward time x steps.",
        ]
    )
    text = report(results, args, header)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
