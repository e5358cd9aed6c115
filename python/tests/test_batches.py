"""Batches belong to the thread that opened them; close() commits every open batch or refuses,
never drops one; a lookup inside a batch returns what the store will hold once it commits.

The threads of these tests meet at barriers so that their batches really overlap (a barrier
with a timeout, so that a failing thread cannot leave the others waiting forever)."""

import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

import memotag


def _count(path: str) -> int:
    with memotag.Store(path) as other:
        return len(other.calls("f"))


def test_a_batch_raising_in_one_thread_keeps_another_threads_results(path):
    with memotag.Store(path) as store:
        @store.memo
        def f(x):
            return x * 2

        barrier = threading.Barrier(2, timeout=60)
        errors = []

        def a():
            try:
                with store.batch():
                    f(1_000)
                    barrier.wait()  # A's batch is open
                    barrier.wait()  # B has recorded its 100 results
                    raise RuntimeError("A's batch fails")
            except RuntimeError:
                pass
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        def b():
            try:
                barrier.wait()
                for i in range(100):
                    assert f(i) == i * 2
                barrier.wait()
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=a), threading.Thread(target=b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert _count(path) == 100, "A's batch raising dropped only A's result"


def test_a_batch_ending_beside_another_threads_open_batch_survives_sigkill(path):
    with memotag.Store(path) as store:
        @store.memo
        def f(x):
            return x * 2

    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import threading, time, memotag
            store = memotag.Store({path!r})
            @store.memo
            def f(x):
                return x * 2
            barrier = threading.Barrier(2, timeout=60)
            def a():
                with store.batch():
                    f(1_000)
                    barrier.wait()  # A's batch is open, and stays open until the SIGKILL
                    time.sleep(600)
            def b():
                barrier.wait()
                with store.batch():
                    for i in range(50):
                        f(i)
                print("COMMITTED", flush=True)
            threading.Thread(target=a, daemon=True).start()
            threading.Thread(target=b).start()
            time.sleep(600)
        """)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "COMMITTED"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert _count(path) == 50, "every result of B's committed batch survived the kill"


def test_lookups_see_only_the_calling_threads_batch(path):
    with memotag.Store(path) as store:
        @store.memo
        def f(x):
            return x * 2

        barrier = threading.Barrier(2, timeout=60)
        seen = {}

        def a():
            with store.batch():
                f(1)
                barrier.wait()
                seen["a"] = f.lookup(1)
                barrier.wait()

        def b():
            barrier.wait()
            try:
                seen["b"] = f.lookup(1)
            except memotag.Miss:
                seen["b"] = "miss"
            barrier.wait()

        threads = [threading.Thread(target=a), threading.Thread(target=b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert seen == {"a": 2, "b": "miss"}
        assert f.lookup(1) == 2


def test_close_commits_the_open_batches_of_every_thread(path):
    store = memotag.Store(path)

    @store.memo
    def f(x):
        return x * 2

    barrier = threading.Barrier(2, timeout=60)

    def other_thread():
        store.begin_batch()
        barrier.wait()
        for i in range(100, 105):
            f(i)
        # The thread ends with its batch open.

    thread = threading.Thread(target=other_thread)
    thread.start()
    store.begin_batch()
    barrier.wait()
    f(1)
    f(2)
    thread.join()
    store.close()
    assert store.closed
    assert _count(path) == 7


def test_close_that_cannot_commit_raises_and_keeps_the_store_open(path):
    store = memotag.Store(path)

    @store.memo
    def f(x):
        return bytes(2 << 20)  # above the threshold: stored as a file beside the store

    blobs = path + ".blobs"
    with open(blobs, "wb") as blocker:  # in the way of the folder the file goes into
        blocker.write(b"in the way")
    store.begin_batch()
    f(1)
    with pytest.raises(memotag.BatchNotStored) as raised:
        store.close()
    assert (raised.value.stored, raised.value.not_stored) == (0, 1)
    assert raised.value.still_buffered
    assert raised.value.__cause__ is not None
    assert "stay buffered" in str(raised.value)
    assert not store.closed
    os.remove(blobs)
    store.close()
    assert store.closed
    assert _count(path) == 1


def test_a_batch_that_cannot_commit_says_what_was_dropped(path):
    with memotag.Store(path) as store:
        @store.memo
        def f(x):
            return bytes(2 << 20)

        blobs = path + ".blobs"
        with open(blobs, "wb") as blocker:
            blocker.write(b"in the way")
        with pytest.raises(memotag.BatchNotStored) as raised:
            with store.batch():
                f(1)
        assert (raised.value.stored, raised.value.not_stored) == (0, 1)
        assert not raised.value.still_buffered
        assert "dropped" in str(raised.value)
        os.remove(blobs)


def test_a_lookup_inside_a_batch_returns_the_canonical_result(path):
    # A non-deterministic function, called through two handles on one store.
    results = iter([10, 99])

    def f(x):
        return next(results)

    with memotag.Store(path) as store, memotag.Store(path) as other:
        mine = store.memo(f)
        theirs = other.memo(f)
        with store.batch():
            assert mine(1) == 10  # computed, buffered in this batch
            assert theirs(1) == 99  # computed again and committed by the other handle first
            assert mine(1) == 99, "the committed result is canonical; the buffered one is a conflict"
        assert mine(1) == 99
        assert len(store.conflicts()) == 1


def test_exiting_with_a_batch_open_commits_it(path):
    exited = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(f"""
            import memotag
            store = memotag.Store({path!r})
            @store.memo
            def f(x):
                return x * 2
            store.begin_batch()
            for i in range(10):
                f(i)
            # exits with the batch open and the store never closed
        """)],
        capture_output=True,
        text=True,
    )
    assert exited.returncode == 0, exited.stderr
    assert _count(path) == 10
