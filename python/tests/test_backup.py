"""Store.backup: a consistent copy of a live store, in both modes, refused over an existing file
unless asked."""

import os
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

import memotag


@pytest.mark.parametrize("mode", ["local", "shared"])
def test_backup_of_a_store_another_process_is_writing(tmp_path, mode):
    src = str(tmp_path / "live.memo")
    dest = tmp_path / "copy.memo"
    stop = tmp_path / "stop"
    acks = tmp_path / "acks"
    with memotag.Store(src, mode=mode) as s:
        @s.memo
        def sq(x):
            return x * x
        sq(-1)
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, time, memotag
        s = memotag.Store({src!r})
        @s.memo
        def sq(x):
            return x * x
        with open({str(acks)!r}, "w", buffering=1) as out:
            i = 0
            while not os.path.exists({str(stop)!r}):
                sq(i)
                out.write(f"{{i}} {{time.time_ns()}}\\n")
                i += 1
    """)])
    try:
        deadline = time.time() + 60
        while (not acks.exists() or len(acks.read_text().splitlines()) < 20) and time.time() < deadline:
            time.sleep(0.05)
        started = time.time_ns()
        with memotag.Store(src) as s:
            report = s.backup(dest)
        finished = time.time_ns()
        time.sleep(0.3)
    finally:
        stop.write_text("")
        writer.wait(timeout=60)
    assert writer.returncode == 0
    assert report["mode"] == mode and report["results"] >= 20
    lines = [l.split() for l in acks.read_text().splitlines() if len(l.split()) == 2]
    before = {int(i) for i, at in lines if int(at) < started}
    assert any(int(at) > finished for _, at in lines), "the writer stopped before the backup ended"
    conn = sqlite3.connect(f"file:{dest}?mode=ro", uri=True)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    with memotag.Store(str(dest)) as copy:
        assert copy.mode == mode
        rows = copy.calls("sq")
        xs = {row["inputs"]["x"] for row in rows}
    assert before <= xs, f"missing {sorted(before - xs)[:10]}"


def test_backup_refuses_an_existing_destination_unless_overwrite(tmp_path, store):
    @store.memo
    def sq(x):
        return x * x
    sq(3)
    dest = tmp_path / "copy.memo"
    dest.write_bytes(b"keep me")
    with pytest.raises(memotag.MemotagError, match="already exists"):
        store.backup(dest)
    assert dest.read_bytes() == b"keep me"
    report = store.backup(dest, overwrite=True)
    assert report["results"] == 1 and report["dest"] == str(dest)
    with memotag.Store(str(dest)) as copy:
        assert [row["inputs"]["x"] for row in copy.calls("sq")] == [3]


def test_cp_of_a_closed_store_holds_every_result(tmp_path):
    import shutil
    src = str(tmp_path / "s.memo")
    code = f"""
        import memotag
        s = memotag.Store({src!r}, mode="local")
        @s.memo
        def sq(x):
            return x * x
        for i in range(300):
            sq(i)
    """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert not os.path.exists(src + "-wal"), "the last client to close left its write-ahead log"
    copy = str(tmp_path / "cp.memo")
    shutil.copyfile(src, copy)
    with memotag.Store(copy) as s:
        assert sorted(row["inputs"]["x"] for row in s.calls("sq")) == list(range(300))
