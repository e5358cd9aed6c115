//! Concurrent writer processes: 1 and 4 processes recording into one store, timed wall clock for
//! the whole job (process start included). Not a criterion bench: each run is one job of real
//! processes, and the figure that matters is results per second across all of them.
//!
//! The bench binary re-executes itself as a writer when `MEMOTAG_BENCH_WRITER` is set to
//! `path,first,count,batched`. Results go to stdout as a table and to
//! `<target>/bench/writers.json`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use memotag::{EncodedValue, FunctionSpec, InputSpec, Mode, OpenOptions, Store, Value};

const ROLE: &str = "MEMOTAG_BENCH_WRITER";

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn int(x: i64) -> EncodedValue {
    EncodedValue::from_value(&Value::Int(x)).expect("an int encodes")
}

fn open(path: &Path) -> Store {
    OpenOptions::new()
        .mode(Mode::Local)
        .batch_size(1_000)
        .open(path)
        .expect("open store")
}

fn spec() -> FunctionSpec {
    FunctionSpec::new("f", vec![InputSpec::required("x")])
}

/// One writer process: records `f(x) = 2x` for `x` in `first..first + count`.
fn writer(role: &str) {
    let parts: Vec<&str> = role.split(',').collect();
    let [path, first, count, batched] = parts[..] else {
        panic!("{ROLE}=path,first,count,batched");
    };
    let (first, count): (i64, i64) = (first.parse().unwrap(), count.parse().unwrap());
    let store = open(Path::new(path));
    let f = store.create_function(spec()).expect("f");
    let x = f.inputs[0].tag;
    if batched == "1" {
        store.begin_batch();
    }
    for i in first..first + count {
        let call = store.bind(f.tag, vec![(x, int(i))]).unwrap();
        store.record(&call, vec![int(2 * i)]).unwrap();
    }
    if batched == "1" {
        store.commit_batch().unwrap();
    }
}

fn remove_store(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

/// Runs `writers` processes of `per_writer` results each into a fresh store; returns seconds.
fn job(dir: &Path, writers: i64, per_writer: i64, batched: bool) -> f64 {
    let path = dir.join(format!("writers-{writers}.memo"));
    remove_store(&path);
    // The function exists before the clock starts: this times recording, not schema changes.
    let store = open(&path);
    let f = store.create_function(spec()).expect("f");
    let exe = std::env::current_exe().expect("current exe");
    let started = Instant::now();
    let children: Vec<_> = (0..writers)
        .map(|w| {
            let role = format!(
                "{},{},{},{}",
                path.display(),
                w * per_writer,
                per_writer,
                u8::from(batched)
            );
            Command::new(&exe)
                .env(ROLE, role)
                .spawn()
                .expect("spawn writer")
        })
        .collect();
    for mut child in children {
        assert!(
            child.wait().expect("wait writer").success(),
            "a writer failed"
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    let recorded = store.count_results(f.tag).expect("count");
    assert_eq!(recorded, (writers * per_writer) as u64, "lost results");
    drop(store);
    remove_store(&path);
    seconds
}

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        writer(&role);
        return;
    }
    // `cargo bench` passes `--bench` and maybe a filter; a filter that is not ours skips us.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    if filter.is_some_and(|f| !"writers".contains(f.as_str())) {
        return;
    }
    let dir = target_dir().join("bench-data").join("tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let durable_n: i64 = env_or("MEMOTAG_BENCH_WRITER_DURABLE_N", 2_000);
    let batched_n: i64 = env_or("MEMOTAG_BENCH_WRITER_BATCHED_N", 50_000);

    println!(
        "{:<22} {:>8} {:>12} {:>10} {:>12}",
        "job", "writers", "results", "wall s", "results/s"
    );
    let mut rows = Vec::new();
    for (label, per_writer, batched) in [
        ("durable_one", durable_n, false),
        ("batch_1000", batched_n, true),
    ] {
        for writers in [1, 4] {
            let seconds = job(&dir, writers, per_writer, batched);
            let total = writers * per_writer;
            let rate = total as f64 / seconds;
            println!("{label:<22} {writers:>8} {total:>12} {seconds:>10.3} {rate:>12.0}");
            rows.push(serde_json::json!({
                "job": label,
                "writers": writers,
                "results": total,
                "wall_seconds": seconds,
                "results_per_second": rate,
            }));
        }
    }
    let out = target_dir().join("bench");
    std::fs::create_dir_all(&out).unwrap();
    let json = serde_json::to_string_pretty(&serde_json::json!({ "writers": rows })).unwrap();
    std::fs::write(out.join("writers.json"), json).unwrap();
}

fn env_or(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
