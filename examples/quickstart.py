"""memotag quickstart: memoize a real computation into ./demo.memo and look at it.

Run it twice (``make demo`` does): the first run computes, the second finds every result in the
store file — as would a colleague's notebook opening the same file.
"""

import random
import sys
import time
import warnings

import memotag

PATH = sys.argv[1] if len(sys.argv) > 1 else "demo.memo"
store = memotag.Store(PATH)
print(f"store: {store!r}\n")


def timed(label, fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    elapsed = time.perf_counter() - start
    unit = f"{elapsed * 1e6:8.1f} µs" if elapsed < 0.01 else f"{elapsed * 1e3:8.1f} ms"
    print(f"  {label:<34} -> {value!r:<24} {unit}")
    return value


# 1. A real computation: estimate pi by Monte Carlo with a seeded generator.
@store.memo
def estimate_pi(samples, seed):
    rng = random.Random(seed)
    inside = sum(1 for _ in range(samples) if rng.random() ** 2 + rng.random() ** 2 <= 1.0)
    return 4 * inside / samples


print("1. first calls compute (or, on a second run, come from the file):")
for seed in range(3):
    timed(f"estimate_pi(300_000, seed={seed})", estimate_pi, 300_000, seed)

print("\n2. the same calls again are hits:")
for seed in range(3):
    timed(f"estimate_pi(300_000, seed={seed})", estimate_pi, 300_000, seed)

# 2. A colleague renames the function in the store. Results keep their tags, so nothing is lost;
#    old code that still says `estimate_pi` binds to the renamed function with a warning.
store.rename_function("estimate_pi", "monte_carlo_pi")


@store.memo
def monte_carlo_pi(samples, seed):
    rng = random.Random(seed)
    inside = sum(1 for _ in range(samples) if rng.random() ** 2 + rng.random() ** 2 <= 1.0)
    return 4 * inside / samples


print("\n3. after renaming to monte_carlo_pi, still hits:")
timed("monte_carlo_pi(300_000, seed=0)", monte_carlo_pi, 300_000, 0)


# 3. Someone adds an argument with a default. Old results stand for the default.
@store.memo
def monte_carlo_pi(samples, seed, radius=1.0):
    rng = random.Random(seed)
    r2 = radius * radius
    inside = sum(
        1 for _ in range(samples) if (rng.random() * radius) ** 2 + (rng.random() * radius) ** 2 <= r2
    )
    return 4 * inside / samples


print("\n4. with a new argument radius=1.0, old results are hits for the default:")
timed("monte_carlo_pi(300_000, 1)", monte_carlo_pi, 300_000, 1)
timed("monte_carlo_pi(300_000, 1, radius=2.0)", monte_carlo_pi, 300_000, 1, radius=2.0)

# 4. Old code, still calling it estimate_pi, is a stale client: it binds by tag and hits.
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")

    @store.memo
    def estimate_pi(samples, seed):
        raise RuntimeError("never runs: the result is recorded")

print("\n5. old code under the old name binds to the renamed function:")
print(f"  warning: {caught[0].message}")
timed("estimate_pi(300_000, seed=2)", estimate_pi, 300_000, 2)

print("\n6. what the store holds:")
for info in store.functions():
    print(f"  {info.name} v{info.version}  inputs={info.inputs} outputs={info.outputs} results={info.n_calls}")
print()
for row in store.calls("monte_carlo_pi"):
    print(f"  {row['call_id'][:12]}  {row['inputs']}  ->  {row['outputs']}")
print("\n  schema log:")
for entry in store.schema_log():
    print(f"  #{entry['seq']} {entry['kind']:<16} by {entry['client']}")
store.close()
