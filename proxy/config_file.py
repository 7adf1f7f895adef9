"""The YAML file named by ``PROXY_CONFIG``, and configuration errors as one line.

A misspelt key (``histroy:``, ``modle:`` under a route target) is refused with its
path, and a close match when there is one: silently ignoring it would run the proxy
with a setting the operator believes is in force. Broken YAML names the line and
column. Every command prints these as one line (no traceback).
"""

from __future__ import annotations

import difflib
import os
import types
from collections.abc import Iterator, Mapping
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError


class ConfigError(ValueError):
    """A configuration the proxy refuses; the message is one line naming the setting."""


def read_config_file(path: str, model: type[BaseModel]) -> dict[str, Any]:
    """The settings in the YAML file at ``path``, every key checked against ``model``."""
    if not os.path.isfile(path):
        raise ConfigError(f"PROXY_CONFIG names a missing file: {path}")
    try:
        with open(path, encoding="utf-8") as file:
            data = yaml.safe_load(file)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        problem = exc.problem or exc.context or "not valid YAML"
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of settings")
    for unknown in unknown_keys(model, data):
        raise ConfigError(f"{path}: unknown setting {unknown}")
    return data


def unknown_keys(model: type[BaseModel], data: Mapping[Any, Any], where: str = "") -> Iterator[str]:
    """Each key of ``data`` (recursively) that ``model`` has no field for, as its path."""
    for key, value in data.items():
        field = model.model_fields.get(str(key))
        path = f"{where}{key}"
        if field is None:
            close = difflib.get_close_matches(str(key), list(model.model_fields), n=1)
            yield f"{path!r}" + (f" (did you mean {where + close[0]!r}?)" if close else "")
            continue
        annotation: Any = field.annotation
        if key == "history" and get_origin(annotation) is dict:
            # A profile's history overrides are a free-form dict of HistoryPolicy fields.
            from proxy.settings import HistoryPolicy

            annotation = HistoryPolicy
        yield from _unknown_in(annotation, value, path)


def _unknown_in(annotation: Any, value: Any, where: str) -> Iterator[str]:
    origin, args = get_origin(annotation), get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if isinstance(value, dict):
            yield from unknown_keys(annotation, value, f"{where}.")
    elif origin is dict and len(args) == 2 and isinstance(value, dict):
        for key, item in value.items():
            yield from _unknown_in(args[1], item, f"{where}.{key}")
    elif origin is list and args and isinstance(value, list):
        for index, item in enumerate(value):
            yield from _unknown_in(args[0], item, f"{where}[{index}]")
    elif origin in (Union, types.UnionType):
        for arg in args:
            yield from _unknown_in(arg, value, where)


def describe(exc: ValueError) -> str:
    """A configuration error as one line, each problem with the setting it is about."""
    if isinstance(exc, ValidationError):
        problems = []
        for error in exc.errors(include_url=False):
            message = str(error["msg"]).removeprefix("Value error, ")
            location = ".".join(str(part) for part in error["loc"])
            if location and len(error["loc"]) == 1:
                location += f" (PROXY_{location.upper()})"
            problems.append(f"{location}: {message}" if location else message)
        return "; ".join(problems)
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
