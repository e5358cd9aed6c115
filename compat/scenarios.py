"""The `make compat` matrix: an older release and this working tree on each other's stores.

Run by compat/run.sh with the paths of both builds (CLI and Python). Every step is a cell: one
build doing one thing to one store, the outcome the compatibility rules say it must have, and the
outcome it had. A refusal is a correct outcome where the rules say refuse (and then the store's
files must be byte for byte what they were). Every store is checked at the end of its scenario:
`PRAGMA integrity_check` = ok (SQLite, read-only) and `memotag check` clean, every acknowledged
result present and correct, no conflicts.

The rules (docs/design.md §5), as this file applies them:

- a store's format generation is the creating (or migrating) build's; its levels are 1/1, except
  a shared-mode store written by a build that knows the level rule (format 5 on), which gets 2/2
  at creation, at `migrate` and at `set-mode shared`; levels never go down;
- a Store session: refused (`ReadLevel`, file untouched) when the store's read level is above the
  build's, read-only when its write level is, else read-write;
- maintenance commands (check, gc, migrate, set-mode) refuse a format generation newer than the
  build's (file untouched); `info` reads every generation.

The scenarios only use the public Python API (compat/worker.py) and the CLI, so that one file
drives every release. Output: the matrix on stdout, in <matrix>.txt and as JSON in <matrix>.json;
exit status 1 if any cell differs from the rules.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKER = HERE / "worker.py"

# From this format generation on, a build raises a shared-mode store's levels to 2 (schema/0005).
LEVEL_RULE_FROM_FORMAT = 5
SHARED_LEVELS = 2


@dataclass
class Build:
    key: str  # "old" or "new"
    label: str
    python: str
    cli: str
    format: int
    read: int
    write: int


@dataclass
class StoreState:
    """What a store must be, by the rules, after the steps so far."""

    name: str
    path: Path
    mode: str = "local"
    format: int = 0
    read: int = 1
    write: int = 1
    acked: set = field(default_factory=set)

    def raise_levels_for_shared(self, build: Build) -> None:
        if self.mode == "shared" and build.format >= LEVEL_RULE_FROM_FORMAT:
            self.read = max(self.read, SHARED_LEVELS)
            self.write = max(self.write, SHARED_LEVELS)


@dataclass
class Cell:
    scenario: str
    step: str
    build: str
    expected: str
    observed: str
    ok: bool
    detail: str = ""
    check: bool = False  # a check of the store's state, not something a build did to it


def source_facts(src: Path) -> tuple[int, int, int]:
    """(format generation, read level, write level) of the build whose sources are at `src`."""
    text = (src / "src/protocol/mod.rs").read_text()

    def level(name):
        m = re.search(rf"pub const {name}: u32 = (\d+);", text)
        if not m:
            raise SystemExit(f"compat: cannot find {name} in {src}/src/protocol/mod.rs")
        return int(m.group(1))

    generations = [int(p.name[:4]) for p in (src / "schema").glob("[0-9][0-9][0-9][0-9]_*.sql")]
    if not generations:
        raise SystemExit(f"compat: no schema/NNNN_*.sql in {src}")
    return max(generations), level("READ_LEVEL"), level("WRITE_LEVEL")


class Matrix:
    def __init__(self, old: Build, new: Build, work: Path):
        self.old, self.new, self.work = old, new, work
        self.cells: list[Cell] = []
        self.short: dict[str, str] = {}
        self.scenario = ""
        self.counter = 0

    # -- bookkeeping ----------------------------------------------------------------------------

    def begin(self, ident: str, short: str, title: str) -> None:
        """A scenario: `ident` and `short` name it in the summary, `title` says what it does."""
        self.scenario = title
        self.short[title] = f"{ident:<9}{short}"
        print(f"\n== {title}", flush=True)

    def cell(self, step, build, expected, observed, ok, detail="", check=False) -> bool:
        label = build.key if isinstance(build, Build) else build
        c = Cell(self.scenario, step, label, expected, observed, bool(ok), detail, check)
        self.cells.append(c)
        mark = "ok  " if c.ok else "FAIL"
        print(f"  {mark} [{label}] {step}: expected {expected}; observed {observed}", flush=True)
        if not c.ok and detail:
            print("       " + detail.replace("\n", "\n       "), flush=True)
        return c.ok

    def new_store(self, name: str) -> StoreState:
        directory = self.work / name
        shutil.rmtree(directory, ignore_errors=True)
        (directory / "store").mkdir(parents=True)
        # The store alone in its folder (acknowledgement files and barriers beside it), so that
        # "files unchanged" covers every file the store has.
        return StoreState(name=name, path=directory / "store" / "team.memo")

    # -- running the builds ---------------------------------------------------------------------

    def env(self) -> dict:
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        env["PYTHONWARNINGS"] = "ignore"
        return env

    def worker_args(self, build: Build, command: str, spec: dict) -> list:
        return [build.python, str(WORKER), command, json.dumps(spec)]

    def parse_worker(self, proc_out: str, proc_err: str, rc: int) -> dict:
        for line in reversed(proc_out.strip().splitlines()):
            try:
                result = json.loads(line)
            except ValueError:
                continue
            if isinstance(result, dict) and "ok" in result:
                return result
        return {"ok": False, "error": "crashed", "message": f"exit {rc}: {proc_err.strip()[-2000:]}"}

    def worker(self, build: Build, command: str, spec: dict, timeout=300) -> dict:
        p = subprocess.run(self.worker_args(build, command, spec), capture_output=True, text=True,
                           env=self.env(), timeout=timeout)
        return self.parse_worker(p.stdout, p.stderr, p.returncode)

    def cli(self, build: Build, *args, timeout=300):
        p = subprocess.run([build.cli, *map(str, args)], capture_output=True, text=True,
                           env=self.env(), timeout=timeout, stdin=subprocess.DEVNULL)
        return p.returncode, p.stdout, p.stderr.strip()

    # -- looking at a store from outside ----------------------------------------------------------

    @staticmethod
    def snapshot(store: StoreState) -> dict:
        """Every file of the store (the database, its journal, value files, a lock directory) and
        its hash. SQLite's WAL index (-shm) and an empty WAL hold no data: any reader of a WAL
        file may leave them, so they are not counted."""
        out = {}
        for root, _dirs, files in os.walk(store.path.parent):
            for name in files:
                p = Path(root) / name
                if name.endswith("-shm") or (name.endswith("-wal") and p.stat().st_size == 0):
                    continue
                out[str(p.relative_to(store.path.parent))] = hashlib.sha256(p.read_bytes()).hexdigest()
        return out

    @staticmethod
    def diff(before: dict, after: dict) -> str:
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        return ", ".join(changed)

    def info(self, store: StoreState) -> dict:
        rc, out, err = self.cli(self.new, "info", store.path, "--format", "json")
        if rc != 0:
            raise RuntimeError(f"memotag info failed: {err}")
        return json.loads(out)

    def integrity(self, store: StoreState) -> tuple[bool, str]:
        problems = []
        try:
            uri = f"file:{store.path}?mode=ro"
            with sqlite3.connect(uri, uri=True, timeout=30) as conn:
                result = [r[0] for r in conn.execute("PRAGMA integrity_check")]
            conn.close()
            if result != ["ok"]:
                problems.append(f"integrity_check: {result[:5]}")
        except sqlite3.Error as e:
            problems.append(f"integrity_check could not run: {e}")
        rc, out, err = self.cli(self.new, "check", store.path, "--format", "json")
        if rc != 0:
            problems.append(f"memotag check (new) exit {rc}: {out.strip()[:800]} {err[:400]}")
        return not problems, "; ".join(problems)

    # -- expectations -------------------------------------------------------------------------------

    @staticmethod
    def expected_open(build: Build, store: StoreState) -> str:
        if store.read > build.read:
            return "refused"
        if store.write > build.write:
            return "read-only"
        return "works"

    @staticmethod
    def expected_maintenance(build: Build, store: StoreState) -> str:
        return "refused" if store.format > build.format else "works"

    # -- steps ----------------------------------------------------------------------------------

    def create(self, build: Build, store: StoreState, mode: str, xs_one, xs_batch) -> None:
        store.mode, store.format = mode, build.format
        store.read = store.write = 1
        store.raise_levels_for_shared(build)
        self.write(build, store, xs_one, xs_batch, mode=mode,
                   step=f"creates a {mode} store, records {describe(xs_one, xs_batch)}")

    def write(self, build: Build, store: StoreState, xs_one, xs_batch, mode="auto", step=None) -> bool:
        """Opens the store and records; the outcome must be the rules' (refusals untouched)."""
        step = step or f"opens the store, records {describe(xs_one, xs_batch)}"
        expected = self.expected_open(build, store)
        before = self.snapshot(store)
        ack = store.path.parent.parent / f"ack-{build.key}-{time.monotonic_ns()}"
        result = self.worker(build, "write", {
            "path": str(store.path), "mode": mode, "ack": str(ack),
            "one_by_one": list(xs_one), "batched": list(xs_batch),
        })
        acked = read_acks(ack)
        store.acked |= acked
        want = len(xs_one) + len(xs_batch)
        if expected == "works":
            ok = result["ok"] and not result["readonly"] and len(acked) == want
            observed = (f"works ({len(acked)} recorded)" if result["ok"]
                        else f"{result['error']}: {result['message'][:160]}")
            return self.cell(step, build, f"works ({want} recorded)", observed, ok,
                             result.get("traceback", result.get("message", "")))
        return self.expect_refusal(step, build, expected, store, before, result)

    def expect_refusal(self, step, build, expected, store, before, result) -> bool:
        changed = self.diff(before, self.snapshot(store))
        if expected == "refused":
            refused = (not result["ok"] and result["error"] == "VersionError"
                       and "read level" in result["message"])
            observed = (f"refused (ReadLevel){', files unchanged' if not changed else ''}" if refused
                        else (f"{result['error']}: {result['message'][:160]}" if not result["ok"]
                              else f"opened ({'read-only' if result.get('readonly') else 'read-write'})"))
            if changed:
                observed += f"; CHANGED: {changed}"
            return self.cell(step, build, "refused (ReadLevel), files unchanged", observed,
                             refused and not changed, result.get("message", ""))
        # read-only: opening works, writing is refused with ReadOnlyStore
        ro = not result["ok"] and result["error"] == "ReadOnlyStore"
        observed = "read-only" if ro else f"{result.get('error', 'opened read-write')}"
        return self.cell(step, build, "read-only", observed, ro, result.get("message", ""))

    def read_all(self, build: Build, store: StoreState, readonly=False, step=None, check=False) -> bool:
        """Opens the store and looks up every acknowledged result."""
        step = step or f"opens{' read-only' if readonly else ''}, reads every acknowledged result"
        expected = self.expected_open(build, store)
        before = self.snapshot(store)
        xs = sorted(store.acked)
        result = self.worker(build, "read", {"path": str(store.path), "xs": xs, "readonly": readonly})
        if expected == "refused":
            return self.expect_refusal(step, build, "refused", store, before, result)
        if not result["ok"]:
            return self.cell(step, build, f"works ({len(xs)} results)",
                             f"{result['error']}: {result['message'][:160]}", False,
                             result.get("traceback", result["message"]), check)
        bad = result["missing"] or result["wrong"] or result["conflicts"]
        observed = (f"works ({result['checked']} present and correct)" if not bad else
                    f"{len(result['missing'])} missing, {len(result['wrong'])} wrong, "
                    f"{result['conflicts']} conflicts")
        return self.cell(step, build, f"works ({len(xs)} present and correct)", observed, not bad,
                         f"missing {result['missing'][:20]} wrong {result['wrong'][:20]}", check)

    def check_levels(self, store: StoreState, when: str) -> bool:
        i = self.info(store)
        got = (i["format_generation"], i["mode"], i["read_level"], i["write_level"])
        want = (store.format, store.mode, store.read, store.write)
        fmt = "format {}, {}, levels {}/{}"
        return self.cell(f"store {when}", "new", fmt.format(*want), fmt.format(*got), got == want,
                         check=True)

    def final(self, store: StoreState) -> bool:
        self.check_levels(store, "at the end")
        ok, detail = self.integrity(store)
        self.cell("integrity (SQLite integrity_check, memotag check)", "new", "ok",
                  "ok" if ok else "DAMAGED", ok, detail, check=True)
        self.read_all(self.new, store, readonly=True, check=True,
                      step="every acknowledged result present and correct (read-only)")
        return ok

    def maintenance(self, build: Build, store: StoreState, *args, expected=None, step=None,
                    changes_file=True) -> tuple[bool, str]:
        """Runs one CLI maintenance command; refusals must name the newer format and change no
        file; `changes_file=False` asserts that a command that works changes no file either."""
        command = " ".join(map(str, args))
        step = step or f"memotag {command}"
        expected = expected or self.expected_maintenance(build, store)
        before = self.snapshot(store)
        rc, out, err = self.cli(build, args[0], store.path, *args[1:])
        changed = self.diff(before, self.snapshot(store))
        if expected == "works":
            ok = rc == 0 and (changes_file or not changed)
            observed = "works" if rc == 0 else f"exit {rc}: {err[:160]}"
            if not changes_file:
                observed += f"; CHANGED: {changed}" if changed else ", files unchanged"
            want = "works" if changes_file else "works, files unchanged"
            self.cell(step, build, want, observed, ok, err)
            return ok, out
        refused = rc != 0 and ("newer than this memotag" in err or "read level" in err)
        why = "newer format" if "newer than this memotag" in err else "ReadLevel"
        observed = (f"refused ({why}){', files unchanged' if not changed else ''}" if refused
                    else f"exit {rc}: {err[:160] or out[:160]}")
        if changed:
            observed += f"; CHANGED: {changed}"
        want = "refused (ReadLevel)" if expected == "refused-level" else "refused (newer format)"
        self.cell(step, build, f"{want}, files unchanged", observed, refused and not changed, err)
        return False, out

    def listing(self, build: Build, store: StoreState) -> None:
        """`functions` and `calls`: sessions, so the levels decide."""
        expected = self.expected_open(build, store)
        for command in (("functions", "--format", "json"), ("calls", "f", "--format", "json")):
            if expected == "refused":
                self.maintenance(build, store, command[0], *command[1:], expected="refused-level",
                                 step=f"memotag {' '.join(command)}")
                continue
            ok, out = self.maintenance(build, store, command[0], *command[1:], expected="works",
                                       changes_file=False, step=f"memotag {' '.join(command)}")
            if ok and command[0] == "calls":
                rows = json.loads(out)
                xs = {row.get("inputs", {}).get("x") for row in rows}
                self.cell("calls lists every acknowledged result", build,
                          f"{len(store.acked)} calls", f"{len(xs)} calls", xs == store.acked, check=True)

    def concurrent(self, store: StoreState, n: int, per_build=2) -> None:
        """`per_build` processes of each build start recording together (a file barrier: each
        waits until all have opened the store), overlapping ranges, half of each range one call
        at a time and half in batches of 25."""
        barrier = store.path.parent.parent / f"barrier-{time.monotonic_ns()}"
        barrier.mkdir()
        procs = []
        for i, build in enumerate([self.old, self.new] * per_build):
            start = 1000 + i * n // 2  # each range overlaps the next one by half
            xs = list(range(start, start + n))
            ack = store.path.parent.parent / f"ack-{build.key}-{i}"
            spec = {"path": str(store.path), "mode": "auto", "ack": str(ack),
                    "one_by_one": xs[: n // 2], "batched": xs[n // 2:], "batch_size": 25,
                    "barrier": str(barrier), "parties": 2 * per_build}
            p = subprocess.Popen(self.worker_args(build, "write", spec), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=self.env())
            procs.append((build, p, ack))
        results = {self.old.key: [], self.new.key: []}
        for build, p, ack in procs:
            out, err = p.communicate(timeout=900)
            acked = read_acks(ack)
            store.acked |= acked
            results[build.key].append((self.parse_worker(out, err, p.returncode), acked))
        shutil.rmtree(barrier, ignore_errors=True)
        step = f"{per_build} processes record {n} calls each, at once with the other build's"
        windows = {}
        for build in (self.old, self.new):
            mine = results[build.key]
            if self.expected_open(build, store) == "works":
                good = all(r["ok"] and not r["readonly"] and len(a) == n for r, a in mine)
                if good:
                    windows[build.key] = (min(r["started"] for r, _ in mine),
                                          max(r["finished"] for r, _ in mine))
                observed = ("works (" + " + ".join(str(len(a)) for _, a in mine) + " recorded)"
                            if good else "; ".join(f"{r.get('error')}: {r.get('message', '')[:120]}"
                                                   for r, _ in mine if not r["ok"]) or "too few recorded")
                self.cell(step, build, "works", observed, good,
                          "\n".join(r.get("traceback", r.get("message", "")) for r, _ in mine))
            else:
                good = all(not r["ok"] and r["error"] == "VersionError" and "read level" in r["message"]
                           for r, _ in mine)
                observed = ("refused (ReadLevel)" if good else
                            "; ".join(r.get("error", "opened") for r, _ in mine))
                self.cell(step, build, "refused (ReadLevel)", observed, good,
                          "\n".join(r.get("message", "") for r, _ in mine))
        if len(windows) == 2:
            overlap = min(w[1] for w in windows.values()) - max(w[0] for w in windows.values())
            lengths = "/".join(f"{w[1] - w[0]:.1f}" for w in windows.values())
            self.cell("the two builds' writers overlapped in time", "both", "yes",
                      f"{overlap:.1f} s of {lengths} s" if overlap > 0 else "no", overlap > 0,
                      check=True)


def describe(xs_one, xs_batch) -> str:
    parts = []
    if xs_one:
        parts.append(f"f({xs_one[0]}..{xs_one[-1]}) one by one")
    if xs_batch:
        parts.append(f"f({xs_batch[0]}..{xs_batch[-1]}) in batches")
    return " and ".join(parts)


def read_acks(path: Path) -> set:
    try:
        return {int(line) for line in path.read_text().split()}
    except FileNotFoundError:
        return set()


def R(a, b):
    return list(range(a, b))


# ---- the scenarios ---------------------------------------------------------------------------


def old_creates(m: Matrix, mode: str) -> None:
    """Old creates; new opens, reads, writes; old again; new migrates; old after migration."""
    old, new = m.old, m.new
    m.begin(f"A/{mode}", f"old creates a {mode} store; new, old use it; new migrates; old",
            f"A/{mode}: {old.label} creates a {mode} store; {new.label} uses it; {old.label} again; "
            f"{new.label} migrates it; {old.label} again")
    s = m.new_store(f"old-creates-{mode}")
    m.create(old, s, mode, R(0, 100), R(100, 200))
    m.check_levels(s, f"after {old.label} created it")
    m.read_all(new, s)
    m.write(new, s, R(200, 300), R(300, 400))
    m.check_levels(s, f"after {new.label} wrote it (opening never migrates)")
    m.read_all(old, s)
    m.write(old, s, R(400, 450), R(450, 500))
    m.maintenance(new, s, "migrate")
    s.format = new.format
    s.raise_levels_for_shared(new)
    m.check_levels(s, f"after {new.label} migrated it")
    m.read_all(old, s)
    m.write(old, s, R(500, 550), R(550, 600))
    m.write(new, s, R(600, 650), [])
    m.final(s)


def new_creates(m: Matrix, mode: str) -> None:
    old, new = m.old, m.new
    m.begin(f"B/{mode}", f"new creates a {mode} store; old opens it",
            f"B/{mode}: {new.label} creates a {mode} store; {old.label} opens it")
    s = m.new_store(f"new-creates-{mode}")
    m.create(new, s, mode, R(0, 100), R(100, 200))
    m.check_levels(s, f"after {new.label} created it")
    m.read_all(old, s, readonly=True)
    m.read_all(old, s)
    m.write(old, s, R(200, 300), R(300, 400))
    m.write(new, s, R(400, 450), [])
    m.final(s)


def writers(m: Matrix, mode: str, creator: Build, migrate: bool, rounds: int) -> None:
    old, new = m.old, m.new
    what = f"{creator.label} creates a {mode} store"
    if migrate:
        what += f", {new.label} migrates it"
    m.begin(f"C/{mode}", f"{creator.key} creates{', new migrates' if migrate else ''}; "
            f"2 old + 2 new writers at once, x{rounds}",
            f"C/{mode}: {what}; {old.label} and {new.label} write it at the same time ({rounds} rounds)")
    for r in range(rounds):
        s = m.new_store(f"writers-{mode}-{creator.key}{'-migrated' if migrate else ''}-{r}")
        m.create(creator, s, mode, R(0, 50), [])
        if migrate:
            m.maintenance(new, s, "migrate")
            s.format = new.format
            s.raise_levels_for_shared(new)
        m.check_levels(s, "before the writers start")
        # A local-mode commit takes well under a millisecond, a shared-mode one (fsync, lock
        # directory) several: sizes that keep the writers busy for seconds in both.
        m.concurrent(s, n=2000 if mode == "local" else 300)
        m.final(s)
        if m.expected_open(old, s) == "works":
            m.read_all(old, s, readonly=True)


def new_cli_on_old_store(m: Matrix, mode: str) -> None:
    old, new = m.old, m.new
    other = "shared" if mode == "local" else "local"
    m.begin(f"D/{mode}", f"both CLIs on old's {mode} store (format {old.format})",
            f"D/{mode}: maintenance by both CLIs on a {mode} store {old.label} created and "
            f"{new.label} wrote (format {old.format})")
    s = m.new_store(f"cli-old-store-{mode}")
    m.create(old, s, mode, R(0, 150), R(150, 200))
    m.write(new, s, R(200, 250), R(250, 300))
    for build in (new, old):
        m.maintenance(build, s, "info", "--format", "json", changes_file=False)
        m.maintenance(build, s, "check", changes_file=False)
        m.listing(build, s)
        m.maintenance(build, s, "gc", "--dry-run", changes_file=False)
        m.maintenance(build, s, "gc")
        m.read_all(new if build is old else old, s)
    ok, _ = m.maintenance(old, s, "migrate", step=f"memotag migrate (already format {old.format})",
                          changes_file=False)
    # set-mode: the new build raises the levels when it makes a store shared (never lowers them).
    m.maintenance(new, s, "set-mode", other)
    s.mode = other
    s.raise_levels_for_shared(new)
    m.check_levels(s, f"after {new.label} set-mode {other}")
    m.read_all(old, s)
    m.write(new, s, R(300, 350), [])
    m.maintenance(new, s, "set-mode", mode)
    s.mode = mode
    s.raise_levels_for_shared(new)
    m.check_levels(s, f"after {new.label} set-mode {mode} (levels never go down)")
    m.read_all(old, s)
    m.write(old, s, R(350, 400), [])
    m.maintenance(new, s, "migrate")
    s.format = new.format
    s.raise_levels_for_shared(new)
    m.check_levels(s, f"after {new.label} migrated it")
    m.maintenance(old, s, "check")
    m.maintenance(old, s, "gc", "--dry-run")
    m.final(s)


def migrate_under_writers(m: Matrix, mode: str) -> None:
    """A rolling upgrade: the new build migrates a store while an old and a new process are
    writing it. Sessions check levels when they open, so the old process keeps writing after the
    migration (v0.1.0 takes the lease lock in shared mode, so that is safe); every acknowledged
    result must be there. `migrate` may also refuse while others hold the store."""
    old, new = m.old, m.new
    m.begin(f"G/{mode}", f"new migrates while old and new write ({mode}, format {old.format})",
            f"G/{mode}: {new.label} migrates a {mode} store {old.label} created, while a {old.label} "
            f"and a {new.label} process write it")
    s = m.new_store(f"migrate-under-writers-{mode}")
    m.create(old, s, mode, R(0, 50), [])
    n = 2000 if mode == "local" else 300
    barrier = s.path.parent.parent / "barrier"
    barrier.mkdir()
    procs = []
    for i, build in enumerate((old, new)):
        ack = s.path.parent.parent / f"ack-{build.key}-writer"
        xs = R(1000 + i * n // 2, 1000 + i * n // 2 + n)
        spec = {"path": str(s.path), "mode": "auto", "ack": str(ack), "one_by_one": xs,
                "barrier": str(barrier), "parties": 3}
        procs.append((build, ack, subprocess.Popen(m.worker_args(build, "write", spec),
                                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                   text=True, env=m.env())))
    (barrier / "driver").write_text("ready")
    old_ack = procs[0][1]
    deadline = time.monotonic() + 120
    while len(read_acks(old_ack)) < n // 3 and time.monotonic() < deadline and procs[0][2].poll() is None:
        time.sleep(0.002)
    at_migration = len(read_acks(old_ack))
    rc, out, err = m.cli(new, "migrate", s.path)
    in_use = rc != 0 and ("in use" in err or "holds" in err or "busy" in err.lower())
    m.cell(f"memotag migrate while the writers run ({at_migration} of old's {n} recorded)", new,
           "works (or refused: in use)",
           "works" if rc == 0 else ("refused (in use)" if in_use else f"exit {rc}: {err[:160]}"),
           rc == 0 or in_use, err)
    if rc == 0:
        s.format = new.format
        s.raise_levels_for_shared(new)
    for build, ack, p in procs:
        o, e = p.communicate(timeout=900)
        result = m.parse_worker(o, e, p.returncode)
        acked = read_acks(ack)
        s.acked |= acked
        good = result["ok"] and len(acked) == n
        after = f", {len(acked) - at_migration} after the migration" if build is old and rc == 0 else ""
        m.cell(f"a process records {n} calls one by one across the migration", build,
               "works", f"works ({len(acked)} recorded{after})" if good else
               f"{result.get('error')}: {result.get('message', '')[:160]}", good,
               result.get("traceback", result.get("message", "")))
    shutil.rmtree(barrier, ignore_errors=True)
    m.final(s)
    m.read_all(old, s)


def old_set_mode(m: Matrix) -> None:
    """The old build switches its own store's mode: the store stays format 4 with levels 1, and
    both builds follow its lock method."""
    old, new = m.old, m.new
    m.begin("E", "old set-mode on its own store; new and old use it",
            f"E: {old.label} switches the mode of a store it created (format {old.format}); "
            f"{new.label} uses it in each mode")
    s = m.new_store("old-set-mode")
    m.create(old, s, "local", R(0, 100), [])
    m.write(new, s, R(100, 200), [])
    for target in ("shared", "local"):
        m.maintenance(old, s, "set-mode", target)
        s.mode = target
        s.raise_levels_for_shared(old)
        m.check_levels(s, f"after {old.label} set-mode {target}")
        m.read_all(new, s)
        base = 200 if target == "shared" else 400
        m.write(new, s, R(base, base + 50), R(base + 50, base + 100))
        m.read_all(old, s)
        m.write(old, s, R(base + 100, base + 150), [])
    m.final(s)


def old_cli_on_new_store(m: Matrix, mode: str) -> None:
    old, new = m.old, m.new
    other = "shared" if mode == "local" else "local"
    m.begin(f"F/{mode}", f"old CLI on new's {mode} store (format {new.format})",
            f"F/{mode}: {old.label}'s CLI on a {mode} store {new.label} created (format {new.format})")
    s = m.new_store(f"cli-new-store-{mode}")
    m.create(new, s, mode, R(0, 150), R(150, 200))
    m.maintenance(old, s, "info", "--format", "json", expected="works", changes_file=False)
    m.listing(old, s)
    m.maintenance(old, s, "check")
    m.maintenance(old, s, "gc", "--dry-run")
    m.maintenance(old, s, "gc")
    m.maintenance(old, s, "migrate")
    m.maintenance(old, s, "set-mode", other)
    m.check_levels(s, "after all that")
    for args in (("info", "--format", "json"), ("check",), ("gc", "--dry-run")):
        m.maintenance(new, s, *args, changes_file=False)
    m.maintenance(new, s, "gc")
    m.final(s)


# ---- output ------------------------------------------------------------------------------------


def outcome(c: Cell) -> str:
    """The kind of outcome a cell had: works, refused (why), read-only, or WRONG."""
    if not c.ok:
        return "WRONG"
    return re.sub(r"(, files unchanged| \(\d+ [^)]*\))$", "", c.observed)


def summary(m: Matrix) -> list:
    """One line per scenario: what each build's steps came to, and the checks of the store."""
    scenarios = list(dict.fromkeys(c.scenario for c in m.cells))
    old_head, new_head = f"old ({m.old.label})", "new (working tree)"
    rows = []
    for sc in scenarios:
        cells = [c for c in m.cells if c.scenario == sc]
        row = [m.short.get(sc, sc)]
        for key in ("old", "new"):
            counts = {}
            for c in cells:
                if c.build == key and not c.check:
                    counts[outcome(c)] = counts.get(outcome(c), 0) + 1
            row.append(", ".join(f"{k} ×{n}" for k, n in counts.items()) or "-")
        checks = [c for c in cells if c.check]
        row.append(f"{sum(c.ok for c in checks)}/{len(checks)} ok")
        row.append("ok" if all(c.ok for c in cells) else "WRONG")
        rows.append(row)
    head = ["scenario", old_head, new_head, "checks", "verdict"]
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    widths[0] = min(widths[0], 100)
    fmt = "  ".join("{:<%d}" % w for w in widths)
    out = [fmt.format(*head), "-" * (sum(widths) + 2 * (len(widths) - 1))]
    for r in rows:
        out.append(fmt.format(r[0][:100], *r[1:]))
    return out


def render(m: Matrix, header: str, seconds: float) -> str:
    lines = [header, "",
             "Summary: what each build's steps came to (works, or refused where the rules say so), "
             "and the checks of",
             "each store (levels, integrity, every acknowledged result, overlap of the writers).", ""]
    lines += summary(m)
    lines += ["", "Every step:"]
    widths = {"step": 0, "build": 5, "expected": 0, "observed": 0}
    for c in m.cells:
        widths["step"] = min(max(widths["step"], len(c.step)), 78)
        widths["expected"] = min(max(widths["expected"], len(c.expected)), 40)
        widths["observed"] = min(max(widths["observed"], len(c.observed)), 60)
    row = "  {:<%d}  {:<5}  {:<%d}  {:<%d}  {}" % (widths["step"], widths["expected"], widths["observed"])
    scenario = None
    for c in m.cells:
        if c.scenario != scenario:
            scenario = c.scenario
            lines += ["", scenario, row.format("step", "build", "expected", "observed", "verdict"),
                      "  " + "-" * (widths["step"] + widths["expected"] + widths["observed"] + 24)]
        lines.append(row.format(c.step[:78], c.build, c.expected[:40], c.observed[:60],
                                "ok" if c.ok else "WRONG"))
    bad = [c for c in m.cells if not c.ok]
    lines += ["", f"compat {m.old.label}: {len(m.cells)} cells, {len(m.cells) - len(bad)} as the rules say, "
                  f"{len(bad)} not ({seconds:.0f} s)"]
    for c in bad:
        lines += [f"  WRONG: {c.scenario} / {c.step} [{c.build}]: expected {c.expected}, observed "
                  f"{c.observed}", "    " + c.detail.strip().replace("\n", "\n    ")[:3000]]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--release", required=True)
    ap.add_argument("--release-commit", required=True)
    ap.add_argument("--release-src", required=True, type=Path)
    ap.add_argument("--old-python", required=True)
    ap.add_argument("--old-cli", required=True)
    ap.add_argument("--new-src", required=True, type=Path)
    ap.add_argument("--new-python", required=True)
    ap.add_argument("--new-cli", required=True)
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--matrix", required=True, type=Path, help="output path, without extension")
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("COMPAT_ROUNDS", "3")),
                    help="rounds of each concurrent-writers scenario (COMPAT_ROUNDS, default 3)")
    ap.add_argument("--only", default=os.environ.get("COMPAT_ONLY", ""),
                    help="scenario letters to run (A-G; COMPAT_ONLY), default all")
    a = ap.parse_args()

    new_desc = subprocess.run(["git", "-C", str(a.new_src), "describe", "--always", "--dirty"],
                              capture_output=True, text=True).stdout.strip() or "working tree"
    old = Build("old", a.release, a.old_python, a.old_cli, *source_facts(a.release_src))
    new = Build("new", "new", a.new_python, a.new_cli, *source_facts(a.new_src))
    header = (f"memotag compat matrix: old = {a.release} ({a.release_commit[:12]}: format {old.format}, "
              f"reads level {old.read}, writes level {old.write}); new = working tree ({new_desc}: "
              f"format {new.format}, reads level {new.read}, writes level {new.write})")
    print(header, flush=True)
    shutil.rmtree(a.work, ignore_errors=True)
    a.work.mkdir(parents=True)
    m = Matrix(old, new, a.work)
    only = set(a.only.upper().replace(",", "")) or set("ABCDEFG")
    started = time.monotonic()
    try:
        for mode in ("local", "shared"):
            if "A" in only:
                old_creates(m, mode)
            if "B" in only:
                new_creates(m, mode)
        if "C" in only:
            writers(m, "local", old, migrate=False, rounds=a.rounds)
            writers(m, "local", new, migrate=False, rounds=a.rounds)
            writers(m, "shared", old, migrate=False, rounds=a.rounds)
            writers(m, "shared", old, migrate=True, rounds=1)
            writers(m, "shared", new, migrate=False, rounds=1)
        for mode in ("local", "shared"):
            if "D" in only:
                new_cli_on_old_store(m, mode)
            if "F" in only:
                old_cli_on_new_store(m, mode)
        if "E" in only:
            old_set_mode(m)
        for mode in ("local", "shared"):
            if "G" in only:
                migrate_under_writers(m, mode)
    except Exception as e:  # a harness failure is a failed run, with what was done so far
        import traceback

        m.begin("-", "harness", "harness")
        m.cell("harness", "-", "runs to the end", f"{type(e).__name__}: {e}", False, traceback.format_exc())
    text = render(m, header, time.monotonic() - started)
    a.matrix.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{a.matrix}.txt").write_text(text)
    Path(f"{a.matrix}.json").write_text(json.dumps(
        {"old": vars(old), "new": vars(new), "scenarios": m.short, "cells": [vars(c) for c in m.cells]},
        indent=1))
    print("\n" + text)
    print(f"matrix written to {a.matrix}.txt and {a.matrix}.json")
    return 0 if all(c.ok for c in m.cells) else 1


if __name__ == "__main__":
    sys.exit(main())
