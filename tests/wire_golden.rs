//! Golden wire samples: every generation of every procedure encodes a fixed request and response
//! to exactly the bytes committed in tests/fixtures/wire/, and decodes them back. A change that
//! alters what an old generation sends fails here. `MEMOTAG_BLESS=1` rewrites the samples (only
//! for a new generation, never for an existing one).

mod common;

use std::fmt::Debug;
use std::path::PathBuf;

use common::int;
use memotag::protocol::procedures::{
    Answer, LookupAnswer, LookupRequest, Query, RecordRequest, CALL_LOOKUP, CALL_QUERY,
    CALL_RECORD, CALL_RECORD_BATCH, SCHEMA_CHANGE, SCHEMA_LOG, VALUE_GET,
};
use memotag::protocol::Procedure;
use memotag::{
    BoundCall, CallId, FamilyTag, FunctionSpec, FunctionTag, Hit, InputSpec, InputTag, LogEntry,
    LoggedChange, RecordOutcome, SchemaChange,
};
use uuid::Uuid;

fn golden(name: &str) -> PathBuf {
    PathBuf::from("tests/fixtures/wire").join(name)
}

fn check<Req: PartialEq + Debug, Resp: PartialEq + Debug>(
    proc: &Procedure<Req, Resp>,
    request: &Req,
    response: &Resp,
) {
    let bless = std::env::var("MEMOTAG_BLESS").is_ok_and(|v| v == "1");
    for version in proc.versions() {
        let generation = proc.generation(version).unwrap();
        let parts: [(&str, Vec<u8>); 2] = [
            ("request", (generation.encode_request)(request).unwrap()),
            ("response", (generation.encode_response)(response).unwrap()),
        ];
        for (part, bytes) in parts {
            let path = golden(&format!("{}.g{version}.{part}.json", proc.method));
            if bless && !path.exists() {
                std::fs::write(&path, &bytes).unwrap();
            }
            let stored = std::fs::read(&path).unwrap_or_else(|_| {
                panic!(
                    "missing golden sample {} (MEMOTAG_BLESS=1 writes new ones)",
                    path.display()
                )
            });
            assert_eq!(
                String::from_utf8_lossy(&stored),
                String::from_utf8_lossy(&bytes),
                "{} generation {version} {part} changed on the wire",
                proc.method
            );
            if part == "request" {
                assert_eq!(
                    &(generation.decode_request)(&stored).unwrap(),
                    request,
                    "{}",
                    path.display()
                );
            } else {
                assert_eq!(
                    &(generation.decode_response)(&stored).unwrap(),
                    response,
                    "{}",
                    path.display()
                );
            }
        }
    }
}

fn tag(n: u128) -> Uuid {
    Uuid::from_u128(0x0123_4567_89ab_4cde_8f01_0000_0000_0000 + n)
}

/// A call as a payload carries it (its call id is a placeholder: decoding never checks ids; the
/// store re-derives them before use).
fn sample_call() -> BoundCall {
    let inputs = vec![(InputTag(tag(2)), int(3)), (InputTag(tag(3)), int(4))];
    let input_ids: Vec<_> = inputs.iter().map(|(_, v)| v.id()).collect();
    serde_json::from_value(serde_json::json!({
        "function": FunctionTag(tag(1)),
        "call_id": CallId([0xab; 16]),
        "inputs": inputs,
        "input_ids": input_ids,
    }))
    .expect("a call payload")
}

#[test]
fn schema_change_generations_are_stable() {
    let change = SchemaChange::CreateFunction(FunctionSpec {
        name: "train".into(),
        version: 2,
        inputs: vec![
            InputSpec::required("data"),
            InputSpec::with_default("lr", int(1)),
        ],
        outputs: vec!["loss".into(), "acc".into()],
        new_family: false,
    });
    check(&SCHEMA_CHANGE, &change, &Some(7));
    let rename = SchemaChange::RenameFunction {
        family: FamilyTag(tag(9)),
        to: "fit".into(),
    };
    let generation = SCHEMA_CHANGE.generation(1).unwrap();
    let bytes = (generation.encode_request)(&rename).unwrap();
    assert_eq!((generation.decode_request)(&bytes).unwrap(), rename);
}

#[test]
fn schema_log_generations_are_stable() {
    let entry = LogEntry {
        seq: 1,
        change: LoggedChange::RenameFunction {
            family: FamilyTag(tag(9)),
            from: "f".into(),
            to: "g".into(),
        },
        client: "ada@lab".into(),
        time_ms: 1_700_000_000_000,
    };
    check(&SCHEMA_LOG, &0, &vec![entry]);
}

#[test]
fn call_record_generations_are_stable() {
    let request = RecordRequest::without_code(sample_call(), vec![int(12)]);
    check(&CALL_RECORD, &request, &RecordOutcome::Inserted { seq: 5 });
    check(
        &CALL_RECORD_BATCH,
        &vec![request],
        &vec![RecordOutcome::AlreadyRecorded { seq: 5 }],
    );
}

#[test]
fn code_generations_are_stable() {
    use memotag::protocol::procedures::{
        PackageRow, CODE_PACKAGES, CODE_PREFLIGHT, CODE_RECORD, CODE_SOURCE,
    };
    let record = memotag::CodeRecord {
        own: Some("0f".repeat(16)),
        user: vec![memotag::UserRef {
            name: "helper".into(),
            hash: "ab".repeat(16),
        }],
        libraries: vec![memotag::LibraryRef {
            name: "StandardizedTransformer".into(),
            kind: memotag::RefKind::Class,
            library: "nnterp".into(),
            version: Some("0.1.0".into()),
            source_hash: Some("cd".repeat(16)),
            declared: true,
        }],
        notes: vec![],
    };
    check(&CODE_RECORD, &3, &Some(record));
    check(&CODE_PREFLIGHT, &vec!["ab".repeat(16)], &vec![]);
    check(
        &CODE_SOURCE,
        &"ab".repeat(16),
        &Some("def helper(x):\n    return x\n".to_string()),
    );
    let row = PackageRow {
        library: "nnterp".into(),
        version: Some("0.1.0".into()),
        declared: true,
        results: 2,
    };
    check(&CODE_PACKAGES, &vec![FunctionTag(tag(1))], &vec![row]);
}

#[test]
fn lookup_query_and_value_generations_are_stable() {
    let hit = Hit {
        seq: 5,
        code: 0,
        output_ids: vec![int(12).id()],
        outputs: vec![int(12)],
    };
    let request = LookupRequest {
        call: sample_call(),
        reader: None,
    };
    let answer = LookupAnswer {
        hit: Some(hit),
        other_code: 0,
        changed: vec![],
    };
    check(&CALL_LOOKUP, &request, &answer);
    let query = Query::Count {
        function: FunctionTag(tag(1)),
    };
    check(&CALL_QUERY, &query, &Answer::Count(3));
    check(&VALUE_GET, &int(12).id(), &Some(int(12)));
}
