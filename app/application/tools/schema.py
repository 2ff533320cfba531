"""A small JSON Schema validator for tool arguments (stdlib only).

Why not `jsonschema` behind a port: the tools need a handful of keywords, the application
layer must stay free of third-party imports, and we want the failing parameter named in the
error (``arguments.expression``) so the API can answer 400 with that `param`. A schema that
uses a keyword this validator does not understand is refused when the tool is registered
(`check_schema`), so nothing is ever silently left unvalidated.

Supported: type (one or a list), properties, required, additionalProperties (bool or schema),
enum, const, minimum, maximum, exclusiveMinimum, exclusiveMaximum, minLength, maxLength,
pattern, items, minItems, maxItems; annotations (title, description, default, examples,
format, $schema) are accepted and ignored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from app.domain.errors import InvalidInput

_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "format", "$schema", "$comment"})
_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "enum",
        "const",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "pattern",
        "items",
        "minItems",
        "maxItems",
    }
)
_TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean", "null"})


class SchemaError(ValueError):
    """A tool's schema uses something this validator cannot check (raised at registration)."""


def check_schema(schema: Mapping[str, Any], *, path: str = "#") -> None:  # noqa: PLR0912 - one branch per keyword
    """Refuse a schema with unknown keywords or malformed values, before any call relies on it."""
    if not isinstance(schema, Mapping):
        raise SchemaError(f"{path}: a schema must be an object")
    for key, value in schema.items():
        if key in _ANNOTATIONS:
            continue
        if key not in _KEYWORDS:
            raise SchemaError(f"{path}: unsupported JSON Schema keyword {key!r}")
        if key == "type":
            names = value if isinstance(value, list) else [value]
            if not names or any(name not in _TYPES for name in names):
                raise SchemaError(f"{path}: bad type {value!r}")
        elif key == "properties":
            if not isinstance(value, Mapping):
                raise SchemaError(f"{path}: properties must be an object")
            for name, sub in value.items():
                check_schema(sub, path=f"{path}/properties/{name}")
        elif key == "required":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise SchemaError(f"{path}: required must be a list of names")
        elif key in ("additionalProperties", "items"):
            if not isinstance(value, bool):
                check_schema(value, path=f"{path}/{key}")
        elif key == "enum":
            if not isinstance(value, list) or not value:
                raise SchemaError(f"{path}: enum must be a non-empty list")
        elif key == "pattern":
            try:
                re.compile(value)
            except (re.error, TypeError) as exc:
                raise SchemaError(f"{path}: bad pattern: {exc}") from None
        elif key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            if not _is_number(value):
                raise SchemaError(f"{path}: {key} must be a number")
        elif key in ("minLength", "maxLength", "minItems", "maxItems") and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            raise SchemaError(f"{path}: {key} must be a non-negative integer")


def validate_arguments(schema: Mapping[str, Any], arguments: Any, *, root: str = "arguments") -> None:
    """Raise `InvalidInput(param=...)` naming the first failing parameter, or return."""
    _validate(schema, arguments, root)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _has_type(value: Any, name: str) -> bool:  # noqa: PLR0911 - one return per JSON type
    match name:
        case "object":
            return isinstance(value, Mapping)
        case "array":
            return isinstance(value, list | tuple)
        case "string":
            return isinstance(value, str)
        case "integer":
            if isinstance(value, bool):
                return False
            return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        case "number":
            return _is_number(value) and not (isinstance(value, float) and not math.isfinite(value))
        case "boolean":
            return isinstance(value, bool)
        case "null":
            return value is None
    return False


def _fail(param: str, message: str) -> InvalidInput:
    return InvalidInput(f"{param}: {message}", param=param)


def _validate(schema: Mapping[str, Any], value: Any, param: str) -> None:  # noqa: PLR0912
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        if not any(_has_type(value, name) for name in names):
            raise _fail(param, f"must be of type {' or '.join(names)}")
    if "enum" in schema and not any(_same(value, option) for option in schema["enum"]):
        raise _fail(param, f"must be one of {', '.join(map(repr, schema['enum']))}")
    if "const" in schema and not _same(value, schema["const"]):
        raise _fail(param, f"must be {schema['const']!r}")
    if _is_number(value):
        if "minimum" in schema and value < schema["minimum"]:
            raise _fail(param, f"must be >= {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise _fail(param, f"must be <= {schema['maximum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            raise _fail(param, f"must be > {schema['exclusiveMinimum']}")
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            raise _fail(param, f"must be < {schema['exclusiveMaximum']}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            raise _fail(param, f"must be at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise _fail(param, f"must be at most {schema['maxLength']} characters")
        if "pattern" in schema and re.search(schema["pattern"], value) is None:
            raise _fail(param, f"must match {schema['pattern']!r}")
    if isinstance(value, list | tuple):
        if "minItems" in schema and len(value) < schema["minItems"]:
            raise _fail(param, f"must have at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise _fail(param, f"must have at most {schema['maxItems']} items")
        items = schema.get("items")
        if isinstance(items, Mapping):
            for index, item in enumerate(value):
                _validate(items, item, f"{param}[{index}]")
    if isinstance(value, Mapping):
        _validate_object(schema, value, param)


def _validate_object(schema: Mapping[str, Any], value: Mapping[str, Any], param: str) -> None:
    properties: Mapping[str, Any] = schema.get("properties", {})
    for name in schema.get("required", []):
        if name not in value:
            raise _fail(f"{param}.{name}", "is required")
    additional = schema.get("additionalProperties", True)
    for name, item in value.items():
        child = f"{param}.{name}"
        if name in properties:
            _validate(properties[name], item, child)
        elif additional is False:
            raise _fail(child, "is not a known parameter")
        elif isinstance(additional, Mapping):
            _validate(additional, item, child)


def _same(a: Any, b: Any) -> bool:
    # JSON equality: True is not 1.
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b
