"""``cmmd generate CHECKPOINT --mode v2a|a2v|joint [INPUT ...]``: sample from a trained model.

For every input (a file, or every media file directly inside a folder) it writes ``OUT/<name>.mp4``:
v2a the input's own video (its size, frame rate and aspect; stream copied) with the generated
sound, a2v the generated video with the input's own audio track. Beside it ``<name>.json`` (the
settings), ``<name>_spec.png`` (spectrograms) and, in ``OUT/condition/``, the input as the model
saw it; with ``--model-res`` also ``OUT/model_res/<name>.mp4`` at the model's size and rates
(layout: :mod:`cmmd.generation`). OUT is a valid generated folder for ``cmmd evaluate OUT INPUT``.

Inputs that cannot be used are skipped, listed by name and reason and in ``OUT/failures.jsonl``;
the exit status is non-zero only when nothing was generated. Video goes through the codec the
model was trained with (``--codec``), audio through a vocoder for its mels (``--vocoder``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """Outputs, one per input, named like it (so `cmmd evaluate OUT INPUT_FOLDER` pairs them):
  OUT/<name>.mp4            v2a: your video stream as it is (size, frame rate, aspect; copied)
                            with the generated sound; a2v: the generated video with your audio track
  OUT/<name>.json           settings;  OUT/<name>_spec.png  spectrograms
  OUT/condition/<name>.*    the input as the model saw it (its size and rates)
  OUT/model_res/<name>.mp4  with --model-res: the output at the model's size and rates

Folders: the media files directly inside (not in subfolders), as `cmmd evaluate` reads them.
An input that cannot be used (no video stream for v2a, no audio for a2v, unreadable, too short,
a name taken by an earlier input, an existing output without --overwrite) is skipped and listed
with its reason, here and in OUT/failures.jsonl; the others are generated. The exit status is
non-zero only when no output was written.

Long inputs: --window native samples in overlapping windows of the training length, blended at
every step (no seam), in the memory of a few windows; see docs/LONG_INPUTS.md."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("checkpoint", type=Path, help="run dir, checkpoint dir or exported .safetensors")
    parser.add_argument("inputs", nargs="*", type=Path,
                        help="video files/folders (v2a) or audio/video files/folders (a2v); none for joint")
    parser.set_defaults(_trailing="inputs")  # inputs may also follow the flags (cmmd.cli)
    parser.add_argument("--mode", choices=("v2a", "a2v", "joint"), required=True,
                        help="v2a: audio for a video; a2v: video for an audio; joint: both, unconditional")
    parser.add_argument("--out", type=Path, default=Path("outputs/generate"), help="output folder")
    parser.add_argument("--method", choices=("ddim", "dpmpp2m"), default="ddim", help="sampler")
    parser.add_argument("--steps", type=int, default=50,
                        help="sampler steps, 1 to the model's training steps (DPM-Solver++: 10-25 is enough)")
    parser.add_argument("--guidance", type=float, default=0.0,
                        help="reconstruction guidance lambda >= 0 (paper Eq. 3); 0 = replacement")
    parser.add_argument("--sync-guidance", type=float, default=0.0, metavar="W",
                        help="v2a/a2v: guidance weight W >= 0 away from the condition shifted by 200-800 ms "
                             "(sync guidance; one extra network evaluation per step); 0 = off")
    parser.add_argument("--eta-ddim", type=float, default=0.0, help="DDIM stochasticity in [0, 1] (0 = deterministic)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first input (input i: seed + i)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="clip length (default: the whole input for v2a/a2v, the training length for joint); "
                             "any length works, e.g. twice the training length")
    parser.add_argument("--window", default=None, metavar="SECONDS|native",
                        help="sample in overlapping windows of this many seconds (native: the model's training "
                             "clip length), blended at every step, so memory stays that of one window "
                             "(docs/LONG_INPUTS.md); default: the whole input at once, which fits 24 GiB up to "
                             "the lengths docs/results/long_inputs.md gives")
    parser.add_argument("--overlap", type=float, default=None, metavar="SECONDS",
                        help="with --window: seconds shared by neighbouring windows (default: half the window)")
    parser.add_argument("--num", type=int, default=None, help="joint mode: how many clips (default 1)")
    parser.add_argument("--joint-order", choices=("together", "audio-first", "video-first"), default=None,
                        help="joint mode: denoise both at once (together) or draw one modality jointly, then "
                             "generate the other for it (audio-first: p(a) p(v|a)); default video-first with 2 "
                             "redraws: v, a|v, then v'|a")
    parser.add_argument("--joint-redraws", type=int, default=None,
                        help="with a sequential --joint-order: conditional redraws, alternating (audio-first 2: "
                             "a, v|a, a|v); default 2 with the default order, else 1")
    parser.add_argument("--model-res", action="store_true",
                        help="v2a/a2v: also write OUT/model_res/<name>.mp4 at the model's size and rates")
    parser.add_argument("--codec", default=None, metavar="SPEC",
                        help="video codec: pixel, cmmd-vae:<run> or sd-vae:<local path>; must be the one the model "
                             "was trained with (default: the codec the checkpoint records, from its recorded path)")
    parser.add_argument("--vocoder", default=None, metavar="SPEC",
                        help="griffinlim, cmmd-gan:<run> or hifigan-universal; must take the model's mels "
                             "(default: griffinlim)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs of the same name")


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse arguments that cannot work, before the model loads, with one line naming the flag."""
    from cmmd.errors import CmmdError

    if args.mode != "joint" and not args.inputs:
        raise CmmdError(f"--mode {args.mode} needs input files or folders")
    if args.mode == "joint" and args.inputs:
        raise CmmdError("--mode joint is unconditional: it takes no inputs")
    if args.mode != "joint" and args.num is not None:
        raise CmmdError(f"--num is for --mode joint; --mode {args.mode} makes one output per input")
    if args.mode != "joint" and args.joint_order is not None:
        raise CmmdError(f"--joint-order is for --mode joint, not --mode {args.mode}")
    if args.mode != "joint" and args.joint_redraws is not None:
        raise CmmdError(f"--joint-redraws is for --mode joint, not --mode {args.mode}")
    if args.joint_redraws is not None and args.joint_order == "together":
        raise CmmdError("--joint-redraws needs --joint-order audio-first or video-first, not together")
    if args.joint_redraws is not None and args.joint_redraws < 1:
        raise CmmdError(f"--joint-redraws must be >= 1, got {args.joint_redraws}")
    if args.mode == "joint" and args.guidance > 0 and args.joint_order == "together":
        raise CmmdError("--guidance needs a known modality: --joint-order together has none (audio-first and "
                        "video-first condition their redraws on the other modality)")
    if args.mode == "joint" and args.model_res:
        raise CmmdError("--model-res is for v2a/a2v; joint outputs are at the model's size already")
    if args.num is not None and args.num < 1:
        raise CmmdError(f"--num must be >= 1, got {args.num}")
    if args.steps < 1:
        raise CmmdError(f"--steps must be >= 1, got {args.steps}")
    if not args.guidance >= 0:
        raise CmmdError(f"--guidance must be >= 0, got {args.guidance}")
    if not args.sync_guidance >= 0:
        raise CmmdError(f"--sync-guidance must be >= 0, got {args.sync_guidance}")
    if args.mode == "joint" and args.sync_guidance and args.joint_order == "together":
        raise CmmdError("--sync-guidance needs a condition to shift: --joint-order together has none")
    if not 0 <= args.eta_ddim <= 1:
        raise CmmdError(f"--eta-ddim must be in [0, 1], got {args.eta_ddim}")
    if args.seed < 0:
        raise CmmdError(f"--seed must be >= 0, got {args.seed}")
    if args.seconds is not None and not args.seconds > 0:
        raise CmmdError(f"--seconds must be > 0, got {args.seconds}")
    if args.window is not None and args.window != "native":
        try:
            window = float(args.window)
        except ValueError:
            raise CmmdError(f"--window must be a number of seconds or 'native', got {args.window!r}") from None
        if not window > 0:
            raise CmmdError(f"--window must be > 0 seconds, got {args.window}")
        if args.overlap is not None and not args.overlap < window:
            raise CmmdError(f"--overlap must be shorter than --window ({args.window} s), got {args.overlap}")
    if args.overlap is not None and args.window is None:
        raise CmmdError("--overlap is for windowed sampling; give --window too")
    if args.overlap is not None and not args.overlap >= 0:
        raise CmmdError(f"--overlap must be >= 0 seconds, got {args.overlap}")
    if not args.checkpoint.exists():
        raise CmmdError(f"checkpoint {args.checkpoint} does not exist")
    if args.out.exists() and not args.out.is_dir():
        raise CmmdError(f"--out {args.out} is a file, not a folder")


def joint_settings(order: str | None, redraws: int | None) -> dict[str, object]:
    """SamplingSettings' joint fields from the flags: none given keeps its defaults; an order alone
    draws once more (redraws 1)."""
    if order is None:
        return {} if redraws is None else {"joint_redraws": redraws}
    return {"joint_order": order, "joint_redraws": redraws or 1}


def run(args: argparse.Namespace) -> int:
    from cmmd.errors import CmmdError
    from cmmd.data.failures import write_failures
    from cmmd.generation import generate_files, generate_joint, media_files, output_path, write_sample
    from cmmd.pipeline import Pipeline, SamplingSettings

    check_arguments(args)
    pipe = Pipeline.from_checkpoint(args.checkpoint, device=args.device, codec=args.codec, vocoder=args.vocoder)
    if args.steps > pipe.schedule.num_steps:
        raise CmmdError(f"--steps must be at most {pipe.schedule.num_steps} (the model's training steps), "
                        f"got {args.steps}")
    window = args.window
    if window is not None:
        window = pipe.config.data.clip_frames / pipe.fps if window == "native" else float(window)
    overlap = args.overlap if args.overlap is not None or window is None else window / 2
    settings = SamplingSettings(args.method, args.steps, args.guidance, args.eta_ddim, args.seed,
                                **joint_settings(args.joint_order, args.joint_redraws),
                                sync_guidance=args.sync_guidance, window=window, overlap=overlap)
    if args.mode == "joint":
        existing = [output_path(args.out, f"joint_{k:04d}") for k in range(args.num or 1)]
        existing = [p for p in existing if p.exists() and not args.overwrite]
        if existing:
            raise CmmdError(f"{existing[0]} exists; pass --overwrite or choose another --out")
        result = generate_joint(pipe, settings, args.num or 1, args.seconds)
    else:
        files, missing = media_files(args.inputs)
        done = set() if args.overwrite else {f for f in files if output_path(args.out, f.stem).exists()}
        result = generate_files(pipe, args.mode, files, settings, args.seconds, done=done)
        result.failures = missing + result.failures
    info = {"checkpoint": str(args.checkpoint)}
    for sample in result.samples:
        write_sample(sample, pipe, args.out, info, model_res=args.model_res, overwrite=args.overwrite)
        print(f"cmmd generate: wrote {sample.outputs['output']}")
    if args.mode == "joint":
        return 0
    listing = write_failures(result.failures, args.out / "failures.jsonl")
    for failure in result.failures:
        print(f"cmmd generate: skipped {failure.source}: {failure.reason}")
    print(f"cmmd generate: {len(result.samples)} generated, {len(result.failures)} skipped"
          + (f" (listed in {listing})" if result.failures else "") + f", outputs in {args.out}")
    if not result.samples:
        inputs = ", ".join(map(str, args.inputs))
        raise CmmdError(f"nothing generated from {inputs}: " + (f"all {len(result.failures)} input(s) skipped "
                        f"(see {listing})" if result.failures else "no media files found"))
    return 0
