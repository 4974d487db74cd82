"""Content-addressed cache of evaluation features, so re-running an evaluation is instant.

An entry is keyed by the sha256 of the input file's bytes (or of several files' digests for
a score that depends on a pair), the extractor's name and its settings (JSON, sorted keys):
renaming or moving a file keeps its entry, changing a byte or a setting makes a new one. Entries
are ``.npz`` files of named arrays under ``<cache>/features/<extractor>/<key[:2]>/<key>.npz``,
written atomically (a killed run leaves no half entry).
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from cmmd.weights import cache_dir


def cache_key(digests: str | tuple[str, ...], extractor: str, settings: Mapping[str, object]) -> str:
    """sha256 of the input digest(s), the extractor name and its settings."""
    payload = json.dumps([digests, extractor, settings], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def module_fingerprint(module: torch.nn.Module) -> str:
    """sha256 of a network's parameters and buffers (names, shapes, bytes): part of a cache key,
    so features of different weights never share an entry."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return digest.hexdigest()


class FeatureCache:
    """Named arrays per key; ``root=None`` disables caching (every lookup misses, nothing is written)."""

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        self.root = None if root is None else Path(root)
        self.hits = 0
        self.misses = 0

    @classmethod
    def default(cls, cache: str | os.PathLike[str] | None = None) -> FeatureCache:
        """The cache under ``<cache root>/features`` (``$CMMD_CACHE`` or ``~/.cache/cmmd``)."""
        return cls(cache_dir(cache) / "features")

    def _path(self, extractor: str, key: str) -> Path:
        assert self.root is not None
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in extractor)
        return self.root / safe / key[:2] / f"{key}.npz"

    def load(self, extractor: str, key: str) -> dict[str, np.ndarray] | None:
        """The arrays stored under ``key``, or None (a missing or unreadable entry is a miss)."""
        if self.root is None:
            self.misses += 1
            return None
        path = self._path(extractor, key)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError):
            self.misses += 1
            return None
        self.hits += 1
        return arrays

    def save(self, extractor: str, key: str, arrays: Mapping[str, np.ndarray | float]) -> None:
        """Store ``arrays`` under ``key`` (no-op when disabled)."""
        if self.root is None:
            return
        path = self._path(extractor, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npz")
        np.savez(partial, **{k: np.asarray(v) for k, v in arrays.items()})
        partial.replace(path)
