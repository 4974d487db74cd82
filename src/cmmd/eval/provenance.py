"""Which code produced a result: the code version every checkpoint records, and the versions of
the libraries that compute the metrics."""

from __future__ import annotations

import platform
from typing import Any

import numpy as np

from cmmd.checkpoint import code_version


def provenance() -> dict[str, Any]:
    """``version``: :func:`cmmd.checkpoint.code_version` (cmmd's version + git commit, ``-dirty``
    when modified), the same string checkpoints record; then python and library versions."""
    import librosa
    import scipy
    import torch

    return {"version": code_version(), "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "scipy": scipy.__version__, "librosa": librosa.__version__}
