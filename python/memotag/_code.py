"""Code capture: what code a memoized function runs, as a code record the store keeps.

- The function's own source is hashed over a normal form built from tokens (not ``ast.dump``,
  whose shape changes between Python versions): comments, formatting, docstrings, decorators and
  the function's own name do not count, and parameter names are replaced by their input tags, so
  renaming the function or an input keeps even strict hits.
- Helpers: user functions and classes the function references through its globals and closures,
  recursively, and module-level constants of simple types (by value).
- Library refs: installed packages the function references (detected: recorded, never gating),
  and declared dependencies (``deps=`` and ``@memotag.remote``), which the reader's policy gates.

Nothing here runs on the hot path except :func:`changed`, which compares object identities.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import importlib.metadata
import inspect
import io
import json
import sys
import sysconfig
import textwrap
import tokenize
import types
from typing import Any, Callable, Dict, List, Optional, Tuple

_SIMPLE = (int, float, complex, str, bytes, bool, type(None))
_STDLIB = {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]}


def remote(library: str, version: Optional[str] = None):
    """Marks user code that belongs to a library version (nnsight-style): a function or class so
    marked is a *declared* dependency of every memoized function that uses it, gated by the
    reader's policy. ``version=None`` reads the installed distribution's version."""

    def mark(obj):
        v = version if version is not None else _dist_version(library)
        obj.__memotag_remote__ = {"library": library, "version": v}
        return obj

    return mark


def _hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


# ---- the normal form -----------------------------------------------------------------------------

_SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}
_FSTRING_START = getattr(tokenize, "FSTRING_START", None)
_FSTRING_END = getattr(tokenize, "FSTRING_END", None)


def normal_form(source: str, own_name: Optional[str] = None, renames: Optional[Dict[str, str]] = None) -> str:
    """The token normal form of a function or class definition's source.

    ``own_name``: the defined name, replaced by a placeholder. ``renames``: names replaced by
    stable stand-ins (parameter name → input tag)."""
    source = textwrap.dedent(source)
    renames = renames or {}
    docstrings = _docstring_starts(source)
    lines = source.splitlines(keepends=True)
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    # Start at the definition itself: decorators do not count.
    start = 0
    for i, tok in enumerate(tokens):
        if tok.type == tokenize.NAME and tok.string in ("def", "class", "async"):
            start = i
            break
    out: List[str] = []
    i = start
    renamed_own = False
    depth = 0
    parens = 0
    in_header = True  # inside the outermost `def ...:` line, where parameters are declared
    while i < len(tokens):
        tok = tokens[i]
        if tok.type == tokenize.OP:
            if tok.string in "([{":
                parens += 1
            elif tok.string in ")]}":
                parens -= 1
            elif tok.string == ":" and parens == 0 and in_header:
                in_header = False
        if tok.type in _SKIP:
            i += 1
            continue
        if _FSTRING_START is not None and tok.type == _FSTRING_START:
            # Python >= 3.12 splits f-strings into tokens; earlier versions give one STRING.
            # Use the exact source text of the whole f-string either way.
            nest, j = 0, i
            while j < len(tokens):
                if tokens[j].type == _FSTRING_START:
                    nest += 1
                elif tokens[j].type == _FSTRING_END:
                    nest -= 1
                    if nest == 0:
                        break
                j += 1
            out.append(_slice(lines, tok.start, tokens[j].end))
            i = j + 1
            continue
        if tok.type == tokenize.STRING:
            if tok.start in docstrings:
                i += 1
                if i < len(tokens) and tokens[i].type == tokenize.NEWLINE:
                    i += 1
                continue
            out.append(_normal_string(tok.string))
        elif tok.type == tokenize.NAME:
            if not renamed_own and own_name is not None and tok.string == own_name and out and out[-1] in ("def", "class"):
                out.append("<self>")
                renamed_own = True
            elif tok.string in renames and _is_reference(tokens, i, out, in_header, parens):
                out.append(renames[tok.string])
            else:
                out.append(tok.string)
        elif tok.type == tokenize.NEWLINE:
            out.append("<nl>")
        elif tok.type == tokenize.INDENT:
            depth += 1
            out.append("<in>")
        elif tok.type == tokenize.DEDENT:
            depth -= 1
            out.append("<de>")
        else:
            out.append(tok.string)
        i += 1
    while out and out[-1] in ("<nl>", "<de>"):
        out.pop()
    return " ".join(out)


def _is_reference(tokens, i: int, out: List[str], in_header: bool, parens: int) -> bool:
    """Whether the NAME token at ``i`` names a variable (a parameter to rename), rather than an
    attribute (``obj.name``) or a keyword argument (``call(name=...)``)."""
    if out and out[-1] == ".":
        return False
    if in_header:
        return True
    j = i + 1
    while j < len(tokens) and tokens[j].type in (tokenize.NL, tokenize.COMMENT):
        j += 1
    is_keyword = j < len(tokens) and tokens[j].type == tokenize.OP and tokens[j].string == "=" and parens > 0
    return not is_keyword


def _slice(lines: List[str], start: Tuple[int, int], end: Tuple[int, int]) -> str:
    (sl, sc), (el, ec) = start, end
    if sl == el:
        return lines[sl - 1][sc:ec]
    parts = [lines[sl - 1][sc:]] + lines[sl:el - 1] + [lines[el - 1][:ec]]
    return "".join(parts)


def _normal_string(text: str) -> str:
    """A string literal in one spelling ('a' and "a" are the same literal)."""
    try:
        return repr(ast.literal_eval(text))
    except Exception:
        return text


def _docstring_starts(source: str) -> set:
    """(line, col) of every docstring token in the source."""
    starts = set()
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return starts
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
                starts.add((body[0].value.lineno, body[0].value.col_offset))
    return starts


# ---- sources of functions and classes ------------------------------------------------------------

def _object_hash(obj: Any) -> Tuple[str, str, List[str]]:
    """(hash, text to store, notes) of a helper function or class."""
    name = getattr(obj, "__name__", None)
    try:
        source = inspect.getsource(obj)
        return _hash(normal_form(source, own_name=name)), textwrap.dedent(source), []
    except (OSError, TypeError):
        pass
    if isinstance(obj, type):
        # Classes defined in notebook cells have no readable source on Python <= 3.12: hash the
        # sources of their methods instead, and say so in the record.
        parts = []
        for member_name, member in sorted(vars(obj).items()):
            fn = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
            if inspect.isfunction(fn):
                try:
                    parts.append(textwrap.dedent(inspect.getsource(fn)))
                except (OSError, TypeError):
                    parts.append(f"# {member_name}: no source\n")
            elif isinstance(member, _SIMPLE) and not member_name.startswith("__"):
                parts.append(f"{member_name} = {member!r}\n")
        bases = ", ".join(b.__qualname__ for b in obj.__bases__)
        text = f"class {obj.__qualname__}({bases}):  # rebuilt from its methods\n" + "".join(parts)
        normal = " | ".join([f"bases {bases}"] + [_safe_normal(p) for p in parts])
        note = f"class {obj.__qualname__}: source unavailable, hashed the sources of its methods"
        return _hash(normal), text, [note]
    code = getattr(obj, "__code__", None)
    if code is not None:
        text = f"<no source: {obj.__qualname__}; hashed its bytecode>"
        return _hash(_code_fingerprint(code)), text, [f"{obj.__qualname__}: source unavailable, hashed its bytecode"]
    text = f"<no source: {getattr(obj, '__qualname__', repr(obj))}>"
    return _hash(text), text, [f"{getattr(obj, '__qualname__', obj)!s}: source unavailable"]


def _code_fingerprint(code: types.CodeType) -> str:
    """A stand-in for source that is not available: the bytecode, constants and names,
    recursively (stable for one Python version, which is all a missing source allows)."""
    parts = [code.co_code.hex(), repr(code.co_names), repr(code.co_varnames[: code.co_argcount])]
    for const in code.co_consts:
        parts.append(_code_fingerprint(const) if isinstance(const, types.CodeType) else repr(const))
    return "|".join(parts)


def _safe_normal(text: str) -> str:
    try:
        return normal_form(text)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return text


# ---- where an object comes from ------------------------------------------------------------------

_DISTS: Optional[Dict[str, List[str]]] = None


def _dist_of(module_name: str) -> Optional[str]:
    global _DISTS
    if _DISTS is None:
        try:
            _DISTS = importlib.metadata.packages_distributions()
        except AttributeError:  # Python 3.9
            _DISTS = {}
    top = module_name.split(".")[0]
    dists = _DISTS.get(top)
    return dists[0] if dists else None


def _dist_version(name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _origin(module_name: Optional[str]) -> Tuple[str, Optional[str], Optional[str]]:
    """('user' | 'library' | 'stdlib', library name, version) for a module."""
    if not module_name or module_name == "__main__":
        return "user", None, None
    if module_name in sys.builtin_module_names:
        return "stdlib", "python", sys.version.split()[0]
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    dist = _dist_of(module_name)
    if dist is not None:
        return "library", dist, _dist_version(dist)
    if path is None:
        return "user", None, None
    if any(path.startswith(p) for p in _STDLIB) and "site-packages" not in path:
        return "stdlib", "python", sys.version.split()[0]
    if "site-packages" in path or "dist-packages" in path:
        top = module_name.split(".")[0]
        return "library", top, _dist_version(top)
    return "user", None, None


# ---- the walk ------------------------------------------------------------------------------------

def _code_names(code: types.CodeType) -> List[str]:
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.extend(_code_names(const))
    return names


def _unwrap(obj: Any) -> Any:
    # Memoized functions reference their original function.
    wrapped = getattr(obj, "__wrapped__", None)
    if wrapped is not None and type(obj).__name__ == "Memo":
        return wrapped
    return obj


def _merge(hashes: set) -> str:
    """One hash for helpers that share a qualified name (in different modules)."""
    if len(hashes) == 1:
        return next(iter(hashes))
    return _hash("+".join(sorted(hashes)))


class Capture:
    """The result of capturing one function's code."""

    def __init__(self) -> None:
        self.user: Dict[str, set] = {}
        self.libraries: Dict[Tuple[str, str], dict] = {}
        self.notes: List[str] = []
        self.sources: Dict[str, str] = {}
        self.watch: List[Tuple[dict, str, Any]] = []
        self.seen: set = set()

    def record(self, own: str) -> dict:
        return {
            "own": own,
            "user": [{"name": n, "hash": _merge(hs)} for n, hs in sorted(self.user.items())],
            "libraries": sorted(self.libraries.values(), key=lambda l: (l["name"], l["library"])),
            "notes": sorted(set(self.notes)),
        }


def _library_ref(name: str, kind: str, library: str, version: Optional[str], source_hash: Optional[str], declared: bool) -> dict:
    return {"name": name, "kind": kind, "library": library, "version": version, "source_hash": source_hash, "declared": declared}


def _add_declared(cap: Capture, obj: Any) -> None:
    obj = _unwrap(obj)
    marker = getattr(obj, "__memotag_remote__", None)
    if isinstance(obj, types.ModuleType):
        dist = _dist_of(obj.__name__) or obj.__name__.split(".")[0]
        cap.libraries[(obj.__name__, dist)] = _library_ref(obj.__name__, "module", dist, _dist_version(dist), None, True)
        return
    kind = "class" if isinstance(obj, type) else "function"
    name = getattr(obj, "__qualname__", repr(obj))
    h, text, notes = _object_hash(obj)
    cap.notes.extend(notes)
    if marker is not None:
        cap.sources[h] = text
        cap.libraries[(name, marker["library"])] = _library_ref(name, kind, marker["library"], marker["version"], h, True)
        return
    origin, library, version = _origin(getattr(obj, "__module__", None))
    if origin == "user":
        raise TypeError(
            f"deps=: {name} is user code, not a library; mark it with @memotag.remote(library=...) "
            "or leave it out (helpers are captured automatically)"
        )
    cap.libraries[(name, library)] = _library_ref(name, kind, library, version, None, True)


_MISSING = object()


def _walk(cap: Capture, fn: Callable, globals_: dict, depth: int = 0) -> None:
    code = getattr(fn, "__code__", None)
    if code is None or depth > 50:
        return
    names = list(dict.fromkeys(_code_names(code)))
    refs: List[Tuple[str, Any, Optional[dict]]] = []
    for name in names:
        obj = globals_.get(name, _MISSING)
        if obj is _MISSING:
            if not hasattr(builtins, name):
                # Not defined yet (a helper below the decorator, or in a later cell): watch for
                # it, so that defining it is noticed on the next call.
                cap.watch.append((globals_, name, None))
            continue
        refs.append((name, obj, globals_))
    if fn.__closure__:
        for name, cell in zip(code.co_freevars, fn.__closure__):
            try:
                refs.append((name, cell.cell_contents, None))
            except ValueError:  # empty cell
                pass
    for name, obj, holder in list(refs):
        if isinstance(obj, types.ModuleType) and _origin(obj.__name__)[0] == "user":
            # `helpers.pre(x)`: follow the attributes this code names on a user module.
            attrs = vars(obj)
            for attr in names:
                if attr in attrs and not isinstance(attrs[attr], types.ModuleType):
                    refs.append((attr, attrs[attr], attrs))
    for name, obj, holder in refs:
        if holder is not None:
            cap.watch.append((holder, name, obj))
        if id(obj) in cap.seen:
            continue
        cap.seen.add(id(obj))
        _reference(cap, name, obj, depth)


def _reference(cap: Capture, name: str, obj: Any, depth: int) -> None:
    obj = _unwrap(obj)
    if obj is builtins or getattr(builtins, name, None) is obj:
        return
    marker = getattr(obj, "__memotag_remote__", None)
    if marker is not None:
        _add_declared(cap, obj)
        return
    if isinstance(obj, types.ModuleType):
        origin, library, version = _origin(obj.__name__)
        if origin != "user":
            cap.libraries.setdefault((obj.__name__, library), _library_ref(obj.__name__, "module", library, version, None, False))
        return
    if isinstance(obj, _SIMPLE) or (isinstance(obj, (tuple, frozenset)) and all(isinstance(x, _SIMPLE) for x in obj)):
        text = f"{name} = {obj!r}"
        h = _hash(text)
        cap.user.setdefault(name, set()).add(h)
        cap.sources[h] = text
        return
    if inspect.isfunction(obj) or isinstance(obj, type):
        origin, library, version = _origin(getattr(obj, "__module__", None))
        qual = getattr(obj, "__qualname__", name)
        if origin != "user":
            kind = "class" if isinstance(obj, type) else "function"
            cap.libraries.setdefault((qual, library), _library_ref(qual, kind, library, version, None, False))
            return
        h, text, notes = _object_hash(obj)
        cap.user.setdefault(qual, set()).add(h)
        cap.sources[h] = text
        cap.notes.extend(notes)
        if inspect.isfunction(obj):
            _walk(cap, obj, obj.__globals__, depth + 1)
        else:
            for member in vars(obj).values():
                fn = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
                if inspect.isfunction(fn):
                    _walk(cap, fn, fn.__globals__, depth + 1)
        return
    # Other objects (instances, callables from C extensions): their type's origin, if a library.
    module = getattr(type(obj), "__module__", None)
    origin, library, version = _origin(module)
    if origin == "library":
        qual = type(obj).__qualname__
        cap.libraries.setdefault((qual, library), _library_ref(qual, "class", library, version, None, False))


def capture(func: Callable, renames: Dict[str, str], deps: Tuple[Any, ...] = ()) -> Tuple[str, Dict[str, str], List[Tuple[dict, str, Any]]]:
    """Captures ``func``'s code: (code record as JSON, {source hash: text}, watch list of
    (globals dict, name, the object it held or None if it was not defined))."""
    cap = Capture()
    try:
        source = inspect.getsource(func)
        own_text = textwrap.dedent(source)
        own = _hash(normal_form(source, own_name=func.__name__, renames=renames))
    except (OSError, TypeError):
        own_text = f"<no source: {func.__qualname__}; hashed its bytecode>"
        own = _hash(_code_fingerprint(func.__code__))
        cap.notes.append(f"{func.__qualname__}: source unavailable, hashed its bytecode")
    cap.sources[own] = own_text
    cap.seen.add(id(func))
    _walk(cap, func, func.__globals__)
    for dep in deps:
        _add_declared(cap, dep)
    return json.dumps(cap.record(own)), cap.sources, cap.watch


def source_hash(func: Callable, renames: Optional[Dict[str, str]] = None) -> str:
    """The own-source hash memotag records for ``func`` (for tests and for checking by hand)."""
    return _hash(normal_form(inspect.getsource(func), own_name=func.__name__, renames=renames or {}))
