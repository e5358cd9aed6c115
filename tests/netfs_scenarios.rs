//! Shared mode on a real network filesystem: processes on two mounts of one export directory
//! (`tests/netfs/run.sh` sets them up over sshfs and points `MEMOTAG_NETFS_A` / `_B` at them).
//! Ignored unless both variables are set: `cargo test --test netfs_scenarios -- --include-ignored`.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{decode, finish, int, role, ROLE_ENV};
use memotag::{FunctionSpec, InputSpec, OpenOptions, Store, Value};

/// The two mount points, or `None` outside the rig.
fn mounts() -> Option<(PathBuf, PathBuf)> {
    let a = std::env::var_os("MEMOTAG_NETFS_A")?;
    let b = std::env::var_os("MEMOTAG_NETFS_B")?;
    Some((PathBuf::from(a), PathBuf::from(b)))
}

/// A fresh store name in the export, as seen through mount A and mount B.
fn fresh_store(name: &str) -> Option<(PathBuf, PathBuf)> {
    let (a, b) = mounts()?;
    let file = format!("{name}-{}.memo", std::process::id());
    Some((a.join(&file), b.join(&file)))
}

/// Starts this test binary again running only `test_name` (ignored tests included), as `role`.
fn spawn_child(test_name: &str, role: &str, env: &[(&str, String)]) -> std::process::Child {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([test_name, "--exact", "--include-ignored", "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, role)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn child test process")
}

fn env_path(key: &str) -> PathBuf {
    PathBuf::from(std::env::var(key).unwrap())
}

fn env_i64(key: &str) -> i64 {
    std::env::var(key).unwrap().parse().unwrap()
}

// ---- scenario 1 -------------------------------------------------------------------------------

const S1: &str = "scenario1_four_writers_on_two_mounts_lose_nothing";
const S1_PER_WRITER: i64 = 500;
const S1_STRIDE: i64 = 375; // writer w records [w*STRIDE, w*STRIDE + 500): 125 overlap

/// 4 writers (two per mount) record 500 results each, overlapping, while a fifth process (on
/// mount B) changes the schema: every acknowledged result is present, the file is intact and the
/// schema log gapless.
#[test]
#[ignore = "needs the netfs rig (tests/netfs/run.sh)"]
fn scenario1_four_writers_on_two_mounts_lose_nothing() {
    match role().as_deref() {
        Some("writer") => {
            let store = Store::open(env_path("STORE")).unwrap();
            let me = env_i64("ME");
            let f = store.function("f", 1).unwrap();
            let x = f.inputs[0].tag;
            let mut errors = 0;
            for i in me * S1_STRIDE..me * S1_STRIDE + S1_PER_WRITER {
                let recorded = store
                    .bind(f.tag, vec![(x, int(i))])
                    .and_then(|call| store.record(&call, vec![int(i * 3)]));
                match recorded {
                    Ok(_) => println!("OUT ack {i}"),
                    Err(e) => {
                        errors += 1;
                        eprintln!("writer {me}: record {i} failed: {e}");
                    }
                }
            }
            println!("OUT errors {errors}");
            return;
        }
        Some("schema") => {
            let store = Store::open(env_path("STORE")).unwrap();
            let f = store.function("f", 1).unwrap();
            for round in 0..20 {
                let step = || -> Result<(), memotag::SchemaError> {
                    store.add_input(f.tag, &format!("extra_{round}"), Some(int(round)))?;
                    store.rename_function(f.family, &format!("f_{round}"))?;
                    store.create_function(FunctionSpec::new(
                        format!("other_{round}"),
                        vec![InputSpec::required("a")],
                    ))?;
                    Ok(())
                };
                match step() {
                    Ok(()) => println!("OUT round {round}"),
                    Err(e) => eprintln!("schema: round {round} failed: {e}"),
                }
            }
            if let Err(e) = store.rename_function(f.family, "f") {
                eprintln!("schema: final rename failed: {e}");
            }
            return;
        }
        Some(_) => return,
        None => {}
    }
    let Some((on_a, on_b)) = fresh_store("s1") else {
        return;
    };
    let store = OpenOptions::new()
        .mode(memotag::Mode::Shared)
        .open(&on_a)
        .unwrap();
    store
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    drop(store);
    let started = Instant::now();
    let env = |path: &PathBuf, me: i64| vec![("STORE", path.display().to_string()), ("ME", me.to_string())];
    let mut writers: Vec<_> = (0..4)
        .map(|me| spawn_child(S1, "writer", &env(if me < 2 { &on_a } else { &on_b }, me)))
        .collect();
    let schema = spawn_child(S1, "schema", &env(&on_b, 9));
    let mut acked = Vec::new();
    let mut errors = 0;
    for child in writers.drain(..) {
        for line in finish(child) {
            if let Some(i) = line.strip_prefix("ack ") {
                acked.push(i.parse::<i64>().unwrap());
            } else if let Some(n) = line.strip_prefix("errors ") {
                errors += n.parse::<i64>().unwrap();
            }
        }
    }
    let rounds = finish(schema).len();
    let elapsed = started.elapsed();

    let store = Store::open(&on_a).unwrap();
    let f = store.function("f", 1).or_else(|_| store.function("f_19", 1)).unwrap();
    let x = f.inputs[0].tag;
    // Lost: no result, or a result whose output value is gone (both seen before the lock).
    let mut lost = Vec::new();
    let mut wrong = 0;
    for &i in &acked {
        let call = store.bind(f.tag, vec![(x, int(i))]).unwrap();
        match store.lookup(&call) {
            Ok(Some(hit)) if decode(&hit.outputs[0]) == Value::Int(i * 3) => {}
            Ok(Some(_)) => wrong += 1,
            Ok(None) | Err(_) => lost.push(i),
        }
    }
    let mut integrity = store
        .integrity_check()
        .unwrap_or_else(|e| vec![e.to_string()]);
    integrity.truncate(3);
    let log = store.schema_log(0).unwrap_or_default();
    let gapless = log.iter().enumerate().all(|(i, e)| e.seq == i as u64 + 1);
    println!(
        "scenario 1: {} acknowledged records (4 x {S1_PER_WRITER} attempted, {errors} errors), \
         {} lost, {wrong} with wrong outputs; {rounds}/20 schema rounds; log {} entries, gapless: {gapless}; integrity {:?}; \
         {:.1} s",
        acked.len(),
        lost.len(),
        log.len(),
        integrity,
        elapsed.as_secs_f64()
    );
    assert!(lost.is_empty(), "{} acknowledged results lost", lost.len());
    assert_eq!(wrong, 0, "results with wrong outputs");
    assert_eq!(errors, 0, "no record may fail under contention");
    assert_eq!(integrity, vec!["ok"]);
    assert!(gapless, "schema log gapless");
    assert_eq!(log.len(), 1 + 3 * rounds + 1);
}
