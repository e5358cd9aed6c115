//! Bytes on disk per small int→int result (SPEC §8: at most 250), next to bare SQLite tables
//! holding the same information.
//!
//! Records `f(x) = 2x` for `x` in `0..N` (N = 100,000 unless given as the first argument) into a
//! fresh store, checkpoints the write-ahead log into the file, and divides the file size by N.
//! The same results go into two bare tables: `(x INTEGER PRIMARY KEY, y INTEGER)`, the floor, and a
//! `WITHOUT ROWID` table keyed by 16-byte call ids holding what a memo row holds. Prints a table
//! and a per-table breakdown, and writes `<target>/bench/disk.json`.
//!
//! ```text
//! cargo run --release --example disk_usage -- 100000
//! ```

use std::path::{Path, PathBuf};

use memotag::{EncodedValue, FunctionSpec, InputSpec, Mode, OpenOptions, Value};
use rusqlite::Connection;

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn int(x: i64) -> EncodedValue {
    EncodedValue::from_value(&Value::Int(x)).expect("an int encodes")
}

fn remove_db(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

/// The main file plus whatever is left in the write-ahead log.
fn bytes_on_disk(path: &Path) -> u64 {
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    len(path) + len(Path::new(&wal))
}

/// Bytes per table and index, from SQLite's `dbstat` (empty if it is not compiled in).
fn breakdown(path: &Path) -> Vec<(String, u64)> {
    let conn = Connection::open(path).expect("open for dbstat");
    let Ok(mut stmt) = conn
        .prepare("SELECT name, sum(pgsize) AS bytes FROM dbstat GROUP BY name ORDER BY bytes DESC")
    else {
        return Vec::new();
    };
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("dbstat")
        .collect::<Result<_, _>>()
        .expect("dbstat rows")
}

fn bare(
    path: &Path,
    schema: &str,
    insert: &str,
    n: i64,
    row: impl Fn(i64) -> Vec<rusqlite::types::Value>,
) -> u64 {
    remove_db(path);
    let mut conn = Connection::open(path).expect("create bare");
    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
        .expect("wal");
    conn.execute_batch(schema).expect("schema");
    let tx = conn.transaction().expect("begin");
    {
        let mut stmt = tx.prepare(insert).expect("insert");
        for x in 0..n {
            stmt.execute(rusqlite::params_from_iter(row(x)))
                .expect("insert row");
        }
    }
    tx.commit().expect("commit");
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    drop(conn);
    bytes_on_disk(path)
}

fn main() {
    let n: i64 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("N: a number of results"))
        .unwrap_or(100_000);
    let dir = target_dir().join("bench-data").join("disk");
    std::fs::create_dir_all(&dir).expect("create bench-data/disk");

    // memotag: one function, N results, recorded in batches, then checkpointed.
    let path = dir.join("disk.memo");
    remove_db(&path);
    let store = OpenOptions::new()
        .mode(Mode::Local)
        .batch_size(10_000)
        .open(&path)
        .expect("open store");
    let f = store
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .expect("create f");
    store.checkpoint().expect("checkpoint");
    let empty = bytes_on_disk(&path);
    let x = f.inputs[0].tag;
    store
        .batch(|s| {
            for i in 0..n {
                let call = s.bind(f.tag, vec![(x, int(i))])?;
                s.record(&call, vec![int(2 * i)])?;
            }
            Ok::<_, memotag::CallError>(())
        })
        .expect("record");
    store.checkpoint().expect("checkpoint");
    let memotag = bytes_on_disk(&path);
    drop(store);
    let tables = breakdown(&path);

    let int_table = bare(
        &dir.join("bare-int.sqlite"),
        "CREATE TABLE t (x INTEGER PRIMARY KEY, y INTEGER NOT NULL);",
        "INSERT INTO t (x, y) VALUES (?1, ?2)",
        n,
        |x| vec![x.into(), (2 * x).into()],
    );
    // What a memo row holds, keyed the way memotag keys it, without the values table.
    let row_table = bare(
        &dir.join("bare-row.sqlite"),
        "CREATE TABLE t (call_id BLOB PRIMARY KEY, code INTEGER NOT NULL, outputs BLOB NOT NULL,
                         client INTEGER NOT NULL, time INTEGER NOT NULL, x BLOB NOT NULL)
         WITHOUT ROWID;",
        "INSERT INTO t VALUES (?1, 0, ?2, 1, ?3, ?4)",
        n,
        |x| {
            let key = blake3::hash(&x.to_le_bytes()).as_bytes()[..16].to_vec();
            vec![
                key.into(),
                int(2 * x).id().0.to_vec().into(),
                (1_700_000_000_000 + x).into(),
                int(x).id().0.to_vec().into(),
            ]
        },
    );

    let per = |bytes: u64| bytes as f64 / n as f64;
    println!("bytes on disk for {n} small int->int results (after a WAL checkpoint)");
    println!("{:<34} {:>12} {:>10}", "", "bytes", "per result");
    println!("{:<34} {:>12} {:>10.1}", "memotag", memotag, per(memotag));
    println!(
        "{:<34} {:>12} {:>10.1}",
        "memotag, less the empty store",
        memotag - empty,
        per(memotag - empty)
    );
    println!(
        "{:<34} {:>12} {:>10.1}",
        "bare (x INTEGER PK, y INTEGER)",
        int_table,
        per(int_table)
    );
    println!(
        "{:<34} {:>12} {:>10.1}",
        "bare memo row, 16-byte key",
        row_table,
        per(row_table)
    );
    println!("target: at most 250 bytes per result");
    if !tables.is_empty() {
        println!("\nmemotag by table and index (dbstat)");
        for (name, bytes) in &tables {
            if *bytes >= 8192 {
                println!("{:<50} {:>12} {:>10.1}", name, bytes, per(*bytes));
            }
        }
    }

    let out = target_dir().join("bench");
    std::fs::create_dir_all(&out).expect("create bench output");
    let json = serde_json::json!({
        "results": n,
        "memotag_bytes": memotag,
        "memotag_empty_store_bytes": empty,
        "memotag_bytes_per_result": per(memotag),
        "bare_int_table_bytes_per_result": per(int_table),
        "bare_memo_row_bytes_per_result": per(row_table),
        "memotag_by_table": tables
            .iter()
            .map(|(name, bytes)| serde_json::json!({ "name": name, "bytes": bytes }))
            .collect::<Vec<_>>(),
        "target_bytes_per_result": 250,
    });
    std::fs::write(
        out.join("disk.json"),
        serde_json::to_string_pretty(&json).expect("json"),
    )
    .expect("write disk.json");
}
