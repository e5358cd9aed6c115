"""memotag: a collaborative, SQLite-backed memoization store for notebooks.

Results of expensive calls live in one store file the whole team shares. Renaming a function or
an argument, adding an argument with a default, or starting a new ``version=`` never loses a
recorded result::

    import memotag

    store = memotag.Store("team.memo")

    @store.memo
    def simulate(n, seed=0):
        ...

    simulate(1000)          # computes and records
    simulate(1000)          # recorded: returns at once, in any process that opens the store
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import functools
import inspect
import json
import os
import sys
import warnings
import weakref
from typing import Any, Callable, Iterable, NamedTuple, Optional, Sequence

from . import _code, _errors, _memotag
from ._code import remote
from ._errors import (
    BatchNotStored,
    CodeChangedWarning,
    ConflictWarning,
    CorruptValue,
    IncompatibleSignature,
    MemotagError,
    Miss,
    NotAStore,
    ReadOnlyStore,
    RenamedWarning,
    ResultNotStoredWarning,
    SchemaConflict,
    StoreLocked,
    ValueNotReadable,
    ValueNotStorable,
    VersionError,
)

__version__ = _memotag.__version__

__all__ = [
    "Store",
    "remote",
    "Memo",
    "FunctionInfo",
    "MemotagError",
    "SchemaConflict",
    "IncompatibleSignature",
    "NotAStore",
    "ReadOnlyStore",
    "StoreLocked",
    "VersionError",
    "CorruptValue",
    "ValueNotStorable",
    "ValueNotReadable",
    "BatchNotStored",
    "Miss",
    "RenamedWarning",
    "ConflictWarning",
    "CodeChangedWarning",
    "ResultNotStoredWarning",
]

Memo = _memotag.Memo

# A forked child must never use (or close) its parent's SQLite connection.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_memotag._after_fork_in_child)

_CODE_MODES = ("warn", "strict", "ignore")

# Stores open when the interpreter exits may never be collected: close them then, so that the
# results buffered in their open batches are committed (as close() does), not silently lost.
_open_stores: "weakref.WeakSet[Store]" = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    for store in list(_open_stores):
        try:
            store.close()
        except BatchNotStored as e:
            sys.stderr.write(
                f"memotag: {store.path}: {e.not_stored} results buffered in open batches could "
                f"not be stored before exiting, so they are lost: {e.__cause__}\n"
            )


class FunctionInfo(NamedTuple):
    """One function version in a store."""

    name: str
    version: int
    tag: str
    inputs: tuple
    outputs: tuple
    n_calls: int


def _html_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], limit: int = 200) -> str:
    import html

    rows = list(rows)
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_short(c))}</td>" for c in row) + "</tr>" for row in rows[:limit]
    )
    more = f"<p>… {len(rows) - limit} more</p>" if len(rows) > limit else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def _short(value: Any, width: int = 80) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 1] + "…"


class FunctionList(list):
    """A list of :class:`FunctionInfo` that shows as a table in notebooks."""

    def _repr_html_(self) -> str:
        return _html_table(
            ["function", "version", "inputs", "outputs", "results"],
            [(f.name, f.version, ", ".join(f.inputs), ", ".join(f.outputs), f.n_calls) for f in self],
        )


class CallList(list):
    """A list of recorded results (dicts) that shows as a table in notebooks."""

    def _repr_html_(self) -> str:
        return _html_table(
            ["call", "version", "inputs", "outputs", "recorded", "by"],
            [
                (r["call_id"][:12], r["version"], r["inputs"], r["outputs"], r["created_at"], r["client"])
                for r in self
            ],
        )


def _time(ms: int) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc)


class Store(_memotag.Store):
    """A memotag store file, opened (or created) at ``path``.

    ``mode``: ``"auto"`` (the store's own mode; for a new store, ``"shared"`` on a network
    filesystem and ``"local"`` otherwise), ``"local"`` or ``"shared"``; asking for another mode
    than the store's raises. ``readonly=True`` never writes and never creates a store.
    ``lock_lease`` (seconds, shared mode) is how long a lock holder may go silent before others
    break its lock; ``busy_timeout`` (seconds) how long to wait for other writers. Ctrl-C ends a
    wait with ``KeyboardInterrupt``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The core opened the store (in __new__).
        _open_stores.add(self)

    # -- the decorator ------------------------------------------------------------------------

    def memo(
        self,
        func: Optional[Callable] = None,
        *,
        name: Optional[str] = None,
        version: int = 1,
        outputs: Sequence[str] = ("out",),
        deps: Iterable[Any] = (),
        ignore: Iterable[str] = (),
        policy: Optional[str] = None,
        code: str = "warn",
        new: bool = False,
    ):
        """Memoize a function in this store: ``@store.memo`` or ``@store.memo(version=2, ...)``.

        Decoration binds the function to the store (creating it, its version, or inputs for new
        parameters that have defaults), so incompatible changes raise here, not at call time.
        Every result is recorded with the code it ran; a store that cannot hold code records
        (one not migrated to format generation 5) raises :class:`VersionError` here, before
        anything is written: run ``memotag migrate PATH`` once.
        """
        if code not in _CODE_MODES:
            raise ValueError(f"code= must be one of {_CODE_MODES}, not {code!r}")
        if policy is not None and policy not in ("exact", "semver-patch", "newer-ok", "any"):
            raise ValueError(f"unknown policy {policy!r}")
        outputs = (outputs,) if isinstance(outputs, str) else tuple(outputs)
        ignore = frozenset(ignore)
        deps = tuple(deps)

        def decorate(f: Callable, stacklevel: int = 2) -> Memo:
            if inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f):
                raise TypeError(f"{f.__qualname__}: async functions cannot be memoized")
            if not inspect.isfunction(f):
                raise TypeError(f"@store.memo decorates plain functions, not {type(f).__name__}")
            sig = inspect.signature(f)
            params = []
            for p in sig.parameters.values():
                if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                    raise TypeError(
                        f"{f.__qualname__}: *args and **kwargs cannot be memoized; name every argument"
                    )
                if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_ONLY:
                    raise TypeError(
                        f"{f.__qualname__}: parameter {p.name!r} must be positional-or-keyword"
                    )
                params.append((p.name, p.default is not p.empty, None if p.default is p.empty else p.default, p.name in ignore))
            if params and params[0][0] in ("self", "cls") and "." in f.__qualname__:
                raise TypeError(f"{f.__qualname__}: methods cannot be memoized; memoize a plain function")
            unknown = ignore - {p[0] for p in params}
            if unknown:
                raise TypeError(f"{f.__qualname__}: ignore= names unknown parameters {sorted(unknown)}")
            capture = functools.partial(_code.capture, deps=deps)
            m, notices = self._memo(
                f, name or f.__name__, version, params, list(outputs), new, capture, code, policy
            )
            for category, message in notices:
                warnings.warn(message, getattr(_errors, category), stacklevel=stacklevel)
            functools.update_wrapper(m, f)
            m.__dict__["deps"] = deps
            m.__dict__["code"] = code
            m.__dict__["policy"] = policy
            m.__dict__["calls"] = functools.partial(self.calls, m.name, version=m.version)
            return m

        return decorate(func, stacklevel=3) if func is not None else decorate

    # -- backup -------------------------------------------------------------------------------

    def backup(self, dest: Any, overwrite: bool = False) -> dict:
        """Copy the store, as it is now, to a new store at ``dest`` while it is in use.

        SQLite's online backup of one consistent view (local mode: a read snapshot, writers go
        on; shared mode: under the store's lock), with the value files it references, written
        beside ``dest`` and renamed into place only when complete: ``dest`` is never half
        written. The copy has the same mode and store id. Results still buffered in open
        batches are not committed, so not copied. An existing ``dest`` raises
        :class:`MemotagError` unless ``overwrite=True``. Returns ``{"dest", "mode", "results",
        "values", "value_files", "bytes", "seconds"}``.
        """
        return super().backup(os.fspath(dest), overwrite)

    # -- queries ------------------------------------------------------------------------------

    def functions(self) -> list:
        """One :class:`FunctionInfo` per function version."""
        return FunctionList(
            FunctionInfo(name, version, tag, tuple(inputs), tuple(outputs), n)
            for name, version, tag, inputs, outputs, n in self._functions()
        )

    def calls(self, name: str, version: Optional[int] = None, where: Optional[dict] = None,
              as_frame: bool = False, limit: Optional[int] = None):
        """Every recorded result of ``name`` (all versions, or one), canonical outputs.

        ``where={"x": 1}`` keeps results whose input ``x`` is 1. ``as_frame=True`` returns a
        pandas DataFrame with one column per input and output.
        """
        rows = self._calls(name, version, where, limit)
        codes: dict = {}
        for row in rows:
            row["created_at"] = _time(row["created_at"])
            code_id = row["code"]
            if code_id not in codes:
                text = self._code_record(code_id)
                codes[code_id] = json.loads(text) if text else None
            row["code"] = codes[code_id]
        if not as_frame:
            return CallList(rows)
        import pandas as pd

        flat = []
        for row in rows:
            item = {"call_id": row["call_id"], "version": row["version"]}
            item.update({f"{k}": v for k, v in row["inputs"].items()})
            item.update({f"{k}": v for k, v in row["outputs"].items()})
            item["code"] = (row["code"] or {}).get("own")
            item["created_at"] = row["created_at"]
            item["client"] = row["client"]
            flat.append(item)
        return pd.DataFrame(flat)

    def schema_log(self, since: int = 0) -> list:
        """The schema log after ``since``: dicts with seq, kind, details, client, time."""
        return [
            {"seq": seq, "kind": kind, "details": json.loads(change), "client": client, "time": _time(ms)}
            for seq, kind, change, client, ms in self._schema_log(since)
        ]

    def conflicts(self, name: Optional[str] = None) -> list:
        """Results recorded again with other outputs (the first ones stay canonical)."""
        rows = self._conflicts(name)
        for row in rows:
            row["created_at"] = _time(row["created_at"])
        return rows

    def packages(self) -> dict:
        """Libraries and versions seen in recorded code: ``{library: [versions]}``."""
        out: dict = {}
        for library, version, _declared, _results in self._packages():
            out.setdefault(library, []).append(version)
        return out

    @contextlib.contextmanager
    def batch(self):
        """Buffer this thread's results (visible to this thread through this store) and commit
        them together at the end (or every 1,000); nothing is locked while your code runs. An
        exception drops the batch's results that are not committed yet.

        A batch belongs to the thread that opened it: other threads using the store record at
        once (or in their own batches) and do not see its results before it commits.
        ``close()`` commits every open batch's results first."""
        self.begin_batch()
        try:
            yield self
        except BaseException:
            self.abort_batch()
            raise
        else:
            self.commit_batch()

    # -- notebook and context-manager niceties ------------------------------------------------

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return f"<memotag.Store {self.path!r} (closed)>"
        return f"<memotag.Store {self.path!r} mode={self.mode}{' readonly' if self.readonly else ''}>"

    def _repr_html_(self) -> str:
        import html

        if self.closed:
            return f"<p>memotag store <code>{html.escape(self.path)}</code> (closed)</p>"
        return (
            f"<p>memotag store <code>{html.escape(self.path)}</code> ({self.mode})</p>"
            + self.functions()._repr_html_()
        )
