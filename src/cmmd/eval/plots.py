"""PNG figures: spectrograms (ground truth vs generated) and frame strips, via matplotlib Agg."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save_spectrograms(
    panels: Sequence[tuple[str, np.ndarray]],
    path: Path,
    frames_per_second: float,
    events: Sequence[float] = (),
) -> Path:
    """Stack log-mel panels ``(title, mel (n_mels, L))`` on a shared time axis in seconds.

    ``events`` (seconds) are drawn as dashed lines on every panel so misaligned sounds show.
    """
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 1.9 * len(panels)), sharex=True, squeeze=False)
    vmin = min(float(np.min(m)) for _, m in panels)
    vmax = max(float(np.max(m)) for _, m in panels)
    for ax, (title, mel) in zip(axes[:, 0], panels):
        duration = mel.shape[-1] / frames_per_second
        ax.imshow(mel, origin="lower", aspect="auto", extent=(0, duration, 0, mel.shape[0]),
                  vmin=vmin, vmax=vmax, cmap="magma")
        for t in events:
            ax.axvline(t, color="cyan", linestyle="--", linewidth=0.8)
        ax.set_ylabel("mel bin")
        ax.set_title(title, fontsize=9)
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def save_frame_strip(rows: Sequence[tuple[str, np.ndarray]], path: Path, fps: float, every: int = 2) -> Path:
    """Rows of video frames ``(title, uint8 (T, H, W, 3))``, every ``every``-th frame, timed."""
    n = max(len(range(0, f.shape[0], every)) for _, f in rows)
    fig, axes = plt.subplots(len(rows), n, figsize=(0.8 * n, 1.0 * len(rows) + 0.3), squeeze=False)
    for r, (title, frames) in enumerate(rows):
        idx = list(range(0, frames.shape[0], every))
        for c in range(n):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(idx):
                ax.imshow(frames[idx[c]], interpolation="nearest")
                if r == len(rows) - 1:
                    ax.set_xlabel(f"{idx[c] / fps:.1f}s", fontsize=6)
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(title, fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout(pad=0.2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
