"""Scenario 5 of the netfs rig: ``@store.memo`` in two Python processes on two sshfs mounts of one
store. Results are shared across the mounts and none is lost.

Usage: python_scenario.py MOUNT_A MOUNT_B (run by tests/netfs/run.sh).
"""

import os
import subprocess
import sys
import time

N = 120          # each worker calls square(i) for its range; the ranges overlap by half
COMPUTED = []    # arguments this process actually computed (misses)


def make_square(store):
    @store.memo
    def square(x):
        COMPUTED.append(x)
        return x * x

    return square


def worker(path, start):
    import memotag

    store = memotag.Store(path)
    assert store.mode == "shared", store.mode
    square = make_square(store)
    for x in range(start, start + N):
        assert square(x) == x * x
    # Each computed result was recorded (acknowledged) before square returned.
    print(" ".join(map(str, COMPUTED)))


def main(mount_a, mount_b):
    name = f"py-{os.getpid()}.memo"
    path_a, path_b = os.path.join(mount_a, name), os.path.join(mount_b, name)
    started = time.monotonic()
    procs = [
        subprocess.Popen([sys.executable, __file__, "worker", path, str(start)],
                         stdout=subprocess.PIPE, text=True)
        for path, start in ((path_a, 0), (path_b, N // 2))
    ]
    computed = []
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, f"worker failed with {p.returncode}"
        computed.append([int(x) for x in out.split()])
    everything = set(range(0, N + N // 2))
    acknowledged = set(computed[0]) | set(computed[1])
    assert acknowledged == everything, "every argument was computed by one of the workers"

    # A third process, through the other mount: every result is a hit, nothing is recomputed.
    import memotag

    store = memotag.Store(path_b)
    square = make_square(store)
    for x in sorted(everything):
        assert square(x) == x * x
    assert COMPUTED == [], f"lost results, recomputed: {COMPUTED}"
    both = len(set(computed[0]) & set(computed[1]))
    print(
        f"scenario 5 (Python): 2 processes on 2 mounts computed {len(computed[0])} + "
        f"{len(computed[1])} results ({both} computed by both), all {len(everything)} read back "
        f"through the other mount without recomputing; {time.monotonic() - started:.1f} s"
    )


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        worker(sys.argv[2], int(sys.argv[3]))
    else:
        main(sys.argv[1], sys.argv[2])
