"""`calculator`: arithmetic and math functions, evaluated safely.

No `eval`/`exec`: the expression is parsed with `ast` and only a whitelist of nodes is
walked (numbers, + - * / // % **, unary + and -, calls of whitelisted math functions,
whitelisted constants). Input length, nesting depth, exponents and result size are bounded
*before* anything expensive is computed, so no expression can burn the CPU or memory.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

from app.application.tools import ToolError, ToolOutput

MAX_EXPRESSION_CHARS = 500
MAX_DEPTH = 50
# Integers stay below 2**MAX_INT_BITS (about 1233 decimal digits).
MAX_INT_BITS = 4096
MAX_ABS_EXPONENT = 10_000
MAX_FUNCTION_ARGS = 32

Number = int | float

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _round(value: Number, digits: Number = 0) -> Number:
    if not isinstance(digits, int) or not -20 <= digits <= 20:
        raise ToolError("round(x, n): n must be an integer between -20 and 20")
    return round(value, digits) if digits else round(value)


def _log(value: Number, base: Number | None = None) -> float:
    return math.log(value) if base is None else math.log(value, base)


def _min(*values: Number) -> Number:
    if not values:
        raise ToolError("min() needs at least one argument")
    return min(values)


def _max(*values: Number) -> Number:
    if not values:
        raise ToolError("max() needs at least one argument")
    return max(values)


_FUNCTIONS: dict[str, Callable[..., Number]] = {
    "sqrt": math.sqrt,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "atan2": math.atan2,
    "sinh": math.sinh,
    "cosh": math.cosh,
    "tanh": math.tanh,
    "exp": math.exp,
    "log": _log,
    "log10": math.log10,
    "log2": math.log2,
    "abs": abs,
    "round": _round,
    "floor": math.floor,
    "ceil": math.ceil,
    "hypot": math.hypot,
    "degrees": math.degrees,
    "radians": math.radians,
    "min": _min,
    "max": _max,
}


def _check_size(value: Any) -> Number:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToolError("the result is not a real number")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ToolError(f"the result is too large (more than {MAX_INT_BITS} bits)")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("the result is not a finite number")
    return value


def _power(base: Number, exponent: Number) -> Number:
    """`base ** exponent`, refused when the result would be huge (checked before computing)."""
    if abs(exponent) > MAX_ABS_EXPONENT:
        raise ToolError(f"the exponent is too large (at most {MAX_ABS_EXPONENT} in absolute value)")
    # bits(base ** n) ~ n * log2(|base|): refuse before Python builds a giant integer.
    huge_int = isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1
    if huge_int and exponent * math.log2(abs(base)) > MAX_INT_BITS:
        raise ToolError(f"the result is too large (more than {MAX_INT_BITS} bits)")
    if base == 0 and exponent < 0:
        raise ToolError("division by zero")
    try:
        result = base**exponent
    except OverflowError:
        raise ToolError("the result is too large") from None
    if isinstance(result, complex):
        raise ToolError("the result is not a real number")
    return result


def evaluate(expression: str) -> Number:
    """Evaluate an arithmetic expression; raises `ToolError` with a readable reason."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"the expression is too long (at most {MAX_EXPRESSION_CHARS} characters)")
    if not expression.strip():
        raise ToolError("the expression is empty")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        raise ToolError("the expression is not valid arithmetic") from None
    try:
        return _check_size(_eval(tree.body, 0))
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except OverflowError:
        raise ToolError("the result is too large") from None
    except (ValueError, TypeError) as exc:
        raise ToolError(f"math error: {exc}") from None


def _eval(node: ast.AST, depth: int) -> Number:
    if depth > MAX_DEPTH:
        raise ToolError(f"the expression is nested too deeply (at most {MAX_DEPTH} levels)")
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ToolError("only numbers are allowed as literals")
        return _check_size(node.value)
    if isinstance(node, ast.Name):
        if node.id not in _CONSTANTS:
            raise ToolError(f"unknown name {node.id!r}; known constants: {', '.join(_CONSTANTS)}")
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _check_size(_UNARY[type(node.op)](_eval(node.operand, depth + 1)))
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, depth + 1), _eval(node.right, depth + 1)
        if isinstance(node.op, ast.Pow):
            return _check_size(_power(left, right))
        if type(node.op) in _BINARY:
            return _check_size(_BINARY[type(node.op)](left, right))
        raise ToolError("only + - * / // % ** are allowed")
    if isinstance(node, ast.Call):
        return _call(node, depth)
    raise ToolError(f"{type(node).__name__} is not allowed in a calculator expression")


def _call(node: ast.Call, depth: int) -> Number:
    if not isinstance(node.func, ast.Name) or (node.func.id not in _FUNCTIONS and node.func.id != "pow"):
        raise ToolError(f"unknown function; known functions: {', '.join(sorted([*_FUNCTIONS, 'pow']))}")
    if node.keywords:
        raise ToolError("keyword arguments are not allowed")
    if len(node.args) > MAX_FUNCTION_ARGS:
        raise ToolError(f"at most {MAX_FUNCTION_ARGS} arguments per function")
    args = [_eval(arg, depth + 1) for arg in node.args]
    if node.func.id == "pow":
        if len(args) != 2:
            raise ToolError("pow() takes exactly two arguments")
        return _check_size(_power(args[0], args[1]))
    return _check_size(_FUNCTIONS[node.func.id](*args))


class CalculatorTool:
    """Safe arithmetic for the model (and callers): no code execution, bounded cost."""

    name = "calculator"
    description = (
        "Evaluate an arithmetic expression. Supports + - * / // % ** and parentheses, the functions "
        + ", ".join(sorted([*_FUNCTIONS, "pow"]))
        + ", and the constants pi, e and tau. Example: sqrt(2) * (3 + 4) ** 2"
    )
    parameters: Mapping[str, Any] = {
        "type": "object",
        "properties": {
            "expression": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_EXPRESSION_CHARS,
                "description": "The expression to evaluate, e.g. '2 * (3 + 4)'.",
            }
        },
        "required": ["expression"],
        "additionalProperties": False,
    }
    requires_approval = False
    timeout_seconds = 5.0

    async def run(self, arguments: Mapping[str, Any]) -> ToolOutput:
        expression = str(arguments["expression"])
        return ToolOutput({"expression": expression, "result": evaluate(expression)})
