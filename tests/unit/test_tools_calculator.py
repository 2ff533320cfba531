"""The calculator: right answers, and refusal of anything that is not bounded arithmetic."""

from __future__ import annotations

import math

import pytest

from app.application.tools import ToolError
from app.infrastructure.tools.calculator import MAX_EXPRESSION_CHARS, CalculatorTool, evaluate


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("2 * (3 + 4)", 14),
        ("7 // 2", 3),
        ("7 % 4", 3),
        ("-3 + +5", 2),
        ("2 ** 10", 1024),
        ("2 ** -1", 0.5),
        ("sqrt(16)", 4.0),
        ("abs(-2.5)", 2.5),
        ("round(pi, 3)", 3.142),
        ("round(2.6)", 3),
        ("min(3, 1, 2) + max(3, 1, 2)", 4),
        ("log(8, 2)", 3.0),
        ("log10(1000)", 3.0),
        ("exp(0)", 1.0),
        ("floor(2.7) + ceil(2.2)", 5),
        ("pow(3, 3)", 27),
        ("10 ** 300", 10**300),
    ],
)
def test_evaluates_arithmetic(expression: str, expected: float) -> None:
    assert evaluate(expression) == pytest.approx(expected)


def test_trigonometry_and_constants() -> None:
    assert evaluate("sin(pi / 2)") == pytest.approx(1.0)
    assert evaluate("cos(0) + tan(0)") == pytest.approx(1.0)
    assert evaluate("e") == pytest.approx(math.e)


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("__import__('os').system('id')", "unknown function"),
        ("(1).__class__", "Attribute is not allowed"),
        ("math.pi", "Attribute is not allowed"),
        ("open('/etc/passwd')", "unknown function"),
        ("'a' * 10", "only numbers"),
        ("[1, 2]", "List is not allowed"),
        ("lambda: 1", "Lambda is not allowed"),
        ("x", "unknown name"),
        ("True + 1", "only numbers"),
        ("1 if 1 else 2", "IfExp is not allowed"),
        ("1 << 4", "are allowed"),
        ("2 == 2", "Compare is not allowed"),
        ("sqrt(x=4)", "keyword arguments"),
        ("1j * 1j", "only numbers"),
        ("import os", "not valid arithmetic"),
        ("", "empty"),
    ],
)
def test_refuses_anything_but_arithmetic(expression: str, reason: str) -> None:
    with pytest.raises(ToolError, match=reason):
        evaluate(expression)


@pytest.mark.parametrize(
    "expression",
    ["9 ** 9 ** 9", "2 ** 100000", "10 ** 5000", "pow(10, 5000)", "(10 ** 300) ** 20", "99999 ** 9999"],
)
def test_refuses_huge_powers_before_computing(expression: str) -> None:
    with pytest.raises(ToolError, match="too large"):
        evaluate(expression)


def test_refuses_results_that_grow_too_big_by_multiplication() -> None:
    with pytest.raises(ToolError, match="too large"):
        evaluate("10 ** 1000 * 10 ** 1000 * 10 ** 1000 * 10 ** 1000 * 10 ** 1000")


def test_refuses_non_finite_and_math_errors() -> None:
    with pytest.raises(ToolError, match="division by zero"):
        evaluate("1 / 0")
    with pytest.raises(ToolError, match="not a finite number"):
        evaluate("1e308 * 10")
    with pytest.raises(ToolError, match="math error"):
        evaluate("sqrt(-1)")
    with pytest.raises(ToolError, match="not a real number"):
        evaluate("(-8) ** 0.5")


def test_refuses_long_and_deep_input() -> None:
    with pytest.raises(ToolError, match="too long"):
        evaluate("1+" * MAX_EXPRESSION_CHARS + "1")
    with pytest.raises(ToolError, match="nested too deeply"):
        evaluate("-" * 200 + "1")


async def test_tool_returns_expression_and_result() -> None:
    output = await CalculatorTool().run({"expression": "6 * 7"})
    assert output.value == {"expression": "6 * 7", "result": 42}
