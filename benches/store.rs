//! Criterion benches for the Rust targets of SPEC §8, each next to bare rusqlite in the same
//! group: hits and misses at several store sizes, durable and batched records, a schema change.
//! Concurrent writer processes are timed in `benches/writers.rs`.
//!
//! Data sets are built once per size under `<target>/bench-data/` and reused while they hold the
//! right number of results, because building a million results takes a while. Sizes default to
//! 10k, 100k and 1M; `MEMOTAG_BENCH_10M=1` adds 10M and `MEMOTAG_BENCH_SIZES=10000,100000`
//! replaces the list.
//!
//! Every data set is `f(x) = 2x` for `x` in `0..n`. The bare tables hold the same keys and values
//! in their simplest form: `kv` maps a 16-byte call key to a 16-byte value id, `vals` maps a value
//! id to its encoded bytes, both `WITHOUT ROWID`. A memotag hit reads the memo index, the memo
//! row and the value; the bare baselines read `kv` alone (one probe) or `kv` then `vals` (two).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use memotag::{
    EncodedValue, Function, FunctionSpec, InputSpec, Mode, OpenOptions, Store, Value, ValueId,
};
use rusqlite::{Connection, OpenFlags};

/// How many distinct keys a lookup bench cycles through (a power of two).
const KEYS: usize = 4096;

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn data_dir() -> PathBuf {
    let dir = target_dir().join("bench-data");
    std::fs::create_dir_all(&dir).expect("create bench-data");
    dir
}

fn sizes() -> Vec<u64> {
    if let Ok(list) = std::env::var("MEMOTAG_BENCH_SIZES") {
        return list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .expect("MEMOTAG_BENCH_SIZES: comma-separated counts")
            })
            .collect();
    }
    let mut sizes = vec![10_000, 100_000, 1_000_000];
    if std::env::var("MEMOTAG_BENCH_10M").is_ok_and(|v| v == "1") {
        sizes.push(10_000_000);
    }
    sizes
}

fn int(x: i64) -> EncodedValue {
    EncodedValue::from_value(&Value::Int(x)).expect("an int encodes")
}

/// The bare tables' key for call `x`: 16 bytes, spread like memotag's call ids.
fn bare_key(x: i64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key.copy_from_slice(&blake3::hash(&x.to_le_bytes()).as_bytes()[..16]);
    key
}

fn open_local(path: &Path) -> Store {
    OpenOptions::new()
        .mode(Mode::Local)
        .batch_size(10_000)
        .open(path)
        .expect("open store")
}

fn create_f(store: &Store) -> Function {
    store
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .expect("create f")
}

fn remove_store(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

/// Records `f(x) = 2x` for `x` in `range`, in batches.
fn record_range(store: &Store, f: &Function, range: std::ops::Range<i64>) {
    let x = f.inputs[0].tag;
    store
        .batch(|s| {
            for i in range {
                let call = s.bind(f.tag, vec![(x, int(i))])?;
                s.record(&call, vec![int(2 * i)])?;
            }
            Ok::<_, memotag::CallError>(())
        })
        .expect("record range");
}

/// The memotag store with `n` results, built if missing or of another size.
fn memo_store(n: u64) -> (Store, Function) {
    let path = data_dir().join(format!("memo-{n}.memo"));
    if path.exists() {
        let store = open_local(&path);
        if let Ok(f) = store.function("f", 1) {
            if store.count_results(f.tag).ok() == Some(n) {
                return (store, f);
            }
        }
        drop(store);
        remove_store(&path);
    }
    eprintln!("building {} ({n} results)...", path.display());
    let started = Instant::now();
    let store = open_local(&path);
    let f = create_f(&store);
    let n = n as i64;
    let step = 100_000;
    for start in (0..n).step_by(step as usize) {
        record_range(&store, &f, start..(start + step).min(n));
    }
    store.checkpoint().expect("checkpoint");
    eprintln!("built in {:.1} s", started.elapsed().as_secs_f64());
    (store, f)
}

/// The bare rusqlite database with `n` rows in `kv`, built if missing or of another size.
fn bare_db(n: u64) -> Connection {
    let path = data_dir().join(format!("bare-{n}.sqlite"));
    if path.exists() {
        let conn = Connection::open(&path).expect("open bare");
        let count: Option<u64> = conn
            .query_row("SELECT count(*) FROM kv", [], |r| r.get(0))
            .ok();
        if count == Some(n) {
            return conn;
        }
        drop(conn);
        remove_store(&path);
    }
    let mut conn = Connection::open(&path).expect("create bare");
    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
        .expect("wal");
    conn.execute_batch(
        "PRAGMA synchronous=NORMAL;
         CREATE TABLE kv (k BLOB PRIMARY KEY NOT NULL, v BLOB NOT NULL) WITHOUT ROWID;
         CREATE TABLE vals (id BLOB PRIMARY KEY NOT NULL, data BLOB NOT NULL) WITHOUT ROWID;",
    )
    .expect("bare schema");
    let n = n as i64;
    let step = 100_000;
    for start in (0..n).step_by(step as usize) {
        let tx = conn.transaction().expect("begin");
        {
            let mut kv = tx.prepare("INSERT INTO kv (k, v) VALUES (?1, ?2)").unwrap();
            let mut vals = tx
                .prepare("INSERT OR IGNORE INTO vals (id, data) VALUES (?1, ?2)")
                .unwrap();
            for x in start..(start + step).min(n) {
                let (input, output) = (int(x), int(2 * x));
                let (input_id, output_id) = (input.id(), output.id());
                vals.execute((input_id.0, &input.bytes)).unwrap();
                vals.execute((output_id.0, &output.bytes)).unwrap();
                kv.execute((bare_key(x), output_id.0)).unwrap();
            }
        }
        tx.commit().expect("commit");
    }
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    conn
}

/// `KEYS` pseudo-random xs in `0..n`, the same for every bench of a size.
fn sample_keys(n: u64) -> Vec<i64> {
    let mut rng = fastrand::Rng::with_seed(n);
    (0..KEYS).map(|_| rng.i64(0..n as i64)).collect()
}

fn bench_hit(c: &mut Criterion) {
    let mut group = c.benchmark_group("hit");
    for n in sizes() {
        let (store, f) = memo_store(n);
        let bare = bare_db(n);
        let xs = sample_keys(n);
        let x = f.inputs[0].tag;

        group.bench_function(BenchmarkId::new("memotag", n), |b| {
            let mut i = 0;
            b.iter(|| {
                let key = xs[i % KEYS];
                i += 1;
                let call = store.bind(f.tag, vec![(x, int(key))]).unwrap();
                black_box(store.lookup(&call).unwrap().expect("a hit"))
            })
        });

        // The same two statements memotag runs, on the same file, without the Rust layers: the
        // difference to `memotag` is what the session, binding and hashing cost.
        let raw = Connection::open_with_flags(
            store.path(),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .unwrap();
        let call_ids: Vec<[u8; 16]> = xs
            .iter()
            .map(|&k| store.bind(f.tag, vec![(x, int(k))]).unwrap().call_id().0)
            .collect();
        let memo_sql = format!(
            "SELECT seq, code, outputs FROM \"memo_{}\" WHERE call_id = ?1 ORDER BY seq DESC LIMIT 1",
            f.tag.simple()
        );
        group.bench_function(BenchmarkId::new("store_sql", n), |b| {
            let mut i = 0;
            b.iter(|| {
                let id = &call_ids[i % KEYS];
                i += 1;
                let (_seq, _code, outputs): (i64, i64, Vec<u8>) = raw
                    .prepare_cached(&memo_sql)
                    .unwrap()
                    .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .unwrap();
                let value: (u8, Vec<u8>) = raw
                    .prepare_cached("SELECT codec, data FROM \"values\" WHERE id = ?1")
                    .unwrap()
                    .query_row([&outputs[..16]], |r| Ok((r.get(0)?, r.get(1)?)))
                    .unwrap();
                black_box(value)
            })
        });

        let keys: Vec<[u8; 16]> = xs.iter().map(|&k| bare_key(k)).collect();
        group.bench_function(BenchmarkId::new("bare_two_probes", n), |b| {
            let mut i = 0;
            b.iter(|| {
                let key = &keys[i % KEYS];
                i += 1;
                let id: Vec<u8> = bare
                    .prepare_cached("SELECT v FROM kv WHERE k = ?1")
                    .unwrap()
                    .query_row([key], |r| r.get(0))
                    .unwrap();
                let data: Vec<u8> = bare
                    .prepare_cached("SELECT data FROM vals WHERE id = ?1")
                    .unwrap()
                    .query_row([&id], |r| r.get(0))
                    .unwrap();
                black_box(data)
            })
        });
        group.bench_function(BenchmarkId::new("bare_one_probe", n), |b| {
            let mut i = 0;
            b.iter(|| {
                let key = &keys[i % KEYS];
                i += 1;
                let id: Vec<u8> = bare
                    .prepare_cached("SELECT v FROM kv WHERE k = ?1")
                    .unwrap()
                    .query_row([key], |r| r.get(0))
                    .unwrap();
                black_box(id)
            })
        });
    }
    group.finish();
}

fn bench_miss(c: &mut Criterion) {
    let mut group = c.benchmark_group("miss");
    for n in sizes() {
        let (store, f) = memo_store(n);
        let bare = bare_db(n);
        let x = f.inputs[0].tag;
        // Absent: past the recorded range.
        let xs: Vec<i64> = sample_keys(n).iter().map(|k| k + n as i64).collect();
        group.bench_function(BenchmarkId::new("memotag", n), |b| {
            let mut i = 0;
            b.iter(|| {
                let key = xs[i % KEYS];
                i += 1;
                let call = store.bind(f.tag, vec![(x, int(key))]).unwrap();
                assert!(store.lookup(&call).unwrap().is_none());
            })
        });
        let keys: Vec<[u8; 16]> = xs.iter().map(|&k| bare_key(k)).collect();
        group.bench_function(BenchmarkId::new("bare_one_probe", n), |b| {
            let mut i = 0;
            b.iter(|| {
                let key = &keys[i % KEYS];
                i += 1;
                let mut stmt = bare
                    .prepare_cached("SELECT v FROM kv WHERE k = ?1")
                    .unwrap();
                assert!(!stmt.exists([key]).unwrap());
            })
        });
    }
    group.finish();
}

fn bench_record(c: &mut Criterion) {
    // Each bench makes its own fresh store inside its closure, which criterion calls only for
    // benches the filter selects, so that profiling one bench does not also profile the others'
    // setup.
    let mut group = c.benchmark_group("record");
    let tmp = data_dir().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();

    // One durable record per iteration: its own write transaction (WAL, synchronous=NORMAL).
    group.throughput(Throughput::Elements(1));
    group.bench_function("durable_one", |b| {
        let path = tmp.join("record-one.memo");
        remove_store(&path);
        let store = open_local(&path);
        let f = create_f(&store);
        let x = f.inputs[0].tag;
        let mut next = 0i64;
        b.iter(|| {
            let call = store.bind(f.tag, vec![(x, int(next))]).unwrap();
            let outcome = store.record(&call, vec![int(2 * next)]).unwrap();
            next += 1;
            black_box(outcome)
        })
    });

    // Batches of 1,000 results, one write transaction each.
    group.throughput(Throughput::Elements(1_000));
    group.bench_function("batch_1000", |b| {
        let path = tmp.join("record-batch.memo");
        remove_store(&path);
        let store = open_local(&path);
        let f = create_f(&store);
        let mut next = 0i64;
        b.iter(|| {
            record_range(&store, &f, next..next + 1_000);
            next += 1_000;
        })
    });

    // The bare equivalent: 1,000 key rows and their values in one transaction.
    group.bench_function("bare_batch_1000", |b| {
        let path = tmp.join("record-bare.sqlite");
        remove_store(&path);
        let mut conn = Connection::open(&path).unwrap();
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
            .unwrap();
        conn.execute_batch(
            "PRAGMA synchronous=NORMAL;
             CREATE TABLE kv (k BLOB PRIMARY KEY NOT NULL, v BLOB NOT NULL) WITHOUT ROWID;
             CREATE TABLE vals (id BLOB PRIMARY KEY NOT NULL, data BLOB NOT NULL) WITHOUT ROWID;",
        )
        .unwrap();
        let mut next = 0i64;
        b.iter(|| {
            let tx = conn.transaction().unwrap();
            {
                let mut kv = tx
                    .prepare_cached("INSERT INTO kv (k, v) VALUES (?1, ?2)")
                    .unwrap();
                let mut vals = tx
                    .prepare_cached("INSERT OR IGNORE INTO vals (id, data) VALUES (?1, ?2)")
                    .unwrap();
                for k in next..next + 1_000 {
                    let (input, output) = (int(k), int(2 * k));
                    let output_id: ValueId = output.id();
                    vals.execute((input.id().0, &input.bytes)).unwrap();
                    vals.execute((output_id.0, &output.bytes)).unwrap();
                    kv.execute((bare_key(k), output_id.0)).unwrap();
                }
            }
            tx.commit().unwrap();
            next += 1_000;
        })
    });
    group.finish();
    for name in ["record-one.memo", "record-batch.memo", "record-bare.sqlite"] {
        remove_store(&tmp.join(name));
    }
}

/// A store with a few functions and some results, as a schema change meets it.
fn schema_store(path: &Path) -> (Store, Function) {
    remove_store(path);
    let store = open_local(path);
    let mut target = None;
    for name in ["prepare", "train", "evaluate", "report"] {
        let f = store
            .create_function(FunctionSpec::new(
                name,
                vec![
                    InputSpec::required("x"),
                    InputSpec::with_default("scale", int(1)),
                ],
            ))
            .unwrap();
        record_range(&store, &f, 0..100);
        target = Some(f);
    }
    (store, target.expect("four functions"))
}

fn bench_schema_change(c: &mut Criterion) {
    // SQLite allows 2,000 columns, and a store with hundreds of added inputs is not the case
    // measured: start over on a fresh store every `PER_STORE` changes, outside the timing.
    const PER_STORE: u64 = 50;
    let mut group = c.benchmark_group("schema_change");
    let tmp = data_dir().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let path = tmp.join("schema.memo");
    group.bench_function("add_input", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut current: Option<(Store, Function)> = None;
            for i in 0..iters {
                if i % PER_STORE == 0 {
                    drop(current.take());
                    current = Some(schema_store(&path));
                }
                let (store, f) = current.as_ref().expect("made above");
                let name = format!("extra_{}", i % PER_STORE);
                let started = Instant::now();
                black_box(store.add_input(f.tag, &name, Some(int(0))).unwrap());
                total += started.elapsed();
            }
            total
        })
    });
    remove_store(&path);
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    targets = bench_hit, bench_miss, bench_record, bench_schema_change
}
criterion_main!(benches);
