"""models stage of cmmd: the joint video <-> audio U-Net with easy fusion (METHOD.md section 3)."""

from cmmd.models.fusion import EasyFusion, resample_time, time_resample_matrix
from cmmd.models.presets import PRESETS, build_model, build_unet, count_parameters
from cmmd.models.unet import JointUNet, UNetConfig

__all__ = [
    "PRESETS",
    "EasyFusion",
    "JointUNet",
    "UNetConfig",
    "build_model",
    "build_unet",
    "count_parameters",
    "resample_time",
    "time_resample_matrix",
]
