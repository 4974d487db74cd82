"""``cmmd app [CKPT]``: the local generation web app (v->a, a->v, joint) for a checkpoint.

Serves on 127.0.0.1 (``--host`` to open it to a LAN); uploads and results live in a temporary
folder removed when the server stops. ``CKPT`` defaults to the shipped demo checkpoint.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from cmmd.errors import CmmdError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", nargs="?", type=Path, default=None, metavar="CKPT",
                        help="run dir, checkpoint dir or exported .safetensors (default: the shipped demo checkpoint)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: 127.0.0.1, this machine only; 0.0.0.0 opens it to the network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    parser.add_argument("--vocoder", action="append", default=[], metavar="SPEC",
                        help="offer this vocoder beside griffinlim: cmmd-gan:<run> or hifigan-universal (repeatable)")
    parser.add_argument("--max-upload-mb", type=float, default=50.0, help="largest upload accepted (default: 50)")
    parser.add_argument("--max-seconds", type=float, default=10.0,
                        help="longest clip: longer uploads are refused, joint lengths capped (default: 10)")
    parser.add_argument("--max-queue", type=int, default=16, help="jobs that may wait at once (default: 16)")
    parser.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from cmmd.apps.genapp.server import create_app
    except ImportError as exc:
        raise CmmdError(f"the app needs the 'app' extra ({exc.name} is missing): pip install -e '.[app]'") from None
    from cmmd.assets import DEMO_CHECKPOINT
    from cmmd.apps.genapp.work import load_pipelines
    from cmmd.apps.serve import exposure_warning, url

    if not 0 < args.port < 65536:
        raise CmmdError(f"--port must be 1-65535, got {args.port}")
    if args.max_upload_mb <= 0 or args.max_seconds <= 0 or args.max_queue < 1:
        raise CmmdError("--max-upload-mb and --max-seconds must be positive and --max-queue at least 1")
    checkpoint = args.checkpoint or DEMO_CHECKPOINT
    pipelines = load_pipelines(checkpoint, args.vocoder, args.device)
    with tempfile.TemporaryDirectory(prefix="cmmd-app-") as workdir:
        app = create_app(pipelines, str(checkpoint), Path(workdir), args.max_upload_mb, args.max_seconds,
                         args.max_queue)
        print(f"cmmd app: {checkpoint} loaded; open {url(args.host, args.port)}", flush=True)
        if warning := exposure_warning("cmmd app", args.host, "use the app"):
            print(warning, flush=True)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
