"""Every failure a user can cause with a path or a value is a MemotagError that says what happened
and names the path or the argument (issue 14, item 8); Python's own exception is its __cause__."""

import os
import pickle
import sqlite3
import threading

import pytest

import memotag
from memotag import _memotag as native

S = native.Store


def open_error(path) -> memotag.MemotagError:
    """The error opening `path` raises, from a thread, so that a blocking open fails the test
    instead of hanging it."""
    caught: list = []

    def run():
        try:
            memotag.Store(path).close()
        except BaseException as e:  # noqa: BLE001 - anything at all is reported below
            caught.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), f"opening {path!r} blocked"
    assert caught, f"opening {path!r} succeeded"
    assert isinstance(caught[0], memotag.MemotagError), repr(caught[0])
    return caught[0]


def test_a_fifo_is_refused_without_being_opened(tmp_path):
    fifo = tmp_path / "pipe.memo"
    os.mkfifo(fifo)
    e = open_error(str(fifo))
    assert isinstance(e, memotag.NotAStore)
    assert str(fifo) in str(e) and "FIFO" in str(e)


@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero"])
def test_a_device_is_refused(device):
    e = open_error(device)
    assert isinstance(e, memotag.NotAStore)
    assert device in str(e) and "device" in str(e)


def test_an_empty_path_is_refused_by_name():
    e = open_error("")
    assert isinstance(e, memotag.NotAStore)
    assert "empty" in str(e)


def test_a_dangling_link_into_a_missing_folder_says_the_folder_is_missing(tmp_path):
    link = tmp_path / "team.memo"
    os.symlink("gone/team.memo", link)
    e = open_error(str(link))
    assert isinstance(e, memotag.NotAStore)
    assert "symbolic link" in str(e) and "gone" in str(e) and "folder" in str(e)
    assert not (tmp_path / "gone").exists()


def test_a_dangling_link_into_an_existing_folder_creates_the_store_there(tmp_path):
    link = tmp_path / "team.memo"
    os.symlink("real.memo", link)
    with memotag.Store(str(link)) as s:

        @s.memo
        def square(x):
            return x * x

        assert square(3) == 9
    assert (tmp_path / "real.memo").stat().st_size > 0


def test_a_missing_folder_is_named(tmp_path):
    e = open_error(str(tmp_path / "nowhere" / "team.memo"))
    assert "nowhere" in str(e) and "folder" in str(e)


class Unpicklable:
    def __reduce__(self):
        raise TypeError("cannot pickle this")


@pytest.mark.parametrize(
    "value, cause",
    [
        ("bad \udc80 text", UnicodeEncodeError),
        (threading.Lock(), TypeError),
        (Unpicklable(), TypeError),
        (lambda: 1, (pickle.PicklingError, AttributeError)),
    ],
)
def test_an_argument_that_cannot_be_stored_is_named(store, value, cause):
    @store.memo
    def size(item):
        return 1

    with pytest.raises(memotag.ValueNotStorable) as info:
        size(value)
    assert "size()" in str(info.value) and "`item`" in str(info.value)
    assert isinstance(info.value.__cause__, cause)
    assert isinstance(info.value, memotag.MemotagError)


def test_a_default_that_cannot_be_stored_is_named(store):
    with pytest.raises(memotag.ValueNotStorable, match=r"`lock` of scale\(\)"):

        @store.memo
        def scale(x, lock=threading.Lock()):
            return x


def test_a_filter_value_that_cannot_be_stored_is_named(store):
    @store.memo
    def square(x):
        return x * x

    square(2)
    with pytest.raises(memotag.ValueNotStorable, match="`x`"):
        store.calls("square", where={"x": "\udc80"})


class Vanishing:
    """Pickled by reference to this module; made unimportable below."""


def _record_then_tamper(path, value, codec=None, data=None):
    with memotag.Store(path) as s:

        @s.memo
        def wrap(x):
            return value

        wrap(1)
    con = sqlite3.connect(path)
    if codec is not None:
        con.execute(
            'UPDATE "values" SET codec = ? WHERE codec = 1 AND data IS NOT NULL AND size > 2',
            (codec,),
        )
    if data is not None:
        con.execute('UPDATE "values" SET data = ?', (data,))
    con.commit()
    con.close()


def _read_back_error(path) -> memotag.MemotagError:
    with memotag.Store(path) as s:

        @s.memo
        def wrap(x):
            raise AssertionError("a hit is expected")

        with pytest.raises(memotag.MemotagError) as info:
            wrap(1)
    return info.value


def test_a_value_whose_class_is_gone_cannot_be_read_and_says_so(path):
    global Vanishing
    _record_then_tamper(path, Vanishing())
    saved = Vanishing
    del Vanishing
    try:
        e = _read_back_error(path)
    finally:
        Vanishing = saved
    assert isinstance(e, memotag.ValueNotReadable), repr(e)
    assert "wrap()" in str(e) and path in str(e)
    assert isinstance(e.__cause__, AttributeError)


def test_a_tampered_codec_is_a_corrupt_value(path):
    # The id covers the codec: bytes relabelled as pickle are never unpickled.
    _record_then_tamper(path, "a string long enough to look like something", codec=3)
    e = _read_back_error(path)
    assert isinstance(e, memotag.CorruptValue), repr(e)


def _refuse_to_load():
    raise pickle.UnpicklingError("this pickle refuses to load")


class LoadsBadly:
    def __reduce__(self):
        return (_refuse_to_load, ())


def test_a_pickle_that_fails_to_load_is_not_readable(path):
    _record_then_tamper(path, LoadsBadly())
    e = _read_back_error(path)
    assert isinstance(e, memotag.ValueNotReadable), repr(e)
    assert "`wrap`" in str(e) or "wrap()" in str(e)
    assert isinstance(e.__cause__, pickle.UnpicklingError)
