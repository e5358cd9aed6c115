"""The decorator as a notebook user meets it: hits, misses, renames, new arguments, versions."""

import pickle
import warnings

import pytest

import memotag


def counting(store, **kw):
    calls = []

    @store.memo(**kw)
    def f(x, y=1):
        calls.append((x, y))
        return x * 10 + y

    return f, calls


def test_hits_and_misses_are_counted(store):
    f, calls = counting(store)
    assert f(1) == 11
    assert f(1) == 11
    assert f(1, 1) == 11
    assert f(x=1, y=1) == 11
    assert f(2, y=3) == 23
    assert calls == [(1, 1), (2, 3)]
    assert f.name == "f" and f.version == 1 and len(f.tag) == 36


def test_lookup_never_computes_and_miss_is_a_key_error(store):
    f, calls = counting(store)
    with pytest.raises(memotag.Miss):
        f.lookup(5)
    with pytest.raises(KeyError):
        f.lookup(5)
    f(5)
    assert f.lookup(5) == 51
    assert calls == [(5, 1)]


def test_binding_errors_are_type_errors(store):
    f, _ = counting(store)
    with pytest.raises(TypeError, match="missing required argument"):
        f()
    with pytest.raises(TypeError, match="multiple values"):
        f(1, x=2)
    with pytest.raises(TypeError, match="unexpected keyword"):
        f(1, z=2)
    with pytest.raises(TypeError, match="takes 2 arguments"):
        f(1, 2, 3)


def test_unsupported_functions_are_refused(store):
    with pytest.raises(TypeError, match=r"\*args"):
        @store.memo
        def a(*xs):
            return 1

    with pytest.raises(TypeError, match=r"\*args"):
        @store.memo
        def b(**kw):
            return 1

    with pytest.raises(TypeError, match="async"):
        @store.memo
        async def c(x):
            return 1

    with pytest.raises(TypeError, match="methods"):
        class K:
            @store.memo
            def m(self, x):
                return x


def test_an_added_parameter_with_a_default_keeps_old_results(path):
    with memotag.Store(path) as store:
        @store.memo
        def f(x):
            return x * 2

        assert f(4) == 8

    calls = []
    with memotag.Store(path) as store:
        @store.memo
        def f(x, scale=1):
            calls.append(x)
            return x * 2 * scale

        assert f(4) == 8
        assert f(4, scale=1) == 8
        assert calls == []
        assert f(4, scale=3) == 24
        assert calls == [4]


def test_a_renamed_function_warns_and_still_hits(path):
    with memotag.Store(path) as store:
        @store.memo
        def train(x):
            return x + 1

        train(1)
        store.rename_function("train", "fit")

    calls = []
    with memotag.Store(path) as store:
        with pytest.warns(memotag.RenamedWarning, match="renamed to `fit`"):
            @store.memo
            def train(x):
                calls.append(x)
                return x + 1

        assert train(1) == 2
        assert calls == []
        assert train.name == "fit"

        @store.memo
        def fit(x):
            calls.append(x)
            return x + 1

        assert fit(1) == 2 and calls == []


def test_a_renamed_input_warns_and_still_hits(path):
    with memotag.Store(path) as store:
        @store.memo
        def f(x, y=0):
            return x - y

        f(5, 2)
        store.rename_input("f", "x", "value")
        calls = []
        with pytest.warns(memotag.RenamedWarning, match="`x`.*renamed to `value`"):
            @store.memo
            def f(x, y=0):
                calls.append(x)
                return x - y

        assert f(5, 2) == 3 and calls == []

        @store.memo
        def f(value, y=0):
            calls.append(value)
            return value - y

        assert f(value=5, y=2) == 3 and calls == []


def test_a_freed_name_can_be_taken_explicitly(store):
    @store.memo
    def f(x):
        return 1

    f(0)
    store.rename_function("f", "g")

    @store.memo(new=True)
    def f(x):
        return 2

    assert f(0) == 2
    assert {(i.name, i.n_calls) for i in store.functions()} == {("g", 1), ("f", 1)}


def test_incompatible_signatures_raise_and_suggest_a_version(store):
    @store.memo
    def f(x, y=1):
        return x

    f(1)
    for bad in [
        "def f(x, y=1, z):\n    return x",  # not valid Python; skip
    ]:
        pass

    with pytest.raises(memotag.IncompatibleSignature, match="version="):
        @store.memo
        def f(x, z, y=1):
            return x

    with pytest.raises(memotag.IncompatibleSignature, match="changed its default"):
        @store.memo
        def f(x, y=2):
            return x

    with pytest.raises(memotag.IncompatibleSignature, match="dropped its default"):
        @store.memo
        def f(x, y):
            return x

    with pytest.raises(memotag.IncompatibleSignature, match="outputs"):
        @store.memo(outputs=("a", "b"))
        def f(x, y=1):
            return x, x

    with pytest.raises(memotag.IncompatibleSignature, match="no default"):
        @store.memo
        def f(y=1):
            return 0

    # A parameter the code dropped that had a default is fine: a stale client.
    @store.memo
    def f(x):
        return x

    assert f(1) == 1


def test_explicit_versions_are_separate_and_old_ones_stay(store):
    @store.memo
    def f(x):
        return "v1"

    assert f(1) == "v1"

    @store.memo(version=2)
    def f(x, y):
        return "v2"

    assert f(1, 0) == "v2"
    assert [(i.version, i.n_calls) for i in store.functions()] == [(1, 1), (2, 1)]
    assert len(store.calls("f")) == 2
    assert [c["outputs"]["out"] for c in store.calls("f", version=1)] == ["v1"]


def test_several_outputs(store):
    @store.memo(name="stats", outputs=("mean", "n"))
    def compute(xs):
        return sum(xs) / len(xs), len(xs)

    assert compute((1, 2, 3)) == (2.0, 3)
    assert compute((1, 2, 3)) == (2.0, 3)
    row = store.calls("stats")[0]
    assert row["outputs"] == {"mean": 2.0, "n": 3}
    assert row["inputs"] == {"xs": (1, 2, 3)}

    @store.memo(name="bad", outputs=("a", "b"))
    def bad(x):
        return x

    with pytest.raises(TypeError, match="tuple of 2"):
        bad(1)


def test_ignored_parameters_do_not_count(store):
    calls = []

    @store.memo(ignore=("verbose",))
    def f(x, verbose=False):
        calls.append(verbose)
        return x

    f(1, verbose=True)
    f(1, verbose=False)
    assert calls == [True]
    assert store.functions()[0].inputs == ("x",)


def test_queries_and_frames(store):
    f, _ = counting(store)
    for i in range(5):
        f(i, y=i % 2)
    rows = store.calls("f", where={"y": 1})
    assert sorted(r["inputs"]["x"] for r in rows) == [1, 3]
    df = store.calls("f", as_frame=True)
    assert list(df.columns)[:4] == ["call_id", "version", "x", "y"]
    assert len(df) == 5
    assert len(f.calls()) == 5
    log = store.schema_log()
    assert log[0]["kind"] == "create_function" and log[0]["seq"] == 1
    assert "<table>" in store._repr_html_()
    assert "<td>f</td>" in store.functions()._repr_html_()
    assert "<table>" in store.calls("f")._repr_html_() and "x" in store.calls("f")._repr_html_()


def test_schema_operations_from_python(store):
    @store.memo
    def g(x):
        return x

    g(1)
    store.add_input("g", "w", default=0)
    store.add_input("g", "w", default=0)  # a retry is a no-op
    with pytest.raises(memotag.SchemaConflict):
        store.add_input("g", "w", default=1)
    with pytest.raises(memotag.SchemaConflict):
        store.rename_function("g", "g2") or store.rename_function("g2", "g2") or None
        @store.memo
        def other(x):
            return x
        store.rename_function("other", "g2")
    assert [e["kind"] for e in store.schema_log()] == [
        "create_function", "add_input", "rename_function", "create_function",
    ]


def test_memoized_functions_pickle_by_reference():
    import sys
    import types

    import tempfile, os
    d = tempfile.mkdtemp()
    mod = types.ModuleType("memo_pickle_mod")
    sys.modules["memo_pickle_mod"] = mod
    exec(
        "import memotag\n"
        f"store = memotag.Store({os.path.join(d, 'p.memo')!r})\n"
        "@store.memo\n"
        "def h(x):\n    return x + 1\n",
        mod.__dict__,
    )
    h2 = pickle.loads(pickle.dumps(mod.h))
    assert h2 is mod.h
    assert h2(1) == 2


def test_closed_store_refuses(path):
    store = memotag.Store(path)
    f, _ = counting(store)
    store.close()
    with pytest.raises(memotag.MemotagError, match="closed"):
        f(1)
    assert "closed" in repr(store)


def test_not_a_store_and_readonly(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(memotag.NotAStore):
        memotag.Store(str(text))
    assert text.read_text() == "hello"
    with pytest.raises(memotag.NotAStore):
        memotag.Store(str(tmp_path / "missing.memo"), readonly=True)
    path = str(tmp_path / "ro.memo")
    with memotag.Store(path) as s:
        @s.memo
        def f(x):
            return x
        f(1)
    with memotag.Store(path, readonly=True) as ro:
        @ro.memo
        def f(x):
            return x
        assert f(1) == 1
        with pytest.raises(memotag.ReadOnlyStore):
            f(2)
    with pytest.raises(memotag.MemotagError, match="mode"):
        memotag.Store(path, mode="shared")
