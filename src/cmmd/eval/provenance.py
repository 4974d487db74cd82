"""Which code produced a result: cmmd version, git commit of the source tree, library versions."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

import cmmd


def code_version() -> dict[str, Any]:
    """cmmd version, git commit of the source tree (if it is a checkout) and library versions."""
    import librosa
    import scipy
    import torch

    info: dict[str, Any] = {"cmmd": cmmd.__version__, "python": platform.python_version(), "torch": torch.__version__,
                            "numpy": np.__version__, "scipy": scipy.__version__, "librosa": librosa.__version__}
    src = Path(cmmd.__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--", "."], capture_output=True,
                               text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return info
    if commit.returncode == 0:
        info["git_commit"] = commit.stdout.strip()
        info["git_dirty"] = bool(dirty.stdout.strip())
    return info
