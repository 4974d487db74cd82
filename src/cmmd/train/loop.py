"""A minimal, resumable DDP training loop for the joint model (one function, ``train``).

Every random draw of step ``s`` (which clips, which windows, noise, timesteps, negatives,
dropout) is a pure function of ``(seed, s, rank)``, so a run killed at step k and resumed from
its checkpoint follows the uninterrupted run exactly; no RNG state needs saving.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from cmmd.audio.mel import MelStats
from cmmd.config import save_config, to_dict
from cmmd.data.dataset import ClipDataset
from cmmd.diffusion.schedules import Schedule, make_schedule
from cmmd.errors import CmmdError
from cmmd.models.presets import build_model
from cmmd.train import distributed as D
from cmmd.checkpoint import load_training_state, load_weights, save_checkpoint
from cmmd.train.config import TrainConfig
from cmmd.train.core import Ema, LoopSettings, TrainingLoop, check_finite, ignore_stop_signals, open_run
from cmmd.train.ema import make_ema
from cmmd.train.lr_schedule import lr_at
from cmmd.train.objective import step_objective
from cmmd.video.codecs import PixelCodec
from cmmd.video.latents import read_codec_record


# TrainConfig.fit_steps_to_budget times FIT_STEPS steps after FIT_FROM: the first tens of steps
# run slower (data pages, allocator, the loader worker starting); measured 4.4 vs 6.6 steps/s.
# Until the fit, the cosine horizon is ``steps``, the cap (at 200 of 6000 steps: lr 0.9993 x).
FIT_FROM, FIT_STEPS = 50, 150
FIT_MARGIN = 0.93  # share of the remaining budget planned for steps (checkpoints, rate drift)


def fitted_steps(step: int, seconds_per_step: float, seconds_left: float, max_steps: int) -> int:
    """The step count at which a run now at ``step`` ends within ``seconds_left`` at the measured
    rate (with ``FIT_MARGIN``), never above ``max_steps`` nor below ``step + 1``."""
    planned = step + int(FIT_MARGIN * max(0.0, seconds_left) / seconds_per_step)
    return max(step + 1, min(max_steps, planned))


def step_seed(seed: int, step: int, rank: int = 0, stream: int = 0) -> int:
    """A 63-bit seed unique to (run seed, step, rank, stream) via numpy's SeedSequence."""
    return int(np.random.SeedSequence([seed, step, rank, stream]).generate_state(2, np.uint64)[0] >> 1)


class StepBatches(torch.utils.data.Sampler[list[int]]):
    """Yields, for each (step, micro-batch) from ``start_step``, this rank's sample ids.

    A sample id ``j`` means epoch ``j // n`` and position ``j % n`` of that epoch's seeded
    permutation; :class:`StepIndexedClips` turns it into a clip window. Ranks take disjoint
    slices of the global batch, which is the sharding DDP needs.
    """

    def __init__(self, steps: int, start_step: int, micro_batch: int, accum: int, rank: int, world: int):
        self.steps, self.start, self.micro, self.accum = steps, start_step, micro_batch, accum
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return (self.steps - self.start) * self.accum

    def __iter__(self) -> Iterator[list[int]]:
        per_micro = self.micro * self.world
        for step in range(self.start, self.steps):
            for m in range(self.accum):
                base = (step * self.accum + m) * per_micro + self.rank * self.micro
                yield list(range(base, base + self.micro))


class StepIndexedClips(torch.utils.data.Dataset):
    """Maps a global sample id to (epoch, seeded permutation position) of a ClipDataset."""

    def __init__(self, clips: ClipDataset, seed: int):
        self.clips, self.seed = clips, seed
        self.n = len(clips)
        self._perms: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, sample_id: int) -> dict[str, Any]:
        epoch, pos = divmod(sample_id, self.n)
        perm = self._perms.get(epoch)
        if perm is None:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._perms = {epoch: perm}
        return self.clips.get(int(perm[pos]), epoch)


def audio_input(batch: dict[str, torch.Tensor], cfg: TrainConfig, mel_stats: MelStats,
                device: torch.device) -> torch.Tensor:
    """The model's audio tensor for a batch: normalised log-mels (B, 80, L) or waves (B, 1, S)."""
    if cfg.data.audio == "wave":
        return batch["wave"].to(device, non_blocking=True)[:, None]
    return mel_stats.normalize(batch["mel"].to(device, non_blocking=True))


def _autocast(cfg: TrainConfig, device: torch.device):
    if cfg.precision == "fp32" or device.type != "cuda":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast("cuda", dtype=torch.bfloat16 if cfg.precision == "bf16" else torch.float16)


def check_config(cfg: TrainConfig, world_size: int) -> tuple[ClipDataset, MelStats, dict[str, Any]]:
    """Fail before any work: data dir, batch divisibility, model overrides, video input.

    Returns the clips, the mel statistics and the codec record the checkpoints store.
    """
    root = Path(cfg.data.root)
    if not cfg.data.root:
        raise CmmdError("data.root is not set: point it at the output of `cmmd prepare`")
    if not root.is_dir():
        raise CmmdError(f"data.root: {root} does not exist (run `cmmd prepare SRC {root}` first)")
    stats_file = root / "mel_stats.json"
    if not stats_file.is_file():
        raise CmmdError(f"data.root: {root} has no mel_stats.json; is it a `cmmd prepare` output?")
    if cfg.batch_size % (world_size * cfg.grad_accum):
        raise CmmdError(
            f"batch_size: {cfg.batch_size} is not divisible by world_size x grad_accum "
            f"= {world_size} x {cfg.grad_accum}"
        )
    if cfg.steps <= 0:
        raise CmmdError("steps: must be positive")
    if cfg.fit_steps_to_budget and cfg.max_minutes <= 0:
        raise CmmdError("fit_steps_to_budget: needs a time budget, max_minutes > 0 (or set fit_steps_to_budget=false)")
    loss = cfg.diffusion.loss
    if loss.contrastive == "dpo" and not cfg.init:
        raise CmmdError("init: diffusion.loss.contrastive=dpo fine-tunes against a frozen reference model; set init "
                        "to the checkpoint to start from (a run dir, checkpoint dir or .safetensors file)")
    if cfg.init and not Path(cfg.init).exists():
        raise CmmdError(f"init: {cfg.init} does not exist")
    if loss.sync_weight > 0 and cfg.data.audio != "mel":
        raise CmmdError("diffusion.loss.sync_weight: the sync term reads onsets from log-mels; it does not work with "
                        "data.audio=wave (set sync_weight=0)")
    video_channels = build_model(cfg.model.preset, cfg.model.overrides).cfg.video_channels  # also validates model.preset and model.overrides
    wants_wave = cfg.model.preset.startswith("mmdiffusion")
    if wants_wave != (cfg.data.audio == "wave"):
        raise CmmdError(
            f"data.audio: model {cfg.model.preset!r} takes {'waveforms' if wants_wave else 'log-mels'}; "
            f"set data.audio={'wave' if wants_wave else 'mel'}"
        )
    if cfg.preview.every > 0 and cfg.data.video == "latents":
        raise CmmdError("preview.every: previews condition on pixel frames and are not made with "
                        "data.video=latents; set preview.every=0 and sample checkpoints with `cmmd generate`")
    try:
        clips = ClipDataset(root, clip_frames=cfg.data.clip_frames, seed=cfg.seed, video=cfg.data.video)
    except CmmdError as exc:
        raise CmmdError(f"data.root (data.video={cfg.data.video}): {exc}") from None
    return clips, MelStats.load(stats_file), check_video_input(cfg, clips, video_channels)


def check_video_input(cfg: TrainConfig, clips: ClipDataset, channels: int) -> dict[str, Any]:
    """Raise unless a model with ``channels`` video channels takes the clips' video; returns the
    codec record checkpoints store (the root's ``codec.json`` for latents, the pixel codec's otherwise)."""
    c, h, w = clips.video_shape
    if cfg.data.video == "latents":
        assert clips.codec_record is not None
        record = clips.codec_record
        if channels != c:
            raise CmmdError(
                f"model.overrides.video_channels: model {cfg.model.preset!r} has video_channels={channels} but the "
                f"{record['name']} latents in data.root {clips.root} have {c} channels ({c}x{h}x{w} per frame); "
                f"set model.overrides.video_channels={c}"
            )
        return record
    if channels != c:
        held = read_codec_record(clips.root)
        hint = (f", or train on the {held['name']} latents data.root holds with data.video=latents"
                if held is not None and held.get("channels") == channels else "")
        raise CmmdError(
            f"model.overrides.video_channels: model {cfg.model.preset!r} has video_channels={channels} but "
            f"data.video=pixels gives {c}-channel frames ({c}x{h}x{w}); set model.overrides.video_channels={c}{hint}"
        )
    return PixelCodec().describe()


def load_init(model: torch.nn.Module, path: Path) -> None:
    """Load the EMA weights at ``path`` (TrainConfig.init) into ``model``; CmmdError naming
    ``init`` when they cannot be read or do not fit."""
    try:
        state = load_weights(path, "ema")
    except CmmdError as exc:
        raise CmmdError(f"init: {exc}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # missing, unexpected or mis-shaped tensors; the first is listed
        detail = (str(exc).splitlines()[1:] or [str(exc)])[0].strip()
        raise CmmdError(f"init: the weights in {path} do not fit the model of this config ({detail}); set model.* "
                        "as the init run had it") from None


def frozen_reference(cfg: TrainConfig, device: torch.device) -> torch.nn.Module | None:
    """The DPO reference (diffusion.loss.contrastive=dpo): the ``init`` weights, frozen, in eval
    mode; None for the other objectives."""
    if cfg.diffusion.loss.contrastive != "dpo":
        return None
    reference = build_model(cfg.model.preset, cfg.model.overrides)
    load_init(reference, Path(cfg.init))
    return reference.to(device).eval().requires_grad_(False)


@dataclass
class TrainResult:
    """The trained network and its EMA (the weights to sample from), and the last step reached."""

    model: torch.nn.Module
    ema: torch.nn.Module
    step: int


PreviewWriter = Callable[[torch.nn.Module, Schedule, TrainConfig, ClipDataset, MelStats, Path], Path]
"""Writes one preview image for the EMA model (``cmmd.apps.preview.write_preview``); injected by
the caller so that training never imports the sampling pipeline or the apps above it."""


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True,
          preview: PreviewWriter | None = None) -> TrainResult:
    """Run (or resume) training. Works alone or under torchrun (DDP).

    ``preview`` is called every ``cfg.preview.every`` steps; that setting needs one.
    """
    if cfg.preview.every > 0 and preview is None:
        raise CmmdError("preview.every is set but this caller passes no preview writer; "
                        "run `cmmd train`, or set preview.every=0")
    info = D.setup(cfg.device)
    try:
        return _train(cfg, resume, progress, info, preview)
    finally:
        D.teardown(info)


def _train(cfg: TrainConfig, resume: bool, progress: bool, info: D.DistInfo,
           preview: PreviewWriter | None) -> TrainResult:
    clips, mel_stats, codec_record = check_config(cfg, info.world_size)
    run_dir = Path(cfg.out_dir)
    existing = open_run(run_dir, resume, "out_dir", "cmmd train")

    torch.manual_seed(cfg.seed)  # identical initialisation on every rank
    model = build_model(cfg.model.preset, cfg.model.overrides).to(info.device)
    ema = make_ema(model)
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay
    )
    start_step = 0
    fitted: int | None = None  # TrainConfig.fit_steps_to_budget
    if existing is not None:
        ck = load_training_state(existing, model, ema, opt)
        start_step = ck.step
        fitted = ck.extra.get("fitted_steps") if cfg.fit_steps_to_budget else None
        if info.is_main:
            print(f"cmmd train: resumed from {existing} at step {start_step}"
                  + (f" (steps fitted to its budget: {fitted}; fit_steps_to_budget=false sets steps yourself)"
                     if fitted else ""))
    elif cfg.init:
        load_init(model, Path(cfg.init))
        ema.load_state_dict(model.state_dict())
    reference = frozen_reference(cfg, info.device)
    fit_pending = fitted is None and cfg.fit_steps_to_budget and cfg.max_minutes > 0

    config_dict = to_dict(cfg)
    extra: dict[str, Any] = {"mel_stats": {"mean": mel_stats.mean.tolist(), "std": mel_stats.std.tolist()}}
    # What sampling needs to refuse a wrong codec or vocoder (docs/CODECS.md, "What checkpoints record").
    extra.update(fps=clips.fps, size=clips.size, sample_rate=clips.sample_rate, codec=codec_record,
                 mel=clips.mel.describe(), audio=cfg.data.audio)
    if fitted:
        extra["fitted_steps"] = fitted
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    micro = cfg.batch_size // (info.world_size * cfg.grad_accum)
    loader = torch.utils.data.DataLoader(
        StepIndexedClips(clips, cfg.seed),
        batch_sampler=StepBatches(cfg.steps, start_step, micro, cfg.grad_accum, info.rank, info.world_size),
        num_workers=cfg.data.num_workers,
        worker_init_fn=ignore_stop_signals,
        persistent_workers=False,
        pin_memory=info.device.type == "cuda",
    )
    net: torch.nn.Module = model
    if info.world_size > 1:
        net = DistributedDataParallel(model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    schedule = make_schedule(cfg.diffusion.schedule, cfg.diffusion.num_steps)
    scaler = torch.amp.GradScaler(enabled=cfg.precision == "fp16" and info.device.type == "cuda")
    settings = LoopSettings("cmmd train", run_dir, fitted or cfg.steps, cfg.checkpoint_every, cfg.log_every,
                            cfg.max_minutes, progress, show=("loss", "lr"))
    loop = TrainingLoop(settings, start_step, existing, info)
    batches = iter(loader)

    def step_fn(step: int) -> dict[str, float]:
        lr = lr_at(step, cfg.optim.lr, loop.total, cfg.optim.warmup_steps, cfg.optim.lr_schedule,
                   cfg.optim.min_lr_ratio)
        for group in opt.param_groups:
            group["lr"] = lr
        torch.manual_seed(step_seed(cfg.seed, step, info.rank, 1))  # dropout
        logs_sum: dict[str, float] = {}
        for m in range(cfg.grad_accum):
            batch = next(batches)
            video = batch["video"].to(info.device, non_blocking=True)
            audio = audio_input(batch, cfg, mel_stats, info.device)
            gen = torch.Generator(device=info.device).manual_seed(step_seed(cfg.seed, step, info.rank, 2 + m))
            with _autocast(cfg, info.device):
                loss, logs = step_objective(net, video, audio, schedule, cfg.diffusion.loss, cfg.negatives, gen,
                                            step, fps=clips.fps, sample_rate=clips.sample_rate,
                                            reference=reference)
            scaler.scale(loss / cfg.grad_accum).backward()
            for k, v in logs.items():
                logs_sum[k] = logs_sum.get(k, 0.0) + float(v) / cfg.grad_accum
        check_finite({"loss": logs_sum["loss"]}, step, run_dir, "Lower optim.lr or raise optim.warmup_steps.", info)
        scaler.unscale_(opt)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        return {**logs_sum, "lr": lr, "grad_norm": float(grad_norm)}

    t_fit = loop.t0

    def after_step(step: int) -> None:
        nonlocal t_fit, fit_pending
        if fit_pending and step == start_step + FIT_FROM:
            t_fit = time.time()
        elif fit_pending and step == start_step + FIT_FROM + FIT_STEPS:
            now = time.time()
            total = D.broadcast_int(info, fitted_steps(step, (now - t_fit) / FIT_STEPS,
                                                       cfg.max_minutes * 60 - (now - loop.t0), cfg.steps))
            extra["fitted_steps"] = total
            fit_pending = False
            loop.set_total(total)
            loop.say(f"cmmd train: {FIT_STEPS / (now - t_fit):.2f} steps/s; steps fitted to the "
                     f"{cfg.max_minutes:g}-minute budget: {total} (of at most {cfg.steps})")
        if info.is_main and preview is not None and cfg.preview.every > 0 and step % cfg.preview.every == 0:
            preview(ema, schedule, cfg, clips, mel_stats, run_dir / "previews" / f"step_{step:08d}.png")

    def save_fn(step: int) -> Path:
        return save_checkpoint(run_dir, step, model, ema, opt, config_dict, extra, cfg.keep_checkpoints)

    end = loop.run(step_fn, save_fn, Ema(ema, model, cfg.ema_decay), after_step)
    return TrainResult(model, ema, end.step)
