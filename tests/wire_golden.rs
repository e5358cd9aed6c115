//! Golden wire samples: every generation of every procedure encodes a fixed request and response
//! to exactly the bytes committed in tests/fixtures/wire/, and decodes them back. A change that
//! alters what an old generation sends fails here. `MEMOTAG_BLESS=1` writes the samples of a new
//! generation (never over an existing one).
//!
//! The samples themselves are pinned too: `tests/fixtures/wire/RELEASED.b3sum` lists every
//! sample's BLAKE3 hash (b3sum's format), so a sample rewritten together with the code that
//! encodes it still fails, and where the repository's history is at hand every sample must still
//! have the bytes it was first committed with. A released generation never changes meaning; a
//! new meaning is a new generation with new samples and new manifest lines.

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
    for version in proc.versions() {
        check_generation(proc, version, request, response);
    }
}

/// One generation's samples: `request` and `response` encode to them and decode from them.
fn check_generation<Req: PartialEq + Debug, Resp: PartialEq + Debug>(
    proc: &Procedure<Req, Resp>,
    version: u32,
    request: &Req,
    response: &Resp,
) {
    let bless = std::env::var("MEMOTAG_BLESS").is_ok_and(|v| v == "1");
    {
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

fn sample_code() -> memotag::CodeRecord {
    memotag::CodeRecord {
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
    }
}

/// Generations 1 and 2 carry a result without code (2 as `"code":0`, as the build that released
/// it sent); generation 3 carries the code record and its sources.
#[test]
fn call_record_generations_are_stable() {
    assert_eq!(CALL_RECORD.versions(), vec![1, 2, 3]);
    assert_eq!(CALL_RECORD_BATCH.versions(), vec![1, 2, 3]);
    let plain = RecordRequest::without_code(sample_call(), vec![int(12)]);
    let with_code = RecordRequest {
        code: sample_code(),
        sources: vec![memotag::SourceText {
            hash: "ab".repeat(16),
            text: "def helper(x):\n    return x\n".into(),
        }],
        ..plain.clone()
    };
    for version in [1, 2] {
        check_generation(
            &CALL_RECORD,
            version,
            &plain,
            &RecordOutcome::Inserted { seq: 5 },
        );
        check_generation(
            &CALL_RECORD_BATCH,
            version,
            &vec![plain.clone()],
            &vec![RecordOutcome::AlreadyRecorded { seq: 5 }],
        );
    }
    check_generation(
        &CALL_RECORD,
        3,
        &with_code,
        &RecordOutcome::Inserted { seq: 5 },
    );
    check_generation(
        &CALL_RECORD_BATCH,
        3,
        &vec![plain, with_code],
        &vec![
            RecordOutcome::AlreadyRecorded { seq: 5 },
            RecordOutcome::Inserted { seq: 6 },
        ],
    );
}

/// Generation 2's code is the integer the build of commit 22146ff sent: a result with a code
/// record cannot travel as it, and the bytes of the build that had given generation 2 another
/// meaning (`"code":{},"sources":[]`) are not read as it, nor is any code but 0.
#[test]
fn call_record_generation_2_carries_only_the_empty_code() {
    let plain = RecordRequest::without_code(sample_call(), vec![int(12)]);
    let with_code = RecordRequest {
        code: sample_code(),
        ..plain.clone()
    };
    for proc_request in [
        (CALL_RECORD.generation(1).unwrap().encode_request)(&with_code),
        (CALL_RECORD.generation(2).unwrap().encode_request)(&with_code),
        (CALL_RECORD_BATCH.generation(2).unwrap().encode_request)(&vec![plain.clone(), with_code]),
    ] {
        let reason = proc_request.unwrap_err();
        assert!(reason.contains("code record"), "{reason}");
    }
    let g2 = std::fs::read(golden("call.record.g2.request.json")).unwrap();
    let decode = CALL_RECORD.generation(2).unwrap().decode_request;
    assert_eq!(decode(&g2).unwrap(), plain);
    let text = String::from_utf8(g2).unwrap();
    let rewritten = text.replace(r#""code":0}"#, r#""code":{},"sources":[]}"#);
    assert_ne!(rewritten, text);
    assert!(decode(rewritten.as_bytes()).is_err());
    let numbered = text.replace(r#""code":0}"#, r#""code":5}"#);
    let reason = decode(numbered.as_bytes()).unwrap_err();
    assert!(reason.contains("only carry code 0"), "{reason}");
    // And generation 3 does not read generation 2's bytes either.
    let decode3 = CALL_RECORD.generation(3).unwrap().decode_request;
    assert!(decode3(text.as_bytes()).is_err());
}

#[test]
fn code_generations_are_stable() {
    use memotag::protocol::procedures::{
        PackageRow, CODE_PACKAGES, CODE_PREFLIGHT, CODE_RECORD, CODE_SOURCE,
    };
    check(&CODE_RECORD, &3, &Some(sample_code()));
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

const MANIFEST: &str = "RELEASED.b3sum";

const NEVER_CHANGES: &str = "a released generation never changes meaning and its golden samples are never rewritten; a new meaning is a new generation number with new samples (SPEC §5)";

/// Every sample in tests/fixtures/wire/ is listed in the manifest with its BLAKE3 hash, and every
/// listed sample is there with exactly that hash. A new generation's samples get new lines (the
/// failure prints them); an existing line never changes.
#[test]
fn golden_samples_match_the_released_manifest() {
    let dir = PathBuf::from("tests/fixtures/wire");
    let manifest = std::fs::read_to_string(dir.join(MANIFEST)).expect("the manifest is committed");
    let mut listed = std::collections::BTreeMap::new();
    for (n, line) in manifest.lines().enumerate() {
        let (hash, name) = line
            .split_once("  ")
            .unwrap_or_else(|| panic!("{MANIFEST} line {}: not `HASH  NAME`", n + 1));
        assert!(
            listed.insert(name.to_string(), hash.to_string()).is_none(),
            "{MANIFEST} lists {name} twice"
        );
    }
    let mut problems = Vec::new();
    let mut present = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name == MANIFEST {
            continue;
        }
        let hash = blake3::hash(&std::fs::read(dir.join(&name)).unwrap())
            .to_hex()
            .to_string();
        match listed.get(&name) {
            None => problems.push(format!(
                "{name} is not in {MANIFEST}; if it is a new generation's sample, add the line `{hash}  {name}`"
            )),
            Some(pinned) if *pinned != hash => problems.push(format!(
                "{name} changed: {MANIFEST} pins {pinned}, the file hashes to {hash}"
            )),
            Some(_) => {}
        }
        present.insert(name);
    }
    for name in listed.keys().filter(|n| !present.contains(*n)) {
        problems.push(format!(
            "{name} is in {MANIFEST} but missing from {}",
            dir.display()
        ));
    }
    assert!(
        problems.is_empty(),
        "golden wire samples differ from {MANIFEST}: {NEVER_CHANGES}.\n{}",
        problems.join("\n")
    );
}

/// Where git and this repository's history are at hand, every committed sample still has the
/// bytes of the commit that first added it: this catches a sample rewritten together with its
/// manifest line. (Tag v0.1.0 is no reference: it holds the rewritten generation-2 samples.)
#[test]
fn golden_samples_keep_the_bytes_they_were_first_committed_with() {
    let git = |args: &[&str]| -> Option<Vec<u8>> {
        let out = std::process::Command::new("git").args(args).output().ok()?;
        out.status.success().then_some(out.stdout)
    };
    let Some(log) = git(&[
        "log",
        "--reverse",
        "--diff-filter=A",
        "--format=commit %H",
        "--name-only",
        "--",
        "tests/fixtures/wire/",
    ]) else {
        eprintln!("SKIPPED: no git history here to compare the golden samples with");
        return;
    };
    let mut first_added = std::collections::BTreeMap::new();
    let mut commit = String::new();
    for line in String::from_utf8(log).unwrap().lines() {
        if let Some(c) = line.strip_prefix("commit ") {
            commit = c.to_string();
        } else if !line.is_empty() {
            first_added
                .entry(line.to_string())
                .or_insert_with(|| commit.clone());
        }
    }
    let mut problems = Vec::new();
    for (path, commit) in &first_added {
        let Ok(now) = std::fs::read(path) else {
            problems.push(format!("{path} (added in {commit}) was removed"));
            continue;
        };
        let then = git(&["show", &format!("{commit}:{path}")]).expect("git show of a logged file");
        if now != then {
            problems.push(format!(
                "{path} differs from the bytes commit {commit} added (`git show {commit}:{path}`)"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "golden wire samples were rewritten: {NEVER_CHANGES}.\n{}",
        problems.join("\n")
    );
}
