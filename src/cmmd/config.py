"""Strict dataclass configs read from YAML: an unknown key or a wrong type is an error naming it.

Every config in cmmd (train, study, vae, vocoder) is a plain (possibly nested) dataclass, read by
:func:`load_config` or, for a config with its own checks, by :func:`read_config_mapping` and
:func:`apply_overrides` followed by :func:`from_dict`:

* YAML files only set fields. A file may start from another with ``extends: other.yaml`` (path
  relative to the file): mappings are merged key by key, everything else is replaced.
* Command-line overrides are dotted ``key=value`` pairs (``model.base_channels=32``,
  ``optim.lr=1e-4``, ``data.clip_frames=[18]``); the value is YAML (flow syntax for lists and
  mappings).
* Files and override values are read as YAML 1.2 scalars (PyYAML implements YAML 1.1, where
  ``1e-4`` and ``1E3`` are strings and ``on`` is a boolean): ``1e-4``, ``.5``, ``1_000``, ``-3``
  and ``1E+3`` are numbers, only ``true``/``false`` are booleans. The field's type then decides:
  a float field takes any number, an int field an integral one (``1e3`` but not ``1.5``), a str or
  path field given a number by an override keeps its text (``out_dir=2026``).
"""

from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
MAX_EXTENDS = 8


class ConfigError(ValueError):
    """A config file or override that cannot be applied; the message names the key."""


# ----------------------------------------------------------------------------- YAML 1.2 scalars

_TAG = "tag:yaml.org,2002:"
_YAML12_SCALARS = (  # the YAML 1.2 core schema (Sec. 10.3.2), digits grouped by `_` as in Python
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("int", r"^(?:[-+]?[0-9]+(?:_[0-9]+)*|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    ("float", r"^(?:[-+]?(?:\.[0-9]+(?:_[0-9]+)*|[0-9]+(?:_[0-9]+)*(?:\.(?:[0-9]+(?:_[0-9]+)*)?)?)"
              r"(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", "-+0123456789."),
)


def _add_yaml12_scalars(cls: Any) -> None:
    for tag, regex, first in _YAML12_SCALARS:
        cls.add_implicit_resolver(_TAG + tag, re.compile(regex), list(first))


class _Loader(yaml.SafeLoader):
    """The safe loader with YAML 1.2 scalars only (no 1.1 ``yes``/``on``, octal ``010``,
    sexagesimal ``1:30`` or timestamps)."""

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:  # type: ignore[override]
        text = str(self.construct_scalar(node))
        return int(text, 0) if text[:2] in ("0o", "0x") else int(text)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag in (_TAG + "null", _TAG + "merge")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_add_yaml12_scalars(_Loader)
_Loader.add_constructor(_TAG + "int", _Loader.construct_yaml_int)


class _Dumper(yaml.SafeDumper):
    """Quotes a string that YAML 1.1 or 1.2 would read as something else (``on``, ``1e-4``)."""


_add_yaml12_scalars(_Dumper)


def _parse_yaml(text: str) -> Any:
    """``text`` read as YAML with 1.2 scalars (raises ``yaml.YAMLError``)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader)


# ----------------------------------------------------------------------------- typed conversion


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _non_null(tp: Any) -> Any:
    """``X`` for ``X | None``; any other annotation unchanged."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert where harmless (lists to tuples,
    ints to floats, integral floats to ints)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if _non_null(tp) is not tp:  # X | None: X's own error names the key
            return _coerce(value, _non_null(tp), key)
        for arg in args:
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: expected one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")  # type: ignore[arg-type]
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        key_type, value_type = args or (Any, Any)
        return {_coerce(k, key_type, key): _coerce(v, value_type, f"{key}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{key}: expected a path, got {value!r}")
        return Path(value)
    raise ConfigError(f"{key}: unsupported config type {_type_name(tp)}")


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, refusing unknown keys and wrong types; a
    ConfigError raised by ``cls`` itself (its ``__post_init__``) gets the section's key."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]!s}; valid keys here: {', '.join(sorted(names))}"
        )
    kwargs = {name: _coerce(value, hints[name], f"{prefix}{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field left out
        raise ConfigError(f"{prefix or cls.__name__}: {exc}") from None
    except ConfigError as exc:
        if not prefix:
            raise
        raise ConfigError(f"{prefix[:-1]}: {exc}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-python dict of a config (paths as strings, tuples as lists) for YAML/JSON."""

    def convert(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: convert(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [convert(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, dict):
            return {k: convert(x) for k, x in v.items()}
        return v

    return convert(cfg)


# ----------------------------------------------------------------------------- dotted keys


def _is_flat(path: list[str], flat: tuple[str, ...]) -> bool:
    """Whether the section at ``path`` matches a ``flat`` pattern (``"systems.*.train"``): a
    section whose keys are whole dotted keys, set and merged as one value each."""
    for pattern in flat:
        parts = pattern.split(".")
        if len(parts) == len(path) and all(p in ("*", q) for p, q in zip(parts, path)):
            return True
    return False


def set_dotted(data: dict[str, Any], key: str, value: Any, flat: tuple[str, ...] = ()) -> None:
    """``data[a][b][c] = value`` for ``key = "a.b.c"``, creating sections; below a ``flat``
    section the rest of ``key`` is one key."""
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"{key!r} is not a dotted key")
    node = data
    for i, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: {'.'.join(parts[: i + 1])} is not a section")
        if _is_flat(parts[: i + 1], flat):
            node[".".join(parts[i + 1:])] = copy.deepcopy(value)
            return
    node[parts[-1]] = copy.deepcopy(value)


def flatten_dotted(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The inverse of :func:`set_dotted`: ``{"a": {"b": 1}} -> {"a.b": 1}`` (lists, scalars and
    empty sections are leaves)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(flatten_dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _field_type(schema: Any, parts: list[str]) -> Any:
    """The annotation of the field at ``parts`` below dataclass ``schema`` (Any where unknown)."""
    tp = schema
    for part in parts:
        tp = _non_null(tp)
        if dataclasses.is_dataclass(tp):
            tp = typing.get_type_hints(tp).get(part, Any)
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        else:
            return Any
    return _non_null(tp)


def apply_overrides(data: dict[str, Any], overrides: list[str], schema: type | None = None,
                    flat: tuple[str, ...] = ()) -> dict[str, Any]:
    """Apply dotted ``key=value`` overrides (values read as YAML 1.2) to a nested dict, in place.
    Where the key is a str or path field of dataclass ``schema``, a number keeps its text."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        try:
            value = _parse_yaml(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {key}: value {raw!r} is not valid YAML ({exc})") from None
        if schema is not None and value is not None and not isinstance(value, (str, dict, list)):
            if _field_type(schema, key.split(".")) in (str, Path):
                value = raw.strip()
        try:
            set_dotted(data, key, value, flat)
        except ConfigError as exc:
            raise ConfigError(f"override {exc}") from None
    return data


# ----------------------------------------------------------------------------- files


def merge(parent: dict[str, Any], child: dict[str, Any], flat: tuple[str, ...] = (),
          path: tuple[str, ...] = ()) -> dict[str, Any]:
    """``child`` over ``parent``: mappings merged key by key (the values in a ``flat`` section
    replace whole), everything else replaced."""
    out = dict(parent)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not _is_flat(list(path), flat):
            out[key] = merge(out[key], value, flat, (*path, key))
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml_file(path: Path) -> dict[str, Any]:
    """The mapping in the YAML file ``path`` (empty file: ``{}``); a ConfigError names the file."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        loaded = _parse_yaml(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return loaded or {}


def read_config_mapping(path: Path, flat: tuple[str, ...] = (), depth: int = 0) -> dict[str, Any]:
    """The mapping in the YAML file ``path`` with its ``extends`` chain merged in (:func:`merge`)."""
    if depth > MAX_EXTENDS:
        raise ConfigError(f"{path}: more than {MAX_EXTENDS} levels of `extends` (a cycle?)")
    data = _read_yaml_file(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends must be the path of another config file, got {parent!r}")
    return merge(read_config_mapping(path.parent / parent, flat, depth + 1), data, flat)


def load_config(cls: type[T], path: str | Path | None, overrides: list[str] | None = None) -> T:
    """Read YAML at ``path`` (or start from defaults), apply overrides, validate into ``cls``."""
    data = read_config_mapping(Path(path)) if path is not None else {}
    apply_overrides(data, overrides or [], cls)
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{exc}") from None


def save_config(cfg: Any, path: str | Path) -> None:
    """Write a config as YAML (that :func:`load_config` reads back to the same config)."""
    Path(path).write_text(yaml.dump(to_dict(cfg), Dumper=_Dumper, sort_keys=False))
