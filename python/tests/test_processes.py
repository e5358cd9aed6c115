"""Real processes sharing one store: results shared, nothing lost, conflicts resolved the same
way for everyone, forks and pools work."""

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import pytest

import memotag
from conftest import run_python


def test_a_result_computed_in_one_process_is_a_hit_in_another(path):
    code = f"""
        import memotag
        store = memotag.Store({path!r})
        @store.memo
        def slow_square(x):
            print("COMPUTED", x)
            return x * x
        print("RESULT", slow_square(12))
    """
    first = run_python(code)
    second = run_python(code)
    assert "COMPUTED 12" in first.stdout and "RESULT 144" in first.stdout
    assert "COMPUTED" not in second.stdout and "RESULT 144" in second.stdout


def test_a_stale_process_records_calls_that_new_code_hits(path):
    # The old notebook decorates f(x) and keeps running while a colleague adds `scale=1`.
    old = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, memotag
            store = memotag.Store({path!r})
            @store.memo
            def f(x):
                return x * 2
            print("READY", flush=True)
            sys.stdin.readline()
            for i in range(50):
                f(i)
            print("DONE", flush=True)
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert old.stdout.readline().strip() == "READY"
    with memotag.Store(path) as store:
        calls = []

        @store.memo
        def f(x, scale=1):
            calls.append(x)
            return x * 2 * scale

        old.stdin.write("go\n")
        old.stdin.flush()
        assert old.stdout.readline().strip() == "DONE"
        old.wait(timeout=30)
        assert [f(i) for i in range(50)] == [i * 2 for i in range(50)]
        assert calls == []
        row = store.calls("f", where={"x": 3})[0]
        assert row["inputs"] == {"x": 3, "scale": 1}


def _record_range(path, start, stop, barrier, results):
    store = memotag.Store(path)

    @store.memo
    def f(x):
        return x * 3

    # Every process is ready (store open, function bound) before any records.
    barrier.wait()
    passed = time.time_ns()
    values = [f(i) for i in range(start, stop)]
    results.put((start, values, passed, time.time_ns()))


def test_concurrent_processes_lose_nothing(path):
    memotag.Store(path).close()
    ranges = [(w * 300, w * 300 + 500) for w in range(4)]  # overlapping
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(ranges))
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_record_range, args=(path, a, b, barrier, results)) for a, b in ranges
    ]
    for p in procs:
        p.start()
    done = {}
    for _ in procs:
        start, values, passed, finished = results.get(timeout=120)
        done[start] = (values, passed, finished)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert all(done[a][0] == [i * 3 for i in range(a, b)] for a, b in ranges)
    # They really ran at once: every process was past the barrier before any finished.
    spans = {a: (passed, finished) for a, (_, passed, finished) in done.items()}
    assert max(p for p, _ in spans.values()) < min(f for _, f in spans.values()), spans
    with memotag.Store(path) as store:
        rows = store.calls("f")
        assert sorted(r["inputs"]["x"] for r in rows) == list(range(0, 1400))
        assert store.conflicts() == []


def test_a_non_deterministic_function_gets_one_canonical_value(path):
    memotag.Store(path).close()
    barrier = path + ".ready"
    os.makedirs(barrier)
    code = f"""
        import os, time, warnings, memotag
        store = memotag.Store({path!r})
        @store.memo
        def roll(seed):
            # Both processes are inside the computation before either records.
            open(os.path.join({barrier!r}, str(os.getpid())), "w").close()
            while len(os.listdir({barrier!r})) < 2:
                time.sleep(0.01)
            return os.getpid()
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            value = roll(1)
        print("VALUE", value, "WARNED", any(issubclass(x.category, memotag.ConflictWarning) for x in w))
    """
    procs = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=60)[0].split() for p in procs]
    values = {o[1] for o in outs}
    warned = [o[3] for o in outs]
    assert len(values) == 1, outs
    assert sorted(warned) == ["False", "True"], outs
    with memotag.Store(path) as store:
        assert len(store.conflicts("roll")) == 1
        assert str(store.calls("roll")[0]["outputs"]["out"]) in values


def test_a_killed_process_loses_no_returned_call(path):
    memotag.Store(path).close()
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import memotag
            store = memotag.Store({path!r})
            @store.memo
            def f(x):
                return -x
            i = 0
            while True:
                f(i)
                print(i, flush=True)
                i += 1
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    seen = []
    deadline = time.time() + 30
    while len(seen) < 300 and time.time() < deadline:
        seen.append(int(proc.stdout.readline()))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    seen.extend(int(line) for line in proc.stdout.read().split())
    with memotag.Store(path) as store:
        @store.memo
        def f(x):
            raise AssertionError("must be recorded")
        assert [f(i) for i in seen] == [-i for i in seen]


def test_values_and_ids_are_stable_across_processes_and_hash_seeds(path):
    code = """
        from memotag import _memotag
        value = {"b": {3, 1, 2}, "a": (1, 2.5, None, b"x"), 7: frozenset({"p", "q"}), "big": 10**30}
        print(_memotag.Store._encode(value)[2])
    """
    ids = {run_python(code, env={"PYTHONHASHSEED": str(seed)}).stdout.strip() for seed in (0, 1, 12345)}
    assert len(ids) == 1
    # And a value recorded by one process decodes to an equal value in another.
    run_python(f"""
        import memotag
        store = memotag.Store({path!r})
        @store.memo
        def f(k):
            return {{"set": {{3, 1, 2}}, "tuple": (1, "a"), "big": -10**30, "nested": [{{1: (2,)}}]}}
        f("key")
    """, env={"PYTHONHASHSEED": "7"})
    with memotag.Store(path) as store:
        @store.memo
        def f(k):
            raise AssertionError("recorded by the other process")
        assert f("key") == {"set": {1, 2, 3}, "tuple": (1, "a"), "big": -10**30, "nested": [{1: (2,)}]}


def test_batches_commit_at_the_end_and_are_visible_inside(path):
    with memotag.Store(path) as store:
        calls = []

        @store.memo
        def f(x):
            calls.append(x)
            return x + 100

        with store.batch():
            for i in range(10):
                f(i)
            assert f(3) == 103  # visible through this handle
            other = run_python(f"""
                import memotag
                s = memotag.Store({path!r})
                print(len(s.calls("f")))
            """)
            assert other.stdout.strip() == "0"
        assert calls == list(range(10))
        other = run_python(f"""
            import memotag
            print(len(memotag.Store({path!r}).calls("f")))
        """)
        assert other.stdout.strip() == "10"

        with pytest.raises(ZeroDivisionError):
            with store.batch():
                f(50)
                1 / 0
        assert len(store.calls("f")) == 10


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_reopens_the_connection(path):
    with memotag.Store(path) as store:
        @store.memo
        def f(x):
            return x + 1

        f(1)
        pid = os.fork()
        if pid == 0:
            try:
                ok = f(1) == 2 and f(2) == 3
                os._exit(0 if ok else 1)
            except BaseException:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert f.lookup(2) == 3
        assert len(store.calls("f")) == 2


_POOL_STORE = memotag.Store(os.path.join(__import__("tempfile").mkdtemp(), "pool.memo"))
POOL_CALLS = []


@_POOL_STORE.memo
def pool_cube(x):
    POOL_CALLS.append(x)
    return x ** 3


def test_a_pool_maps_a_decorated_function():
    ctx = multiprocessing.get_context("fork")
    # The memoized function travels to the workers by reference, like a plain function.
    with ctx.Pool(2) as pool:
        assert pool.map(pool_cube, range(40)) == [x ** 3 for x in range(40)]
    assert POOL_CALLS == []  # computed in the workers
    assert len(_POOL_STORE.calls("pool_cube")) == 40
    assert [pool_cube(x) for x in range(40)] == [x ** 3 for x in range(40)]
    assert POOL_CALLS == []  # and recorded there: hits here


WAITER = """
import os, signal, threading, time, memotag
store = memotag.Store({path!r})
@store.memo
def f(x):
    return x
threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
start = time.monotonic()
try:
    f(1)
    print("COMPLETED", round(time.monotonic() - start, 1))
except KeyboardInterrupt:
    print("INTERRUPTED", round(time.monotonic() - start, 1))
"""


def test_ctrl_c_ends_a_wait_for_another_writer(path):
    # The function exists already, so that the waiter's decoration needs no write.
    with memotag.Store(path) as store:
        @store.memo
        def f(x):
            return x
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sqlite3, sys, time
            conn = sqlite3.connect({path!r}, isolation_level=None)
            conn.execute("BEGIN EXCLUSIVE")
            print("HOLDING", flush=True)
            time.sleep(30)
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "HOLDING"
        waiter = run_python(WAITER.format(path=path), timeout=60)
        outcome, seconds = waiter.stdout.split()
        assert outcome == "INTERRUPTED", waiter.stdout + waiter.stderr
        assert float(seconds) < 5
    finally:
        holder.kill()
        holder.wait()


def test_threads_keep_going_while_one_waits_for_another_writer(path):
    # One thread waits for the write lock (held by another process) while another thread keeps
    # serving hits: neither may deadlock the other through the GIL.
    with memotag.Store(path) as store:
        @store.memo
        def f(x):
            return x
        f(0)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sqlite3, time
            conn = sqlite3.connect({path!r}, isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            print("HOLDING", flush=True)
            time.sleep(2)
            conn.execute("COMMIT")
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "HOLDING"
        out = run_python(f"""
            import threading, time, memotag
            store = memotag.Store({path!r})
            @store.memo
            def f(x):
                return x
            done = []
            def miss():
                f(100)
                done.append("miss")
            def hits():
                end = time.monotonic() + 3
                while time.monotonic() < end:
                    f(0)
                done.append("hits")
            threads = [threading.Thread(target=miss), threading.Thread(target=hits)]
            for t in threads: t.start()
            for t in threads: t.join()
            print(sorted(done))
        """, timeout=60)
        assert out.stdout.strip() == "['hits', 'miss']"
    finally:
        holder.kill()
        holder.wait()
