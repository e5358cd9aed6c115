//! Stores written by older builds and not migrated (format generations 2, 3 and 4): this build
//! records and lists on them through the generations they offer, refuses what they cannot hold
//! with a typed error before touching the file, and gains the rest after `memotag migrate`.
//!
//! The old stores are made as the old builds made them: the format-1 fixture, then the
//! `schema/` files up to the generation, and the procedure menu that build recorded.

mod common;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use common::{decode, file_bytes, int};
use memotag::protocol::procedures::CODE_RECORDS_SINCE;
use memotag::protocol::{build_menu, Menu};
use memotag::{
    CallError, CodeRecord, OpenOptions, RecordOutcome, SourceText, Store, Value, VersionError,
};

/// The menu the builds that wrote format generations 2 and 3 recorded in a store (commit
/// 22146ff; the shared-mode branch, c55e24c, kept it): `call.record` 2 is code as an integer.
fn format2_menu() -> Menu {
    build_menu([
        ("schema.change", vec![1, 2]),
        ("schema.log", vec![1]),
        ("call.record", vec![1, 2]),
        ("call.record_batch", vec![1, 2]),
        ("call.lookup", vec![1]),
        ("call.query", vec![1]),
        ("value.get", vec![1]),
    ])
    .unwrap()
}

/// The menu v0.1.0 (format generation 4) recorded: code procedures and `call.lookup` 2 added, and
/// `call.record` 2 listed under the meaning that build had given it.
fn format4_menu() -> Menu {
    let mut menu = format2_menu().with("call.lookup", [2]);
    for method in [
        "code.preflight",
        "code.record",
        "code.source",
        "code.packages",
        "code.results_with",
    ] {
        menu = menu.with(method, [1]);
    }
    menu
}

const SCHEMA: &[(u32, &str, &str)] = &[
    (
        2,
        "0002_procedures",
        include_str!("../schema/0002_procedures.sql"),
    ),
    (
        3,
        "0003_lock_method",
        include_str!("../schema/0003_lock_method.sql"),
    ),
    (
        4,
        "0004_code_records",
        include_str!("../schema/0004_code_records.sql"),
    ),
];

/// A copy of the format-1 fixture moved to `format` (2, 3 or 4) as the build of that format
/// migrated it. Its function `squared` has the results x -> x² for x in 0..10, all without code.
fn old_store(dir: &Path, format: u32) -> PathBuf {
    let path = dir.join(format!("format{format}.memo"));
    std::fs::copy("tests/fixtures/store_gen1.memo", &path).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("BEGIN").unwrap();
    for (generation, name, sql) in SCHEMA.iter().filter(|(g, _, _)| *g <= format) {
        conn.execute_batch(sql).unwrap();
        conn.execute(
            "INSERT INTO format_migrations (generation, name, applied_at) VALUES (?1, ?2, 0)",
            rusqlite::params![generation, name],
        )
        .unwrap();
        conn.execute_batch(&format!("PRAGMA user_version = {generation}"))
            .unwrap();
    }
    let menu = if format >= 4 {
        format4_menu()
    } else {
        format2_menu()
    };
    for (method, generations) in &menu.0 {
        for g in generations {
            conn.execute(
                "INSERT OR IGNORE INTO procedures (method, generation) VALUES (?1, ?2)",
                rusqlite::params![method, g],
            )
            .unwrap();
        }
    }
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('library_version', '0.1.0')",
        [],
    )
    .unwrap();
    conn.execute_batch("COMMIT").unwrap();
    path
}

/// The store file and its write-ahead log, as bytes.
fn store_bytes(path: &Path) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    (file_bytes(path), std::fs::read(wal).ok())
}

fn code() -> (CodeRecord, Vec<SourceText>) {
    let record = CodeRecord {
        own: Some("0f".repeat(16)),
        ..Default::default()
    };
    let sources = vec![SourceText {
        hash: "0f".repeat(16),
        text: "def squared(x):\n    return x * x\n".into(),
    }];
    (record, sources)
}

fn assert_needs_migrate(err: &CallError, method: &str) {
    let CallError::Version(VersionError::NoCommonGeneration {
        method: m,
        local,
        remote,
    }) = err
    else {
        panic!("not NoCommonGeneration: {err}")
    };
    assert_eq!(m, method);
    assert_eq!(local, &[CODE_RECORDS_SINCE]);
    assert_eq!(remote, &[1, 2]);
    assert!(err.to_string().contains("memotag migrate"), "{err}");
}

#[test]
fn recording_code_on_an_unmigrated_store_is_a_typed_error_that_changes_nothing() {
    // Format 4 has the code-record tables: see `a_format_4_store_takes_code_records_unmigrated`.
    for format in [2, 3] {
        let dir = tempfile::tempdir().unwrap();
        let path = old_store(dir.path(), format);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.format_generation(), format);
        assert_eq!(store.generation("call.record").unwrap(), 2);
        let f = store.function("squared", 1).unwrap();
        let x = f.inputs[0].tag;
        let call = store.bind(f.tag, vec![(x, int(20))]).unwrap();
        let (record, sources) = code();

        let before = store_bytes(&path);
        let err = store
            .record_with_code(&call, vec![int(400)], record.clone(), sources.clone())
            .unwrap_err();
        assert_needs_migrate(&err, "call.record");
        assert!(
            matches!(
                store.can_record_code(),
                Err(VersionError::NoCommonGeneration { .. })
            ),
            "format {format}"
        );
        // In a batch it is refused at once, and the batch's other results still commit.
        store.begin_batch();
        let err = store
            .record_with_code(&call, vec![int(400)], record.clone(), sources.clone())
            .unwrap_err();
        assert_needs_migrate(&err, "call.record_batch");
        store.abort_batch();
        assert_eq!(
            store_bytes(&path),
            before,
            "format {format}: the file changed"
        );
        assert!(store.lookup(&call).unwrap().is_none());

        // Without code, results go through generation 2.
        let plain = store.bind(f.tag, vec![(x, int(21))]).unwrap();
        assert!(matches!(
            store.record(&plain, vec![int(441)]).unwrap(),
            RecordOutcome::Inserted { .. }
        ));
        let batched = store.bind(f.tag, vec![(x, int(22))]).unwrap();
        store
            .batch(|s| s.record(&batched, vec![int(484)]).map(|_| ()))
            .unwrap();
        for (c, out) in [(&plain, 441), (&batched, 484)] {
            let hit = store.lookup(c).unwrap().unwrap();
            assert_eq!((decode(&hit.outputs[0]), hit.code), (Value::Int(out), 0));
        }
        drop(store);

        // Migrated, the store takes code records through generation 3.
        Store::migrate(&path).unwrap();
        let store = Store::open(&path).unwrap();
        assert_eq!(store.generation("call.record").unwrap(), CODE_RECORDS_SINCE);
        store.can_record_code().unwrap();
        store
            .record_with_code(&call, vec![int(400)], record.clone(), sources)
            .unwrap();
        let hit = store.lookup(&call).unwrap().unwrap();
        assert_eq!(store.code_record(hit.code).unwrap(), Some(record));
        assert_eq!(store.integrity_check().unwrap(), vec!["ok".to_string()]);
    }
}

#[test]
fn listing_an_unmigrated_store_needs_no_code_procedure() {
    for format in [2, 3] {
        let dir = tempfile::tempdir().unwrap();
        let path = old_store(dir.path(), format);
        let store = OpenOptions::new().read_only(true).open(&path).unwrap();
        assert!(store.generation("code.record").is_err());
        let f = store.function("squared", 1).unwrap();
        let rows = store.results(f.tag, &[], None).unwrap();
        assert_eq!(rows.len(), 10);
        for row in &rows {
            assert_eq!(row.code, 0);
            assert_eq!(
                store.code_record(row.code).unwrap(),
                Some(CodeRecord::default())
            );
            let same = store.results_of_call(&row.call_id).unwrap();
            assert_eq!(same, vec![row.clone()]);
        }
    }
}

#[test]
fn an_old_client_lists_results_without_code_record_and_fails_only_for_a_real_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.memo");
    let new = Store::open(&path).unwrap();
    let f = new
        .create_function(memotag::FunctionSpec::new(
            "f",
            vec![memotag::InputSpec::required("x")],
        ))
        .unwrap();
    let plain = new.bind(f.tag, vec![(f.inputs[0].tag, int(1))]).unwrap();
    new.record(&plain, vec![int(1)]).unwrap();
    let coded = new.bind(f.tag, vec![(f.inputs[0].tag, int(2))]).unwrap();
    let (record, sources) = code();
    new.record_with_code(&coded, vec![int(4)], record, sources)
        .unwrap();
    let old = OpenOptions::new()
        .client_menu(format2_menu())
        .open(&path)
        .unwrap();
    let rows = old.results(f.tag, &[], None).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        old.code_record(rows[0].code).unwrap(),
        Some(CodeRecord::default())
    );
    assert!(matches!(
        old.code_record(rows[1].code),
        Err(CallError::Version(VersionError::NoCommonGeneration { .. }))
    ));
}

#[test]
fn the_cli_lists_and_shows_an_unmigrated_store() {
    for format in [2, 3] {
        let dir = tempfile::tempdir().unwrap();
        let path = old_store(dir.path(), format);
        let p = path.to_str().unwrap();
        let before = file_bytes(&path);
        let out = Command::cargo_bin("memotag")
            .unwrap()
            .args(["calls", p, "squared", "--format", "json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "format {format}: calls failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let rows = rows.as_array().unwrap();
        assert_eq!(rows.len(), 10);
        assert!(rows.iter().all(|r| r["code_id"] == 0), "{rows:?}");
        let call_id = rows[3]["call_id"].as_str().unwrap();
        for extra in [&[][..], &["--sources"][..]] {
            let out = Command::cargo_bin("memotag")
                .unwrap()
                .args(["show", p, call_id, "--format", "json"])
                .args(extra)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "format {format}: show {extra:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert_eq!(file_bytes(&path), before, "reading changed the file");
    }
}

/// A format-4 store (written by v0.1.0, whose menu rows said generation 2 for what is now 3)
/// holds code records without a migration: new and old builds keep sharing it.
#[test]
fn a_format_4_store_takes_code_records_unmigrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = old_store(dir.path(), 4);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.format_generation(), 4);
    assert_eq!(store.generation("call.record").unwrap(), CODE_RECORDS_SINCE);
    store.can_record_code().unwrap();
    let f = store.function("squared", 1).unwrap();
    let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(20))]).unwrap();
    let (record, sources) = code();
    store
        .record_with_code(&call, vec![int(400)], record.clone(), sources)
        .unwrap();
    let hit = store.lookup(&call).unwrap().unwrap();
    assert_eq!(store.code_record(hit.code).unwrap(), Some(record));
    assert_eq!(store.format_generation(), 4, "nothing was migrated");
    assert_eq!(store.integrity_check().unwrap(), vec!["ok".to_string()]);
}
