"""What ``cmmd evaluate`` computes and with which settings: :data:`METRICS` and :class:`EvalSettings`."""

from __future__ import annotations

from dataclasses import dataclass

from cmmd.conventions import FPS, SAMPLE_RATE
from cmmd.errors import CmmdError
from cmmd.eval.embedders import DEFAULT_CREPE_HOP
from cmmd.eval.i3d import FVD_FRAMES, MIN_FRAMES

METRICS = ("fvd", "kvd", "fad", "beat", "onset", "sync", "offset")
VIDEO_METRICS = ("fvd", "kvd", "offset")  # metrics that read frames


@dataclass(frozen=True)
class EvalSettings:
    """Everything that changes the numbers (stored in metrics.json)."""

    metrics: tuple[str, ...] = METRICS
    fps: float = FPS
    sample_rate: int = SAMPLE_RATE
    fvd_frames: int = FVD_FRAMES
    fvd_features: str = "logits"
    fad_embedder: str = "crepe-tiny"
    crepe_hop: float = DEFAULT_CREPE_HOP
    sync_tolerance: float = 0.1
    n_boot: int = 2000
    set_boot: int = 100
    seed: int = 0
    batch_size: int = 8
    pairwise: int | None = None
    cache: str | None = None
    use_cache: bool = True

    def __post_init__(self) -> None:
        unknown = sorted(set(self.metrics) - set(METRICS))
        if unknown or not self.metrics:
            raise CmmdError(f"unknown metric(s) {unknown or '(none given)'}; choose from {','.join(METRICS)}")
        if self.fvd_features not in ("logits", "pool"):
            raise CmmdError(f"fvd_features must be 'logits' or 'pool', got {self.fvd_features!r}")
        if self.fvd_frames < MIN_FRAMES:
            raise CmmdError(f"fvd_frames must be >= {MIN_FRAMES} (I3D's temporal receptive field), "
                            f"got {self.fvd_frames}")
        if self.n_boot < 1 or self.set_boot < 1:
            raise CmmdError("n_boot and set_boot must be >= 1")
        if self.pairwise is not None and self.pairwise < 1:
            raise CmmdError(f"pairwise must be >= 1 generations per condition, got {self.pairwise}")
