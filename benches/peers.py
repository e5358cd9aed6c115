#!/usr/bin/env python3
"""memotag against its peers, in the same run: joblib.Memory, diskcache's memoize, and
functools.lru_cache as the in-memory floor (SPEC §8, issue 9).

    .venv/bin/python benches/peers.py                  # N = 2,000 small calls, 50 array calls
    .venv/bin/python benches/peers.py --n 500 --array-reps 10

Workloads, each through every peer with the same function body and a fresh cache directory:

  small   f(a, b) of two small ints: N misses (each a durable record), then the same N calls as
          hits (in a shuffled order, the same for every peer);
  array   f(x) of a 1 MB float64 numpy array (131072 elements): R misses on R distinct arrays,
          then R hits.

Every call is timed on its own with time.perf_counter_ns; the table shows medians (and the JSON
p90s too). Each peer is warmed up first (imports, first open, a few misses and hits on other
arguments). Peers run with their default settings: joblib.Memory(verbose=0), diskcache.Cache()
(SQLite in WAL mode with synchronous=NORMAL, like memotag's local mode), lru_cache(maxsize=None).

Writes <target>/bench/peers.json and <target>/bench/peers.png, where <target> is
$CARGO_TARGET_DIR or ./target (the same place as benches/run.sh's rust.json).
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from importlib import metadata

import numpy as np

ARRAY_LEN = 131072  # float64: 1 MiB
WARMUP_SMALL = 200
WARMUP_ARRAY = 5
PEERS = ("memotag", "lru_cache", "diskcache", "joblib")
PHASES = ("small miss", "small hit", "array miss", "array hit")


# ---- the function bodies, the same for every peer --------------------------------------------


def small(a, b):
    return a * 1000 + b


def array_sum(x):
    return float(x.sum())


# ---- peers: each returns (decorate, close) for a fresh cache directory ------------------------


def make_memotag(path):
    import memotag

    store = memotag.Store(os.path.join(path, "bench.memo"), mode="local")

    def decorate(fn):
        return store.memo(fn)

    return decorate, store.close


def make_diskcache(path):
    import diskcache

    cache = diskcache.Cache(path)

    def decorate(fn):
        return cache.memoize()(fn)

    return decorate, cache.close


def make_joblib(path):
    import joblib

    memory = joblib.Memory(path, verbose=0)

    def decorate(fn):
        return memory.cache(fn)

    return decorate, lambda: None


def make_lru(path):
    def decorate(fn):
        return functools.lru_cache(maxsize=None)(fn)

    return decorate, lambda: None


MAKERS = {"memotag": make_memotag, "diskcache": make_diskcache, "joblib": make_joblib, "lru_cache": make_lru}


# ---- timing ------------------------------------------------------------------------------------


def timed_calls(fn, args_list, expect):
    """Times every call on its own; checks each result against the plain function."""
    clock = time.perf_counter_ns
    out = []
    gc.collect()
    for args in args_list:
        t0 = clock()
        value = fn(*args)
        t1 = clock()
        out.append(t1 - t0)
        if value != expect(*args):
            raise AssertionError(f"{fn!r}{args!r} returned {value!r}")
    return out


def stats(ns):
    s = sorted(ns)
    p90 = s[min(len(s) - 1, int(0.9 * len(s)))]
    return {
        "n": len(s),
        "median_ns": statistics.median(s),
        "p90_ns": p90,
        "mean_ns": statistics.fmean(s),
        "min_ns": s[0],
    }


# ---- bytes on disk -----------------------------------------------------------------------------


def dir_bytes(path):
    """(apparent, allocated) bytes under path: apparent counts the bytes in files; allocated
    counts the blocks of files and of the directories below path, as `du` does (joblib makes
    a directory per call)."""
    apparent = allocated = 0
    for root, dirs, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            apparent += st.st_size
            allocated += st.st_blocks * 512
        for name in dirs:
            allocated += os.lstat(os.path.join(root, name)).st_blocks * 512
    return apparent, allocated


def checkpoint_memotag(path):
    """memotag's store is closed already; fold any WAL left into the main file."""
    import sqlite3

    db = os.path.join(path, "bench.memo")
    if os.path.exists(db + "-wal"):
        con = sqlite3.connect(db)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()


def empty_cache_bytes(peer, root):
    """The bytes of a cache with the small function bound and no result: the fixed cost."""
    path = tempfile.mkdtemp(prefix=f"{peer}-empty-", dir=root)
    decorate, close = MAKERS[peer](path)
    decorate(small)
    close()
    if peer == "memotag":
        checkpoint_memotag(path)
    return dir_bytes(path)


# ---- one peer ----------------------------------------------------------------------------------


def run_peer(peer, root, n, reps, arrays, warm_arrays):
    result = {}
    rng = random.Random(12345)
    miss_args = [(i % 1000, i // 1000) for i in range(n)]
    hit_args = list(miss_args)
    rng.shuffle(hit_args)
    warm_args = [(i % 1000, 10_000 + i // 1000) for i in range(WARMUP_SMALL)]

    # small: its own directory, so that bytes on disk count small results only.
    small_dir = tempfile.mkdtemp(prefix=f"{peer}-small-", dir=root)
    decorate, close = MAKERS[peer](small_dir)
    f = decorate(small)
    for args in warm_args:  # warm up: misses, then hits, on arguments outside the timed ones
        f(*args)
    for args in warm_args:
        f(*args)
    result["small miss"] = stats(timed_calls(f, miss_args, small))
    result["small hit"] = stats(timed_calls(f, hit_args, small))
    close()

    disk = None
    if peer != "lru_cache":
        if peer == "memotag":
            checkpoint_memotag(small_dir)
        apparent, allocated = dir_bytes(small_dir)
        empty_apparent, empty_allocated = empty_cache_bytes(peer, root)
        results = n + WARMUP_SMALL
        disk = {
            "results": results,
            "apparent_bytes": apparent,
            "allocated_bytes": allocated,
            "empty_apparent_bytes": empty_apparent,
            "empty_allocated_bytes": empty_allocated,
            "apparent_bytes_per_result": (apparent - empty_apparent) / results,
            "allocated_bytes_per_result": (allocated - empty_allocated) / results,
        }
    shutil.rmtree(small_dir, ignore_errors=True)

    # array: lru_cache cannot take an ndarray (unhashable), so it has no array figures.
    if peer != "lru_cache":
        array_dir = tempfile.mkdtemp(prefix=f"{peer}-array-", dir=root)
        decorate, close = MAKERS[peer](array_dir)
        g = decorate(array_sum)
        for x in warm_arrays:
            g(x)
        for x in warm_arrays:
            g(x)
        result["array miss"] = stats(timed_calls(g, [(x,) for x in arrays], array_sum))
        order = list(range(reps))
        rng.shuffle(order)
        result["array hit"] = stats(timed_calls(g, [(arrays[i],) for i in order], array_sum))
        close()
        shutil.rmtree(array_dir, ignore_errors=True)
    return result, disk


# ---- machine -----------------------------------------------------------------------------------


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def filesystem(path):
    try:
        out = subprocess.run(["df", "-T", path], capture_output=True, text=True, check=True).stdout
        return out.splitlines()[1].split()[1]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return None


def version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine(root):
    return {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "system": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "cache_dir_filesystem": filesystem(root),
        "packages": {d: version(d) for d in ("memotag", "joblib", "diskcache", "numpy", "matplotlib")},
    }


# ---- output ------------------------------------------------------------------------------------


def us(ns):
    return "-" if ns is None else (f"{ns / 1000:.2f} µs" if ns < 1e7 else f"{ns / 1e6:.1f} ms")


def print_table(phases):
    head = f"{'phase (median)':<14}" + "".join(f"{p:>22}" for p in PEERS)
    print(head)
    for phase in PHASES:
        row = phases[phase]
        base = row["memotag"]["median_ns"] if row.get("memotag") else None
        cells = []
        for p in PEERS:
            s = row.get(p)
            if s is None:
                cells.append(f"{'n/a':>22}")
                continue
            ratio = f" ({s['median_ns'] / base:.2f}x)" if base and p != "memotag" else ""
            cells.append(f"{us(s['median_ns']) + ratio:>22}")
        print(f"{phase:<14}" + "".join(cells))
    print("ratios: peer median / memotag median (>1: memotag is faster)")


def print_disk(disk):
    print()
    print(f"{'bytes on disk per small int->int result':<42}{'apparent':>10}{'allocated':>11}")
    for p, d in disk.items():
        print(f"{p:<42}{d['apparent_bytes_per_result']:>10.0f}{d['allocated_bytes_per_result']:>11.0f}")


def plot(phases, path, info):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"memotag": "#1f77b4", "lru_cache": "#7f7f7f", "diskcache": "#ff7f0e", "joblib": "#2ca02c"}
    fig, ax = plt.subplots(figsize=(9, 5.2), dpi=120)
    width = 0.8 / len(PEERS)
    for i, peer in enumerate(PEERS):
        xs, ys = [], []
        for j, phase in enumerate(PHASES):
            s = phases[phase].get(peer)
            if s is not None:
                xs.append(j + (i - (len(PEERS) - 1) / 2) * width)
                ys.append(s["median_ns"] / 1000)
        bars = ax.bar(xs, ys, width, label=peer, color=colors[peer])
        for bar, y in zip(bars, ys):
            label = f"{y:.2g}" if y < 10 else f"{y:,.0f}"
            ax.annotate(label, (bar.get_x() + bar.get_width() / 2, y), ha="center", va="bottom",
                        fontsize=7, xytext=(0, 1), textcoords="offset points")
    for j, phase in enumerate(PHASES):
        if phases[phase].get("lru_cache") is None:
            x = j + (PEERS.index("lru_cache") - (len(PEERS) - 1) / 2) * width
            ax.annotate("n/a", (x, 0), xycoords=("data", "axes fraction"), ha="center", va="bottom",
                        fontsize=7, color="#7f7f7f", xytext=(0, 2), textcoords="offset points")
    ax.set_yscale("log")
    ax.set_xticks(range(len(PHASES)))
    ax.set_xticklabels(["small int args\nmiss + record", "small int args\nhit",
                        "1 MB array arg\nmiss + record", "1 MB array arg\nhit"])
    ax.set_ylabel("median µs per call (log scale)")
    ax.set_title(f"memotag and peers, median per call: lower is faster\n"
                 f"{info['cpu']}, {info['cpus']} cores, Python {info['python']}", fontsize=10)
    ax.grid(axis="y", which="major", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.margins(y=0.15)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=int(os.environ.get("MEMOTAG_PEERS_N", 2000)),
                    help="small-int misses (and hits) per peer (default 2000)")
    ap.add_argument("--array-reps", type=int, default=int(os.environ.get("MEMOTAG_PEERS_ARRAY_REPS", 50)),
                    help="1 MB array misses (and hits) per peer (default 50)")
    ap.add_argument("--out", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "bench"),
                    help="output directory (default <target>/bench)")
    ap.add_argument("--tmp", default=None, help="where the cache directories go (default: the system temp dir)")
    ap.add_argument("--peers", default=",".join(PEERS), help="comma-separated subset of " + ",".join(PEERS))
    opts = ap.parse_args()
    peers = [p for p in opts.peers.split(",") if p]
    for p in peers:
        if p not in PEERS:
            ap.error(f"unknown peer {p!r}")

    os.makedirs(opts.out, exist_ok=True)
    root = tempfile.mkdtemp(prefix="memotag-peers-", dir=opts.tmp)
    info = machine(root)
    print(f"machine: {info['cpu']}, {info['cpus']} cores, {info['system']}, Python {info['python']}")
    print(f"packages: {info['packages']}; caches under {root} ({info['cache_dir_filesystem']})")
    print(f"workload: {opts.n} small-int misses then hits; {opts.array_reps} 1 MB array misses then hits\n")

    rng = np.random.default_rng(0)
    base = rng.random(ARRAY_LEN)
    arrays = [base + i for i in range(opts.array_reps)]
    warm_arrays = [base - 1 - i for i in range(WARMUP_ARRAY)]
    assert arrays[0].nbytes == 1 << 20

    phases = {phase: {} for phase in PHASES}
    disk = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for peer in peers:
                t0 = time.perf_counter()
                result, d = run_peer(peer, root, opts.n, opts.array_reps, arrays, warm_arrays)
                for phase, s in result.items():
                    phases[phase][peer] = s
                if d is not None:
                    disk[peer] = d
                print(f"  {peer}: {time.perf_counter() - t0:.1f} s", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print()

    ratios = {}
    for phase in PHASES:
        base_ns = phases[phase].get("memotag", {}).get("median_ns")
        ratios[phase] = {p: s["median_ns"] / base_ns for p, s in phases[phase].items()
                         if base_ns and p != "memotag"}

    hit = phases["small hit"].get("memotag", {}).get("median_ns")
    miss = phases["small miss"].get("memotag", {}).get("median_ns")
    per_result = disk.get("memotag", {}).get("apparent_bytes_per_result")
    targets = {
        "python_hit_median_us": {"value": hit and hit / 1000, "target": 10, "met": bool(hit) and hit <= 10_000},
        "python_hit_vs_diskcache": {"value": ratios["small hit"].get("diskcache"), "target": 3,
                                    "met": (ratios["small hit"].get("diskcache") or 0) >= 3},
        "python_hit_vs_joblib": {"value": ratios["small hit"].get("joblib"), "target": 30,
                                 "met": (ratios["small hit"].get("joblib") or 0) >= 30},
        "python_miss_durable_median_us": {"value": miss and miss / 1000, "target": 100,
                                          "met": bool(miss) and miss <= 100_000},
        "bytes_per_small_result": {"value": per_result, "target": 250,
                                   "met": per_result is not None and per_result <= 250},
    }

    summary = {
        "machine": info,
        "workload": {
            "small_n": opts.n, "small_warmup": WARMUP_SMALL, "array_reps": opts.array_reps,
            "array_warmup": WARMUP_ARRAY, "array": f"float64[{ARRAY_LEN}] (1 MiB)",
            "small_function": "small(a, b) = a * 1000 + b", "array_function": "array_sum(x) = float(x.sum())",
            "peers": {
                "memotag": "memotag.Store(path, mode='local') + @store.memo (WAL, synchronous=NORMAL, "
                           "one commit per miss)",
                "diskcache": "diskcache.Cache(path).memoize() with default settings (WAL, synchronous=NORMAL)",
                "joblib": "joblib.Memory(path, verbose=0).cache (files, no fsync)",
                "lru_cache": "functools.lru_cache(maxsize=None), in memory; cannot take an ndarray",
            },
        },
        "phases": phases,
        "ratios_peer_over_memotag": ratios,
        "disk": disk,
        "targets": targets,
    }
    out_json = os.path.join(opts.out, "peers.json")
    with open(out_json, "w") as f:
        json.dump(summary, f, indent=2)

    print_table(phases)
    if disk:
        print_disk(disk)
    print()
    for k, v in targets.items():
        val = v["value"]
        print(f"target {k}: {'-' if val is None else f'{val:,.2f}'} (target {v['target']}) "
              f"{'met' if v['met'] else 'MISSED'}")
    out_png = os.path.join(opts.out, "peers.png")
    try:
        plot(phases, out_png, info)
    except ImportError:
        out_png = None
        print("matplotlib is not installed: no chart")
    print(f"\nwrote {out_json}" + (f" and {out_png}" if out_png else ""))


if __name__ == "__main__":
    main()
