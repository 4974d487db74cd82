"""Load a video codec from its spec string: ``pixel``, ``cmmd-vae:<checkpoint>``, ``sd-vae:<path>``.

Kept apart from :mod:`cmmd.video.codecs` (the interface) so that the codec implementations import
the interface and this module imports them, with no cycle.
"""

from __future__ import annotations

import torch

from cmmd.errors import CmmdError
from cmmd.video.codecs import PixelCodec, VideoCodec
from cmmd.video.sdvae import SdVaeCodec
from cmmd.video.vae import CmmdVaeCodec

VIDEO_CODECS = ("pixel", "cmmd-vae", "sd-vae")
"""Codec names a spec may start with (:func:`load_video_codec`)."""


def parse_spec(spec: str) -> tuple[str, str]:
    """``"name:argument"`` -> ``(name, argument)``; ``"name"`` -> ``(name, "")``."""
    name, _, arg = spec.partition(":")
    return name.strip(), arg.strip()


def load_video_codec(spec: str, device: torch.device | str = "cpu") -> VideoCodec:
    """The codec a spec names: ``pixel``, ``cmmd-vae:<checkpoint>`` or ``sd-vae:<local path>``.

    ``<checkpoint>`` is a ``cmmd vae train`` run directory, one of its checkpoint directories or
    an exported ``.safetensors`` file; ``<local path>`` a diffusers ``AutoencoderKL`` folder or a
    single safetensors file (see :mod:`cmmd.video.sdvae`). Nothing is downloaded.
    """
    name, arg = parse_spec(spec)
    if name == "pixel":
        if arg:
            raise CmmdError(f"codec spec {spec!r}: the pixel codec takes no argument")
        return PixelCodec()
    if name not in VIDEO_CODECS:
        raise CmmdError(f"unknown video codec {name!r} in {spec!r}; choose from pixel, cmmd-vae:<checkpoint>, "
                        "sd-vae:<local folder or .safetensors>")
    if not arg:
        raise CmmdError(f"codec spec {spec!r} needs a path: {name}:<path>")
    if name == "cmmd-vae":
        return CmmdVaeCodec.load(arg, device)
    return SdVaeCodec.load(arg, device)
