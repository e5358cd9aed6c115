"""Renames as a team meets them in notebooks: a rename names the current name (SPEC §2), so a
cell re-run after a colleague renamed the function again is refused (saying who), never a
silent rename back; a retry that took effect is a no-op; and decorating while another process
renames binds to the new name with a RenamedWarning, never a SchemaConflict."""

import os
import subprocess
import sys
import textwrap
import warnings

import pytest

import memotag
from conftest import run_python


def as_user(user: str, code: str):
    return run_python(code, env={"USER": user})


def test_a_rerun_rename_cell_is_refused_naming_the_colleague(path):
    cell = f"""
        import memotag
        with memotag.Store({path!r}) as store:
            store.rename_function("cv_score", "svc_cv_score")
    """
    as_user("alice", f"""
        import memotag
        with memotag.Store({path!r}) as store:
            @store.memo
            def cv_score(x):
                return x
            cv_score(1)
    """)
    as_user("alice", cell)
    as_user("bob", f"""
        import memotag
        with memotag.Store({path!r}) as store:
            store.rename_function("svc_cv_score", "svc")
    """)
    with memotag.Store(path) as store:
        log_before = store.schema_log()
        with pytest.raises(memotag.SchemaConflict, match=r"now called `svc`.*by bob@"):
            store.rename_function("cv_score", "svc_cv_score")
        assert store.schema_log() == log_before
        assert {i.name for i in store.functions()} == {"svc"}
    # The same cell as a separate process: refused too, nothing changed.
    rerun = run_python(textwrap.dedent(cell), env={"USER": "alice"}, check=False)
    assert rerun.returncode != 0 and "SchemaConflict" in rerun.stderr and "bob@" in rerun.stderr


def test_a_retried_rename_that_took_effect_is_a_no_op(store):
    @store.memo
    def f(x):
        return x

    f(1)
    store.rename_function("f", "g")
    store.rename_function("f", "g")  # the cell again: already called `g`
    store.rename_input("g", "x", "value")
    store.rename_input("g", "x", "value")
    assert [e["kind"] for e in store.schema_log()] == [
        "create_function", "rename_function", "rename_input",
    ]


def test_a_former_input_name_is_not_added_again(store):
    @store.memo
    def f(x):
        return x

    store.add_input("f", "k", default=1)
    store.rename_input("f", "k", "kk")
    with pytest.raises(memotag.SchemaConflict, match="now called `kk`"):
        store.add_input("f", "k", default=1)
    with pytest.raises(memotag.SchemaConflict, match="now called `kk`"):
        store.add_input("f", "k", default=2)
    assert [e["kind"] for e in store.schema_log()] == [
        "create_function", "add_input", "rename_input",
    ]


BINDER = """
import os, sys, time, warnings
import memotag

path, barrier, me, parties, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])

def wait(round_):
    d = os.path.join(barrier, str(round_))
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, me), "w").close()
    deadline = time.time() + 120
    while len(os.listdir(d)) < parties:
        assert time.time() < deadline, "a party never arrived"
        time.sleep(0.0002)

store = memotag.Store(path)
for r in range(rounds):
    store.functions()  # the schema from before the round
    wait(r)
    if me == "renamer":
        store.rename_function(f"f_{r}", f"g_{r}")
        continue
    def body(x, scale=1):
        return x * scale
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m = store.memo(body, name=f"f_{r}", version=2)
        renamed = any(issubclass(w.category, memotag.RenamedWarning) for w in caught)
        print("BOUND", r, renamed, flush=True)
    except memotag.SchemaConflict as e:
        print("CONFLICT", r, e, flush=True)
print("DONE", flush=True)
"""


def test_decorating_while_another_process_renames_binds_to_the_new_name(path, tmp_path):
    rounds, binders = 12, 3
    with memotag.Store(path) as store:
        for r in range(rounds):
            def body(x):
                return x
            store.memo(body, name=f"f_{r}")
    script = tmp_path / "binder.py"
    script.write_text(BINDER)
    names = ["renamer"] + [f"binder{i}" for i in range(binders)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), path, str(tmp_path / "barrier"), me,
             str(len(names)), str(rounds)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for me in names
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    lines = [l for out, _ in outs for l in out.splitlines()]
    conflicts = [l for l in lines if l.startswith("CONFLICT")]
    assert conflicts == [], conflicts
    assert sum(l.startswith("BOUND") for l in lines) == rounds * binders
    with memotag.Store(path) as store:
        functions = {(i.name, i.version) for i in store.functions()}
    assert functions == {(f"g_{r}", v) for r in range(rounds) for v in (1, 2)}
