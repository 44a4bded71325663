"""A type-strict value codec for the grading channel (standard library only: its source is also
shipped into sandboxed children, see picochat/sandbox/grading.py).

Values cross between the checker and the candidate as JSON of tagged lists, e.g. (1, "a") ->
["t", [["i", "1"], ["s", "a"]]]. Only exact built-in types are encoded (`type(x) is int`, never
a subclass), and decoding builds exact built-ins only. So whatever a candidate sends, the
checker holds a plain int, str, list, ... whose `__eq__` is the built-in one: an object that
"compares equal to anything" cannot cross. Limits on depth and size make a hostile message an
error, not a crash.
"""

import json

MAX_DEPTH = 100
MAX_FRAME = 8 << 20  # bytes of one encoded message


class CodecError(ValueError):
    """A value that cannot be sent, or a message that is not a valid encoding."""


def encode(value, depth=0):
    """`value` as a JSON-ready tagged structure; CodecError for anything not an exact built-in."""
    if depth > MAX_DEPTH:
        raise CodecError("value nested too deeply")
    t = type(value)
    if value is None:
        return ["N"]
    if t is bool:
        return ["b", value]
    if t is int:
        return ["i", str(value)]
    if t is float:
        return ["f", repr(value)]
    if t is complex:
        return ["c", repr(value.real), repr(value.imag)]
    if t is str:
        return ["s", value]
    if t is bytes:
        return ["y", value.hex()]
    tag = {list: "l", tuple: "t", set: "S", frozenset: "F"}.get(t)
    if tag is not None:
        return [tag, [encode(v, depth + 1) for v in value]]
    if t is dict:
        return ["d", [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]]
    raise CodecError(f"a {t.__name__} cannot be sent (only plain built-in values)")


def decode(obj, depth=0):
    """The exact built-in value a tagged structure describes; CodecError if it is malformed."""
    if depth > MAX_DEPTH:
        raise CodecError("value nested too deeply")
    if type(obj) is not list or not obj or type(obj[0]) is not str:
        raise CodecError("not a tagged value")
    tag, args = obj[0], obj[1:]
    try:
        if tag == "N" and not args:
            return None
        if tag == "b" and len(args) == 1 and type(args[0]) is bool:
            return args[0]
        if tag in "ifsy" and len(args) == 1 and type(args[0]) is str:
            return {"i": int, "f": float, "s": str, "y": bytes.fromhex}[tag](args[0])
        if tag == "c" and len(args) == 2 and all(type(a) is str for a in args):
            return complex(float(args[0]), float(args[1]))
        if tag in ("l", "t", "S", "F") and len(args) == 1 and type(args[0]) is list:
            items = [decode(v, depth + 1) for v in args[0]]
            return {"l": list, "t": tuple, "S": set, "F": frozenset}[tag](items)
        if tag == "d" and len(args) == 1 and type(args[0]) is list:
            pairs = [p for p in args[0] if type(p) is list and len(p) == 2]
            if len(pairs) != len(args[0]):
                raise CodecError("malformed dict")
            return {decode(k, depth + 1): decode(v, depth + 1) for k, v in pairs}
    except (TypeError, ValueError, OverflowError) as e:  # unhashable key, bad number text, ...
        raise CodecError(f"bad {tag!r} value: {e}") from None
    raise CodecError(f"unknown or malformed tag {tag!r}")


def dumps(message):
    """A plain JSON message (lists, str, int) framed with its 4-byte big-endian length."""
    data = json.dumps(message, separators=(",", ":")).encode()
    if len(data) > MAX_FRAME:
        raise CodecError(f"message of {len(data)} bytes is over the {MAX_FRAME}-byte limit")
    return len(data).to_bytes(4, "big") + data


def read_frame(read):
    """One framed JSON message from `read(n) -> bytes` (b"" at end of stream); None at a clean end."""
    head = _read_exactly(read, 4)
    if head is None:
        return None
    n = int.from_bytes(head, "big")
    if n > MAX_FRAME:
        raise CodecError(f"message of {n} bytes is over the {MAX_FRAME}-byte limit")
    body = _read_exactly(read, n) if n else b""
    if body is None:
        raise CodecError("stream ended inside a message")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as e:
        raise CodecError(f"not JSON: {e.__class__.__name__}") from None


def _read_exactly(read, n):
    buf = b""
    while len(buf) < n:
        chunk = read(n - len(buf))
        if not chunk:
            if buf:
                raise CodecError("stream ended inside a message")
            return None
        buf += chunk
    return buf
