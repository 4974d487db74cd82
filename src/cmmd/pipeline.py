"""From a trained checkpoint to media: load the model, condition, sample, decode.

The glue between the training stage and everything that consumes samples (``cmmd generate``,
the demo, training previews, the study); :mod:`cmmd.generation` takes it from media files to
written outputs. Video goes through the run's codec (conditioning frames
encoded, generated latents decoded), audio through the run's mel statistics and a vocoder
(Griffin-Lim by default). A checkpoint records its codec and mel configuration
(docs/CODECS.md); loading refuses a codec or vocoder that does not match them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from cmmd.assets import DEMO_VAE
from cmmd.audio.mel import MelStats, log_mel, recorded_mel
from cmmd.audio.vocoders import GriffinLim, Vocoder, load_vocoder
from cmmd.config import from_dict
from cmmd.conventions import HOP, frames_to_samples, mel_rate
from cmmd.data.negatives import shift_ms_to_frames
from cmmd.diffusion.denoiser import Denoiser, JointDenoiser
from cmmd.diffusion.guidance import Condition
from cmmd.diffusion.samplers import Callback, sample
from cmmd.diffusion.schedules import Schedule, make_schedule
from cmmd.diffusion.windows import WindowedDenoiser
from cmmd.errors import CmmdError
from cmmd.checkpoint import load_weights, read_info
from cmmd.train.config import TrainConfig
from cmmd.models.presets import build_model
from cmmd.video.codecs import PixelCodec, VideoCodec
from cmmd.video.loading import load_video_codec, parse_spec

Mode = Literal["joint", "v2a", "a2v"]
JOINT_ORDERS = ("together", "audio-first", "video-first")
MIN_WINDOW_FRAMES = 2  # a window shorter than this gives the model no time to work with


@dataclass
class SamplingSettings:
    """How to sample: solver, steps, guidance lambda (Eq. 3), DDIM eta, seed, how the known
    modality is given (``auto``: clean if the model was trained with clean conditioning, else
    re-noised as in the paper), how joint samples are drawn (``joint_order``) and sync guidance.

    ``joint_order``: ``together`` denoises both modalities at once (the paper); ``audio-first``
    draws the pair as ``p(a) p(v | a)``: the audio of a joint sample is kept and the video is then
    generated for it as in a->v (``video-first`` the other way round). ``joint_redraws`` > 1
    continues alternating (audio-first with 2: ``a``, ``v | a``, then ``a' | v``), Gibbs sweeps of
    the same joint model that end on a pair drawn by a conditional. Each redraw costs one more
    sampler run. ``sync_guidance`` (0 = off) is the weight of guidance away from the condition
    shifted in time by a random magnitude in ``[sync_shift_min_ms, sync_shift_max_ms]`` and a
    random sign (:mod:`cmmd.diffusion.guidance`); in joint mode it acts on the redraws.
    Windowing: ``window`` seconds (None: the whole clip at once) with ``overlap`` seconds shared by
    neighbouring windows (None: half the window), see :mod:`cmmd.diffusion.windows`."""

    method: Literal["ddim", "dpmpp2m"] = "ddim"
    steps: int = 50
    guidance_scale: float = 0.0
    eta_ddim: float = 0.0
    seed: int = 0
    known_level: Literal["auto", "renoised", "clean"] = "auto"
    sync_guidance: float = 0.0
    sync_shift_min_ms: float = 200.0
    sync_shift_max_ms: float = 800.0
    window: float | None = None
    overlap: float | None = None
    joint_order: Literal["together", "audio-first", "video-first"] = "video-first"
    joint_redraws: int = 2  # with video-first: v, a | v, v' | a (chosen on VALIDATION, docs/A2V_DIAGNOSIS.md)

    def __post_init__(self) -> None:
        if self.joint_order not in JOINT_ORDERS:
            raise CmmdError(f"joint_order must be one of {', '.join(JOINT_ORDERS)}, got {self.joint_order!r}")
        if self.joint_redraws < 1:
            raise CmmdError(f"joint_redraws must be >= 1, got {self.joint_redraws}")


@dataclass
class Generated:
    """A batch of samples: frames uint8 (B, T, H, W, 3) (decoded by the codec, the condition's
    round trip included), log-mels (B, 80, L), waves (B, S) (by the vocoder, S the clip's samples)."""

    frames: np.ndarray
    mel: np.ndarray
    wave: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)


def _refuse_diverged(settings: SamplingSettings, video: torch.Tensor, audio: torch.Tensor, wave: np.ndarray) -> None:
    """Raise a CmmdError when sampling diverged: the model's video (B, T, ...) or audio (B, C, L)
    has a non-finite value, or the vocoder's waves (B, S) do (a log-mel far out of range turns into
    infinities there). Written as it is, such a sample would be a black clip or an encoder error."""
    outputs = {"video": video, "audio": audio}
    checks = (("video", video, "video"), ("audio", audio, "audio"),
              ("waveform (after the vocoder)", torch.as_tensor(wave), "audio"))
    for name, values, source_name in checks:
        if bool(torch.isfinite(values).all()):
            continue
        source = outputs[source_name]
        finite = source[torch.isfinite(source)]
        span = f"[{finite.min().item():.3g}, {finite.max().item():.3g}]" if finite.numel() else "no finite value"
        raise CmmdError(f"sampling diverged ({settings.method}, {settings.steps} steps): the generated {name} has NaN "
                        f"or infinite values; the model's {source_name} output spans {span}, where its training data "
                        "lie within a few units of 0. Nothing was written for this batch.")


def recorded_codec(extra: dict[str, Any], device: torch.device | str = "cpu",
                   checkpoint: Path | None = None) -> VideoCodec:
    """The video codec a checkpoint's ``extra`` records: pixel (also for old checkpoints that stored
    ``"pixel"``), or a latent codec loaded from its recorded spec when its weights are still there,
    else from a file of the same name beside ``checkpoint`` (how a checkpoint ships with its VAE,
    e.g. the demo's in :mod:`cmmd.assets`), else, for the shipped VAE's file name, from this
    install's copy (a run trained on ``demo-vae`` latents under another checkout or venv). Either
    way :meth:`VideoCodec.check_compatible` then compares the weights' digest with the record."""
    record = extra.get("codec", "pixel")
    record = {"name": record} if isinstance(record, str) else record
    if record.get("name") == "pixel":
        return PixelCodec()
    spec = record.get("spec", "")
    name, weights = parse_spec(spec)
    if weights and Path(weights).expanduser().exists():
        return load_video_codec(spec, device)
    beside = Path(checkpoint).parent / Path(weights).name if checkpoint is not None and weights else None
    if beside is not None and beside.exists():
        return load_video_codec(f"{name}:{beside}", device)
    if weights and Path(weights).name == DEMO_VAE.name and DEMO_VAE.exists():
        return load_video_codec(f"{name}:{DEMO_VAE}", device)
    where = f" nor beside the checkpoint ({beside})" if beside is not None else ""
    raise CmmdError(f"the model was trained on {record.get('name')} latents (codec spec {spec!r}) whose weights "
                    f"are not at that path here{where}; pass the codec: --codec {record.get('name')}:<path> "
                    "(codec= in Python)")


class Pipeline:
    """A loaded model plus everything needed to turn media into its inputs and back.

    ``codec`` maps frames to the model's video tensors and back (default: pixels); ``vocoder``
    turns its log-mels into sound (default: Griffin-Lim at ``sample_rate``).
    """

    def __init__(self, model: torch.nn.Module, config: TrainConfig, mel_stats: MelStats, fps: float, size: int,
                 sample_rate: int, device: torch.device | str = "cpu", step: int = 0, version: str = "",
                 codec: VideoCodec | None = None, vocoder: Vocoder | None = None):
        self.model = model.eval().to(device)
        self.config = config
        self.mel_stats = mel_stats
        self.fps, self.size, self.sample_rate = fps, size, sample_rate
        self.device = torch.device(device)
        self.codec = (codec or PixelCodec()).to(self.device)
        self.codec.latent_shape(size, size)
        self.vocoder = vocoder or GriffinLim(sample_rate)
        self.schedule: Schedule = make_schedule(config.diffusion.schedule, config.diffusion.num_steps)
        self.denoiser = JointDenoiser(self.model, self.schedule, config.diffusion.loss.prediction)
        self.step, self.version = step, version

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu", weights: str = "ema",
                        codec: str | VideoCodec | None = None, vocoder: str | Vocoder | None = None) -> Pipeline:
        """Load a run dir, a checkpoint dir or a single exported cmmd safetensors file.

        ``codec``: a spec (``pixel``, ``cmmd-vae:<run>``, ``sd-vae:<path>``) or codec; default the
        recorded one (:func:`recorded_codec`). ``vocoder``: a spec (``griffinlim``,
        ``cmmd-gan:<run>``, ``hifigan-universal``) or vocoder; default Griffin-Lim. Either is
        refused with a CmmdError naming both when it does not match what the checkpoint records.
        """
        path = Path(path)
        info = read_info(path)
        cfg = from_dict(TrainConfig, info.config)
        extra = info.extra
        if isinstance(codec, str):
            codec = load_video_codec(codec, device)
        try:
            codec = codec or recorded_codec(extra, device, path)
            codec.check_compatible(extra.get("codec", "pixel"))
        except CmmdError as exc:
            raise CmmdError(f"{path}: {exc}") from None
        if cfg.data.audio == "wave" and vocoder is not None:
            raise CmmdError(f"{path}: the model generates waveforms ({cfg.model.preset}); it takes no vocoder")
        if isinstance(vocoder, str):
            vocoder = load_vocoder(vocoder, device, sample_rate=extra["sample_rate"])
        vocoder = vocoder or GriffinLim(extra["sample_rate"])
        try:
            vocoder.check_compatible(recorded_mel(extra))
        except CmmdError as exc:
            raise CmmdError(f"{path}: {exc}") from None
        model = build_model(cfg.model.preset, cfg.model.overrides)
        state = load_weights(path, weights)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CmmdError(
                f"{path}: weights do not match the model in its config "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        stats = MelStats(**{k: extra["mel_stats"][k] for k in ("mean", "std")})
        return cls(model, cfg, stats, extra["fps"], extra["size"], extra["sample_rate"], device, info.step, info.version,
                   codec, vocoder)

    # -- media <-> model tensors ------------------------------------------------------------
    def audio_length_for(self, num_frames: int) -> int:
        """Length of the model's audio tensor for ``num_frames`` video frames (same duration):
        samples for waveform models, mel frames (our framing) otherwise."""
        samples = frames_to_samples(num_frames, self.fps, self.sample_rate)
        return samples if self.audio_is_wave else samples // HOP

    def encode_video(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (B, T, H, W, 3) at the model's size -> model video tensor (B, T, C, H / d, W / d)
        through the codec (``d`` its downsampling)."""
        if frames.ndim != 5 or frames.shape[-1] != 3:
            raise CmmdError(f"video must be (B, T, H, W, 3) frames, got shape {frames.shape}")
        if frames.shape[2:4] != (self.size, self.size):
            raise CmmdError(
                f"video frames are {frames.shape[3]}x{frames.shape[2]} but the model was trained on "
                f"{self.size}x{self.size}; decode with size={self.size}"
            )
        return self.codec.encode(frames).to(self.device)

    @property
    def audio_is_wave(self) -> bool:
        """True for models on raw waveforms (the MM-Diffusion baseline), False for log-mels."""
        return self.config.data.audio == "wave"

    def log_mel(self, wave: np.ndarray) -> torch.Tensor:
        """Un-normalised log-mels (B, 80, S // HOP) of float waves (B, S)."""
        return log_mel(torch.as_tensor(np.asarray(wave, dtype=np.float32)).to(self.device), self.sample_rate)

    def encode_audio(self, wave: np.ndarray) -> torch.Tensor:
        """float waves (B, S) -> the model's audio: normalised log-mels (B, 80, S // HOP), or the
        waves themselves (B, 1, S) for waveform models."""
        if self.audio_is_wave:
            return torch.as_tensor(np.asarray(wave, dtype=np.float32)).to(self.device)[:, None]
        return self.mel_stats.normalize(self.log_mel(wave))

    def decode_audio(self, audio: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """The model's audio -> (log-mels (B, 80, L), waves (B, S)); mels go through the vocoder."""
        if self.audio_is_wave:
            wave = audio[:, 0].float().clamp(-1, 1).cpu().numpy()
            return self.log_mel(wave).cpu().numpy(), wave
        mel = self.mel_stats.denormalize(audio.float()).cpu()
        return mel.numpy(), self.vocoder(mel).numpy()

    def shift_frames(self, mode: Mode, low_ms: float, high_ms: float) -> tuple[int, int]:
        """A shift range in ms as frames of the known modality's time axis (video frames for v2a;
        mel frames, or samples of a waveform model, for a2v), rounded half up, at least 1."""
        rate = {"v2a": self.fps, "a2v": self.sample_rate if self.audio_is_wave else mel_rate(self.sample_rate),
                "joint": self.fps}[mode]
        low, high = (int(shift_ms_to_frames(torch.tensor([ms]), rate)) for ms in (low_ms, high_ms))
        return low, high

    # -- sampling -------------------------------------------------------------------------
    def windowed(self, settings: SamplingSettings, num_frames: int, audio_length: int) -> Denoiser:
        """The denoiser for a clip of ``num_frames`` video and ``audio_length`` audio frames: the
        model's own, or with ``settings.window`` set, one over windows of that many seconds."""
        if settings.window is None:
            return self.denoiser
        window = round(settings.window * self.fps)
        overlap = window // 2 if settings.overlap is None else round(settings.overlap * self.fps)
        if window < MIN_WINDOW_FRAMES:
            raise CmmdError(f"window {settings.window} s is under {MIN_WINDOW_FRAMES} frames at {self.fps:g} fps")
        if not 0 <= overlap < window:
            raise CmmdError(f"overlap {settings.overlap} s must be >= 0 and shorter than the window "
                            f"({settings.window} s)")
        return WindowedDenoiser(self.denoiser, num_frames, audio_length, window, overlap)

    @torch.no_grad()
    def generate(
        self,
        mode: Mode,
        settings: SamplingSettings,
        frames: np.ndarray | None = None,
        wave: np.ndarray | None = None,
        num_frames: int | None = None,
        batch: int = 1,
        callback: Callback | None = None,
    ) -> Generated:
        """Video->audio (``frames`` given), audio->video (``wave`` given) or joint (neither).

        ``callback`` is the sampler's, called after each step (``cmmd.diffusion.samplers``)."""
        video0 = audio0 = None
        if mode == "v2a":
            if frames is None:
                raise CmmdError("video->audio needs video frames")
            video0 = self.encode_video(frames)
            num_frames, batch = video0.shape[1], video0.shape[0]
        elif mode == "a2v":
            if wave is None:
                raise CmmdError("audio->video needs an audio waveform")
            wave = np.atleast_2d(wave)
            audio0 = self.encode_audio(wave)
            batch = audio0.shape[0]
            num_frames = int(wave.shape[1] * self.fps // self.sample_rate)
        elif num_frames is None:
            num_frames = self.config.data.clip_frames
        assert num_frames is not None
        video_shape = (batch, num_frames, *self.codec.latent_shape(self.size, self.size))
        channels = 1 if self.audio_is_wave else self.mel_stats.mean.numel()
        audio_shape = (batch, channels, self.audio_length_for(num_frames))
        if audio0 is not None and audio0.shape[-1] != audio_shape[-1]:
            audio0 = audio0[..., : audio_shape[-1]]
        known_level = settings.known_level
        if known_level == "auto":
            known_level = "clean" if self.config.diffusion.loss.clean_condition_prob > 0 else "renoised"
        denoiser = self.windowed(settings, num_frames, audio_shape[-1])
        gen = torch.Generator(device=self.device).manual_seed(settings.seed)

        def run(condition: Condition) -> tuple[torch.Tensor, torch.Tensor]:
            return sample(
                denoiser, self.schedule, video_shape, audio_shape, method=settings.method, steps=settings.steps,
                condition=condition, eta_ddim=settings.eta_ddim, generator=gen, callback=callback,
                device=self.device, autocast=self.device.type == "cuda",
            )

        def condition(mode: Mode, video0: torch.Tensor | None, audio0: torch.Tensor | None) -> Condition:
            if mode == "joint":  # nothing known: no guidance of either kind
                return Condition(mode="joint", known_level=known_level)
            try:
                return Condition(mode=mode, video0=video0, audio0=audio0, guidance_scale=settings.guidance_scale,
                                 known_level=known_level, sync_guidance=settings.sync_guidance,
                                 sync_shift=self.shift_frames(mode, settings.sync_shift_min_ms,
                                                              settings.sync_shift_max_ms))
            except ValueError as exc:
                raise CmmdError(f"sampling settings (sync_shift_min_ms={settings.sync_shift_min_ms:g}, "
                                f"sync_shift_max_ms={settings.sync_shift_max_ms:g}): {exc}") from None

        video, audio = run(condition(mode, video0, audio0))
        redraw_video = settings.joint_order == "audio-first"
        for _ in range(settings.joint_redraws if mode == "joint" and settings.joint_order != "together" else 0):
            if redraw_video:
                video, _ = run(condition("a2v", None, audio))
            else:
                _, audio = run(condition("v2a", video, None))
            redraw_video = not redraw_video
        mel, out_wave = self.decode_audio(audio)
        _refuse_diverged(settings, video, audio, out_wave)
        # L = S // HOP mel frames vocode to L * HOP samples: the clip's last partial hop (under 16 ms)
        # becomes silence, so that the audio lasts as long as the video (a 1.0-s clip, not 0.992 s).
        missing = frames_to_samples(num_frames, self.fps, self.sample_rate) - out_wave.shape[-1]
        out_wave = np.pad(out_wave, ((0, 0), (0, missing))) if missing > 0 else out_wave
        return Generated(self.codec.decode(video), mel, out_wave,
                         {"mode": mode, **settings.__dict__, "known_level": known_level})
