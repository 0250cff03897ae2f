"""Loading and validating workflow configs: JSON Schema (draft 2020-12, written as YAML) with
defaults filled in, and errors that name the offending key."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators


class ConfigError(ValueError):
    """A config value is missing, of the wrong type or out of range; the message names the key."""


def _with_defaults(cls):
    validate_properties = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(cls, {"properties": set_defaults})


_DefaultFilling = _with_defaults(Draft202012Validator)


def load_yaml(path: str | Path) -> Any:
    """``yaml.safe_load`` of a file, with the file named in parse errors."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err


def validate(instance: dict, schema: dict | str | Path, where: str = "config") -> dict:
    """Fill defaults into ``instance`` (in place) and validate it; return it.

    Raises :class:`ConfigError` listing every problem as ``<where>.<key.path>: <message>``.
    """
    if not isinstance(schema, dict):
        schema = load_yaml(schema)
    if instance is None:
        instance = {}
    if not isinstance(instance, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(instance).__name__}")
    errors = sorted(_DefaultFilling(schema).iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors:
            key = ".".join([where, *(str(p) for p in err.absolute_path)])
            lines.append(f"{key}: {err.message}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    return instance


def deep_update(base: dict, override: dict) -> dict:
    """Recursively merge ``override`` into a copy of ``base`` (lists and scalars are replaced)."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
