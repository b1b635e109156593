"""How configuration mistakes are worded: one line per problem, naming the file, the
key as written in the TOML file, and what is expected
(``icm.toml: routing.sources[1]: unknown source 'amocrn' (expected one of: icmdb)``)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from icm.secrets import secret_fields


class ConfigError(Exception):
    """The configuration cannot be used. ``lines`` holds one message per problem."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__("\n".join(lines))


def format_errors(
    exc: ValidationError,
    name: str,
    prefix: tuple[str | int, ...] = (),
    model: type[BaseModel] | None = None,
) -> list[str]:
    """One line per error of ``exc``; ``prefix`` is where the validated section sits,
    ``model`` its settings class (for "did you mean" suggestions)."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = (*prefix, *error["loc"])
        key = _dotted(loc) or "(top level)"
        message = _explain(error)
        if error["type"] == "extra_forbidden":
            known = _keys_at(model or _root(), error["loc"][:-1])
            close = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
            if close:
                message = f"unknown key (did you mean {close[0]!r}?)"
        lines.append(f"{name}: {key}: {message}")
    return lines


def _keys_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The keys a section accepts, found by walking ``loc`` down from ``model``."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return []
            current = field.annotation
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        else:
            return []
    if get_origin(current) is dict:  # the section itself is a table of tables
        current = get_args(current)[1]
    if isinstance(current, type) and issubclass(current, BaseModel):
        secrets = secret_fields(current)
        keys = [k for k in current.model_fields if k not in secrets]
        return keys + [f"{k}_{where}" for k in secrets for where in ("env", "file")]
    return []


def _dotted(loc: tuple[str | int, ...]) -> str:
    """``loc`` as the key is written in TOML: a secret's ``(token, env)`` is ``token_env``."""
    out = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a dict key that failed validation
            continue
        if part in ("env", "file") and out and not out.endswith("]"):
            out += f"_{part}"
            continue
        key = printable(str(part))
        out += f"[{part}]" if isinstance(part, int) else (f".{key}" if out else key)
    return out


def printable(key: str) -> str:
    """A key as written, or quoted when it holds line breaks or control characters (one
    error stays one line)."""
    return key if key.isprintable() else repr(key)


def _explain(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    given = error.get("input")
    if kind == "extra_forbidden":
        return "unknown key (check its spelling; see icm.toml.example for every key)"
    if kind == "missing":
        return "missing (this key is required)"
    if kind == "value_error":
        return str(error["ctx"]["error"])
    expected = {
        "int_type": "an integer",
        "int_parsing": "an integer",
        "int_from_float": "an integer",
        "float_type": "a number",
        "float_parsing": "a number",
        "bool_type": "true or false",
        "bool_parsing": "true or false",
        "string_type": "a string in quotes",
        "tuple_type": 'a list like ["a", "b"]',
        "list_type": 'a list like ["a", "b"]',
        "dict_type": "a table",
        "model_type": "a table",
        "model_attributes_type": "a table",
    }.get(kind)
    if expected:
        return f"expected {expected}, got {given!r}"
    ctx = error.get("ctx", {})
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        bound = next(iter(ctx.values()))
        words = {
            "greater_than_equal": "at least",
            "less_than_equal": "at most",
            "greater_than": "more than",
            "less_than": "less than",
        }[kind]
        return f"expected a value {words} {bound}, got {given!r}"
    if kind == "string_pattern_mismatch":
        return f"{given!r} does not have the expected form ({ctx.get('pattern')})"
    if kind == "literal_error":
        return f"expected {ctx.get('expected')}, got {given!r}"
    if kind == "string_too_short":
        return "must not be empty"
    return f"{error['msg']} (got {given!r})"


def _root() -> type[BaseModel]:
    from icm.config import Config  # the whole file's model, for top-level suggestions

    return Config
