"""Nothing wrong, nothing poisoned: a damaged stored value is an error, never a value; a result
that cannot be stored is still returned (and said so once); a result too deep for the canonical
encoding is pickled instead, so it is stored and read back."""

import sqlite3
import threading
import warnings

import pytest

import memotag
from memotag import _memotag

S = _memotag.Store


def nested(depth):
    """`depth` lists, each inside the next: [[[...[]...]]]."""
    value = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_a_result_nested_deeper_than_the_canonical_limit_never_poisons_its_call(store):
    calls = []

    @store.memo
    def deep(n):
        calls.append(n)
        return nested(n)

    assert S._encode(nested(512))[0] == "cbor"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert deep(512) == nested(512)
        assert deep(512) == nested(512)
    assert calls == [512]

    calls.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            # Before: recorded as CBOR that no decoder reads, then every later call raised
            # "cbor: value nested deeper than 512 levels".
            assert deep(513) == nested(513)
    told = [w for w in caught if issubclass(w.category, memotag.ResultNotStoredWarning)]
    # Too deep for CBOR, it is pickled instead. Where pickle reaches that deep it is stored and
    # read back; where it does not (CPython 3.11 counts two C recursion steps per level against
    # the recursion limit of 1000), it is returned, not stored, and the user is told once.
    assert (calls, len(told)) in [([513], 0), ([513, 513, 513], 1)], (calls, told)


def test_a_result_that_cannot_be_stored_is_returned_and_the_user_told_once(store):
    calls = []
    lock = threading.Lock()

    @store.memo
    def locked(n):
        calls.append(n)
        return (n, lock)

    with pytest.warns(memotag.ResultNotStoredWarning, match=r"locked\(\).*not stored.*lock"):
        assert locked(1) == (1, lock)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Later calls compute again (a miss, not an error), without another warning.
        assert locked(1) == (1, lock)
        assert locked(2) == (2, lock)
    assert calls == [1, 1, 2]
    with pytest.raises(memotag.Miss):
        locked.lookup(1)


def test_a_result_too_deep_even_to_pickle_is_returned(store):
    very_deep = nested(200_000)

    @store.memo(outputs=["value", "n"])
    def build(n):
        return very_deep, n

    with pytest.warns(memotag.ResultNotStoredWarning, match=r"build\(\)"):
        value, n = build(1)
    assert value is very_deep and n == 1


def test_a_stored_value_altered_in_place_is_an_error_not_a_value(path):
    with memotag.Store(path) as s:

        @s.memo
        def square(x):
            return x * x

        assert square(5) == 25
        assert square(4) == 16
    _, _, id25 = S._encode(25)
    _, bytes9999, _ = S._encode(9999)
    con = sqlite3.connect(path)
    assert con.execute(
        'UPDATE "values" SET data = ? WHERE id = ?', (bytes9999, bytes.fromhex(id25))
    ).rowcount == 1
    con.commit()
    con.close()
    with memotag.Store(path) as s:

        @s.memo
        def square(x):
            return x * x

        # Before: 9999.
        with pytest.raises(memotag.CorruptValue, match=id25):
            square(5)
        with pytest.raises(memotag.CorruptValue):
            square.lookup(5)
        assert square(4) == 16
    assert issubclass(memotag.CorruptValue, memotag.MemotagError)
