"""Content-addressed caching of per-file analyses and of metric entries.

Per-file values are keyed by the file digests, the extractor and its settings
(:func:`cmmd.eval.features.cache_key`); metric entries by the features they are computed from,
so a re-run with unchanged files only hashes them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from cmmd.eval.features import FeatureCache, cache_key
from cmmd.eval.pairing import Pairing
from cmmd.eval.settings import EvalSettings


def cached(cache: FeatureCache, extractor: str, digests: str | tuple[str, ...], settings: Mapping[str, object],
           compute: Callable[[], Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Cache lookup, else ``compute()`` (arrays by name) and store."""
    key = cache_key(digests, extractor, settings)
    hit = cache.load(extractor, key)
    if hit is not None:
        return hit
    arrays = {k: np.asarray(v) for k, v in compute().items()}
    cache.save(extractor, key, arrays)
    return arrays


def statistics_key(pairing: Pairing, settings: EvalSettings) -> dict[str, Any]:
    """What set statistics depend on besides the features: item names and the settings."""
    fields = {k: v for k, v in asdict(settings).items() if k not in ("cache", "use_cache")}
    return {"names": list(pairing.names), "settings": fields}


def cached_entries(cache: FeatureCache, extractor: str, arrays: Sequence[np.ndarray], settings: Mapping[str, Any],
                   compute: Callable[[], dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Metric entries cached by the content of the features they are computed from (the set
    bootstraps take seconds to minutes; a re-run with the same features reuses them)."""
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(np.ascontiguousarray(a).tobytes())
    stored = cached(cache, extractor, digest.hexdigest(), settings, lambda: {"json": json.dumps(compute())})
    return json.loads(str(stored["json"]))
