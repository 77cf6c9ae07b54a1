"""The plain-data channel's encoding (_wire.py): exact round trips, and refusals."""

import json
import math
import os

import pytest

from nebula_utils.verifiers import _wire as wire

VALUES = [
    None,
    True,
    False,
    0,
    -(10**30),
    0.1 + 0.2,
    -0.0,
    1e-310,
    float("inf"),
    float("-inf"),
    "",
    'naïve ünïcode \n\t"quotes"',
    [1, [2, [3, []]]],
    (1, (2,), ()),
    {"a": 1, 2: "b", (3, 4): [5]},
    {1, 2, 3},
    frozenset({"x"}),
    b"\x00\xffbytes",
    bytearray(b"ba"),
    3 + 4j,
    range(1, 10, 3),
    [(1.5, "x"), {"k": (None, True)}],
]


def roundtrip(value):
    return wire.decode(wire.loads(wire.dumps(wire.encode(value))))


@pytest.mark.parametrize("value", VALUES, ids=[repr(v)[:30] for v in VALUES])
def test_exact_round_trip(value):
    back = roundtrip(value)
    assert type(back) is type(value) and back == value
    if isinstance(value, float):
        assert math.copysign(1, back) == math.copysign(1, value)  # -0.0 stays -0.0


def test_nan_and_container_types_survive():
    assert math.isnan(roundtrip(float("nan")))
    assert roundtrip([1, 2]) != (1, 2) and roundtrip((1, 2)) == (1, 2)  # a tuple is not a list
    assert roundtrip({"k": 1}) == {"k": 1} and roundtrip(True) is True and roundtrip(None) is None


def test_iterators_and_views_compare_as_the_original_objects_would():
    it = roundtrip(map(str, [1, 2]))
    assert iter(it) is it and list(it) == ["1", "2"]
    assert roundtrip(x for x in [1]) != [1]  # as a generator would: not equal to a list
    assert roundtrip({1: 2}.keys()) == {1} and list(roundtrip({1: 2}.items())) == [(1, 2)]


def test_subclasses_cross_as_their_base_type():
    class Str(str):
        def __eq__(self, other):
            return True

    back = roundtrip(Str("abc"))
    assert type(back) is str and back == "abc" and back != "zzz"


@pytest.mark.parametrize(
    "value, message",
    [
        (object(), "cannot cross"),
        (lambda: 0, "cannot cross"),
        (type("Equal", (), {"__eq__": lambda s, o: True})(), "cannot cross"),
        ([[[[[[]]]]]] * 1, None),
    ],
)
def test_non_data_is_refused(value, message):
    if message is None:
        assert roundtrip(value) == value
        return
    with pytest.raises(wire.WireError, match=message):
        wire.encode(value)


def test_depth_and_size_limits():
    deep = []
    for _ in range(wire.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(wire.WireError, match="nested"):
        wire.encode(deep)
    with pytest.raises(wire.WireError, match="nested"):
        wire.decode(json.loads(json.dumps(deep)))
    with pytest.raises(wire.WireError):
        wire.dumps(wire.encode(10**5000))  # beyond Python's int/str digit limit
    r, w = os.pipe()
    try:
        with pytest.raises(wire.WireError, match="exceeds the channel cap"):
            wire.send(w, "x" * 200, cap=100)
        os.write(w, wire.HEADER.pack(10**6))  # a peer announcing more than the cap
        with pytest.raises(wire.WireError, match="exceeds the channel cap"):
            wire.recv(r, cap=1000)
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize(
    "raw",
    [
        b"NaN",
        b'{"$": "nope", "v": []}',
        b'{"a": 1}',
        b'{"$": "dict", "v": [[[1], 2]]}',  # unhashable key
        b'{"$": "bytes", "v": "!!"}',
        b'{"$": "range", "v": [0, 1, 0]}',
        b"[1,",
    ],
)
def test_malformed_input_is_a_wire_error(raw):
    with pytest.raises(wire.WireError):
        wire.decode(wire.loads(raw))


def test_frames_round_trip_and_end_of_stream():
    r, w = os.pipe()
    wire.send(w, ["ok", wire.encode((1, {2}))], cap=1000)
    os.close(w)
    kind, value = wire.recv(r, cap=1000)
    assert kind == "ok" and wire.decode(value) == (1, {2})
    assert wire.recv(r, cap=1000) is None
    os.close(r)
