"""Prints the normal-form hashes of fixed sources, with only the standard library: run under
every supported Python by test_code.py to check they agree."""
import importlib.util
import sys
spec = importlib.util.spec_from_file_location("_code", sys.argv[1])
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
BASE = '''
@some.decorator(1)
def f(x, y=2):
    """Adds things."""
    # a comment
    total = x + y  # inline
    return total * 'k'
'''
sources = [
    "def f(x):\n    return x + 1\n",
    BASE,
    "def g(a, b=(1, 'x')):\n    '''doc'''\n    return [i * a for i in range(b[0])]\n",
    "def h(s):\n    return f'{s!r:>10}' + \"tail\"\n",
    "def k(n):\n    return f'{n:{width}} and {f\"{n}\"}' + cfg.n\n",
]
print(*[m._hash(m.normal_form(src, own_name=src.split('(')[0].split()[-1], renames={'n':'T'})) for src in sources])
