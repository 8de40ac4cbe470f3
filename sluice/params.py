"""Run params: a run's `params` override the config's, and `${param.NAME}` in the init payload is
replaced by the param's value (the seed-002 tool's syntax).

A whole-string reference keeps the value's type (`"${param.limit}"` with limit 5 gives 5); a
reference inside a longer string is replaced by its text. `$${param.NAME}` stays literal.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from sluice.errors import InvalidArgumentError

PARAM_REF = re.compile(r"(\$?)\$\{param\.([^}]*)\}")
PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")
MAX_PARAMS_BYTES = 64 * 1024
MAX_PARAMS = 200


def references(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, name) of every `${param.NAME}` in a payload, escaped ones excluded."""
    if isinstance(value, str):
        for escaped, name in PARAM_REF.findall(value):
            if not escaped:
                yield path, name
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from references(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from references(item, f"{path}[{i}]")


def substitute(value: Any, params: dict[str, Any]) -> Any:
    """The payload with every reference replaced; an unknown name is a 400 UNKNOWN_PARAM."""
    if isinstance(value, dict):
        return {key: substitute(item, params) for key, item in value.items()}
    if isinstance(value, list):
        return [substitute(item, params) for item in value]
    if not isinstance(value, str) or "${param." not in value:
        return value
    whole = PARAM_REF.fullmatch(value)
    if whole and not whole.group(1):
        return _value(whole.group(2), params)

    def replace(match: re.Match[str]) -> str:
        if match.group(1):
            return match.group(0)[1:]
        found = _value(match.group(2), params)
        return found if isinstance(found, str) else json.dumps(found, default=str)

    return PARAM_REF.sub(replace, value)


def _value(name: str, params: dict[str, Any]) -> Any:
    if name not in params:
        known = ", ".join(sorted(params)) or "none"
        raise InvalidArgumentError(
            f"the init payload references ${{param.{name}}}, which is not a param of this run "
            f"(params: {known})",
            error_code="UNKNOWN_PARAM",
        )
    return params[name]


def check_run_params(params: Any) -> dict[str, Any]:
    """A run's params as given by a caller: a JSON object of named values, bounded in size."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise InvalidArgumentError("params must be a JSON object", error_code="INVALID_PARAMS")
    if len(params) > MAX_PARAMS:
        raise InvalidArgumentError(f"at most {MAX_PARAMS} params", error_code="INVALID_PARAMS")
    bad = [k for k in params if not PARAM_NAME.match(k)]
    if bad:
        raise InvalidArgumentError(
            f"invalid param name(s) {', '.join(map(repr, bad[:5]))}: use letters, digits, _ . -",
            error_code="INVALID_PARAMS",
        )
    if len(json.dumps(params, default=str)) > MAX_PARAMS_BYTES:
        raise InvalidArgumentError(
            f"params exceed {MAX_PARAMS_BYTES} bytes as JSON", error_code="INVALID_PARAMS"
        )
    return params
