"""The calculator tool: an AST-whitelist evaluator (in-process, microseconds per call).

The engine calls it on every tool call, so it must be fast. It never runs code: it parses the
expression with `ast` and evaluates a whitelist of node types itself (numbers, + - * / // % **,
unary +/-, parentheses, string literals and a few read-only str methods). No names, attributes
other than the listed methods, subscripts, comprehensions or calls to anything else exist in
that language, so there is nothing to escape to; the remaining risk is cost (`9**9**9`, giant
strings), bounded by explicit size checks.
"""

from __future__ import annotations

import ast
import math
import re

MAX_EXPR_CHARS = 500
MAX_INT_BITS = 4096  # bound on any integer result: ~1233 decimal digits
MAX_STR_CHARS = 10_000
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_STR_METHODS = {"count", "find", "index", "upper", "lower", "strip", "startswith", "endswith"}
_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: a // b, ast.Mod: lambda a, b: a % b}


class _Rejected(Exception):
    pass


def _number(x: object) -> int | float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise _Rejected("not a number")
    if isinstance(x, int) and x.bit_length() > MAX_INT_BITS:
        raise _Rejected("integer too large")
    if isinstance(x, float) and not math.isfinite(x):
        raise _Rejected("overflow")
    return x


def _power(base: int | float, exp: int | float) -> int | float:
    # |base|**exp has about exp*log2|base| bits: refuse before computing, not after
    if abs(exp) > 10_000 or (abs(base) > 1 and abs(exp) * math.log2(abs(base)) > MAX_INT_BITS):
        raise _Rejected("power too large")
    return base**exp


def _eval(node: ast.AST) -> object:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)):
        if isinstance(node.value, str) and len(node.value) > MAX_STR_CHARS:
            raise _Rejected("string too long")
        return _number(node.value) if not isinstance(node.value, str) else node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        x = _number(_eval(node.operand))
        return -x if isinstance(node.op, ast.USub) else x
    if isinstance(node, ast.BinOp):
        a, b = _number(_eval(node.left)), _number(_eval(node.right))
        if isinstance(node.op, ast.Pow):
            return _number(_power(a, b))
        if type(node.op) in _BINOPS:
            return _number(_BINOPS[type(node.op)](a, b))
    if isinstance(node, ast.Call) and not node.keywords:
        args = [_eval(a) for a in node.args]
        f = node.func
        if isinstance(f, ast.Name) and f.id == "len" and len(args) == 1 and isinstance(args[0], str):
            return len(args[0])
        if isinstance(f, ast.Attribute) and f.attr in _STR_METHODS and len(args) <= 1:
            obj = _eval(f.value)
            if isinstance(obj, str) and all(isinstance(a, str) for a in args):
                return getattr(obj, f.attr)(*args)
    raise _Rejected(f"{type(node).__name__} is not allowed in a calculator expression")


def calculator(expression: str) -> str | None:
    """Evaluate a calculator expression; the result as text, or None if not allowed or failing.

    Accepts numbers (thousands separators like 1,234 are removed), + - * / // % ** and
    parentheses, string literals with .count/.find/.index/.upper/.lower/.strip/.startswith/
    .endswith, and len("..."); e.g. `"strawberry".count("r")` -> "3". The result is Python's
    `str()` of the value ("12/4" -> "3.0"), as nanochat's tool returns it.
    """
    if not isinstance(expression, str) or len(expression) > MAX_EXPR_CHARS:
        return None
    try:
        tree = ast.parse(_THOUSANDS.sub("", expression.strip()), mode="eval")
        value = _eval(tree)
        return str(value)
    except (_Rejected, SyntaxError, ArithmeticError, ValueError, TypeError, RecursionError,
            MemoryError):
        return None
