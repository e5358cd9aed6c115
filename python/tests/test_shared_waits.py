"""A shared-mode call that waits for the store's lock lets the other Python threads run."""

import os
import threading
import time

import memotag


def test_other_threads_run_while_a_shared_mode_lookup_waits_for_the_lock(tmp_path):
    path = str(tmp_path / "s.memo")
    store = memotag.Store(path, mode="shared", lock_lease=30, busy_timeout=20)

    @store.memo
    def double(x):
        return 2 * x

    assert double(1) == 2
    # Another client holds the lock (an owner file nobody renews: it would expire in 30 s).
    lock = path + ".memotag-lock"
    os.mkdir(lock)
    with open(os.path.join(lock, "owner"), "w") as f:
        f.write("held by a test\n")
    answers = []
    caller = threading.Thread(target=lambda: answers.append(double(1)))
    caller.start()
    time.sleep(0.2)
    assert caller.is_alive(), "the call waits for the lock"
    # While it waits, this thread runs Python code.
    spins, until = 0, time.monotonic() + 0.5
    while time.monotonic() < until:
        spins += 1
    assert spins > 10_000, f"only {spins} iterations: the waiting call held the GIL"
    os.remove(os.path.join(lock, "owner"))
    os.rmdir(lock)
    caller.join(timeout=20)
    assert answers == [2]
    store.close()
