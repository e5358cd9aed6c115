//! The `memotag` command line, run as the real binary against stores built here through the
//! library: each command's happy path (JSON parsed and checked), every error with its exit code
//! and the file left byte-for-byte unchanged, `check` on healthy and broken stores, and `gc`
//! removing exactly what `--dry-run` listed.

mod common;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use common::{file_bytes, int};
use memotag::storage::memo::memo_table;
use memotag::storage::BlobStore;
use memotag::{
    CodeRecord, EncodedValue, FunctionSpec, InputSpec, LibraryRef, Mode, OpenOptions, RefKind,
    SourceText, Store, UserRef,
};
use predicates::prelude::*;
use serde_json::{json, Value as J};

fn memotag() -> Command {
    Command::cargo_bin("memotag").expect("the memotag binary is built")
}

/// Runs `memotag ARGS --format json`, expects success, parses stdout.
fn json_of(args: &[&str]) -> J {
    let out = memotag()
        .args(args)
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

struct Built {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Built {
    fn p(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

/// `square(x, offset=0) -> out` with x = 1, 2, 3 recorded (x = 2 also in conflict), and
/// `blobby(x) -> out` with one result kept as a file.
fn build() -> Built {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("team.memo");
    let store = OpenOptions::new()
        .blob_threshold(1_000)
        .open(&path)
        .unwrap();
    let f = store
        .create_function(FunctionSpec::new(
            "square",
            vec![
                InputSpec::required("x"),
                InputSpec::with_default("offset", int(0)),
            ],
        ))
        .unwrap();
    let x = f.input_named("x").unwrap().tag;
    for i in 1..=3 {
        let call = store.bind(f.tag, vec![(x, int(i))]).unwrap();
        store.record(&call, vec![int(i * i)]).unwrap();
    }
    let call = store.bind(f.tag, vec![(x, int(2))]).unwrap();
    store.record(&call, vec![int(5)]).unwrap();
    let g = store
        .create_function(FunctionSpec::new("blobby", vec![InputSpec::required("x")]))
        .unwrap();
    let call = store.bind(g.tag, vec![(g.inputs[0].tag, int(1))]).unwrap();
    store
        .record(&call, vec![EncodedValue::raw(vec![7u8; 5_000])])
        .unwrap();
    drop(store);
    Built { _dir: dir, path }
}

fn sql(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

// ---- read commands ---------------------------------------------------------------------------

#[test]
fn functions_lists_every_version_with_inputs_defaults_and_counts() {
    let b = build();
    let store = Store::open(&b.path).unwrap();
    store
        .create_function(FunctionSpec::new("square", vec![InputSpec::required("y")]).version(2))
        .unwrap();
    drop(store);
    let rows = json_of(&["functions", b.p()]);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let sq1 = &rows[1];
    assert_eq!(sq1["name"], "square");
    assert_eq!(sq1["version"], 1);
    assert_eq!(sq1["results"], 3);
    assert_eq!(sq1["outputs"], json!(["out"]));
    assert_eq!(sq1["inputs"][0]["name"], "x");
    assert_eq!(sq1["inputs"][0]["has_default"], false);
    assert_eq!(sq1["inputs"][1]["name"], "offset");
    assert_eq!(sq1["inputs"][1]["default"], 0);
    assert_eq!(rows[2]["version"], 2);
    assert_eq!(rows[0]["name"], "blobby");
    memotag()
        .args(["functions", b.p()])
        .assert()
        .success()
        .stdout(predicate::str::contains("offset=0"));
    memotag()
        .args(["functions", b.p(), "--format", "csv"])
        .assert()
        .success()
        .stdout(predicate::str::starts_with(
            "name,version,inputs,outputs,results,created_seq,former_names\n",
        ));
}

#[test]
fn log_lists_changes_and_since_skips_older_ones() {
    let b = build();
    let rows = json_of(&["log", b.p()]);
    assert_eq!(rows.as_array().unwrap().len(), 2);
    assert_eq!(rows[0]["seq"], 1);
    assert_eq!(rows[0]["kind"], "create_function");
    assert_eq!(rows[0]["change"]["name"], "square");
    assert!(rows[0]["summary"].as_str().unwrap().contains("offset=0"));
    let rows = json_of(&["log", b.p(), "--since", "1"]);
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["change"]["name"], "blobby");
}

#[test]
fn calls_where_a_json_int_finds_the_canonical_int_even_through_a_former_name() {
    let b = build();
    let rows = json_of(&["calls", b.p(), "square"]);
    assert_eq!(rows.as_array().unwrap().len(), 3);
    let rows = json_of(&["calls", b.p(), "square", "--where", "x=2"]);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["inputs"], json!({"x": 2, "offset": 0}));
    assert_eq!(
        rows[0]["outputs"],
        json!({"out": 4}),
        "the first stays canonical"
    );
    assert_eq!(rows[0]["version"], 1);
    assert_eq!(rows[0]["call_id"].as_str().unwrap().len(), 32);
    // 2.0 is a float, not the int 2.
    let rows = json_of(&["calls", b.p(), "square", "--where", "x=2.0"]);
    assert!(rows.as_array().unwrap().is_empty());
    let rows = json_of(&["calls", b.p(), "square", "--limit", "2"]);
    assert_eq!(rows.as_array().unwrap().len(), 2);

    let store = Store::open(&b.path).unwrap();
    let family = store.function("square", 1).unwrap().family;
    store.rename_family(family, "sq").unwrap();
    drop(store);
    let out = memotag()
        .args([
            "calls",
            b.p(),
            "square",
            "--where",
            "x=3",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("now called `sq`"));
    let rows: J = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["function"], "sq");
    assert_eq!(rows[0]["outputs"]["out"], 9);
}

#[test]
fn a_value_kept_as_a_file_shows_its_preview() {
    let b = build();
    let rows = json_of(&["calls", b.p(), "blobby"]);
    let out = &rows[0]["outputs"]["out"];
    assert_eq!(out["$codec"], "raw");
    assert_eq!(out["$size"], 5_000);
    assert!(out["$preview"].is_string());
}

#[test]
fn show_lists_inputs_results_code_and_conflicts_of_a_call() {
    let b = build();
    let rows = json_of(&["calls", b.p(), "square", "--where", "x=2"]);
    let call_id = rows[0]["call_id"].as_str().unwrap().to_string();
    let rows = json_of(&["show", b.p(), &call_id]);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["inputs"], json!({"x": 2, "offset": 0}));
    assert_eq!(rows[0]["outputs"], json!({"out": 4}));
    assert_eq!(rows[0]["code_id"], 0);
    assert_eq!(rows[0]["code"]["own"], J::Null, "recorded without code");
    assert_eq!(rows[0]["code"]["hash"], "0".repeat(32));
    assert_eq!(rows[0]["code"]["libraries"], json!([]));
    assert_eq!(rows[0]["conflicts"][0]["outputs"], json!({"out": 5}));
    memotag()
        .args(["show", b.p(), &"0".repeat(32)])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no result has call id"));
    memotag()
        .args(["show", b.p(), "nothex"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not a call id"));
}

#[test]
fn conflicts_lists_later_outputs_next_to_the_canonical_ones() {
    let b = build();
    let rows = json_of(&["conflicts", b.p()]);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["function"], "square");
    assert_eq!(rows[0]["canonical"], json!({"out": 4}));
    assert_eq!(rows[0]["outputs"], json!({"out": 5}));
}

#[test]
fn packages_of_a_store_without_code_is_an_empty_listing() {
    let b = build();
    assert_eq!(json_of(&["packages", b.p()]), json!([]));
    memotag()
        .args(["packages", b.p()])
        .assert()
        .success()
        .stdout(predicate::str::contains("no libraries recorded"));
}

// ---- code records ----------------------------------------------------------------------------

const OWN_A: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const OWN_B: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";
const OWN_C: &str = "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3";
const HELPER: &str = "d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4";
const LIB_1: &str = "e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5";
const LIB_2: &str = "f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6";
const LIB_3: &str = "a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7";

fn source(hash: &str, text: &str) -> SourceText {
    SourceText {
        hash: hash.into(),
        text: text.into(),
    }
}

/// `StandardizedTransformer` from nnterp (declared, with its source hash) and numpy (detected).
fn code_under(own: &str, nnterp: &str, lib_source: &str) -> CodeRecord {
    CodeRecord {
        own: Some(own.into()),
        user: vec![UserRef {
            name: "normalize".into(),
            hash: HELPER.into(),
        }],
        libraries: vec![
            LibraryRef {
                name: "StandardizedTransformer".into(),
                kind: RefKind::Class,
                library: "nnterp".into(),
                version: Some(nnterp.into()),
                source_hash: Some(lib_source.into()),
                declared: true,
            },
            LibraryRef {
                name: "numpy".into(),
                kind: RefKind::Module,
                library: "numpy".into(),
                version: Some("1.26.0".into()),
                source_hash: None,
                declared: false,
            },
        ],
        notes: vec!["captured in a test".into()],
    }
}

/// `embed(x) -> out`: x = 1, 2 recorded under code A (nnterp 0.1.0, every source sent), x = 3
/// under code B (nnterp 0.2.0, whose library source was not sent).
fn build_with_code() -> Built {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("code.memo");
    let store = Store::open(&path).unwrap();
    let f = store
        .create_function(FunctionSpec::new("embed", vec![InputSpec::required("x")]))
        .unwrap();
    let x = f.inputs[0].tag;
    for i in 1..=2 {
        let call = store.bind(f.tag, vec![(x, int(i))]).unwrap();
        store
            .record_with_code(
                &call,
                vec![int(i * 10)],
                code_under(OWN_A, "0.1.0", LIB_1),
                vec![
                    source(OWN_A, "def embed(x):\n    return normalize(x) * 10\n"),
                    source(HELPER, "def normalize(x):\n    return x\n"),
                    source(LIB_1, "class StandardizedTransformer: ...\n"),
                ],
            )
            .unwrap();
    }
    let call = store.bind(f.tag, vec![(x, int(3))]).unwrap();
    store
        .record_with_code(
            &call,
            vec![int(30)],
            code_under(OWN_B, "0.2.0", LIB_2),
            vec![source(
                OWN_B,
                "def embed(x):\n    return 10 * normalize(x)\n",
            )],
        )
        .unwrap();
    drop(store);
    Built { _dir: dir, path }
}

#[test]
fn packages_lists_library_versions_and_the_results_computed_with_one() {
    let b = build_with_code();
    let rows = json_of(&["packages", b.p()]);
    assert_eq!(
        rows,
        json!([
            {"library": "nnterp", "version": "0.1.0", "declared": true, "results": 2},
            {"library": "nnterp", "version": "0.2.0", "declared": true, "results": 1},
            {"library": "numpy", "version": "1.26.0", "declared": false, "results": 3},
        ])
    );
    memotag()
        .args(["packages", b.p()])
        .assert()
        .success()
        .stdout(predicate::str::contains("nnterp").and(predicate::str::contains("0.2.0")));

    let rows = json_of(&[
        "packages",
        b.p(),
        "--library",
        "nnterp",
        "--version",
        "0.1.0",
    ]);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, x) in rows.iter().zip([1, 2]) {
        assert_eq!(row["function"], "embed");
        assert_eq!(row["inputs"], json!({"x": x}));
        assert_eq!(row["outputs"], json!({"out": x * 10}));
        assert_eq!(row["code"]["own"], OWN_A);
        assert!(row["code_id"].as_i64().unwrap() > 0);
    }
    let rows = json_of(&["packages", b.p(), "--library", "nnterp"]);
    assert_eq!(rows.as_array().unwrap().len(), 3);
    let rows = json_of(&[
        "packages",
        b.p(),
        "--library",
        "numpy",
        "--version",
        "1.26.0",
    ]);
    assert_eq!(
        rows.as_array().unwrap().len(),
        3,
        "detected libraries are queryable too"
    );

    let out = memotag()
        .args(["packages", b.p(), "--library", "torch", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(serde_json::from_slice::<J>(&out.stdout).unwrap(), json!([]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has seen no library torch"));
    memotag()
        .args(["packages", b.p(), "--version", "0.1.0"])
        .assert()
        .code(2);
}

#[test]
fn calls_and_show_include_each_results_code_record() {
    let b = build_with_code();
    let rows = json_of(&["calls", b.p(), "embed"]);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let a = &rows[0]["code"];
    assert_eq!(
        rows[0]["code_id"], rows[1]["code_id"],
        "one record, stored once"
    );
    assert_ne!(rows[0]["code_id"], rows[2]["code_id"]);
    let normalized = code_under(OWN_A, "0.1.0", LIB_1).normalized();
    assert_eq!(a["hash"], hex::encode(normalized.hash().0));
    assert_eq!(a["own"], OWN_A);
    assert_eq!(a["user"], json!([{"name": "normalize", "hash": HELPER}]));
    assert_eq!(a["notes"], json!(["captured in a test"]));
    assert_eq!(
        a["libraries"][0],
        json!({"name": "StandardizedTransformer", "kind": "class", "library": "nnterp",
               "version": "0.1.0", "source_hash": LIB_1, "declared": true})
    );
    assert_eq!(a["libraries"][1]["library"], "numpy");
    assert_eq!(a["libraries"][1]["source_hash"], J::Null);
    assert_eq!(rows[2]["code"]["libraries"][0]["version"], "0.2.0");
    memotag()
        .args(["calls", b.p(), "embed"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "own a1a1a1a1, 1 helper, nnterp==0.1.0, numpy==1.26.0",
        ));

    let call_id = rows[2]["call_id"].as_str().unwrap().to_string();
    let shown = json_of(&["show", b.p(), &call_id]);
    assert_eq!(shown[0]["code"], rows[2]["code"]);
    assert!(shown[0].get("sources").is_none(), "only with --sources");
    let shown = json_of(&["show", b.p(), &call_id, "--sources"]);
    assert_eq!(
        shown[0]["sources"],
        json!({
            OWN_B: "def embed(x):\n    return 10 * normalize(x)\n",
            HELPER: "def normalize(x):\n    return x\n",
            LIB_2: null,
        }),
        "the helper's text, sent with code A, is stored once and serves B too"
    );
    memotag()
        .args(["show", b.p(), &call_id, "--sources"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("return 10 * normalize(x)")
                .and(predicate::str::contains(format!(
                    "source {HELPER}: helper `normalize`"
                )))
                .and(predicate::str::contains("(not stored")),
        );
}

#[test]
fn source_prints_a_stored_text_and_says_when_it_is_not_stored() {
    let b = build_with_code();
    memotag()
        .args(["source", b.p(), HELPER])
        .assert()
        .success()
        .stdout("def normalize(x):\n    return x\n");
    let before = file_bytes(&b.path);
    memotag()
        .args(["source", b.p(), LIB_2])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no source text with hash"));
    assert_eq!(file_bytes(&b.path), before);
}

fn code_id_of(path: &Path, own: &str) -> i64 {
    sql(path)
        .query_row(
            "SELECT id FROM code_records WHERE json_extract(record, '$.own') = ?1",
            [own],
            |r| r.get(0),
        )
        .unwrap()
}

#[test]
fn check_passes_a_store_with_code_even_with_a_source_not_sent() {
    let b = build_with_code();
    assert_eq!(json_of(&["check", b.p()]), json!([]));
}

#[test]
fn check_finds_an_altered_code_record_a_missing_one_and_library_rows_that_drifted() {
    let b = build_with_code();
    let a = code_id_of(&b.path, OWN_A);
    let bb = code_id_of(&b.path, OWN_B);
    let f = Store::open(&b.path).unwrap().function("embed", 1).unwrap();
    let conn = sql(&b.path);
    // Someone edits the record's JSON in place: its hash no longer matches.
    conn.execute(
        "UPDATE code_records SET record = replace(record, '0.1.0', '0.1.1') WHERE id = ?1",
        [a],
    )
    .unwrap();
    // A result points at a code record that does not exist.
    conn.execute(
        &format!(
            "UPDATE \"{}\" SET code = 999 WHERE code = ?1",
            memo_table(&f.tag)
        ),
        [bb],
    )
    .unwrap();
    drop(conn);
    let findings = check_findings(&b);
    assert!(
        has(&findings, "code", &format!("code record {a} has hash")),
        "{findings:?}"
    );
    assert!(
        has(
            &findings,
            "missing_code",
            "1 result of `embed` version 1 points at code record 999"
        ),
        "{findings:?}"
    );
    // The edit also left code_libraries describing the old record.
    assert!(has(&findings, "code", "0.1.0"), "{findings:?}");
    assert!(has(&findings, "code", "lacks a row"), "{findings:?}");

    let b = build_with_code();
    sql(&b.path)
        .execute(
            "UPDATE code_records SET record = 'not json' WHERE id = ?1",
            [code_id_of(&b.path, OWN_B)],
        )
        .unwrap();
    let findings = check_findings(&b);
    assert!(has(&findings, "code", "cannot be read"), "{findings:?}");
    // An unreadable record might mention any source: gc refuses rather than guess.
    let before = file_bytes(&b.path);
    memotag()
        .args(["gc", b.p()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("malformed references"));
    assert_eq!(file_bytes(&b.path), before);
}

#[test]
fn gc_removes_unreferenced_code_records_and_sources_exactly_as_listed() {
    let b = build_with_code();
    // Record embed(4) under code C, then drop its result: code C and the sources only it
    // mentions become garbage; the texts A or B mention too (the helper, B's library) do not.
    let store = Store::open(&b.path).unwrap();
    let f = store.function("embed", 1).unwrap();
    let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(4))]).unwrap();
    store
        .record_with_code(
            &call,
            vec![int(40)],
            code_under(OWN_C, "0.3.0", LIB_3),
            vec![
                source(OWN_C, "def embed(x): ...\n"),
                source(HELPER, "def normalize(x):\n    return x\n"),
                source(LIB_3, "class StandardizedTransformer: ... # 0.3.0\n"),
                // B's library source, which B's client did not send: B still mentions it.
                source(LIB_2, "class StandardizedTransformer: ... # 0.2.0\n"),
            ],
        )
        .unwrap();
    // A newer record, so that C is not the newest (gc always keeps the newest).
    let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(5))]).unwrap();
    let newest = CodeRecord {
        own: Some("d4".repeat(16)),
        ..Default::default()
    };
    store
        .record_with_code(&call, vec![int(50)], newest, vec![])
        .unwrap();
    drop(store);
    let c = code_id_of(&b.path, OWN_C);
    let conn = sql(&b.path);
    conn.execute(
        &format!("DELETE FROM \"{}\" WHERE code = ?1", memo_table(&f.tag)),
        [c],
    )
    .unwrap();
    // A source nobody mentions, as a client whose record then failed might leave.
    conn.execute(
        "INSERT INTO sources (hash, text) VALUES ('0badc0de', 'print(1)')",
        [],
    )
    .unwrap();
    drop(conn);
    let libraries_of = |code: i64| -> i64 {
        sql(&b.path)
            .query_row(
                "SELECT count(*) FROM code_libraries WHERE code = ?1",
                [code],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert_eq!(libraries_of(c), 2);

    let before = file_bytes(&b.path);
    let listed = json_of(&["gc", b.p(), "--dry-run"]);
    assert_eq!(file_bytes(&b.path), before, "a dry run changes nothing");
    let mut ids: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r["kind"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            )
        })
        .collect();
    ids.sort();
    let mut expected = vec![
        format!("value:{}", int(4).id().to_hex()),
        format!("value:{}", int(40).id().to_hex()),
        format!("code:{c}"),
        format!("source:{OWN_C}"),
        format!("source:{LIB_3}"),
        "source:0badc0de".to_string(),
    ];
    expected.sort();
    assert_eq!(ids, expected);
    let code_row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "code")
        .unwrap();
    assert!(code_row["preview"]
        .as_str()
        .unwrap()
        .contains("own c3c3c3c3, 1 helper, nnterp==0.3.0"));

    let removed = json_of(&["gc", b.p()]);
    assert_eq!(
        removed, listed,
        "gc removes exactly what the dry run listed"
    );
    assert_eq!(json_of(&["gc", b.p(), "--dry-run"]), json!([]));
    assert_eq!(libraries_of(c), 0, "its code_libraries rows went with it");
    let store = Store::open(&b.path).unwrap();
    assert!(store.code_record(c).unwrap().is_none());
    assert!(
        store.code_record(0).unwrap().is_some(),
        "the empty record stays"
    );
    assert!(store.source(OWN_C).unwrap().is_none());
    assert!(store.source(LIB_3).unwrap().is_none());
    assert!(store.source(LIB_2).unwrap().is_some());
    assert!(store.source(HELPER).unwrap().is_some());
    assert!(store.source(OWN_A).unwrap().is_some());
    drop(store);
    memotag().args(["check", b.p()]).assert().success();
}

#[test]
fn info_reports_generation_mode_counts_and_size() {
    let b = build();
    let info = json_of(&["info", b.p()]);
    assert_eq!(info["format_generation"], memotag::FORMAT_GENERATION);
    assert_eq!(info["mode"], "local");
    assert_eq!(info["journal"], "wal");
    assert_eq!(info["lock"], "free");
    assert_eq!(info["counts"]["families"], 2);
    assert_eq!(info["counts"]["functions"], 2);
    assert_eq!(info["counts"]["results"], 4);
    assert_eq!(info["counts"]["conflicts"], 1);
    assert_eq!(info["counts"]["log_entries"], 2);
    assert_eq!(info["counts"]["values_in_files"], 1);
    assert!(info["size"]["blobs"].as_u64().unwrap() > 5_000);
    assert!(info["size"]["total"].as_u64().unwrap() >= info["size"]["database"].as_u64().unwrap());
    assert_eq!(info["protocol"], 1);
    assert_eq!(
        info["procedures"]["call.record"],
        serde_json::json!([1, 2, 3])
    );
    assert_eq!(info["procedures"]["call.lookup"], serde_json::json!([1, 2]));
}

#[test]
fn info_sees_another_process_holding_the_store() {
    let b = build();
    let store = Store::open(&b.path).unwrap();
    let info = json_of(&["info", b.p()]);
    assert_ne!(
        info["lock"], "free",
        "this test process holds the store open"
    );
    drop(store);
}

#[test]
fn completions_print_a_script() {
    memotag()
        .args(["completions", "bash"])
        .assert()
        .success()
        .stdout(predicate::str::contains("memotag"));
}

// ---- schema changes --------------------------------------------------------------------------

#[test]
fn create_add_input_and_renames_change_the_schema_and_retries_are_no_ops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.memo");
    let p = path.to_str().unwrap();
    memotag()
        .args(["create", p, "f", "--input", "x", "--input", "y=[1, 2]"])
        .args(["--output", "a", "--output", "b"])
        .assert()
        .success()
        .stdout(predicate::str::contains("created `f` version 1"));
    memotag()
        .args(["create", p, "f", "--input", "x", "--input", "y=[1,2]"])
        .args(["--output", "a", "--output", "b"])
        .assert()
        .success()
        .stdout(predicate::str::contains("nothing changed"));
    memotag()
        .args(["add-input", p, "f", "z", "--default", "\"hi\""])
        .assert()
        .success();
    memotag().args(["rename", p, "f", "g"]).assert().success();
    memotag()
        .args(["rename", p, "f", "g"])
        .assert()
        .success()
        .stdout(predicate::str::contains("nothing changed"));
    memotag()
        .args(["rename-input", p, "g", "x", "x2"])
        .assert()
        .success();
    memotag()
        .args(["create", p, "g", "--input", "w", "--version", "2"])
        .assert()
        .success();
    memotag()
        .args(["rename-input", p, "g", "w", "w2"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--version"));
    memotag()
        .args(["rename-input", p, "g", "w", "w2", "--version", "2"])
        .assert()
        .success();

    let store = Store::open(&path).unwrap();
    let g = store.function("g", 1).unwrap();
    let names: Vec<_> = g.inputs.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["x2", "y", "z"]);
    assert_eq!(g.outputs, ["a", "b"]);
    let y_default = store.value(&g.inputs[1].default.unwrap()).unwrap().unwrap();
    assert_eq!(
        common::decode(&y_default),
        memotag::Value::List(vec![memotag::Value::Int(1), memotag::Value::Int(2)])
    );
    assert_eq!(store.function("g", 2).unwrap().inputs[0].name, "w2");
    assert_eq!(store.schema_log(0).unwrap().len(), 6);
}

#[test]
fn a_rerun_rename_is_refused_naming_who_renamed_it_since() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("team.memo");
    let p = path.to_str().unwrap();
    let as_user = |user: &str| {
        let mut cmd = memotag();
        cmd.env("USER", user);
        cmd
    };
    as_user("alice")
        .args(["create", p, "cv_score", "--input", "k"])
        .assert()
        .success();
    as_user("alice")
        .args(["rename", p, "cv_score", "svc_cv_score"])
        .assert()
        .success();
    as_user("bob")
        .args(["rename", p, "svc_cv_score", "svc"])
        .assert()
        .success();
    as_user("bob")
        .args(["rename-input", p, "svc", "k", "key"])
        .assert()
        .success();
    let before = file_bytes(&path);
    // Alice runs her commands again: both refused, naming Bob; the file is unchanged.
    as_user("alice")
        .args(["rename", p, "cv_score", "svc_cv_score"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("now called `svc`")
                .and(predicate::str::contains("by bob@"))
                .and(predicate::str::contains("UTC")),
        );
    as_user("alice")
        .args(["rename-input", p, "svc", "k", "kk"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("now called `key`").and(predicate::str::contains("by bob@")),
        );
    as_user("alice")
        .args(["add-input", p, "svc", "k", "--default", "1"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("now called `key`"));
    assert_eq!(file_bytes(&path), before);
    // Bob's retry of his own rename is a no-op.
    as_user("bob")
        .args(["rename", p, "svc_cv_score", "svc"])
        .assert()
        .success()
        .stdout(predicate::str::contains("nothing changed"));
    let store = Store::open(&path).unwrap();
    assert_eq!(store.function("svc", 1).unwrap().inputs.len(), 1);
}

#[test]
fn a_rejected_schema_change_exits_1_and_logs_nothing() {
    let b = build();
    let before = Store::open(&b.path).unwrap().schema_log(0).unwrap().len();
    memotag()
        .args(["create", b.p(), "square", "--input", "z"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("another interface"));
    memotag()
        .args(["add-input", b.p(), "square", "extra"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("needs a default"));
    memotag()
        .args(["rename", b.p(), "square", "blobby"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("already taken"));
    memotag()
        .args(["calls", b.p(), "nosuch"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("memotag functions"));
    let after = Store::open(&b.path).unwrap().schema_log(0).unwrap().len();
    assert_eq!(before, after);
}

// ---- errors: bad paths, foreign files, bad values --------------------------------------------

#[test]
fn read_commands_never_create_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.memo");
    let p = path.to_str().unwrap();
    for args in [
        vec!["info", p],
        vec!["functions", p],
        vec!["log", p],
        vec!["calls", p, "f"],
        vec!["conflicts", p],
        vec!["packages", p],
        vec!["check", p],
        vec!["gc", p, "--dry-run"],
        vec!["gc", p],
        vec!["migrate", p],
        vec!["set-mode", p, "shared"],
        vec!["rename", p, "a", "b"],
        vec!["add-input", p, "f", "y", "--default", "1"],
    ] {
        memotag()
            .args(&args)
            .assert()
            .code(1)
            .stderr(predicate::str::contains("does not exist"));
        assert!(!path.exists(), "{args:?} created the store");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_foreign_file_is_refused_by_every_command_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not a store\n").unwrap();
    let foreign = dir.path().join("other.db");
    let conn = rusqlite::Connection::open(&foreign).unwrap();
    conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    drop(conn);
    for path in [&text, &foreign] {
        let p = path.to_str().unwrap();
        let before = file_bytes(path);
        for args in [
            vec!["info", p],
            vec!["functions", p],
            vec!["check", p],
            vec!["gc", p],
            vec!["migrate", p],
            vec!["set-mode", p, "shared"],
            vec!["create", p, "f", "--input", "x"],
            vec!["rename", p, "a", "b"],
        ] {
            memotag()
                .args(&args)
                .assert()
                .code(1)
                .stderr(predicate::str::contains("is not a memotag store"))
                .stderr(predicate::str::contains("check the path"));
            assert_eq!(file_bytes(path), before, "{args:?} changed {p}");
        }
    }
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["notes.txt", "other.db"], "no -wal or -journal left");
}

#[test]
fn a_bad_json_value_is_a_usage_error_that_changes_nothing() {
    let b = build();
    let before = file_bytes(&b.path);
    memotag()
        .args(["calls", b.p(), "square", "--where", "x=[1,"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("is not JSON"));
    memotag()
        .args(["calls", b.p(), "square", "--where", "x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("NAME=VALUE"));
    memotag()
        .args(["add-input", b.p(), "square", "y", "--default", "hello"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("double quotes"));
    memotag()
        .args(["create", b.p(), "h", "--input", "y={oops"])
        .assert()
        .code(2);
    memotag().args(["calls", b.p()]).assert().code(2);
    memotag().assert().code(2);
    assert_eq!(file_bytes(&b.path), before);
}

// ---- check -----------------------------------------------------------------------------------

#[test]
fn check_passes_a_healthy_store() {
    let b = build();
    memotag()
        .args(["check", b.p()])
        .assert()
        .success()
        .stdout(predicate::str::contains("passed every check"));
    assert_eq!(json_of(&["check", b.p()]), json!([]));
}

fn check_findings(b: &Built) -> Vec<J> {
    let out = memotag()
        .args(["check", b.p(), "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "a broken store fails check");
    let rows: J = serde_json::from_slice(&out.stdout).unwrap();
    rows.as_array().unwrap().clone()
}

fn has(findings: &[J], kind: &str, text: &str) -> bool {
    findings
        .iter()
        .any(|f| f["kind"] == kind && f["message"].as_str().unwrap().contains(text))
}

#[test]
fn check_finds_a_deleted_log_row() {
    let b = build();
    sql(&b.path)
        .execute("DELETE FROM schema_log WHERE seq = 1", [])
        .unwrap();
    let findings = check_findings(&b);
    assert!(has(&findings, "log", "entry 1 is missing"), "{findings:?}");
}

#[test]
fn check_finds_a_removed_value_row() {
    let b = build();
    sql(&b.path)
        .execute(
            "DELETE FROM \"values\" WHERE id = ?1",
            [int(9).id().as_bytes()],
        )
        .unwrap();
    let findings = check_findings(&b);
    assert!(
        has(&findings, "missing_value", &int(9).id().to_hex()),
        "{findings:?}"
    );
    assert!(has(&findings, "missing_value", "`square` version 1"));
}

#[test]
fn check_finds_a_removed_or_damaged_value_file() {
    let b = build();
    let id = EncodedValue::raw(vec![7u8; 5_000]).id();
    let file = BlobStore::beside(&b.path).path_of(&id);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    assert!(has(&check_findings(&b), "blob", "modified or damaged"));
    std::fs::remove_file(&file).unwrap();
    let findings = check_findings(&b);
    assert!(has(&findings, "blob", "is missing"), "{findings:?}");
}

#[test]
fn check_finds_values_that_cannot_be_read_back() {
    let b = build();
    // What an older memotag recorded for a result nested 513 levels deep: bytes that match
    // their id but that no decoder reads, inline and as a file.
    let mut deep = vec![0x81_u8; 513];
    deep.push(0x80);
    let inline = EncodedValue {
        codec: memotag::Codec::Cbor,
        bytes: deep.clone(),
    };
    deep.resize(5_000, 0x00);
    let in_file = EncodedValue {
        codec: memotag::Codec::Cbor,
        bytes: deep,
    };
    BlobStore::beside(&b.path)
        .put(&in_file, &in_file.id())
        .unwrap();
    let conn = sql(&b.path);
    for (value, data) in [(&inline, Some(inline.bytes.clone())), (&in_file, None)] {
        conn.execute(
            "INSERT INTO \"values\" (id, codec, size, data, preview) VALUES (?1, 1, ?2, ?3, '?')",
            rusqlite::params![value.id().as_bytes(), value.bytes.len() as i64, data],
        )
        .unwrap();
    }
    drop(conn);
    let findings = check_findings(&b);
    for value in [&inline, &in_file] {
        let id = value.id().to_hex();
        assert!(
            has(
                &findings,
                "value",
                &format!("value {id} (cbor) cannot be read back")
            ),
            "{findings:?}"
        );
    }
    assert!(has(&findings, "value", "nested deeper than 512 levels"));
}

#[test]
fn check_finds_a_result_filed_under_another_call_id() {
    let b = build();
    let f = Store::open(&b.path).unwrap().function("square", 1).unwrap();
    // SQLite does not mind: the row is merely unreachable by its own call, and a lookup of the
    // call it now claims would find it.
    sql(&b.path)
        .execute(
            &format!(
                "UPDATE \"{}\" SET call_id = ?1 WHERE seq = 1",
                memo_table(&f.tag)
            ),
            [[0xab_u8; 16]],
        )
        .unwrap();
    let findings = check_findings(&b);
    assert!(
        has(
            &findings,
            "call_id",
            &format!(
                "result 1 of `square` version 1 is filed under call id {}",
                "ab".repeat(16)
            )
        ),
        "{findings:?}"
    );
}

#[test]
fn check_finds_catalog_and_memo_table_drift() {
    let b = build();
    let conn = sql(&b.path);
    conn.execute(
        "UPDATE families SET name = 'sneaky' WHERE name = 'blobby'",
        [],
    )
    .unwrap();
    let f = Store::open(&b.path).unwrap().function("square", 1).unwrap();
    conn.execute_batch(&format!(
        "ALTER TABLE \"{}\" ADD COLUMN in_deadbeef BLOB",
        memo_table(&f.tag)
    ))
    .unwrap();
    drop(conn);
    let findings = check_findings(&b);
    assert!(has(&findings, "catalog", "name=sneaky"), "{findings:?}");
    assert!(has(&findings, "memo_table", "in_deadbeef"), "{findings:?}");
}

// ---- gc --------------------------------------------------------------------------------------

/// Drops results so that their values become garbage, and leaves an orphan value file.
fn make_garbage(b: &Built) -> PathBuf {
    let store = Store::open(&b.path).unwrap();
    let square = store.function("square", 1).unwrap();
    let blobby = store.function("blobby", 1).unwrap();
    drop(store);
    let conn = sql(&b.path);
    let x3 = int(3).id();
    conn.execute(
        &format!(
            "DELETE FROM \"{}\" WHERE \"in_{}\" = ?1",
            memo_table(&square.tag),
            square.inputs[0].tag.simple()
        ),
        [x3.as_bytes()],
    )
    .unwrap();
    conn.execute(&format!("DELETE FROM \"{}\"", memo_table(&blobby.tag)), [])
        .unwrap();
    // A code record no result refers to, with its library row, and the source only it mentions.
    conn.execute(
        "INSERT INTO code_records (id, hash, record)
         VALUES (7, randomblob(16), '{\"own\":\"0ddba11\",\"libraries\":[{\"name\":\"np\",\"kind\":\"module\",\"library\":\"numpy\",\"version\":\"2.0\",\"source_hash\":null,\"declared\":false}]}')",
        [],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO code_libraries (code, name, library, version, declared)
         VALUES (7, 'np', 'numpy', '2.0', 0)",
        [],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO sources (hash, text) VALUES ('0ddba11', 'def f(x): return x')",
        [],
    )
    .unwrap();
    // The newest code record is never collected, referenced or not (its id must not be reused).
    let newest = CodeRecord {
        own: Some("0ddba12".into()),
        ..Default::default()
    };
    conn.execute(
        "INSERT INTO code_records (id, hash, record) VALUES (8, ?1, ?2)",
        rusqlite::params![newest.hash().0, serde_json::to_string(&newest).unwrap()],
    )
    .unwrap();
    drop(conn);
    let orphan = EncodedValue::raw(vec![1u8; 2_000]);
    BlobStore::beside(&b.path)
        .put(&orphan, &orphan.id())
        .unwrap();
    BlobStore::beside(&b.path).path_of(&orphan.id())
}

#[test]
fn gc_dry_run_changes_nothing_and_gc_removes_exactly_what_it_listed() {
    let b = build();
    let orphan = make_garbage(&b);
    let before = file_bytes(&b.path);
    let listed = json_of(&["gc", b.p(), "--dry-run"]);
    assert_eq!(file_bytes(&b.path), before, "a dry run changes nothing");
    assert!(orphan.exists());

    let mut ids: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r["kind"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            )
        })
        .collect();
    ids.sort();
    let blob = EncodedValue::raw(vec![7u8; 5_000]).id();
    let mut expected = vec![
        format!("value:{}", int(3).id().to_hex()),
        format!("value:{}", int(9).id().to_hex()),
        format!("value:{}", blob.to_hex()),
        format!("file:{}", EncodedValue::raw(vec![1u8; 2_000]).id().to_hex()),
        "code:7".to_string(),
        "source:0ddba11".to_string(),
    ];
    expected.sort();
    assert_eq!(ids, expected, "x=1 is still used by square(1)");

    let removed = json_of(&["gc", b.p()]);
    assert_eq!(
        removed, listed,
        "gc removes exactly what the dry run listed"
    );
    assert!(!orphan.exists());
    assert!(!BlobStore::beside(&b.path).path_of(&blob).exists());
    assert_eq!(json_of(&["gc", b.p(), "--dry-run"]), json!([]));
    let store = Store::open(&b.path).unwrap();
    assert!(store.value(&int(9).id()).unwrap().is_none());
    assert!(store.value(&int(4).id()).unwrap().is_some());
    assert!(store.code_record(7).unwrap().is_none());
    assert!(store.source("0ddba11").unwrap().is_none());
    drop(store);
    let libraries: i64 = sql(&b.path)
        .query_row("SELECT count(*) FROM code_libraries", [], |r| r.get(0))
        .unwrap();
    assert_eq!(libraries, 0);
    memotag().args(["check", b.p()]).assert().success();
}

// ---- migrate and set-mode --------------------------------------------------------------------

#[test]
fn migrate_leaves_a_current_store_alone() {
    let b = build();
    let before = file_bytes(&b.path);
    memotag()
        .args(["migrate", b.p()])
        .assert()
        .success()
        .stdout(predicate::str::contains("nothing to do"));
    assert_eq!(file_bytes(&b.path), before);
}

#[test]
fn a_store_newer_than_this_memotag_is_refused_unchanged() {
    let b = build();
    sql(&b.path)
        .execute_batch("PRAGMA user_version = 99;")
        .unwrap();
    let before = file_bytes(&b.path);
    for args in [
        vec!["migrate", b.p()],
        vec!["check", b.p()],
        vec!["gc", b.p()],
        vec!["set-mode", b.p(), "shared"],
    ] {
        memotag().args(&args).assert().code(1).stderr(
            predicate::str::contains("generation 99")
                .and(predicate::str::contains("upgrade memotag")),
        );
        assert_eq!(file_bytes(&b.path), before, "{args:?}");
    }
}

#[test]
fn a_store_whose_read_level_is_newer_is_refused_by_read_commands() {
    let b = build();
    sql(&b.path)
        .execute("UPDATE meta SET value = '99' WHERE key = 'read_level'", [])
        .unwrap();
    let before = file_bytes(&b.path);
    for args in [
        vec!["functions", b.p()],
        vec!["log", b.p()],
        vec!["calls", b.p(), "f"],
    ] {
        memotag().args(&args).assert().code(1).stderr(
            predicate::str::contains("read level 99")
                .and(predicate::str::contains("upgrade memotag")),
        );
        assert_eq!(file_bytes(&b.path), before, "{args:?}");
    }
}

#[test]
fn set_mode_switches_both_ways_when_nobody_holds_the_store() {
    let b = build();
    memotag()
        .args(["set-mode", b.p(), "shared"])
        .assert()
        .success()
        .stdout(predicate::str::contains("from local to shared"));
    assert_eq!(Store::open(&b.path).unwrap().mode(), Mode::Shared);
    assert_eq!(file_bytes(&b.path)[18], 1, "rollback journal in the header");
    assert_eq!(json_of(&["info", b.p()])["journal"], "rollback");
    memotag()
        .args(["set-mode", b.p(), "shared"])
        .assert()
        .success()
        .stdout(predicate::str::contains("already in shared mode"));
    memotag()
        .args(["set-mode", b.p(), "local"])
        .assert()
        .success();
    let store = Store::open(&b.path).unwrap();
    assert_eq!(store.mode(), Mode::Local);
    assert_eq!(store.function("square", 1).unwrap().inputs.len(), 2);
    drop(store);
    assert_eq!(file_bytes(&b.path)[18], 2, "WAL in the header");
    memotag().args(["check", b.p()]).assert().success();
}

#[test]
fn set_mode_is_refused_while_another_client_holds_the_store() {
    let b = build();
    let store = Store::open(&b.path).unwrap();
    store.function("square", 1).unwrap();
    let before = file_bytes(&b.path);
    memotag()
        .args(["set-mode", b.p(), "shared"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("in use by other clients"))
        .stderr(predicate::str::contains("nothing was changed"));
    assert_eq!(file_bytes(&b.path), before);
    assert_eq!(store.mode(), Mode::Local);
    drop(store);
    assert_eq!(Store::open(&b.path).unwrap().mode(), Mode::Local);
}
