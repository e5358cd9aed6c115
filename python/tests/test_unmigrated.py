"""Stores written by older memotag builds and not migrated (format generations 2 to 4).

The decorator records the code every result ran with, which such a store cannot hold: it raises
``memotag.VersionError`` naming ``memotag migrate`` at decoration, before anything is written.
Listing results needs no code procedure: every result of such a store has the empty code record.
"""

import pathlib
import shutil
import sqlite3

import pytest

import memotag

ROOT = pathlib.Path(__file__).resolve().parents[2]

# The procedure menus the builds of format generations 2/3 (commit 22146ff) and 4 (v0.1.0)
# recorded in their stores.
FORMAT2_MENU = {
    "schema.change": [1, 2],
    "schema.log": [1],
    "call.record": [1, 2],
    "call.record_batch": [1, 2],
    "call.lookup": [1],
    "call.query": [1],
    "value.get": [1],
}
FORMAT4_MENU = dict(
    FORMAT2_MENU,
    **{"call.lookup": [1, 2]},
    **{m: [1] for m in ("code.preflight", "code.record", "code.source", "code.packages", "code.results_with")},
)
SCHEMA = ["0002_procedures", "0003_lock_method", "0004_code_records"]


def old_store(tmp_path, fmt: int) -> str:
    """The format-1 fixture moved to `fmt` as that format's build migrated it: `squared(x)`
    has x -> x*x for x in 0..10, all without code."""
    path = tmp_path / f"format{fmt}.memo"
    shutil.copy(ROOT / "tests" / "fixtures" / "store_gen1.memo", path)
    conn = sqlite3.connect(path, isolation_level=None)
    for generation, name in enumerate(SCHEMA[: fmt - 1], start=2):
        conn.executescript((ROOT / "schema" / f"{name}.sql").read_text())
        conn.execute(
            "INSERT INTO format_migrations (generation, name, applied_at) VALUES (?, ?, 0)",
            (generation, name),
        )
        conn.execute(f"PRAGMA user_version = {generation}")
    menu = FORMAT4_MENU if fmt >= 4 else FORMAT2_MENU
    for method, generations in menu.items():
        for g in generations:
            conn.execute("INSERT OR IGNORE INTO procedures (method, generation) VALUES (?, ?)", (method, g))
    conn.close()
    return str(path)


def store_bytes(path: str) -> tuple:
    wal = pathlib.Path(path + "-wal")
    return pathlib.Path(path).read_bytes(), wal.read_bytes() if wal.exists() else None


@pytest.mark.parametrize("fmt", [2, 3])
def test_the_decorator_on_an_unmigrated_store_names_migrate_and_changes_nothing(tmp_path, fmt):
    path = old_store(tmp_path, fmt)
    with memotag.Store(path) as store:
        before = store_bytes(path)
        functions = store.functions()
        computed = []

        with pytest.raises(memotag.VersionError, match=r"memotag migrate") as info:

            @store.memo
            def cube(x):
                computed.append(x)
                return x**3

        assert "call.record" in str(info.value)
        assert f"format generation {fmt}" in str(info.value)
        assert store.functions() == functions
        assert store_bytes(path) == before
        assert computed == []


def test_the_decorator_records_code_in_a_format_4_store_without_migrating(tmp_path):
    # v0.1.0 wrote format 4 with the code-record tables: new and old builds share it as it is.
    path = old_store(tmp_path, 4)
    with memotag.Store(path) as store:

        @store.memo
        def cube(x):
            return x**3

        assert cube(3) == 27
        assert cube(3) == 27
        rows = store.calls("cube")
        assert len(rows) == 1 and rows[0]["code"] != {}, rows


@pytest.mark.parametrize("fmt", [2, 3])
def test_calls_on_an_unmigrated_store_list_the_empty_code_record(tmp_path, fmt):
    path = old_store(tmp_path, fmt)
    with memotag.Store(path, readonly=True) as store:
        rows = store.calls("squared")
        assert sorted((r["inputs"]["x"], r["outputs"]["out"]) for r in rows) == [(i, i * i) for i in range(10)]
        assert all(r["code"] == {} for r in rows), rows[0]["code"]
        frame_codes = {c for c in store.calls("squared", as_frame=True)["code"]}
        assert frame_codes == {None}
