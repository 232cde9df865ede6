"""The one config parser: dataclasses filled from plain data, checked against their type hints.

Model configs (``config.json``), loss and training configs (YAML recipes and ``--key=value``
overrides) and generation configs all go through ``coerce`` / ``from_dict``, so every config
refuses unknown keys and wrong types the same way, with the same messages. Quirks handled once
here:

- YAML 1.1 (PyYAML) reads ``1e-4`` (no dot) as a *string*: such exponent literals are accepted
  for ``float`` fields; any other string for a number is an error, as is a float (even ``16.0``)
  for an ``int`` field and a number for a ``str`` field;
- NaN and infinity are refused for every number;
- a comma-separated string is accepted for a list of strings (``--data.buckets=256x256,192x320``);
- lists become tuples (configs stay hashable), ``Literal[...]`` fields accept only their values.

Every JSON and YAML file the package reads goes through ``read_json`` / ``read_yaml``: a size
limit checked while reading (``/dev/zero`` or a FIFO cannot exhaust memory), regular files only,
a nesting limit checked before parsing (a 200 KB ``[[[[...`` bomb is refused in one line instead of
a ``RecursionError``) and data-only parsing (``json.loads``, ``yaml.safe_load``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import stat
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_NESTING",
    "ConfigError",
    "ConfigFields",
    "coerce",
    "field_types",
    "from_dict",
    "parse_json",
    "parse_value",
    "read_json",
    "read_yaml",
    "to_plain",
    "type_name",
]

MAX_FILE_BYTES = 1 << 20  # a config, manifest or settings file is far smaller than 1 MiB
MAX_NESTING = 64  # brackets deep; our files nest 4 levels at most


class ConfigError(ValueError):
    """A config has unknown keys, wrong types or impossible values; the message says which."""


class ConfigFields:
    """Base of the config dataclasses (model and generator configs): ``field_names()``."""

    @classmethod
    def field_names(cls) -> list[str]:
        """The names of the dataclass's fields, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]


def field_types(cls: type) -> dict[str, Any]:
    """``{field name: resolved type hint}`` of a dataclass (ClassVars excluded)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def type_name(tp: Any) -> str:
    """Readable name of a type hint, e.g. ``list[int]``, ``str|null``, ``rms|qk|none``."""
    origin = typing.get_origin(tp)
    if origin in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return f"list[{type_name(args[0])}]" if args else "list"
    if origin in (typing.Union, types.UnionType):
        return "|".join("null" if a is type(None) else type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "|".join(str(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


# what YAML 1.1 misses as a float: an exponent without a dot in the mantissa ("1e-4", "5E3")
_EXP_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the type hint ``tp`` and normalise it.

    Args:
        key: the dotted key, for messages (``optim.lr``, ``dims[2]``).
        value: plain data (from JSON, YAML or the command line).
        tp: bool, int, float, str, ``tuple[T, ...]``, ``tuple[A, B]``, ``list[T]``,
            ``X | None``, ``Literal[...]`` or any other type (then the value passes unchanged).
    Raises:
        ConfigError: naming the key, the expected type and the value.
    """
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(key, value, a)
            except ConfigError as e:
                errors.append(str(e))
        if len(errors) == 1:
            raise ConfigError(errors[0])
        raise ConfigError(f"config key '{key}' must be {type_name(tp)}, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if not any(value == a and type(value) is type(a) for a in allowed):
            raise ConfigError(f"config key '{key}' must be one of {list(allowed)}, got {value!r}")
        return value
    if origin in (tuple, list):
        args = typing.get_args(tp)
        if isinstance(value, str) and args and args[0] is str:
            value = [v for v in value.split(",") if v]  # --data.buckets=256x256,192x320
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        if not args:
            return tuple(value)
        if len(args) == 2 and args[1] is Ellipsis or origin is list:
            return tuple(coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"config key '{key}' must be a list of {len(args)} values, got {value!r}")
        return tuple(coerce(f"{key}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be a bool (true or false), got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _EXP_FLOAT.fullmatch(value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"config key '{key}' must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return value
    return value


def from_dict(
    cls: type,
    d: Any,
    prefix: str = "",
    what: str = "config",
    check: typing.Callable[[str, Any], None] | None = None,
) -> Any:
    """Build the dataclass ``cls`` from plain data, refusing unknown keys and wrong types.

    Args:
        cls: a dataclass whose fields have type hints.
        d: a mapping of field name -> value (missing fields keep their defaults).
        prefix: prepended to keys in messages (``"loss."``).
        what: what the mapping is, for messages (``"loss config"``).
        check: optional ``check(key, value)`` run on every coerced value before the dataclass is
            built (range checks that must come before any work, e.g. model sizes).
    Raises:
        ConfigError: unknown keys (listing the valid ones), wrong types, or whatever the
            dataclass's own ``__post_init__`` checks refuse.
    """
    if not isinstance(d, dict):
        raise ConfigError(f"a {what} must be a mapping, got {type(d).__name__}")
    hints = field_types(cls)
    unknown = sorted(set(d) - set(hints))
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown} in the {what}; valid keys: {sorted(hints)}")
    kwargs = {k: coerce(f"{prefix}{k}", v, hints[k]) for k, v in d.items()}
    if check is not None:
        for k, v in kwargs.items():
            check(f"{prefix}{k}", v)
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"{what}: {e}") from e


def parse_value(raw: str) -> Any:
    """A command-line value as YAML would read it (``"2e-4"`` -> 0.0002, ``"[1,2]"`` -> [1, 2],
    ``"true"`` -> True); text that is not valid YAML stays a string."""
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        return raw
    if isinstance(value, str) and _EXP_FLOAT.fullmatch(value.strip()):  # YAML 1.1 quirk
        return float(value)
    return value


def to_plain(v: Any) -> Any:
    """Dataclasses / tuples -> dicts / lists, for YAML, JSON and checkpoints."""
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        v = dataclasses.asdict(v)
    if isinstance(v, dict):
        return {k: to_plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [to_plain(x) for x in v]
    return v


def read_bounded(path: str | os.PathLike, max_bytes: int = MAX_FILE_BYTES, what: str = "file") -> bytes:
    """The bytes of a regular file of at most ``max_bytes``, read without trusting its size.

    Raises:
        FileNotFoundError: no such file.
        ConfigError: not a regular file (a device, a FIFO, a folder) or larger than ``max_bytes``.
    """
    path = Path(path)
    with open(path, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ConfigError(f"{what} {path} is not a regular file")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ConfigError(f"{what} {path} is larger than {max_bytes} bytes")
    return data


def check_nesting(text: str, what: str, limit: int = MAX_NESTING) -> None:
    """Refuse flow-style nesting (``[`` / ``{``) deeper than ``limit`` outside strings, before a
    recursive parser sees it."""
    depth, quote, escaped = 0, "", False
    for ch in text:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
            if depth > limit:
                raise ConfigError(f"{what} nests deeper than {limit} levels: not a file this package writes")
        elif ch in "]}":
            depth -= 1


def parse_json(text: str, what: str = "JSON text") -> Any:
    """``json.loads`` with the nesting limit of ``read_json`` (for JSON held inside other files,
    e.g. safetensors metadata strings).

    Raises:
        ConfigError: too deep or not valid JSON (one line).
    """
    try:
        check_nesting(text, what)
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise ConfigError(f"{what} is not valid JSON: {str(e).splitlines()[0][:200]}") from e


def read_json(path: str | os.PathLike, max_bytes: int = MAX_FILE_BYTES, what: str = "JSON file") -> Any:
    """Parse a JSON file as data, bounded in size and nesting (see the module docstring).

    Raises:
        FileNotFoundError: no such file.
        ConfigError: too large, too deep, not a regular file, or not valid UTF-8 JSON (one line).
    """
    data = read_bounded(path, max_bytes, what)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} {path} is not valid JSON (not UTF-8: {e})") from e
    return parse_json(text, f"{what} {path}")


def read_yaml(path: str | os.PathLike, max_bytes: int = MAX_FILE_BYTES, what: str = "YAML file") -> Any:
    """Parse a YAML file as data (``yaml.safe_load``: no object is constructed from a tag),
    bounded in size and nesting.

    Raises:
        FileNotFoundError: no such file.
        ConfigError: too large, too deep, not a regular file, or not valid YAML (one line).
    """
    data = read_bounded(path, max_bytes, what)
    try:
        text = data.decode("utf-8")
        check_nesting(text, f"{what} {path}")
        return yaml.safe_load(text)
    except (UnicodeDecodeError, yaml.YAMLError, RecursionError) as e:
        raise ConfigError(f"{what} {path} is not valid YAML: {str(e).splitlines()[0][:200]}") from e
