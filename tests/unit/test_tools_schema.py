"""Argument validation against a tool's JSON Schema, and refusal of schemas it cannot check."""

from __future__ import annotations

from typing import Any

import pytest

from app.application.tools import SchemaError, check_schema, validate_arguments
from app.domain.errors import InvalidInput

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "url": {"type": "string", "maxLength": 10, "minLength": 1},
        "count": {"type": "integer", "minimum": 1, "maximum": 5},
        "ratio": {"type": "number", "exclusiveMinimum": 0},
        "mode": {"enum": ["a", "b"]},
        "flag": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]+$"}, "maxItems": 2},
        "nested": {
            "type": "object",
            "properties": {"inner": {"type": "string"}},
            "required": ["inner"],
        },
        "maybe": {"type": ["string", "null"]},
    },
    "required": ["url"],
    "additionalProperties": False,
}


def test_valid_arguments_pass() -> None:
    validate_arguments(
        SCHEMA,
        {
            "url": "x",
            "count": 5,
            "ratio": 0.5,
            "mode": "b",
            "flag": False,
            "tags": ["a", "b"],
            "nested": {"inner": "y"},
            "maybe": None,
        },
    )
    validate_arguments(SCHEMA, {"url": "x", "count": 2.0})  # 2.0 is an integer in JSON Schema


@pytest.mark.parametrize(
    ("arguments", "param"),
    [
        ({}, "arguments.url"),
        ({"url": 5}, "arguments.url"),
        ({"url": ""}, "arguments.url"),
        ({"url": "x" * 11}, "arguments.url"),
        ({"url": "x", "count": 0}, "arguments.count"),
        ({"url": "x", "count": 6}, "arguments.count"),
        ({"url": "x", "count": 1.5}, "arguments.count"),
        ({"url": "x", "count": True}, "arguments.count"),
        ({"url": "x", "ratio": 0}, "arguments.ratio"),
        ({"url": "x", "mode": "c"}, "arguments.mode"),
        ({"url": "x", "flag": 1}, "arguments.flag"),
        ({"url": "x", "tags": ["a", "B"]}, "arguments.tags[1]"),
        ({"url": "x", "tags": ["a", "b", "c"]}, "arguments.tags"),
        ({"url": "x", "nested": {}}, "arguments.nested.inner"),
        ({"url": "x", "maybe": 3}, "arguments.maybe"),
        ({"url": "x", "extra": 1}, "arguments.extra"),
    ],
)
def test_invalid_arguments_name_the_failing_param(arguments: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_arguments(SCHEMA, arguments)
    assert caught.value.param == param
    assert caught.value.code == "invalid_value"
    assert param in caught.value.message


def test_non_object_arguments_are_refused_at_the_root() -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_arguments(SCHEMA, ["url"])
    assert caught.value.param == "arguments"


def test_supported_schema_is_accepted() -> None:
    check_schema(SCHEMA)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "anyOf": [{"type": "string"}]},
        {"type": "object", "properties": {"a": {"$ref": "#/x"}}},
        {"type": "thing"},
        {"type": "object", "required": "a"},
        {"type": "string", "pattern": "("},
        {"type": "string", "maxLength": -1},
        {"enum": []},
    ],
)
def test_unsupported_or_malformed_schema_is_refused(schema: dict[str, Any]) -> None:
    with pytest.raises(SchemaError):
        check_schema(schema)
