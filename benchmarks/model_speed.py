"""Speed and memory of the joint U-Net presets: training step, sampling, and on CUDA bf16/compile.

For each preset (``paper`` only with ``--all`` on CPU) prints parameters, forward+backward time
per clip, peak memory, and sampling time per clip for 50-step DDIM and 20-step DPM-Solver++
(``cmmd.diffusion.samplers``; without it, 50 and 20 raw forward passes under no_grad, said so in
the output). On CUDA also bf16-autocast and ``torch.compile`` training-step timings and the
achieved TFLOP/s (FLOPs counted by ``torch.utils.flop_counter.FlopCounterMode``).

Each preset runs in a fresh (spawned) process so that CPU peak memory (``ru_maxrss``) is its own.

    OMP_NUM_THREADS=2 python benchmarks/model_speed.py --batch-size 8
    python benchmarks/model_speed.py --all --device cuda --batch-size 16
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import os
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from cmmd.models import PRESETS, build_unet, count_parameters

# Frame size per preset: tiny is the pixel-space CPU demo (32x32 frames); small and paper take
# SD-VAE latents of 128x128 frames (4 x 16 x 16). Channels come from the preset.
FRAME_SIZE = {"tiny": 32, "small": 16, "paper": 16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> tuple[float, float]:
    """(median, best) wall time of ``fn`` in seconds, after ``warmup`` untimed calls.

    On a CPU shared with other jobs the best of several runs is the estimate of the
    uncontended time; the median says how noisy the machine was.
    """
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def _inputs(name: str, batch: int, frames: int, length: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    channels, size = PRESETS[name].video_channels, FRAME_SIZE[name]
    g = torch.Generator().manual_seed(0)
    video = torch.randn(batch, frames, channels, size, size, generator=g).to(device)
    audio = torch.randn(batch, 80, length, generator=g).to(device)
    t = (torch.rand(batch, generator=g) * 999).to(device)
    return video, audio, t


def _train_step(model: torch.nn.Module, video: torch.Tensor, audio: torch.Tensor, t: torch.Tensor,
                autocast: bool) -> Callable[[], None]:
    """One forward+backward on a squared-error loss (no optimizer: that cost is the trainer's)."""

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast(video.device.type, dtype=torch.bfloat16, enabled=autocast):
            v_out, a_out = model(video, audio, t)
        ((v_out.float() - video).square().mean() + (a_out.float() - audio).square().mean()).backward()

    return step


def _sampling_times(model: torch.nn.Module, name: str, args: argparse.Namespace,
                    device: torch.device) -> dict[str, Any]:
    """Per-clip time of 50-step DDIM and 20-step DPM-Solver++, or of 50/20 raw forward passes."""
    batch = args.sample_batch
    video, audio, t = _inputs(name, batch, args.frames, args.length, device)
    model.eval()
    out: dict[str, Any] = {}
    if importlib.util.find_spec("cmmd.diffusion.samplers") is not None:
        from cmmd.diffusion.denoiser import JointDenoiser
        from cmmd.diffusion.samplers import sample
        from cmmd.diffusion.schedules import make_schedule

        schedule = make_schedule("cosine")
        denoiser = JointDenoiser(model, schedule, prediction="v")
        out["sampling"] = "samplers"
        for label, method, steps in (("ddim50", "ddim", 50), ("dpmpp20", "dpmpp2m", 20)):
            def run(method: str = method, steps: int = steps) -> None:
                sample(denoiser, schedule, tuple(video.shape), tuple(audio.shape), method=method, steps=steps,
                       generator=torch.Generator(device).manual_seed(0), device=device,
                       autocast=device.type == "cuda")
            out[label] = _timed(run, device, repeats=1, warmup=0)[1] / batch
    else:
        out["sampling"] = "raw forward passes (cmmd.diffusion.samplers not found)"
        for label, steps in (("ddim50", 50), ("dpmpp20", 20)):
            def run(steps: int = steps) -> None:
                with torch.no_grad():
                    for _ in range(steps):
                        model(video, audio, t)
            out[label] = _timed(run, device, repeats=1, warmup=0)[1] / batch
    model.train()
    return out


def measure_preset(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """All measurements for one preset (run in its own process)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    torch.manual_seed(0)
    model = build_unet(name).to(device)
    video, audio, t = _inputs(name, args.batch_size, args.frames, args.length, device)
    res: dict[str, Any] = {"preset": name, "params": count_parameters(model), "device": str(device)}

    counter = FlopCounterMode(display=False)
    with counter:
        _train_step(model, video, audio, t, autocast=False)()
    flops = counter.get_total_flops()
    res["gflop_per_clip"] = flops / args.batch_size / 1e9

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step = _train_step(model, video, audio, t, autocast=False)
    median, seconds = _timed(step, device, args.repeats)
    res["train_s_per_clip"] = seconds / args.batch_size
    res["train_median_s_per_clip"] = median / args.batch_size
    res["train_tflops"] = flops / seconds / 1e12
    if device.type == "cuda":
        res["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        bf16 = _timed(_train_step(model, video, audio, t, autocast=True), device, args.repeats)[1]
        res["bf16_s_per_clip"] = bf16 / args.batch_size
        res["bf16_tflops"] = flops / bf16 / 1e12
        compiled = torch.compile(model)
        comp = _timed(_train_step(compiled, video, audio, t, autocast=True), device, args.repeats, warmup=3)[1]
        res["compile_bf16_s_per_clip"] = comp / args.batch_size
        res["compile_bf16_tflops"] = flops / comp / 1e12
    else:
        # ru_maxrss is KiB on Linux: the process peak, less what imports had already used.
        res["peak_mem_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline_rss) / 1024

    if not args.no_sampling:
        res.update(_sampling_times(model, name, args, device))
    return res


def _report(res: dict[str, Any], args: argparse.Namespace) -> None:
    channels, size = PRESETS[res["preset"]].video_channels, FRAME_SIZE[res["preset"]]
    lines = [
        f"== {res['preset']}: {res['params'] / 1e6:.2f} M params on {res['device']}; "
        f"clip = {args.frames}x{channels}x{size}x{size} video + 80x{args.length} mel, "
        f"{res['gflop_per_clip']:.1f} GFLOP per clip fwd+bwd",
        f"   train fwd+bwd fp32 : {res['train_s_per_clip'] * 1e3:8.1f} ms/clip  (batch {args.batch_size}: "
        f"{res['train_s_per_clip'] * args.batch_size:.3f} s/step best, "
        f"{res['train_median_s_per_clip'] * args.batch_size:.3f} median; {res['train_tflops']:.3f} TFLOP/s)",
        f"   peak memory        : {res['peak_mem_mb']:8.0f} MiB "
        + ("(torch.cuda.max_memory_allocated)" if "bf16_s_per_clip" in res else "(ru_maxrss increase)"),
    ]
    if "bf16_s_per_clip" in res:
        lines.append(f"   train bf16 autocast: {res['bf16_s_per_clip'] * 1e3:8.1f} ms/clip  ({res['bf16_tflops']:.2f} TFLOP/s)")
        lines.append(
            f"   + torch.compile    : {res['compile_bf16_s_per_clip'] * 1e3:8.1f} ms/clip  "
            f"({res['compile_bf16_tflops']:.2f} TFLOP/s)"
        )
    if "sampling" in res:
        lines.append(f"   sampling ({res['sampling']}, batch {args.sample_batch}):")
        lines.append(f"     50-step DDIM         : {res['ddim50']:8.2f} s/clip")
        lines.append(f"     20-step DPM-Solver++ : {res['dpmpp20']:8.2f} s/clip")
    print("\n".join(lines), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", choices=sorted(PRESETS), help="default: tiny small (+ paper on CUDA or with --all)")
    parser.add_argument("--all", action="store_true", help="include the paper preset on CPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--sample-batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=18)
    parser.add_argument("--length", type=int, default=112, help="mel frames (112 for 18 frames at 10 fps)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--no-sampling", action="store_true")
    args = parser.parse_args()

    presets = args.presets or [
        p for p in ("tiny", "small", "paper") if p != "paper" or args.all or args.device.startswith("cuda")
    ]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, threads {args.threads or torch.get_num_threads()}, device {args.device}, "
        f"load average {load:.1f} (times are best of {args.repeats}; sampling: one run)"
    )
    ctx = mp.get_context("spawn")
    for name in presets:
        with ctx.Pool(1) as pool:
            _report(pool.apply(measure_preset, (name, args)), args)


if __name__ == "__main__":
    main()
