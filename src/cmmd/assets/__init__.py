"""Files shipped inside the package, so a non-editable install (``pip install .``) has them too:
the demo's training config, its trained checkpoint (EMA weights, made by
``scripts/make_demo_checkpoint.sh``) and the video VAE whose latents it generates in (EMA
weights of ``cmmd vae train``, see docs/A2V_DIAGNOSIS.md; a checkpoint finds it beside itself). Resolved through :mod:`importlib.resources`, never
through the location of a checkout; ``configs/demo_tiny.yaml`` in a checkout links here.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

_ASSETS = files(__name__)
DEMO_CONFIG = Path(str(_ASSETS / "demo_tiny.yaml"))
DEMO_CHECKPOINT = Path(str(_ASSETS / "demo-tiny.safetensors"))
DEMO_VAE = Path(str(_ASSETS / "demo-vae.safetensors"))
REAL_MEDIA = Path(str(_ASSETS / "real_media.json"))  # the real-media benchmark's manifest (cmmd.data.real_media)
SEMI_REAL = Path(str(_ASSETS / "semi_real.json"))  # the semi-real set's kits and rendering (cmmd.data.semi_real)
