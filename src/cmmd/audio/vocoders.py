"""Vocoders behind one interface (``log_mel -> waveform``) and a loader.

A :class:`Vocoder` is called on an *un-normalised* natural-log mel in its own
:class:`~cmmd.audio.mel.MelConfig`: ``(n_mels, L) -> (L * hop,)`` or
``(B, n_mels, L) -> (B, L * hop)`` float32 at ``sample_rate``, returned on the input's device. Three kinds (:func:`load_vocoder` specs):

* ``griffinlim``: :mod:`cmmd.audio.griffinlim`, no weights, cmmd's mel
  (:data:`cmmd.audio.mel.CMMD_MEL`);
* ``cmmd-gan:<path>``: a generator trained by ``cmmd vocoder train`` (MelGAN, or HiFi-GAN V1
  fine-tuned from the universal weights); its checkpoint records its architecture and mel config;
* ``hifigan-universal``: the released HiFi-GAN V1 universal generator
  (:mod:`cmmd.audio.hifigan`) in its own mel configuration :data:`cmmd.audio.mel.HIFIGAN_MEL`
  (22.05 kHz, n_fft 1024). It does not take cmmd's 16 kHz mels: a mel is a lossy summary tied to its sample
  rate, FFT size and filterbank, and feeding it another configuration's mels gives wrong
  pitches and timbre. Use it on audio analysed with ``HIFIGAN_MEL.log_mel``, or fine-tune it on
  cmmd's mels with ``cmmd vocoder train --init hifigan-universal`` (same architecture: its
  upsampling product 256 equals cmmd's hop) and load the result as ``cmmd-gan:<run>``.

A diffusion model's checkpoint records the mel configuration it was trained on
(:func:`cmmd.audio.mel.recorded_mel`); :meth:`Vocoder.check_compatible` refuses a vocoder for
another one. Quality metrics of a vocoder's output live in :mod:`cmmd.audio.quality`.
"""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn
from torch.nn.utils import parametrize

from cmmd.audio.griffinlim import griffin_lim
from cmmd.audio.hifigan import HifiGanConfig, HifiGanGenerator, load_universal_generator
from cmmd.audio.mel import HIFIGAN_MEL, MelConfig, cmmd_mel, mel_config_from
from cmmd.audio.melgan import MelGanConfig, MelGanGenerator
from cmmd.checkpoint import latest_checkpoint
from cmmd.conventions import SAMPLE_RATE
from cmmd.errors import CmmdError

GENERATOR_FILE = "generator.safetensors"


def fold_weight_norm(module: nn.Module) -> nn.Module:
    """Replace every parametrised (weight-normalised) weight by its current value, in place.

    Inference then costs one conv per layer instead of recomputing ``g * v / ||v||`` per call.
    """
    for sub in module.modules():
        if parametrize.is_parametrized(sub):
            for name in list(sub.parametrizations):
                parametrize.remove_parametrizations(sub, name, leave_parametrized=True)
    return module


class Vocoder(ABC):
    """Log-mel (its :attr:`mel` config, un-normalised) -> waveform at ``mel.sample_rate``."""

    name: str
    mel: MelConfig
    spec: str = ""

    @property
    def sample_rate(self) -> int:
        """Output sample rate in Hz."""
        return self.mel.sample_rate

    @property
    def device(self) -> torch.device:
        """Where synthesis runs."""
        return torch.device("cpu")

    def to(self, device: torch.device | str) -> Vocoder:
        """Move to ``device``; returns ``self``."""
        return self

    @property
    def weights(self) -> str | None:
        """Digest of the weights (sha256 prefix), None for Griffin-Lim."""
        return None

    @abstractmethod
    def synthesize(self, log_mel: Tensor) -> Tensor:
        """``(B, n_mels, L)`` float32 on ``device`` -> ``(B, L * hop)``."""

    def __call__(self, log_mel: Tensor | np.ndarray) -> Tensor:
        """Waveform ``(L * hop,)`` or ``(B, L * hop)`` float32 from ``(n_mels, L)`` or ``(B, n_mels, L)``."""
        mel = torch.as_tensor(log_mel)
        if mel.dim() not in (2, 3) or mel.shape[-2] != self.mel.n_mels or mel.shape[-1] < 1:
            raise CmmdError(f"vocoder {self.name} expects a log-mel ({self.mel.n_mels}, L) or "
                            f"(B, {self.mel.n_mels}, L), got shape {tuple(mel.shape)}")
        squeeze = mel.dim() == 2
        with torch.no_grad():
            wave = self.synthesize(mel.reshape(-1, *mel.shape[-2:]).to(self.device, torch.float32))
        wave = wave.float().to(mel.device)
        return wave[0] if squeeze else wave

    def describe(self) -> dict[str, Any]:
        """JSON-able identity: name, sample rate, mel config, weights digest, spec."""
        return {"kind": "vocoder", "name": self.name, "sample_rate": self.sample_rate, "mel": self.mel.describe(),
                "weights": self.weights, "spec": self.spec}

    def check_compatible(self, recorded: Mapping[str, Any]) -> None:
        """Raise CmmdError unless this vocoder takes the mels ``recorded`` describes.

        ``recorded`` is a mel ``describe()`` dict (what diffusion checkpoints store, see
        :func:`recorded_mel`) or anything holding one under ``"mel"``. Any vocoder of the same
        mel configuration fits: the vocoder is not part of the diffusion model.
        """
        rec = dict(recorded.get("mel", recorded))
        mine = self.mel.describe()
        diffs = []
        for key, value in mine.items():
            other = rec.get(key)
            if isinstance(value, float) and isinstance(other, (int, float)):
                same = math.isclose(float(other), value)
            else:
                same = other == value
            if not same:
                diffs.append(f"{key} {other!r} there, {value!r} here")
        if diffs:
            hint = (" hifigan-universal takes 22.05 kHz HiFi-GAN mels; fine-tune it on cmmd mels with "
                    "`cmmd vocoder train AUDIO_DIR --init hifigan-universal` and load the run as cmmd-gan:<run>."
                    if self.name == "hifigan-universal" else "")
            raise CmmdError(f"vocoder {self.spec or self.name!r} takes other mels than the model produces: "
                            f"{'; '.join(diffs)}.{hint}")


class GriffinLim(Vocoder):
    """:func:`cmmd.audio.griffinlim.griffin_lim` (``n_iter`` iterations) behind the :class:`Vocoder` interface."""

    name = "griffinlim"
    spec = "griffinlim"

    def __init__(self, sample_rate: int = SAMPLE_RATE, n_iter: int = 32) -> None:
        self.mel = cmmd_mel(sample_rate)
        self.n_iter = n_iter

    def synthesize(self, log_mel: Tensor) -> Tensor:
        """``(B, 80, L) -> (B, L * hop)`` by Griffin-Lim."""
        return griffin_lim(log_mel, n_iter=self.n_iter, sample_rate=self.sample_rate)


def build_generator(arch: str, config: Mapping[str, Any]) -> nn.Module:
    """A generator by architecture name (``melgan`` or ``hifigan-v1``) and config fields."""
    try:
        if arch == "melgan":
            return MelGanGenerator(MelGanConfig(**_tuples(config)))
        if arch == "hifigan-v1":
            return HifiGanGenerator(HifiGanConfig(**_tuples(config)))
    except TypeError as exc:
        raise CmmdError(f"bad {arch} generator config {dict(config)} ({exc})") from None
    raise CmmdError(f"unknown generator architecture {arch!r}; expected melgan or hifigan-v1")


def _tuples(config: Mapping[str, Any]) -> dict[str, Any]:
    """JSON lists back to the (nested) tuples the frozen configs hold."""
    def conv(v: Any) -> Any:
        return tuple(conv(x) for x in v) if isinstance(v, list) else v

    return {k: conv(v) for k, v in config.items()}


def generator_spec(generator: nn.Module) -> dict[str, Any]:
    """``{"arch", "config"}`` of a generator, as checkpoints record it."""
    if isinstance(generator, MelGanGenerator):
        return {"arch": "melgan", "config": asdict(generator.cfg)}
    if isinstance(generator, HifiGanGenerator):
        return {"arch": "hifigan-v1", "config": asdict(generator.cfg)}
    raise CmmdError(f"unknown generator type {type(generator).__name__}")


class NeuralVocoder(Vocoder):
    """A generator network ``(B, n_mels, L) -> (B, L * hop)`` with its mel config; weight norm folded."""

    def __init__(self, generator: nn.Module, mel: MelConfig, name: str, spec: str = "") -> None:
        if getattr(generator, "hop", mel.hop) != mel.hop:
            raise CmmdError(f"generator upsamples by {generator.hop} but its mel hop is {mel.hop}")
        self._weights = hashlib.sha256(safetensors_bytes(
            {k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()})).hexdigest()[:16]
        self.generator = fold_weight_norm(generator).eval().requires_grad_(False)
        self.mel = mel
        self.name = name
        self.spec = spec or name

    @property
    def device(self) -> torch.device:
        """Device of the generator."""
        return next(self.generator.parameters()).device

    def to(self, device: torch.device | str) -> NeuralVocoder:
        """Move the generator; returns ``self``."""
        self.generator.to(device)
        return self

    @property
    def weights(self) -> str:
        """Digest of the generator's (weight-normalised) state dict as trained/released."""
        return self._weights

    def synthesize(self, log_mel: Tensor) -> Tensor:
        """``(B, n_mels, L) -> (B, L * hop)``."""
        return self.generator(log_mel)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> NeuralVocoder:
        """A ``cmmd vocoder train`` generator: run dir (latest checkpoint), checkpoint dir or
        ``generator.safetensors`` file."""
        file = resolve_generator_file(path)
        state, info = read_generator_file(file)
        extra = info.get("extra", {})
        if "generator" not in extra or "mel" not in extra:
            raise CmmdError(f"{file}: a cmmd file but not a vocoder generator (no generator/mel record)")
        generator = build_generator(extra["generator"]["arch"], extra["generator"]["config"])
        try:
            generator.load_state_dict(state)
        except RuntimeError as exc:
            raise CmmdError(f"{file}: weights do not match the {extra['generator']['arch']} generator they "
                            f"record ({str(exc).splitlines()[0]})") from None
        return cls(generator.to(device), mel_config_from(extra["mel"]), "cmmd-gan", spec=f"cmmd-gan:{path}")


class HifiGanUniversalVocoder(NeuralVocoder):
    """The released HiFi-GAN V1 universal generator in :data:`HIFIGAN_MEL` (22.05 kHz) mels.

    Feed it ``HIFIGAN_MEL.log_mel(wave_22k)``; for cmmd's 16 kHz mels fine-tune it first
    (module docstring). Weights: :func:`cmmd.audio.hifigan.ensure_hifigan_universal`.
    """

    def __init__(self, device: torch.device | str = "cpu", cache: str | Path | None = None) -> None:
        super().__init__(load_universal_generator(cache).to(device), HIFIGAN_MEL, "hifigan-universal")


def resolve_generator_file(path: str | Path) -> Path:
    """The ``generator.safetensors`` of a run dir (latest checkpoint), a checkpoint dir, or the file itself."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CmmdError(f"vocoder checkpoint {path} does not exist; train one with `cmmd vocoder train AUDIO_DIR "
                        "--out RUN`")
    if path.is_file():
        return path
    if (path / "checkpoints").is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise CmmdError(f"{path}: vocoder run has no complete checkpoint yet")
        path = latest
    file = path / GENERATOR_FILE
    if not file.is_file():
        raise CmmdError(f"{path}: no {GENERATOR_FILE}; pass a `cmmd vocoder train` run or checkpoint directory")
    return file


def read_generator_file(file: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(state dict, cmmd metadata)`` of a generator safetensors file."""
    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises several types for a bad header
        raise CmmdError(f"{file}: not a readable safetensors file ({exc})") from None
    if meta.get("format") != "cmmd" or "cmmd" not in meta:
        raise CmmdError(f"{file}: not a cmmd vocoder file (no cmmd metadata)")
    return state, json.loads(meta["cmmd"])


def load_vocoder(spec: str, device: torch.device | str = "cpu", sample_rate: int = SAMPLE_RATE) -> Vocoder:
    """The vocoder a spec names: ``griffinlim``, ``cmmd-gan:<path>`` or ``hifigan-universal``.

    ``sample_rate`` applies to Griffin-Lim only (neural vocoders carry theirs).
    """
    name, _, arg = spec.partition(":")
    name, arg = name.strip(), arg.strip()
    if name == "griffinlim" and not arg:
        return GriffinLim(sample_rate)
    if name == "hifigan-universal" and not arg:
        return HifiGanUniversalVocoder(device)
    if name == "cmmd-gan":
        if not arg:
            raise CmmdError(f"vocoder spec {spec!r} needs a path: cmmd-gan:<run dir or generator.safetensors>")
        return NeuralVocoder.load(arg, device)
    raise CmmdError(f"unknown vocoder spec {spec!r}; choose griffinlim, cmmd-gan:<path> or hifigan-universal")


__all__ = [
    "GriffinLim",
    "HifiGanUniversalVocoder",
    "NeuralVocoder",
    "Vocoder",
    "build_generator",
    "fold_weight_norm",
    "generator_spec",
    "load_vocoder",
    "read_generator_file",
    "resolve_generator_file",
]
