"""``cmmd generate CHECKPOINT --mode v2a|a2v|joint [INPUT ...]``: sample from a trained model.

For every input (a file, or every media file of a folder) it writes ``<name>.mp4`` with the
generated modality muxed with the condition, ``<name>_condition.mp4`` (the input as the model
saw it, for comparison), ``<name>_spec.png`` and ``<name>.json`` with the settings. Video goes
through the codec the model was trained with (``--codec``, default: the recorded one), audio
through a vocoder for its mels (``--vocoder``, default: Griffin-Lim); a mismatch is refused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

MEDIA_SUFFIXES = {".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v", ".wav", ".flac", ".mp3", ".ogg", ".m4a"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="run dir, checkpoint dir or exported .safetensors")
    parser.add_argument("inputs", nargs="*", type=Path,
                        help="video files/folders (v2a) or audio/video files/folders (a2v); none for joint")
    parser.add_argument("--mode", choices=("v2a", "a2v", "joint"), required=True,
                        help="v2a: audio for a video; a2v: video for an audio; joint: both, unconditional")
    parser.add_argument("--out", type=Path, default=Path("outputs/generate"), help="output folder")
    parser.add_argument("--method", choices=("ddim", "dpmpp2m"), default="ddim", help="sampler")
    parser.add_argument("--steps", type=int, default=50, help="sampler steps (DPM-Solver++: 10-25 is enough)")
    parser.add_argument("--guidance", type=float, default=0.0,
                        help="reconstruction guidance lambda (paper Eq. 3); 0 = replacement")
    parser.add_argument("--eta-ddim", type=float, default=0.0, help="DDIM stochasticity (0 = deterministic)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=None,
                        help="clip length (default: the whole input for v2a/a2v, the training length for joint); "
                             "any length works, e.g. twice the training length")
    parser.add_argument("--num", type=int, default=1, help="joint mode: how many clips")
    parser.add_argument("--codec", default=None, metavar="SPEC",
                        help="video codec: pixel, cmmd-vae:<run> or sd-vae:<local path>; must be the one the model "
                             "was trained with (default: the codec the checkpoint records, from its recorded path)")
    parser.add_argument("--vocoder", default=None, metavar="SPEC",
                        help="griffinlim, cmmd-gan:<run> or hifigan-universal; must take the model's mels "
                             "(default: griffinlim)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs of the same name")


def _collect(inputs: list[Path]) -> list[Path]:
    from cmmd.errors import CmmdError

    files: list[Path] = []
    for path in inputs:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in MEDIA_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise CmmdError(f"input {path} does not exist")
    if not files:
        raise CmmdError(f"no media files found in {', '.join(map(str, inputs))}")
    return files


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from cmmd.data.media import read_media, write_media
    from cmmd.errors import CmmdError
    from cmmd.eval.plots import save_spectrograms
    from cmmd.pipeline import Pipeline, SamplingSettings

    if args.mode != "joint" and not args.inputs:
        raise CmmdError(f"--mode {args.mode} needs input files or folders")
    if args.mode == "joint" and args.inputs:
        raise CmmdError("--mode joint is unconditional: it takes no inputs")
    pipe = Pipeline.from_checkpoint(args.checkpoint, device=args.device, codec=args.codec, vocoder=args.vocoder)
    settings = SamplingSettings(args.method, args.steps, args.guidance, args.eta_ddim, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    mel_rate = pipe.sample_rate / 256

    def target(name: str) -> Path:
        path = args.out / f"{name}.mp4"
        if path.exists() and not args.overwrite:
            raise CmmdError(f"{path} exists; pass --overwrite or choose another --out")
        return path

    jobs = []
    if args.mode == "joint":
        frames = pipe.config.data.clip_frames if args.seconds is None else round(args.seconds * pipe.fps)
        for k in range(args.num):
            gen = pipe.generate("joint", SamplingSettings(**{**settings.__dict__, "seed": args.seed + k}),
                                num_frames=frames)
            jobs.append((f"joint_{k:04d}", gen, None, None))
    else:
        for path in _collect(args.inputs):
            media = read_media(path, fps=pipe.fps, sample_rate=pipe.sample_rate, size=pipe.size,
                               duration=args.seconds, video=args.mode == "v2a", audio=args.mode == "a2v")
            if args.mode == "v2a":
                if media.frames is None or len(media.frames) < 2:
                    raise CmmdError(f"{path}: video->audio needs a video with at least 2 frames")
                gen = pipe.generate("v2a", settings, frames=media.frames[None])
            else:
                if media.audio is None or len(media.audio) < pipe.sample_rate // pipe.fps * 2:
                    raise CmmdError(f"{path}: audio->video needs at least 0.2 s of audio")
                usable = len(media.audio) // int(pipe.sample_rate / pipe.fps) * int(pipe.sample_rate / pipe.fps)
                gen = pipe.generate("a2v", settings, wave=media.audio[None, :usable])
            jobs.append((path.stem, gen, media, path))

    for name, gen, media, source in jobs:
        out = target(name)
        info = {"checkpoint": str(args.checkpoint), "checkpoint_step": pipe.step, "version": pipe.version,
                "codec": pipe.codec.spec or pipe.codec.name, "vocoder": pipe.vocoder.spec or pipe.vocoder.name,
                "source": str(source) if source else None, **gen.settings}
        if args.mode == "v2a":
            frames, wave = media.frames, gen.wave[0]
            write_media(args.out / f"{name}_condition.mp4", frames, None, pipe.fps, pipe.sample_rate,
                        overwrite=args.overwrite)
        elif args.mode == "a2v":
            frames, wave = gen.frames[0], media.audio[: gen.frames.shape[1] * int(pipe.sample_rate / pipe.fps)]
            write_media(args.out / f"{name}_condition.mkv", None, wave, pipe.fps, pipe.sample_rate,
                        overwrite=args.overwrite)
        else:
            frames, wave = gen.frames[0], gen.wave[0]
        n = min(len(wave), int(round(len(frames) * pipe.sample_rate / pipe.fps)))
        write_media(out, frames, np.asarray(wave[:n], dtype=np.float32), pipe.fps, pipe.sample_rate,
                    overwrite=args.overwrite)
        panels = [("generated", gen.mel[0])]
        if args.mode == "a2v":
            panels.insert(0, ("condition", pipe.log_mel(wave[None])[0].cpu().numpy()))
        save_spectrograms(panels, args.out / f"{name}_spec.png", mel_rate)
        (args.out / f"{name}.json").write_text(json.dumps(info, indent=1))
        print(f"cmmd generate: wrote {out}")
    return 0
