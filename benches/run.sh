#!/usr/bin/env bash
# Runs the Rust benches (criterion `store`, the writer processes, the disk usage example) and
# writes a summary of the SPEC §8 figures to <target>/bench/rust.json.
#
#   benches/run.sh                       sizes 10k, 100k, 1M; 3 s per measurement
#   MEMOTAG_BENCH_10M=1 benches/run.sh   adds 10M results (builds a ~1.5 GB store once)
#   MEMOTAG_CRITERION_ARGS="--warm-up-time 2 --measurement-time 10" benches/run.sh
#
# Data sets are kept under <target>/bench-data/ and reused. <target> is $CARGO_TARGET_DIR or
# ./target. Needs cargo and python3 (standard library only) for the summary.
set -euo pipefail

cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
criterion_args="${MEMOTAG_CRITERION_ARGS:---warm-up-time 1 --measurement-time 3 --sample-size 20}"
disk_n="${MEMOTAG_DISK_N:-100000}"

# Old results of benches not run this time must not leak into the summary.
rm -rf "$target/criterion"
mkdir -p "$target/bench"

# shellcheck disable=SC2086 # the arguments are meant to split
cargo bench --bench store -- $criterion_args
cargo bench --bench writers
cargo run --release --example disk_usage -- "$disk_n"

python3 - "$target" <<'PY'
import glob, json, os, platform, sys

target = sys.argv[1]
crit = os.path.join(target, "criterion")
bench = os.path.join(target, "bench")


def median_ns(*parts):
    path = os.path.join(crit, *parts, "new", "estimates.json")
    try:
        with open(path) as f:
            return json.load(f)["median"]["point_estimate"]
    except FileNotFoundError:
        return None


def ratio(a, b):
    return None if a is None or not b else a / b


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


sizes = sorted(int(os.path.basename(p)) for p in glob.glob(os.path.join(crit, "hit", "memotag", "*"))
               if os.path.basename(p).isdigit())

hit = {}
for n in sizes:
    m = median_ns("hit", "memotag", str(n))
    one = median_ns("hit", "bare_one_probe", str(n))
    two = median_ns("hit", "bare_two_probes", str(n))
    sql = median_ns("hit", "store_sql", str(n))
    hit[str(n)] = {
        "memotag_ns": m,
        "store_sql_ns": sql,
        "bare_two_probes_ns": two,
        "bare_one_probe_ns": one,
        "ratio_vs_bare_one_probe": ratio(m, one),
        "ratio_vs_bare_two_probes": ratio(m, two),
    }

miss = {}
for n in sizes:
    m = median_ns("miss", "memotag", str(n))
    one = median_ns("miss", "bare_one_probe", str(n))
    miss[str(n)] = {"memotag_ns": m, "bare_one_probe_ns": one, "ratio_vs_bare_one_probe": ratio(m, one)}

durable = median_ns("record", "durable_one")
batch = median_ns("record", "batch_1000")
bare_batch = median_ns("record", "bare_batch_1000")
record = {
    "durable_one_ns": durable,
    "durable_one_per_second": 1e9 / durable if durable else None,
    "batch_1000_ns": batch,
    "batch_results_per_second": 1000 * 1e9 / batch if batch else None,
    "bare_batch_rows_per_second": 1000 * 1e9 / bare_batch if bare_batch else None,
}

scaling = {}
if sizes and sizes[0] == 10_000:
    for n in sizes[1:]:
        scaling[f"{n}_vs_10000"] = {
            "memotag": ratio(hit[str(n)]["memotag_ns"], hit["10000"]["memotag_ns"]),
            "bare_one_probe": ratio(hit[str(n)]["bare_one_probe_ns"], hit["10000"]["bare_one_probe_ns"]),
        }


def load(name):
    try:
        with open(os.path.join(bench, name)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


writers = load("writers.json")
disk = load("disk.json")

largest = str(sizes[-1]) if sizes else None
worst_hit = max((v["ratio_vs_bare_one_probe"] for v in hit.values() if v["ratio_vs_bare_one_probe"]), default=None)
targets = {
    "hit_within_2x_of_bare_one_probe (worst size)": {"value": worst_hit, "target": 2.0,
                                                     "met": worst_hit is not None and worst_hit <= 2.0},
    "batched_record_per_second": {"value": record["batch_results_per_second"], "target": 100_000,
                                  "met": (record["batch_results_per_second"] or 0) >= 100_000},
    f"lookup_{largest}_vs_10000": {
        "value": scaling.get(f"{largest}_vs_10000", {}).get("memotag"), "target": 2.0,
        "met": (scaling.get(f"{largest}_vs_10000", {}).get("memotag") or 99) <= 2.0},
    "bytes_per_small_result": {"value": disk and disk["memotag_bytes_per_result"], "target": 250,
                               "met": bool(disk) and disk["memotag_bytes_per_result"] <= 250},
}

summary = {
    "machine": {"cpus": os.cpu_count(), "cpu": cpu_model(), "system": platform.platform()},
    "hit": hit,
    "miss": miss,
    "record": record,
    "schema_change": {"add_input_ns": median_ns("schema_change", "add_input")},
    "lookup_scaling": scaling,
    "writers": writers and writers["writers"],
    "disk": disk,
    "targets": targets,
}
out = os.path.join(bench, "rust.json")
with open(out, "w") as f:
    json.dump(summary, f, indent=2)


def us(ns):
    return "-" if ns is None else f"{ns / 1000:.2f} µs"


def x(r):
    return "-" if r is None else f"{r:.2f}x"


print()
print(f"{'hit, median':<12} {'memotag':>11} {'store SQL':>11} {'bare 2-probe':>13} {'bare 1-probe':>13} {'vs 1-probe':>10} {'vs 2-probe':>10}")
for n, v in hit.items():
    print(f"{n:<12} {us(v['memotag_ns']):>11} {us(v['store_sql_ns']):>11} {us(v['bare_two_probes_ns']):>13} "
          f"{us(v['bare_one_probe_ns']):>13} {x(v['ratio_vs_bare_one_probe']):>10} {x(v['ratio_vs_bare_two_probes']):>10}")
for n, v in miss.items():
    print(f"miss {n:<7} {us(v['memotag_ns']):>11} {'':>11} {'':>13} {us(v['bare_one_probe_ns']):>13} {x(v['ratio_vs_bare_one_probe']):>10}")
print(f"record: durable one {us(durable)}, batched {record['batch_results_per_second'] or 0:,.0f}/s "
      f"(bare rusqlite {record['bare_batch_rows_per_second'] or 0:,.0f}/s)")
print(f"schema change (add_input): {us(summary['schema_change']['add_input_ns'])}")
for k, v in targets.items():
    val = v["value"]
    print(f"target {k}: {'-' if val is None else f'{val:,.2f}'} (target {v['target']:,}) {'met' if v['met'] else 'MISSED'}")
print(f"summary: {out}")
PY
