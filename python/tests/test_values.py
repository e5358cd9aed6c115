"""Values: Python hands Rust the object; a decoded value equals the original and keeps its type."""

import math

import numpy as np
import pytest

import memotag
from memotag import _memotag

S = _memotag.Store


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


VALUES = [
    None, True, False, 0, 1, -1, 2**63, -(2**64) - 5, 10**40, 1.5, -0.0, float("inf"),
    "", "héllo", b"", b"\x00\xff", [], [1, [2, [3]]], (), (1,), (1, "a", None),
    {}, {"a": 1, 2: "b", (1, 2): [3]}, set(), {1, 2, 3}, frozenset({"x"}), {"nested": {1: {2: (3,)}}},
    Point(1, 2), [Point(3, 4)], complex(1, 2),
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_round_trip_keeps_value_and_type(value):
    codec, data, _ = S._encode(value)
    back = S._decode(codec, data)
    assert back == value
    assert type(back) is type(value)


def test_nan_round_trips_to_one_nan():
    a = S._encode(float("nan"))
    b = S._encode(-float("nan"))
    assert a == b
    assert math.isnan(S._decode(a[0], a[1]))


def test_distinct_types_never_collide():
    ids = {S._encode(v)[2] for v in [1, 1.0, True, "1", b"1", (1,), [1], {1}, frozenset({1})]}
    assert len(ids) == 9


def test_order_of_dicts_and_sets_does_not_matter():
    assert S._encode({"a": 1, "b": 2}) == S._encode({"b": 2, "a": 1})
    assert S._encode({3, 1, 2}) == S._encode({2, 3, 1})


def test_codecs():
    assert S._encode(1)[0] == "cbor"
    assert S._encode(np.arange(3))[0] == "npy"
    assert S._encode(Point(1, 2))[0] == "pickle"
    assert S._encode(np.array([Point(1, 2)], dtype=object))[0] == "pickle"


def test_numpy_arrays_round_trip(store):
    @store.memo
    def scale(a, k=2):
        return a * k

    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = scale(a)
    again = scale(a.copy())
    assert isinstance(again, np.ndarray)
    assert again.dtype == np.float32 and again.shape == (3, 4)
    np.testing.assert_array_equal(again, out)
    # Fortran order of the same values is the same value.
    assert S._encode(np.asfortranarray(a))[2] == S._encode(a)[2]


def test_subclasses_of_builtins_keep_their_type(store):
    from collections import OrderedDict, namedtuple

    P = namedtuple("P", "x y")
    globals()["P"] = P
    for v in [P(1, 2), OrderedDict(a=1)]:
        codec, data, _ = S._encode(v)
        assert codec == "pickle"
        assert type(S._decode(codec, data)) is type(v)
