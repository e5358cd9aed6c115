"""Code capture: what makes a result a hit when code changes (SPEC §4)."""

import itertools
import json
import linecache
import textwrap
import warnings

import pytest

import memotag
from memotag import _code

_cells = itertools.count()


class Notebook:
    """Runs source like notebook cells: one shared namespace, each cell's source in linecache
    (as IPython does), so functions have readable source and classes do not (Python <= 3.12)."""

    def __init__(self, store):
        self.ns = {"__name__": "__main__", "store": store, "memotag": memotag}

    def run(self, src: str):
        name = f"<cell-{next(_cells)}>"
        src = textwrap.dedent(src)
        linecache.cache[name] = (len(src), None, src.splitlines(True), name)
        exec(compile(src, name, "exec"), self.ns)
        return self.ns


def calls_of(ns):
    return ns.setdefault("CALLS", [])


def run_f(nb, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        before = len(calls_of(nb.ns))
        value = nb.ns["f"](*args, **kwargs)
        computed = len(calls_of(nb.ns)) > before
    changed = [w for w in caught if issubclass(w.category, memotag.CodeChangedWarning)]
    return value, computed, changed


# ---- the normal form -------------------------------------------------------------------------

BASE = '''
@some.decorator(1)
def f(x, y=2):
    """Adds things."""
    # a comment
    total = x + y  # inline
    return total * 'k'
'''

SAME = [
    # docstring, comments, formatting, decorators
    '''
def f(x, y=2):
    total = x + y
    return total * "k"
''',
    '''
def f(x,
      y = 2):
    """Another docstring entirely."""

    total = x  +  y


    return total * 'k'   # different comment
''',
]


def test_docstrings_comments_formatting_and_decorators_do_not_count():
    base = _code.normal_form(BASE, own_name="f")
    for src in SAME:
        assert _code.normal_form(src, own_name="f") == base


def test_renaming_the_function_and_an_input_keeps_the_hash():
    base = _code.normal_form(BASE, own_name="f", renames={"x": "TAG-X", "y": "TAG-Y"})
    renamed = BASE.replace("def f(x", "def g(value").replace("x + y", "value + y")
    assert _code.normal_form(renamed, own_name="g", renames={"value": "TAG-X", "y": "TAG-Y"}) == base


def test_a_body_change_changes_the_hash():
    base = _code.normal_form(BASE, own_name="f")
    for changed in [BASE.replace("x + y", "x - y"), BASE.replace("'k'", "'j'"), BASE.replace("total *", "total +")]:
        assert _code.normal_form(changed, own_name="f") != base


def test_pinned_hashes_of_fixed_functions():
    # Changing the normal form changes every recorded hash: this must be a deliberate decision.
    sources = [
        "def f(x):\n    return x + 1\n",
        BASE,
        "def g(a, b=(1, 'x')):\n    '''doc'''\n    return [i * a for i in range(b[0])]\n",
        "def h(s):\n    return f'{s!r:>10}' + \"tail\"\n",
    ]
    got = [_code._hash(_code.normal_form(src, own_name=src.split("(")[0].split()[-1])) for src in sources]
    assert got == [
        "7f878e30dcb5410193d7b501ae3e05b8",
        "700ba5395bf2be0732da4627093e28eb",
        "19dec1acabe69aa8fb241d3bdf4f6b32",
        "251e6846df003dc5a6949a93f36e9e97",
    ]


# ---- through the store -----------------------------------------------------------------------


def test_body_change_warns_by_default_misses_under_strict_and_a_revert_hits(store):
    for mode in ("warn", "strict"):
        nb = Notebook(store)
        v1 = f"""
            @store.memo(name="body_{mode}", code="{mode}")
            def f(x):
                CALLS.append(x)
                return x * 2
        """
        nb.run("CALLS = []")
        nb.run(v1)
        assert run_f(nb, 3)[:2] == (6, True)
        nb.run(f"""
            @store.memo(name="body_{mode}", code="{mode}")
            def f(x):
                CALLS.append(x)
                return x * 2 + 0  # changed body, same results
        """)
        value, computed, changed = run_f(nb, 3)
        if mode == "warn":
            assert (value, computed) == (6, False)
            assert len(changed) == 1 and "own code" in str(changed[0].message) and "version=" in str(changed[0].message)
            assert run_f(nb, 3)[2] == [], "warned once per function and process"
        else:
            assert (value, computed) == (6, True)
            assert changed == []
        nb.run(v1)  # revert
        assert run_f(nb, 3)[:2] == (6, False)


@pytest.mark.parametrize("via", ["global helper", "closure", "constant"])
def test_helper_changes_warn_or_miss_and_a_notebook_redefinition_is_noticed(store, via):
    for mode in ("warn", "strict"):
        nb = Notebook(store)
        nb.run("CALLS = []")
        name = f"helper_{mode}_{via.replace(' ', '_')}"
        if via == "global helper":
            helper_v1, helper_v2 = "def helper(x):\n    return x + 1\n", "def helper(x):\n    return x + 1 + 0\n"
            body = "return helper(x)"
        elif via == "constant":
            helper_v1, helper_v2 = "OFFSET = 1\n", "OFFSET = 2\n"
            body = "return x + OFFSET"
        else:
            helper_v1, helper_v2 = "def helper(x):\n    return x + 1\n", "def helper(x):\n    return x + 1 + 0\n"
            body = "return inner(x)"
        decorated = f"""
@store.memo(name="{name}", code="{mode}")
def f(x):
    CALLS.append(x)
    {body}
"""
        if via == "closure":
            nb.run(helper_v1 + f"""
def make():
    inner = helper
    @store.memo(name="{name}", code="{mode}")
    def f(x):
        CALLS.append(x)
        {body}
    return f
f = make()
""")
        else:
            nb.run(helper_v1)
            nb.run(decorated)
        first = run_f(nb, 1)
        assert first[1] is True
        # A later cell redefines the helper; `f` itself is not redefined.
        nb.run(helper_v2)
        if via == "closure":
            nb.run("f = make()")
        value, computed, changed = run_f(nb, 1)
        if via == "constant":
            # The constant's value changed: the function really computes something else, and
            # the result says so (warn) or is recomputed (strict).
            pass
        if mode == "warn":
            assert computed is False and len(changed) == 1, (via, changed)
            assert "helper" in str(changed[0].message) or "OFFSET" in str(changed[0].message)
        else:
            assert computed is True and changed == []
        nb.run(helper_v1)
        if via == "closure":
            nb.run("f = make()")
        assert run_f(nb, 1)[1] is False, "reverted helper hits again"


def test_code_ignore_never_warns(store):
    nb = Notebook(store)
    nb.run("CALLS = []")
    nb.run('@store.memo(name="ign", code="ignore")\ndef f(x):\n    CALLS.append(x)\n    return x\n')
    run_f(nb, 1)
    nb.run('@store.memo(name="ign", code="ignore")\ndef f(x):\n    CALLS.append(x)\n    return x + 0\n')
    assert run_f(nb, 1)[1:] == (False, [])


REMOTE = """
@memotag.remote(library="nnterp", version="{version}")
class Transformer:
    def forward(self, x):
        return x * {factor}
"""


@pytest.mark.parametrize(
    "policy, version, factor, hit",
    [
        ("exact", "0.1.0", 2, True),
        ("exact", "0.1.1", 2, False),
        ("semver-patch", "0.1.1", 2, True),
        ("semver-patch", "0.2.0", 2, False),
        ("newer-ok", "0.2.0", 2, True),
        ("newer-ok", "0.0.9", 2, False),
        ("any", "0.0.9", 2, True),
        ("exact", "0.1.0", 3, False),  # same version, another source: a local patch
        ("semver-patch", "0.1.0", 3, False),
    ],
)
def test_remote_declared_dependencies_are_gated_by_policy(store, policy, version, factor, hit):
    nb = Notebook(store)
    nb.run("CALLS = []")
    nb.run(REMOTE.format(version="0.1.0", factor=2))
    user = f"""
@store.memo(name="uses_remote", policy="{policy}")
def f(x):
    CALLS.append(x)
    return Transformer().forward(x)
"""
    nb.run(user)
    run_f(nb, 5)
    nb.run(REMOTE.format(version=version, factor=factor))
    nb.run(user)
    value, computed, _ = run_f(nb, 5)
    assert value == 5 * factor
    assert computed is (not hit), (policy, version, factor)
    # The store lists the library and versions it has seen.
    assert "0.1.0" in store.packages()["nnterp"]


def test_a_miss_caused_only_by_code_says_so(store):
    nb = Notebook(store)
    nb.run("CALLS = []")
    nb.run(REMOTE.format(version="0.1.0", factor=2))
    nb.run('@store.memo(name="why")\ndef f(x):\n    CALLS.append(x)\n    return Transformer().forward(x)\n')
    run_f(nb, 1)
    nb.run(REMOTE.format(version="0.9.0", factor=2))
    nb.run('@store.memo(name="why")\ndef f(x):\n    CALLS.append(x)\n    return Transformer().forward(x)\n')
    with pytest.raises(memotag.Miss, match=r"1 result\(s\) exist under other code"):
        nb.ns["f"].lookup(1)


def test_deps_declare_library_versions(store):
    import numpy as np

    @store.memo(deps=(np,))
    def total(n):
        return int(np.arange(n).sum())

    total(4)
    record = json.loads(total.code_record)
    (numpy_ref,) = [l for l in record["libraries"] if l["library"] == "numpy"]
    assert numpy_ref["declared"] is True and numpy_ref["version"] == np.__version__
    with pytest.raises(TypeError, match="user code"):
        @store.memo(deps=(test_deps_declare_library_versions,))
        def bad(n):
            return n


def test_library_refs_are_recorded_for_numpy_when_a_function_uses_it(store):
    import numpy as np

    @store.memo
    def norm(n):
        return float(np.linalg.norm(np.ones(n)))

    norm(4)
    row = store.calls("norm")[0]
    libs = {l["library"]: l for l in row["code"]["libraries"]}
    assert libs["numpy"]["version"] == np.__version__
    assert libs["numpy"]["declared"] is False
    assert store.packages()["numpy"] == [np.__version__]


def test_a_class_without_readable_source_is_hashed_by_its_methods(store):
    nb = Notebook(store)
    nb.run("CALLS = []")
    nb.run("class Scaler:\n    def apply(self, x):\n        return x * 3\n")
    nb.run('@store.memo(name="cls")\ndef f(x):\n    CALLS.append(x)\n    return Scaler().apply(x)\n')
    assert run_f(nb, 2)[:2] == (6, True)
    record = json.loads(nb.ns["f"].code_record)
    assert any("Scaler" == u["name"] for u in record["user"])
    import sys
    if sys.version_info < (3, 13):
        assert any("source unavailable" in n for n in record["notes"])
    nb.run("class Scaler:\n    def apply(self, x):\n        return x * 3 + 0\n")
    assert run_f(nb, 2)[2], "a changed method is noticed"


def test_sources_go_to_the_store_once(store, path):
    @store.memo
    def f(x):
        return x

    for i in range(50):
        f(i)
    import sqlite3

    conn = sqlite3.connect(path)
    (n,) = conn.execute("SELECT count(*) FROM sources").fetchone()
    assert n == 1
    row = store.calls("f")[0]
    assert store.source(row["code"]["own"]).startswith("@store.memo")


# ---- edge cases of capture ---------------------------------------------------------------------


def test_parameter_renames_touch_names_not_attributes_or_keywords():
    a = _code.normal_form("def f(n):\n    return model(n=n) + cfg.n\n", own_name="f", renames={"n": "T"})
    b = _code.normal_form("def f(size):\n    return model(size=size) + cfg.size\n", own_name="f", renames={"size": "T"})
    assert a != b, "a different keyword and attribute are different code"
    c = _code.normal_form("def f(size):\n    return model(n=size) + cfg.n\n", own_name="f", renames={"size": "T"})
    assert a == c, "renaming only the parameter keeps the hash"


def strict_f(nb, name, body):
    nb.run("CALLS = []")
    nb.run(f'@store.memo(name="{name}", code="strict")\ndef f(x):\n    CALLS.append(x)\n    {body}\n')


def test_a_helper_defined_after_the_function_is_captured_when_it_appears(store):
    nb = Notebook(store)
    strict_f(nb, "late", "return helper(x)")
    nb.run("def helper(x):\n    return x + 1\n")
    assert run_f(nb, 1)[:2] == (2, True)
    assert run_f(nb, 1)[:2] == (2, False)
    nb.run("def helper(x):\n    return x + 100\n")
    assert run_f(nb, 1)[:2] == (101, True)


def test_redefinitions_between_calls_are_noticed_even_if_an_address_is_reused(store):
    nb = Notebook(store)
    nb.run("def helper(x):\n    return x + 1\n")
    strict_f(nb, "reuse", "return helper(x)")
    assert run_f(nb, 1)[:2] == (2, True)
    for k in range(2, 6):
        nb.run(f"def helper(x):\n    return x + {k}\n")
    assert run_f(nb, 1)[:2] == (6, True)


def test_helpers_in_user_modules_are_captured(store, tmp_path, monkeypatch):
    import importlib
    import sys

    mod = tmp_path / "myhelpers_mt.py"
    mod.write_text("def pre(x):\n    return x + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    helpers = importlib.import_module("myhelpers_mt")
    nb = Notebook(store)
    nb.ns["myhelpers_mt"] = helpers
    strict_f(nb, "usermod", "return myhelpers_mt.pre(x)")
    assert run_f(nb, 1)[:2] == (2, True)
    record = json.loads(nb.ns["f"].code_record)
    assert [u["name"] for u in record["user"]] == ["pre"]
    mod.write_text("def pre(x):\n    return x + 1000\n")
    linecache.checkcache(str(mod))
    importlib.reload(helpers)
    assert run_f(nb, 1)[:2] == (1001, True)
    sys.modules.pop("myhelpers_mt", None)


def test_helpers_sharing_a_name_in_two_modules_both_count(store, tmp_path, monkeypatch):
    import importlib

    (tmp_path / "qa_mt.py").write_text("def helper(x):\n    return x + 1\n")
    (tmp_path / "qb_mt.py").write_text("def helper(x):\n    return x + 10\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    qa, qb = importlib.import_module("qa_mt"), importlib.import_module("qb_mt")
    nb = Notebook(store)
    nb.ns.update(ha=qa.helper, hb=qb.helper)
    strict_f(nb, "twohelpers", "return ha(x) + hb(x)")
    assert run_f(nb, 1)[:2] == (13, True)
    (tmp_path / "qa_mt.py").write_text("def helper(x):\n    return x + 500\n")
    linecache.checkcache(str(tmp_path / "qa_mt.py"))
    importlib.reload(qa)
    nb.ns["ha"] = qa.helper
    assert run_f(nb, 1)[:2] == (512, True)


def test_functions_without_source_are_hashed_by_bytecode():
    ns1, ns2 = {}, {}
    exec("def helper(x):\n    return x + 1\n", ns1)
    exec("def helper(x):\n    return x + 100\n", ns2)
    h1 = _code._object_hash(ns1["helper"])
    h2 = _code._object_hash(ns2["helper"])
    assert h1[0] != h2[0]
    assert "bytecode" in h1[2][0]


def test_the_same_source_hashes_the_same_on_every_supported_python():
    import glob
    import os
    import shutil
    import subprocess

    here = os.path.dirname(__file__)
    code_py = os.path.join(here, "..", "memotag", "_code.py")
    probe = os.path.join(here, "hash_probe.py")
    pythons = {}
    for minor in range(9, 14):
        candidates = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/3.{minor}.*/bin/python")))
        candidates += [c for c in [shutil.which(f"python3.{minor}")] if c]
        for exe in candidates:
            # pyenv shims exist for versions that are not selected: keep only ones that run.
            ok = subprocess.run([exe, "-c", "pass"], capture_output=True, timeout=30).returncode == 0
            if ok:
                pythons[f"3.{minor}"] = exe
                break
    if len(pythons) < 2:
        pytest.skip(f"only {sorted(pythons)} installed: nothing to compare")
    results = {}
    for version, exe in pythons.items():
        out = subprocess.run([exe, probe, code_py], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, (version, out.stderr)
        results[version] = out.stdout.split()
    first = next(iter(results.values()))
    assert all(r == first for r in results.values()), results
    assert first[:4] == [
        "7f878e30dcb5410193d7b501ae3e05b8",
        "700ba5395bf2be0732da4627093e28eb",
        "19dec1acabe69aa8fb241d3bdf4f6b32",
        "251e6846df003dc5a6949a93f36e9e97",
    ]
    print("agreeing Pythons:", sorted(results))
