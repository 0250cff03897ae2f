"""Loading and validating workflow configs: JSON Schema (draft 2020-12, written as YAML) with
defaults merged key by key into what the user gives, and errors that name the offending key.

:func:`validate` checks one mapping against one schema. :func:`validate_domain_section` adds
the rules every domain shares (the ``teacher`` and ``distill`` keys checked against
``TeacherConfig``/``DistillConfig``, ``data.root`` required for non-simulated sources), so
mistakes stop the run before any job starts. :func:`coerce_config_overrides` undoes the string
conversion that Snakemake applies to nested ``--config`` values.
"""
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
                if "default" not in sub:
                    continue
                if name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
                elif isinstance(instance[name], dict) and isinstance(sub["default"], dict):
                    merge_defaults(instance[name], sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(cls, {"properties": set_defaults})


_DefaultFilling = _with_defaults(Draft202012Validator)


def merge_defaults(instance: dict, defaults: dict) -> dict:
    """Put every key of ``defaults`` that ``instance`` lacks into it, recursively (in place).

    A section default such as ``teacher: {default: {epochs: 150, lr: 0.003}}`` then survives a
    user's ``teacher: {epochs: 20}``: the user's keys win, the others keep their defaults.
    """
    for key, value in defaults.items():
        if key not in instance:
            instance[key] = copy.deepcopy(value)
        elif isinstance(instance[key], dict) and isinstance(value, dict):
            merge_defaults(instance[key], value)
    return instance


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


#: Sources that the domain's simulator writes; every other ``data.source`` reads ``data.root``.
SIMULATED_SOURCES = ("mock",)

def coerce_config_overrides(config: dict, overrides: dict, prefix: tuple = ()) -> list[str]:
    """Re-read the string leaves of nested ``--config`` values as YAML (in ``config``, in place).

    Snakemake parses ``--config "cme={teacher: {epochs: 3}}"`` with YAML's BaseLoader, so the
    3 arrives as the string '3'. Reading each such string with ``yaml.safe_load`` gives what the
    same text means in a config file. Returns the dotted keys that were converted.
    """
    changed = []
    for key, value in (overrides or {}).items():
        path = (*prefix, key)
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            changed += coerce_config_overrides(config[key], value, path)
        elif prefix and isinstance(value, str) and config.get(key) == value:
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError:
                continue
            if parsed != value:
                config[key] = parsed
                changed.append(".".join(map(str, path)))
        elif prefix and isinstance(value, list) and config.get(key) == value:
            parsed = [_safe_scalar(v) for v in value]
            if parsed != value:
                config[key] = parsed
                changed.append(".".join(map(str, path)))
    return changed


def _safe_scalar(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def configfile_hint(overrides: dict) -> str:
    """How to give nested ``overrides`` reliably: Snakemake's string conversion explained, and
    the same settings as a ``--configfile``."""
    example = yaml.safe_dump(overrides, sort_keys=False).strip().replace("\n", "\n    ")
    return ("Note: Snakemake reads values nested inside --config with YAML's BaseLoader, which keeps "
            "every scalar a string (the workflow re-reads them as YAML). To be sure, put nested settings "
            "in a file and pass it with --configfile:\n    # override.yaml\n    " + example +
            "\n    snakemake --cores all --configfile override.yaml")


def validate_domain_section(name: str, section: dict | None, schema: dict | str | Path) -> dict:
    """Validate one domain's section (defaults merged in) plus the rules all domains share.

    * ``teacher`` and ``distill`` are checked against ``awd.teacher.TeacherConfig`` and
      ``awd.distill.DistillConfig``, whatever the domain's schema says, so a typo such as
      ``teacher: {epoch: 3}`` stops the run before any job;
    * a ``data.source`` other than the simulator's needs ``data.root`` (whether that folder
      exists and holds readable data is the ingest stage's check, which names the file).
    """
    section = validate(section, schema, where=name)
    problems = []
    if "teacher" in section:
        from awd.teacher import TeacherConfig

        try:
            TeacherConfig.from_dict(section["teacher"])
        except (ValueError, TypeError) as err:
            problems.append(f"{name}.{err}" if str(err).startswith("teacher") else f"{name}.teacher: {err}")
    if "distill" in section:
        from awd.distill import DistillConfig

        distill = {k: v for k, v in (section["distill"] or {}).items() if k != "target"}
        target = (section["distill"] or {}).get("target")
        if target is not None and not isinstance(target, str):
            problems.append(f"{name}.distill.target: expected the name of a teacher output, got {target!r}")
        try:
            DistillConfig.from_dict(distill)
        except (ValueError, TypeError) as err:
            problems.append(f"{name}.{getattr(err, 'problem', err)}")
    data = section.get("data")
    if isinstance(data, dict) and data.get("source", "mock") not in SIMULATED_SOURCES:
        root = data.get("root")
        if not root:
            problems.append(f"{name}.data.root: required when {name}.data.source is '{data.get('source')}' "
                            f"(the folder holding the data)")
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return section
