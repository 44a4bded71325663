"""Request bodies as untrusted bytes: read with a size cap, then decode and parse defensively.

`json.loads` alone is not enough for a server: it recurses once per nesting level (a body of
100k `[` raises RecursionError deep inside the parser), it accepts `NaN` and `Infinity` (not
JSON, RFC 8259 section 6), turns `1e999` into infinity, raises ValueError on integers of more
than 4300 digits (CPython's int-from-string guard), and lets `"\\ud800"` through as a lone
surrogate that no UTF-8 encoder will take later. Each of those becomes one 400 here.
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

MAX_DEPTH = 32  # OpenAI's request shapes nest 5 deep (messages -> content parts); 32 is plenty

# A JSON string literal (RFC 8259 section 7), unrolled so it runs in linear time.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_DELTA = [0] * 256
_DELTA[ord("[")] = _DELTA[ord("{")] = 1
_DELTA[ord("]")] = _DELTA[ord("}")] = -1
_SURROGATE = re.compile("[\ud800-\udfff]")


class BodyError(ValueError):
    """The body cannot be a request; the message says why in one sentence."""


def nesting_depth(body: bytes) -> int:
    """How deep arrays and objects nest in `body`, found from the bytes alone (brackets inside
    string literals do not count), before any parser builds the structure."""
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", body))
    return max(accumulate(map(_DELTA.__getitem__, brackets)), default=0)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BodyError(f"the number {text[:40]} is out of range")
    return value


def _no_constants(name: str) -> Any:
    raise BodyError(f"{name} is not a JSON value (RFC 8259); send a number or null")


def _check_strings(value: Any) -> None:
    """Refuse lone UTF-16 surrogates (`"\\ud800"`) anywhere, keys included: valid JSON, but
    not text (it cannot be encoded as UTF-8), and the tokenizer would fail on it."""
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise BodyError("the body contains a lone UTF-16 surrogate escape (like \\ud800); "
                            "send text as valid UTF-8")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_strings(k)
            _check_strings(v)
    elif isinstance(value, list):
        for v in value:
            _check_strings(v)


def parse_object(body: bytes, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """The body as a JSON object, or BodyError."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BodyError(f"the request body is not valid UTF-8 (bad byte at offset {e.start})") from None
    if not text.strip():
        raise BodyError("the request body is empty; send a JSON object")
    depth = nesting_depth(body)
    if depth > max_depth:
        raise BodyError(f"the request body nests {depth} levels deep; the limit is {max_depth}")
    try:
        data = json.loads(text, parse_float=_finite_float, parse_constant=_no_constants)
    except BodyError:
        raise
    except ValueError as e:  # JSONDecodeError, and int() on a number of thousands of digits
        raise BodyError(f"the request body is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(data), "a number")
        raise BodyError(f"the request body is {kind}, not a JSON object; send {{\"model\": ..., ...}}")
    _check_strings(data)
    return data
