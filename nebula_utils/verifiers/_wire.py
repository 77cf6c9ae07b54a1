"""The plain-data channel between the trusted test process and the sandboxed candidate.

Self-contained (standard library only): it is imported by the trusted runner and, inside the
sandbox, by the candidate's server, so it must not import nebula_utils.

Framing: a 4-byte big-endian length, then that many bytes of UTF-8 JSON. A frame longer than the
cap the reader was given is refused (the reader never allocates more than the cap).

Values (the "tagged JSON" encoding). Every JSON object on the wire is a tag, so nothing is
ambiguous, and the decoder builds fresh objects of exactly these built-in types; no object of
the sender's ever reaches the receiver (an always-equal object cannot cross, it fails to encode).

    None, bool, int, str     JSON null / true / false / integer / string (int and str
                             subclasses are sent as the base type: str(x) / int(x) semantics)
    float (finite)           JSON number; Python writes repr(), which reads back bit-for-bit
                             (0.1 + 0.2 stays 0.30000000000000004, -0.0 stays -0.0)
    float nan / inf / -inf   {"$": "float", "v": "nan" | "inf" | "-inf"}
    complex                  {"$": "complex", "v": [real, imag]} (each a float as above)
    list                     JSON array
    tuple / set / frozenset  {"$": "tuple" | "set" | "frozenset", "v": [...]}
    dict                     {"$": "dict", "v": [[key, value], ...]} in insertion order (keys of
                             any encodable type: int keys stay ints)
    bytes / bytearray        {"$": "bytes" | "bytearray", "v": "<base64>"}
    range                    {"$": "range", "v": [start, stop, step]}
    iterator / generator     {"$": "iter", "v": [...]} read back as iter(list): a test that
                             does tuple(candidate(x)) works, and candidate(x) == [..] is False,
                             as with the original object (map, filter, zip, generators ...)
    dict views               {"$": "keys" | "values" | "items", "v": [...]} read back as a view of
                             a fresh dict, so == compares as it would have

Limits: nesting deeper than MAX_DEPTH, ints beyond Python's int/str digit limit (4300 digits),
frames over the cap, and any other type (functions, classes, custom objects) are refused with
WireError. Everything HumanEval's 164 tests pass and receive (measured: int, float, str, bool,
None, list, tuple, dict; at most 443 bytes per call) is inside this encoding.
"""

import base64
import json
import math
import os
import struct

MAX_DEPTH = 100
MAX_ITEMS = 1 << 20  # items read from a returned iterator
HEADER = struct.Struct(">I")


class WireError(Exception):
    """A value or frame that cannot cross the channel (too big, too deep, unknown type, bad JSON)."""


# ---------------------------------------------------------------------------------------------
# Values


def _float(x):
    if x != x:
        return {"$": "float", "v": "nan"}
    if x in (math.inf, -math.inf):
        return {"$": "float", "v": "inf" if x > 0 else "-inf"}
    return float(x)


def to_wire(value, depth=0):
    """A JSON-ready structure for `value`, or WireError."""
    if depth > MAX_DEPTH:
        raise WireError(f"value nested deeper than {MAX_DEPTH} levels")
    d = depth + 1
    if value is None or value is True or value is False:
        return value
    if isinstance(value, bool):  # a bool subclass
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, list):
        return [to_wire(v, d) for v in value]
    if isinstance(value, tuple):
        return {"$": "tuple", "v": [to_wire(v, d) for v in value]}
    if isinstance(value, dict):
        return {"$": "dict", "v": [[to_wire(k, d), to_wire(v, d)] for k, v in value.items()]}
    if isinstance(value, (set, frozenset)):
        return {"$": "frozenset" if isinstance(value, frozenset) else "set", "v": [to_wire(v, d) for v in value]}
    if isinstance(value, (bytes, bytearray)):
        tag = "bytearray" if isinstance(value, bytearray) else "bytes"
        return {"$": tag, "v": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, complex):
        return {"$": "complex", "v": [_float(value.real), _float(value.imag)]}
    if isinstance(value, range):
        return {"$": "range", "v": [value.start, value.stop, value.step]}
    kind = type(value).__name__
    if kind == "dict_items":
        return {"$": "items", "v": [[to_wire(k, d), to_wire(v, d)] for k, v in value]}
    if kind in ("dict_keys", "dict_values"):
        return {"$": kind[5:], "v": [to_wire(v, d) for v in value]}
    if hasattr(type(value), "__next__") and hasattr(type(value), "__iter__"):
        items = []
        for item in value:  # an endless generator stops here, not at the memory limit
            if len(items) >= MAX_ITEMS:
                raise WireError(f"iterator longer than {MAX_ITEMS} items")
            items.append(to_wire(item, d))
        return {"$": "iter", "v": items}
    raise WireError(f"a value of type {kind} cannot cross the sandbox channel (plain data only)")


def _unfloat(v):
    if isinstance(v, dict) and v.get("$") == "float" and v.get("v") in ("nan", "inf", "-inf"):
        return float(v["v"])
    if type(v) in (int, float):
        return float(v)
    raise WireError(f"bad float on the wire: {v!r:.80}")


def from_wire(data, depth=0):
    """Fresh built-in objects from a structure produced by to_wire (after json.loads)."""
    if depth > MAX_DEPTH:
        raise WireError(f"value nested deeper than {MAX_DEPTH} levels")
    d = depth + 1
    t = type(data)
    if data is None or t in (bool, int, float, str):
        return data
    if t is list:
        return [from_wire(v, d) for v in data]
    if t is not dict or type(data.get("$")) is not str:
        raise WireError(f"bad value on the wire: {str(data)[:80]}")
    tag, v = data["$"], data.get("v")
    if tag == "float":
        return _unfloat(data)
    if tag == "complex" and type(v) is list and len(v) == 2:
        return complex(_unfloat(v[0]), _unfloat(v[1]))
    if tag == "bytes" and type(v) is str:
        return base64.b64decode(v.encode("ascii"), validate=True)
    if tag == "bytearray" and type(v) is str:
        return bytearray(base64.b64decode(v.encode("ascii"), validate=True))
    if tag == "range" and type(v) is list and len(v) == 3 and all(type(x) is int for x in v):
        return range(*v)
    if type(v) is not list:
        raise WireError(f"bad '{tag}' on the wire")
    if tag == "dict" or tag == "items":
        if not all(type(p) is list and len(p) == 2 for p in v):
            raise WireError(f"bad '{tag}' pairs on the wire")
        pairs = {from_wire(k, d): from_wire(x, d) for k, x in v}
        return pairs if tag == "dict" else pairs.items()
    items = [from_wire(x, d) for x in v]
    if tag == "tuple":
        return tuple(items)
    if tag == "set":
        return set(items)
    if tag == "frozenset":
        return frozenset(items)
    if tag == "iter":
        return iter(items)
    if tag == "keys":
        return dict.fromkeys(items).keys()
    if tag == "values":
        return dict(enumerate(items)).values()
    raise WireError(f"unknown tag '{tag}' on the wire")


def decode(data):
    """from_wire, with every malformed input turned into WireError (unhashable keys, bad base64 ...)."""
    try:
        return from_wire(data)
    except WireError:
        raise
    except (TypeError, ValueError, RecursionError, MemoryError) as exc:
        raise WireError(f"bad value on the wire: {type(exc).__name__}: {exc}"[:300]) from None


def encode(value):
    """to_wire, with failures inside the value's own methods (iterators, subclasses) as WireError."""
    try:
        return to_wire(value)
    except WireError:
        raise
    except RecursionError:
        raise WireError("value nested too deeply to cross the sandbox channel") from None
    except Exception as exc:
        raise WireError(f"cannot encode a {type(value).__name__}: {type(exc).__name__}: {exc}"[:300]) from None


def dumps(message) -> bytes:
    try:
        return json.dumps(message, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except (ValueError, RecursionError) as exc:  # e.g. an int over the 4300-digit limit
        raise WireError(f"cannot encode: {exc}"[:300]) from None


def loads(raw: bytes):
    def no_constants(name):  # NaN / Infinity travel as tags, never as JSON extensions
        raise WireError(f"bad constant {name} on the wire")

    try:
        return json.loads(raw.decode("utf-8"), parse_constant=no_constants)
    except (ValueError, RecursionError) as exc:
        raise WireError(f"bad JSON on the wire: {exc}"[:300]) from None


# ---------------------------------------------------------------------------------------------
# Frames


def send(fd: int, message, cap: int) -> None:
    payload = dumps(message)
    if len(payload) > cap:
        raise WireError(f"message of {len(payload)} bytes exceeds the channel cap of {cap} bytes")
    data = memoryview(HEADER.pack(len(payload)) + payload)
    while data:
        data = data[os.write(fd, data) :]


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv(fd: int, cap: int):
    """The next message, or None at end of stream (the other side is gone)."""
    header = _read_exact(fd, HEADER.size)
    if header is None:
        return None
    (size,) = HEADER.unpack(header)
    if size > cap:
        raise WireError(f"message of {size} bytes exceeds the channel cap of {cap} bytes")
    payload = _read_exact(fd, size)
    if payload is None:
        return None
    return loads(payload)
