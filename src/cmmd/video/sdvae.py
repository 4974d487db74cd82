"""Stable Diffusion's VAE (``sd-vae-ft-mse``) as a frozen video codec, loaded from a local path.

The paper's video latent (METHOD.md section 2): diffusers' ``AutoencoderKL``, 4 channels, 8x
downsampling, scaling factor 0.18215, used frozen. Nothing is downloaded: the user gives

* a diffusers folder (``config.json`` + ``diffusion_pytorch_model.safetensors``, as
  ``AutoencoderKL.save_pretrained`` writes it, e.g. a local copy of the ``sd-vae-ft-mse`` repo), or
* one ``.safetensors`` file in diffusers' key layout (``encoder.down_blocks.0...``) or in the
  original LDM layout (``encoder.down.0.block.0...``, e.g. ``vae-ft-mse-840000-ema-pruned``
  or a whole SD checkpoint with ``first_stage_model.`` keys). The architecture is read from the
  weight shapes (widths, blocks per level, latent channels, quant convs, mid attention) on top of
  :data:`SD_VAE_FT_MSE_CONFIG`; a ``config.json`` next to the file, if present, overrides it
  (needed only for a ``norm_num_groups`` other than 32). LDM keys are converted with diffusers'
  own ``convert_ldm_vae_checkpoint``.

diffusers is an optional dependency (``pip install 'cmmd[sdvae]'``); it is imported only here.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cmmd.errors import CmmdError
from cmmd.video.codecs import NetworkCodec

SD_VAE_FT_MSE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 256,
    "scaling_factor": 0.18215,
}
"""The ``config.json`` of ``stabilityai/sd-vae-ft-mse``: the default architecture for single files."""

_LDM_PREFIXES = ("first_stage_model.", "vae.")


def _autoencoder_kl() -> type:
    try:
        from diffusers import AutoencoderKL
    except ImportError as exc:
        raise CmmdError(f"the sd-vae codec needs diffusers ({exc}); install it with "
                        "`pip install 'cmmd[sdvae]'` (or `pip install diffusers`)") from None
    return AutoencoderKL


def _is_ldm_layout(state: dict[str, Tensor]) -> bool:
    return any(re.match(r"^(first_stage_model\.|vae\.)?encoder\.down\.\d+\.block\.", k) for k in state)


def _count(keys: list[str], pattern: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def infer_config(state: dict[str, Tensor], base: dict[str, Any]) -> dict[str, Any]:
    """An ``AutoencoderKL`` config matching a diffusers-layout state dict, on top of ``base``."""
    keys = list(state)
    levels = _count(keys, r"^encoder\.down_blocks\.(\d+)\.")
    if levels == 0 or "encoder.conv_out.weight" not in state:
        raise CmmdError("not an AutoencoderKL state dict (no encoder.down_blocks.* / encoder.conv_out keys)")
    cfg = dict(base)
    cfg["block_out_channels"] = [int(state[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"].shape[0])
                                 for i in range(levels)]
    cfg["down_block_types"] = ["DownEncoderBlock2D"] * levels
    cfg["up_block_types"] = ["UpDecoderBlock2D"] * levels
    cfg["layers_per_block"] = _count(keys, r"^encoder\.down_blocks\.0\.resnets\.(\d+)\.")
    cfg["latent_channels"] = int(state["encoder.conv_out.weight"].shape[0]) // 2
    cfg["in_channels"] = int(state["encoder.conv_in.weight"].shape[1])
    cfg["out_channels"] = int(state["decoder.conv_out.weight"].shape[0])
    cfg["use_quant_conv"] = "quant_conv.weight" in state
    cfg["use_post_quant_conv"] = "post_quant_conv.weight" in state
    cfg["mid_block_add_attention"] = any(k.startswith("encoder.mid_block.attentions.") for k in keys)
    return cfg


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises several types for a bad header
        raise CmmdError(f"{path}: not a readable safetensors file ({exc})") from None


def _ldm_to_diffusers(state: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    keys = list(state)
    prefix = next((p for p in _LDM_PREFIXES if any(k.startswith(p + "encoder.") for k in keys)), "")
    levels = _count(keys, rf"^{re.escape(prefix)}encoder\.down\.(\d+)\.")
    layout = {"down_block_types": ["DownEncoderBlock2D"] * levels, "up_block_types": ["UpDecoderBlock2D"] * levels}
    try:
        return convert_ldm_vae_checkpoint(state, layout)
    except (KeyError, IndexError, ValueError) as exc:
        raise CmmdError(f"{path}: LDM-layout VAE weights could not be converted ({exc!r})") from None


def load_autoencoder_kl(path: str | Path) -> tuple[torch.nn.Module, str]:
    """``(AutoencoderKL in eval mode, float32, CPU; description of the source)`` from a local path.

    Raises CmmdError naming ``path`` if it is missing, holds no weights, or the weights do not
    fit the architecture (missing or unexpected keys, wrong shapes).
    """
    autoencoder_kl = _autoencoder_kl()
    path = Path(path).expanduser()
    if not path.exists():
        raise CmmdError(f"sd-vae path {path} does not exist; give a local diffusers AutoencoderKL folder "
                        "(config.json + diffusion_pytorch_model.safetensors) or a single .safetensors file")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CmmdError(f"{path} has no config.json; it is not a diffusers AutoencoderKL folder")
        try:
            model = autoencoder_kl.from_pretrained(str(path), local_files_only=True, low_cpu_mem_usage=False)
        except (OSError, ValueError, RuntimeError) as exc:
            raise CmmdError(f"{path}: cannot load an AutoencoderKL from this folder ({exc})") from None
        return model.float().eval(), f"diffusers folder {path}"
    if path.suffix != ".safetensors":
        raise CmmdError(f"{path}: a single-file sd-vae must be a .safetensors file")
    state = _read_safetensors(path)
    layout = "diffusers"
    if _is_ldm_layout(state):
        state, layout = _ldm_to_diffusers(state, path), "LDM"
    base = dict(SD_VAE_FT_MSE_CONFIG)
    sidecar = path.parent / "config.json"
    if sidecar.is_file():
        try:
            base.update({k: v for k, v in json.loads(sidecar.read_text()).items() if not k.startswith("_")})
        except ValueError as exc:
            raise CmmdError(f"{sidecar} is not valid JSON ({exc})") from None
    try:
        config = infer_config(state, base)
    except CmmdError as exc:
        raise CmmdError(f"{path}: {exc}") from None
    model = autoencoder_kl(**{k: v for k, v in config.items() if k in _init_args(autoencoder_kl)})
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CmmdError(f"{path}: weights do not match an AutoencoderKL ({str(exc).splitlines()[0]} ...)") from None
    return model.float().eval(), f"{layout}-layout file {path}"


def _init_args(cls: type) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - {"self"}


class SdVaeCodec(NetworkCodec):
    """A frozen diffusers ``AutoencoderKL`` as a video codec; ``scaling_factor`` from its config."""

    name = "sd-vae"
    max_batch = 16

    def __init__(self, model: torch.nn.Module, spec: str = "", source: str = "") -> None:
        super().__init__(model)
        config = model.config
        self.channels = int(config.latent_channels)
        self.downsampling = 2 ** (len(config.block_out_channels) - 1)
        self.scaling_factor = float(config.scaling_factor)
        self.shift_factor = float(getattr(config, "shift_factor", None) or 0.0)
        self.spec = spec
        self.source = source

    def encode_images(self, images: Tensor) -> Tensor:
        """``(N, 3, H, W)`` -> posterior mean ``(N, 4, H / 8, W / 8)`` (minus ``shift_factor``, 0 for SD)."""
        return self.model.encode(images).latent_dist.mean - self.shift_factor

    def decode_images(self, latents: Tensor) -> Tensor:
        """``(N, 4, h, w)`` -> ``(N, 3, 8 h, 8 w)``."""
        return self.model.decode(latents + self.shift_factor).sample

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> SdVaeCodec:
        """From a local diffusers folder or single safetensors file (:func:`load_autoencoder_kl`)."""
        model, source = load_autoencoder_kl(path)
        return cls(model.to(device), spec=f"sd-vae:{path}", source=source)


__all__ = ["SD_VAE_FT_MSE_CONFIG", "SdVaeCodec", "infer_config", "load_autoencoder_kl"]
