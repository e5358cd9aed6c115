import os
import subprocess
import sys
import textwrap

import pytest

import memotag


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "team.memo")


@pytest.fixture
def store(path):
    with memotag.Store(path) as s:
        yield s


def run_python(code: str, env: dict | None = None, check: bool = True, timeout: float = 120):
    """Runs code in a fresh Python process (a real, separate client)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
