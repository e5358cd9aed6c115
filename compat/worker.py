"""One process of a `make compat` scenario, run by the Python of one build (old or new).

Uses only the public Python API that every release shares (``memotag.Store(path, mode=...,
readonly=...)``, ``@store.memo``, ``f.lookup``, ``store.batch()``, ``store.conflicts()``), never
internals, so that the same file drives every build. Prints one JSON object on its last line of
stdout: ``{"ok": true, ...}`` or ``{"ok": false, "error": <exception class>, "message": ...}``.

Commands (one JSON argument each):

- ``write``: opens the store, waits at the barrier if one is given, records ``f(x)`` for every x
  in ``one_by_one`` (each acknowledged in the ack file once the call returned), then for every x in
  ``batched`` inside ``store.batch()`` blocks of ``batch_size`` (acknowledged when the block ends).
- ``read``: opens the store and looks every x up (never computes); reports which are missing or
  wrong, and the conflicts the store lists.
"""

import json
import os
import sys
import time
import traceback

import memotag

BLOB_SIZE = (1 << 20) + 4096  # above the default blob threshold: stored as a file beside the store


def expected(x):
    """The result every build records for f(x): a few value kinds, and now and then a large one."""
    value = {"x": x, "square": x * x, "tuple": ("compat", x % 7), "set": {x % 3, 10}, "neg": -x}
    if x % (97 if x < 1000 else 499) == 0:
        value["blob"] = (b"%d:" % x) * (BLOB_SIZE // len(b"%d:" % x) + 1)
    return value


def arrive(directory, how="ready"):
    """Marks this process as arrived at the barrier (also when it failed before reaching it, so
    that the others do not wait for it)."""
    if directory and not os.path.exists(os.path.join(directory, str(os.getpid()))):
        open(os.path.join(directory, f"{os.getpid()}"), "w").write(how)


def barrier_wait(directory, parties, timeout=120.0):
    """Every process of a scenario waits here until all of them have arrived."""
    if not directory:
        return
    arrive(directory)
    deadline = time.monotonic() + timeout
    while len(os.listdir(directory)) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError(f"barrier {directory}: {len(os.listdir(directory))} of {parties} arrived")
        time.sleep(0.005)


def open_store(spec):
    kwargs = {"mode": spec.get("mode", "auto")}
    if spec.get("readonly"):
        kwargs["readonly"] = True
    return memotag.Store(spec["path"], **kwargs)


def bind(store, code):
    # The same source in every process and every build, so that writers record one code record.
    @store.memo(name="f", code=code)
    def f(x):
        return expected(x)

    return f


def write(spec):
    store = open_store(spec)
    info = {"mode": store.mode, "readonly": store.readonly}
    f = bind(store, "warn")
    barrier_wait(spec.get("barrier"), spec.get("parties", 1))
    started = time.time()
    acked = 0
    with open(spec["ack"], "a") as ack:
        for x in spec.get("one_by_one", []):
            if f(x) != expected(x):
                raise AssertionError(f"f({x}) returned a wrong value")
            ack.write(f"{x}\n")
            ack.flush()
            acked += 1
        batched = spec.get("batched", [])
        size = spec.get("batch_size", 50)
        for start in range(0, len(batched), size):
            block = batched[start:start + size]
            with store.batch():
                for x in block:
                    if f(x) != expected(x):
                        raise AssertionError(f"f({x}) returned a wrong value in a batch")
            ack.write("".join(f"{x}\n" for x in block))
            ack.flush()
            acked += len(block)
    finished = time.time()
    store.close()
    return dict(info, acked=acked, started=started, finished=finished)


def read(spec):
    store = open_store(spec)
    info = {"mode": store.mode, "readonly": store.readonly}
    f = bind(store, "ignore")
    missing, wrong = [], []
    for x in spec["xs"]:
        try:
            got = f.lookup(x)
        except memotag.Miss:
            missing.append(x)
            continue
        if got != expected(x):
            wrong.append(x)
    conflicts = len(store.conflicts())
    store.close()
    return dict(info, checked=len(spec["xs"]), missing=missing, wrong=wrong, conflicts=conflicts)


def main():
    command, spec = sys.argv[1], json.loads(sys.argv[2])
    try:
        result = {"write": write, "read": read}[command](spec)
        result["ok"] = True
    except memotag.MemotagError as e:
        result = {"ok": False, "error": type(e).__name__, "message": str(e)}
    except Exception as e:  # anything else is a harness failure, reported with its traceback
        result = {"ok": False, "error": type(e).__name__, "message": str(e),
                  "traceback": traceback.format_exc()}
    if not result["ok"]:
        arrive(spec.get("barrier"), "failed")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
