//! Shared helpers for the end-to-end tests: temporary stores, small values, and real child
//! processes (the test binary re-runs itself with one test selected and a role in the env).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};

use memotag::{EncodedValue, Value};

pub const ROLE_ENV: &str = "MEMOTAG_TEST_ROLE";

pub fn int(i: i64) -> EncodedValue {
    EncodedValue::from_value(&Value::Int(i)).expect("an int encodes")
}

pub fn text(s: &str) -> EncodedValue {
    EncodedValue::from_value(&Value::Str(s.to_string())).expect("a string encodes")
}

pub fn decode(v: &EncodedValue) -> Value {
    memotag::value::decode_canonical(&v.bytes).expect("canonical value")
}

/// The role this process was started with, if it is a child.
pub fn role() -> Option<String> {
    std::env::var(ROLE_ENV).ok()
}

/// Starts this test binary again running only `test_name`, with `role` and extra env vars.
pub fn spawn_child(test_name: &str, role: &str, env: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, role)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn child test process")
}

/// Waits for a child and returns its stdout lines; panics if it failed.
pub fn finish(child: Child) -> Vec<String> {
    let out = child.wait_with_output().expect("child output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child failed: {:?}\n{stdout}",
        out.status
    );
    // The harness prints "test name ... " without a newline before the child's first line.
    stdout
        .lines()
        .filter_map(|l| l.find("OUT ").map(|at| l[at + 4..].to_string()))
        .collect()
}

pub fn file_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read file")
}
