"""``cmmd vocoder train``: a GAN vocoder with HiFi-GAN's discriminators and loss weights.

The paper's recipe (METHOD.md section 2): a MelGAN generator (:mod:`cmmd.audio.melgan`)
trained with HiFi-GAN's multi-period and multi-scale discriminators, LSGAN adversarial losses,
feature matching (x2) and mel L1 (x45) (:mod:`cmmd.audio.discriminators`), on 4 s segments.
Alternatively the HiFi-GAN V1 generator, from scratch or fine-tuned from the universal weights
(``init="hifigan-universal"``), on cmmd's 16 kHz mels.

One step, as HiFi-GAN's ``train.py``: ``y`` = a batch of random segments, ``s = mel(y)``,
``y_hat = G(s)``; discriminator update on ``L_D(y, y_hat.detach())`` (MPD + MSD); generator
update on ``L_adv + 2 L_fm + 45 ||mel(y) - mel(y_hat)||_1``. AdamW, lr 2e-4, betas (0.8, 0.99),
HiFi-GAN's. Decision: a constant learning rate (HiFi-GAN decays it by 0.999 per epoch, which
over the few thousand steps these runs take changes it by a few per cent).

Data: every audio (or video) file under ``audio_dir`` decoded once to mono at the mel's sample
rate and cached as int16 ``.npy`` in ``RUN/audio_cache`` (a ``cmmd prepare`` output is read
directly from its ``items/*/audio.npy``). Segments are drawn from ``(seed, step)`` alone, with
probability proportional to file length; files shorter than a segment are zero-padded. The last
``max(1, 5 %)`` of the files (sorted) are held out when there are at least two, and the
validation mel L1 on up to four of their segments is reported at each checkpoint.

Checkpoints ``RUN/checkpoints/step_XXXXXXXX/`` (written under a temporary name, renamed):
``generator.safetensors`` (the loadable vocoder: ``cmmd-gan:RUN``; its metadata carries the
run config, the generator architecture and the mel config), ``discriminators.safetensors``,
``optimizer.safetensors``, ``state.json`` and ``manifest.json``; ``RUN/checkpoints/latest``
names the newest. Losses go to ``RUN/log.csv`` (:mod:`cmmd.train.core`).
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from cmmd.audio.discriminators import (
    FEATURE_MATCHING_WEIGHT,
    MEL_WEIGHT,
    PERIODS,
    MultiPeriodDiscriminator,
    MultiScaleDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from cmmd.audio.hifigan import HifiGanGenerator, load_universal_generator
from cmmd.audio.melgan import MelGanConfig, MelGanGenerator
from cmmd.audio.mel import MEL_CONFIGS, MelConfig
from cmmd.audio.vocoders import GENERATOR_FILE, NeuralVocoder, generator_spec
from cmmd.data.failures import Skipped, write_failures
from cmmd.data.media import AUDIO_SUFFIXES as _AUDIO_ONLY, VIDEO_SUFFIXES, MediaError, read_media
from cmmd.data.prepare import AUDIO_SCALE, item_key
from cmmd.checkpoint import (
    STATE,
    checkpoint_info,
    cmmd_metadata,
    optimizer_state,
    optimizer_tensors,
    read_tensors,
    state_dict_cpu,
    write_checkpoint,
)
from cmmd.device import resolve_device
from cmmd.errors import CmmdError
from cmmd.train.core import LoopSettings, TrainingLoop, check_finite, open_run

AUDIO_SUFFIXES = _AUDIO_ONLY | VIDEO_SUFFIXES
"""Files ``cmmd vocoder train`` reads (case-insensitive); video files contribute their audio."""
SILENCE_THRESHOLD = 1e-4


@dataclass
class VocoderTrainConfig:
    """Everything ``cmmd vocoder train`` needs; stored in every checkpoint."""

    audio_dir: str
    out_dir: str
    generator: Literal["melgan", "hifigan-v1"] = "melgan"
    init: Literal["none", "hifigan-universal"] = "none"
    mel: Literal["cmmd", "hifigan"] = "cmmd"
    melgan: MelGanConfig = field(default_factory=MelGanConfig)
    disc_width: float = 0.125
    periods: tuple[int, ...] = PERIODS
    steps: int = 2000
    segment_seconds: float = 4.0
    batch_size: int = 2
    lr: float = 2e-4
    betas: tuple[float, float] = (0.8, 0.99)
    checkpoint_every: int = 500
    log_every: int = 50
    keep: int = 3
    seed: int = 0
    device: str = "auto"

    @property
    def mel_config(self) -> MelConfig:
        """The mel front-end of inputs and of the mel loss."""
        return MEL_CONFIGS[self.mel]

    @property
    def segment_samples(self) -> int:
        """Segment length rounded to whole mel frames."""
        hop = self.mel_config.hop
        return max(1, round(self.segment_seconds * self.mel_config.sample_rate / hop)) * hop

    def validate(self) -> None:
        """Raise CmmdError for settings no run could use."""
        if self.mel not in MEL_CONFIGS:
            raise CmmdError(f"mel must be one of {', '.join(MEL_CONFIGS)}, got {self.mel!r}")
        if self.init == "hifigan-universal" and self.generator != "hifigan-v1":
            raise CmmdError("--init hifigan-universal fine-tunes the HiFi-GAN V1 generator; it cannot initialise "
                            f"a {self.generator} generator (drop --generator or pass --generator hifigan-v1)")
        if self.generator not in ("melgan", "hifigan-v1") or self.init not in ("none", "hifigan-universal"):
            raise CmmdError(f"unknown generator {self.generator!r} or init {self.init!r}")
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0 or self.segment_seconds <= 0:
            raise CmmdError("vocoder train needs steps >= 1, batch size >= 1, lr > 0 and segment seconds > 0")
        if not 0 < self.disc_width <= 1 or not self.periods:
            raise CmmdError("discriminator width must be in (0, 1] and at least one period is needed")
        if self.checkpoint_every < 1 or self.log_every < 1 or self.keep < 1:
            raise CmmdError("checkpoint_every, log_every and keep must be at least 1")
        if self.generator == "melgan":
            self.melgan.validate()
            if self.melgan.hop != self.mel_config.hop:
                raise CmmdError(f"MelGAN upsampling product {self.melgan.hop} differs from the mel hop "
                                f"{self.mel_config.hop}")


@dataclass
class VocoderTrainResult:
    """End of a run: the trained vocoder, the step reached, the last checkpoint, validation mel L1."""

    vocoder: NeuralVocoder
    step: int
    checkpoint: Path
    val_mel_l1: float


class AudioPool:
    """Mono int16 waveforms of a folder (decoded once into ``cache``) or of a ``cmmd prepare`` output.

    ``train`` and ``held_out`` are lists of int16 arrays (memory-mapped) at ``sample_rate``;
    ``failures`` lists the inputs that could not be used, with their reason.
    """

    def __init__(self, audio_dir: str | Path, sample_rate: int, cache: Path, progress: bool = True) -> None:
        root = Path(audio_dir)
        if not root.is_dir():
            raise CmmdError(f"audio directory {root} does not exist")
        self.sample_rate = sample_rate
        self.failures: list[Skipped] = []
        prepared = sorted(meta.parent / "audio.npy" for meta in root.glob("items/*/meta.json"))  # complete items
        waves = self._prepared(root, prepared) if prepared else self._decoded(root, cache, progress)
        if not waves:
            raise CmmdError(f"no usable audio under {root} ({len(self.failures)} file(s) failed"
                            + (f", e.g. {self.failures[0].source}: {self.failures[0].reason}" if self.failures else "")
                            + ")")
        self.used = len(waves)
        n_hold = max(1, round(0.05 * len(waves))) if len(waves) >= 2 else 0
        self.train = waves[: len(waves) - n_hold]
        self.held_out = waves[len(waves) - n_hold:] or waves
        self._offsets = np.cumsum([0] + [len(w) for w in self.train])

    def _prepared(self, root: Path, files: list[Path]) -> list[np.ndarray]:
        waves = []
        for file in files:
            meta = json.loads((file.parent / "meta.json").read_text())
            if meta.get("sample_rate", self.sample_rate) != self.sample_rate:
                raise CmmdError(f"{root} was prepared at {meta['sample_rate']} Hz but the vocoder's mel needs "
                                f"{self.sample_rate} Hz; prepare it again with --sample-rate {self.sample_rate}")
            waves.append(np.load(file, mmap_mode="r"))
        return waves

    def _decoded(self, root: Path, cache: Path, progress: bool) -> list[np.ndarray]:
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
        if not files:
            raise CmmdError(f"no audio or video files under {root} (looked for {', '.join(sorted(AUDIO_SUFFIXES))})")
        cache.mkdir(parents=True, exist_ok=True)
        waves = []
        for path in tqdm(files, desc="decode audio", unit="file", file=sys.stderr, disable=not progress):
            target = cache / f"{item_key(path.relative_to(root).as_posix())}.{self.sample_rate}.npy"
            if not target.is_file():
                try:
                    audio = read_media(path, sample_rate=self.sample_rate, video=False).audio
                except MediaError as exc:
                    self.failures.append(Skipped(str(path), exc.kind, exc.reason))
                    continue
                if audio is None or len(audio) == 0 or not np.any(np.abs(audio) >= SILENCE_THRESHOLD):
                    self.failures.append(Skipped(str(path), "silent", "silent or empty audio"))
                    continue
                tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
                with open(tmp, "wb") as fh:
                    np.save(fh, np.round(np.clip(audio, -1, 1) * AUDIO_SCALE).astype(np.int16))
                os.replace(tmp, target)
            waves.append(np.load(target, mmap_mode="r"))
        return waves

    @property
    def seconds(self) -> float:
        """Duration of the training audio."""
        return float(self._offsets[-1]) / self.sample_rate

    def batch(self, seed: int, step: int, size: int, samples: int) -> Tensor:
        """float32 ``(size, samples)`` random training segments of ``step`` (zero-padded when short)."""
        rng = np.random.default_rng([seed, step])
        out = np.zeros((size, samples), dtype=np.float32)
        for b, pos in enumerate(rng.integers(0, self._offsets[-1], size)):
            wave = self.train[int(np.searchsorted(self._offsets, pos, side="right")) - 1]
            start = int(rng.integers(0, max(1, len(wave) - samples + 1)))
            chunk = wave[start:start + samples]
            out[b, : len(chunk)] = chunk / AUDIO_SCALE
        return torch.from_numpy(out)

    def validation(self, samples: int, count: int = 4) -> Tensor:
        """float32 ``(n, samples)``: up to ``count`` segments, evenly spread over the held-out audio."""
        segments = []
        per_file = max(1, math.ceil(count / len(self.held_out)))
        for wave in self.held_out:
            starts = np.linspace(0, max(0, len(wave) - samples), per_file).round().astype(int)
            for s in np.unique(starts):
                seg = np.zeros(samples, dtype=np.float32)
                chunk = wave[s:s + samples]
                seg[: len(chunk)] = chunk / AUDIO_SCALE
                segments.append(seg)
        return torch.from_numpy(np.stack(segments[:count]))


class GanVocoder(nn.Module):
    """Generator plus HiFi-GAN's discriminators, the unit a vocoder run trains."""

    def __init__(self, generator: nn.Module, periods: tuple[int, ...], disc_width: float) -> None:
        super().__init__()
        self.generator = generator
        self.mpd = MultiPeriodDiscriminator(periods, disc_width)
        self.msd = MultiScaleDiscriminator(disc_width)

    def discriminators(self) -> list[nn.Parameter]:
        """Parameters of MPD and MSD."""
        return list(self.mpd.parameters()) + list(self.msd.parameters())


def build_gan(cfg: VocoderTrainConfig) -> GanVocoder:
    """The generator the config names (initialised per ``cfg.init``) with fresh discriminators."""
    if cfg.generator == "melgan":
        generator: nn.Module = MelGanGenerator(cfg.melgan)
    elif cfg.init == "hifigan-universal":
        generator = load_universal_generator()
    else:
        generator = HifiGanGenerator()
    return GanVocoder(generator, tuple(cfg.periods), cfg.disc_width)


def make_optimizers(gan: GanVocoder, cfg: VocoderTrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """AdamW for the generator and for the discriminators (HiFi-GAN's lr and betas)."""
    kw = {"lr": cfg.lr, "betas": tuple(cfg.betas)}
    return torch.optim.AdamW(gan.generator.parameters(), **kw), torch.optim.AdamW(gan.discriminators(), **kw)


def gan_step(gan: GanVocoder, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, wave: Tensor,
             mel: MelConfig) -> dict[str, float]:
    """One discriminator then one generator update on segments ``wave (B, S)`` (module docstring).

    Returns the scalars: ``d`` (L_D), ``g`` (L_G), ``adv``, ``fm``, ``mel`` (L1 in nats). ``S`` is
    cut to whole mel frames, the length the generator returns.
    """
    wave = wave[:, : wave.shape[-1] // mel.hop * mel.hop]
    target = mel.log_mel(wave)
    fake = gan.generator(target)

    opt_d.zero_grad(set_to_none=True)
    loss_d = discriminator_loss(gan.mpd(wave)[0], gan.mpd(fake.detach())[0]) \
        + discriminator_loss(gan.msd(wave)[0], gan.msd(fake.detach())[0])
    loss_d.backward()
    opt_d.step()

    opt_g.zero_grad(set_to_none=True)
    mel_l1 = (mel.log_mel(fake) - target).abs().mean()
    adv = fm = torch.zeros((), device=wave.device)
    for disc in (gan.mpd, gan.msd):
        real_scores, real_feats = disc(wave)
        fake_scores, fake_feats = disc(fake)
        adv = adv + generator_adversarial_loss(fake_scores)
        fm = fm + feature_matching_loss(real_feats, fake_feats)
    loss_g = adv + FEATURE_MATCHING_WEIGHT * fm + MEL_WEIGHT * mel_l1
    loss_g.backward()
    opt_g.step()
    return {name: float(v.detach()) for name, v in
            (("d", loss_d), ("g", loss_g), ("adv", adv), ("fm", fm), ("mel", mel_l1))}


@torch.no_grad()
def validation_mel_l1(generator: nn.Module, segments: Tensor, mel: MelConfig) -> float:
    """Mean log-mel L1 (nats) between ``segments (n, S)`` and their resynthesis."""
    generator.eval()
    target = mel.log_mel(segments)
    out = float((mel.log_mel(generator(target)) - target).abs().mean())
    generator.train()
    return out


def save_vocoder_checkpoint(run_dir: Path, step: int, gan: GanVocoder, opt_g: torch.optim.Optimizer,
                            opt_d: torch.optim.Optimizer, cfg: VocoderTrainConfig, extra: dict[str, Any]) -> Path:
    """Write ``run_dir/checkpoints/step_<step>`` (:func:`cmmd.checkpoint.write_checkpoint`), keep ``cfg.keep``."""
    info = checkpoint_info(asdict(cfg), step,
                           {"generator": generator_spec(gan.generator), "mel": cfg.mel_config.describe(), **extra})
    meta = cmmd_metadata(info, "vocoder")
    discriminators = {f"{name}.{k}": v for name in ("mpd", "msd") for k, v in state_dict_cpu(getattr(gan, name)).items()}
    g_tensors, g_rest = optimizer_tensors(opt_g, "g")
    d_tensors, d_rest = optimizer_tensors(opt_d, "d")
    return write_checkpoint(run_dir, step, info, {
        GENERATOR_FILE: (state_dict_cpu(gan.generator), meta),
        "discriminators.safetensors": (discriminators, {**meta, "kind": "discriminators"}),
        "optimizer.safetensors": ({**g_tensors, **d_tensors},
                                  {**meta, "kind": "optimizer", "g": json.dumps(g_rest), "d": json.dumps(d_rest)}),
    }, cfg.keep)


def load_vocoder_checkpoint(ckpt: Path, gan: GanVocoder, opt_g: torch.optim.Optimizer,
                            opt_d: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore generator, discriminators and both optimizers in place from a verified checkpoint
    directory; returns the checkpoint info."""
    info = json.loads((ckpt / STATE).read_text())
    gan.generator.load_state_dict(read_tensors(ckpt / GENERATOR_FILE)[0])
    discs = read_tensors(ckpt / "discriminators.safetensors")[0]
    gan.mpd.load_state_dict({k[4:]: v for k, v in discs.items() if k.startswith("mpd.")})
    gan.msd.load_state_dict({k[4:]: v for k, v in discs.items() if k.startswith("msd.")})
    tensors, meta = read_tensors(ckpt / "optimizer.safetensors")
    opt_g.load_state_dict(optimizer_state(tensors, json.loads(meta["g"]), "g"))
    opt_d.load_state_dict(optimizer_state(tensors, json.loads(meta["d"]), "d"))
    return info


def train_vocoder(cfg: VocoderTrainConfig, resume: bool = False, progress: bool = True) -> VocoderTrainResult:
    """Train (or resume) a vocoder run; see the module docstring. Raises CmmdError for bad input."""
    cfg.validate()
    device = resolve_device(cfg.device)
    run_dir = Path(cfg.out_dir)
    existing = open_run(run_dir, resume, "--out", "cmmd vocoder train")
    mel = cfg.mel_config
    pool = AudioPool(cfg.audio_dir, mel.sample_rate, run_dir / "audio_cache", progress)
    listing = write_failures(pool.failures, run_dir / "failures.jsonl")
    for failure in pool.failures:
        print(f"cmmd vocoder train: skipped {failure.line()}", file=sys.stderr)
    print(f"cmmd vocoder train: {pool.used} audio file(s) used, {len(pool.failures)} skipped"
          + (f" (listed in {listing})" if pool.failures else ""), file=sys.stderr)
    torch.manual_seed(cfg.seed)
    gan = build_gan(cfg).to(device)
    opt_g, opt_d = make_optimizers(gan, cfg)
    step = 0
    if existing is not None:
        config = json.loads((existing / STATE).read_text())["config"]
        recorded = {k: config.get(k) for k in ("generator", "mel", "melgan", "disc_width", "periods")}
        wanted = {k: v for k, v in asdict(cfg).items() if k in recorded}
        if json.loads(json.dumps(wanted)) != recorded:
            raise CmmdError(f"{existing}: the run was started with {recorded}, not {wanted}; resume with the same "
                            "architecture and mel flags")
        step = int(load_vocoder_checkpoint(existing, gan, opt_g, opt_d)["step"])
    segments = pool.validation(cfg.segment_samples).to(device)
    validated: dict[int, float] = {}

    def step_fn(step: int) -> dict[str, float]:
        logs = gan_step(gan, opt_g, opt_d, pool.batch(cfg.seed, step, cfg.batch_size, cfg.segment_samples).to(device),
                        mel)
        check_finite(logs, step, run_dir, "Lower --lr.")
        return logs

    def save_fn(step: int) -> Path:
        val = validated[step] = validation_mel_l1(gan.generator, segments, mel)
        path = save_vocoder_checkpoint(run_dir, step, gan, opt_g, opt_d, cfg, {"val_mel_l1": val})
        tqdm.write(f"cmmd vocoder train: step {step}: validation mel L1 {val:.3f} nats -> {path}")
        return path

    gan.train()
    settings = LoopSettings("cmmd vocoder train", run_dir, cfg.steps, cfg.checkpoint_every, cfg.log_every,
                            progress=progress, show=("d", "g", "mel"))
    end = TrainingLoop(settings, step, existing).run(step_fn, save_fn)
    assert end.checkpoint is not None  # a fresh run takes at least one step, which is saved
    val = validated.get(end.step)
    if val is None:  # resumed an already finished run
        val = validation_mel_l1(gan.generator, segments, mel)
    if progress:
        print(f"cmmd vocoder train: {end.step} steps in {end.seconds:.0f} s on {pool.seconds:.0f} s of "
              "training audio", file=sys.stderr)
    return VocoderTrainResult(NeuralVocoder.load(end.checkpoint, device), end.step, end.checkpoint, val)


__all__ = [
    "AUDIO_SUFFIXES",
    "AudioPool",
    "GanVocoder",
    "VocoderTrainConfig",
    "VocoderTrainResult",
    "build_gan",
    "gan_step",
    "load_vocoder_checkpoint",
    "make_optimizers",
    "save_vocoder_checkpoint",
    "train_vocoder",
    "validation_mel_l1",
]
