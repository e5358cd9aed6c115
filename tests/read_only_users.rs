//! A user who may read a shared-mode store's folder but not write it gets a clear, immediate
//! error naming the lock it cannot create (issue 14, item 2), not a 60 s wait for a lock "held by
//! unknown". Run as a real unprivileged user (`runuser -u nobody`); needs root.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use memotag::{Mode, OpenOptions};

fn skip_or_fail(why: &str) {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if std::env::var("CI").is_ok_and(|v| v == "true") && root {
        panic!("read-only user tests cannot run under CI: {why}");
    }
    println!("SKIPPED: read-only user tests: {why}");
}

#[test]
fn a_reader_who_may_not_write_the_folder_is_told_at_once() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip_or_fail("not root (needed to run as another user)");
    }
    if Command::new("runuser").arg("--help").output().is_err() {
        return skip_or_fail("runuser unavailable");
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("team.memo");
    drop(OpenOptions::new().mode(Mode::Shared).open(&path).unwrap());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = std::fs::read(&path).unwrap();
    let started = Instant::now();
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--", env!("CARGO_BIN_EXE_memotag"), "info"])
        .arg(&path)
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot be created") && stderr.contains("write access"),
        "{stderr}"
    );
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(!dir.path().join("team.memo.memotag-lock").exists());
}

/// As a user who may read but not write a local store's folder: a clear `ReadOnlyStore` naming
/// the shared-memory file it would need, at once.
#[test]
fn a_local_store_in_a_folder_the_reader_may_not_write_says_what_is_missing() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip_or_fail("not root (needed to run as another user)");
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("team.memo");
    drop(OpenOptions::new().mode(Mode::Local).open(&path).unwrap());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new("runuser")
        .args([
            "-u",
            "nobody",
            "--",
            env!("CARGO_BIN_EXE_memotag"),
            "functions",
        ])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("team.memo-shm") && stderr.contains("no write access"),
        "{stderr}"
    );
}

/// On a read-only file system nothing can change a store, so both modes are read (as immutable),
/// by the owner and by anyone who may read the file, and nothing is left beside it.
#[test]
fn stores_on_a_read_only_file_system_can_be_read_in_both_modes() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip_or_fail("not root (needed to mount a read-only bind mount)");
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let writable = dir.path().join("rw");
    let read_only = dir.path().join("ro");
    std::fs::create_dir(&writable).unwrap();
    std::fs::create_dir(&read_only).unwrap();
    for (name, mode) in [("local.memo", Mode::Local), ("shared.memo", Mode::Shared)] {
        let store = OpenOptions::new()
            .mode(mode)
            .open(writable.join(name))
            .unwrap();
        let f = store
            .create_function(memotag::FunctionSpec::new(
                "f",
                vec![memotag::InputSpec::required("x")],
            ))
            .unwrap();
        let x = memotag::EncodedValue::from_value(&memotag::Value::Int(2)).unwrap();
        let y = memotag::EncodedValue::from_value(&memotag::Value::Int(4)).unwrap();
        let call = store.bind(f.tag, vec![(f.inputs[0].tag, x)]).unwrap();
        store.record(&call, vec![y]).unwrap();
        drop(store);
        std::fs::set_permissions(writable.join(name), std::fs::Permissions::from_mode(0o644))
            .unwrap();
    }
    let mounted = Command::new("mount")
        .args(["--bind"])
        .arg(&writable)
        .arg(&read_only)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(&read_only)
            .status()
            .is_ok_and(|s| s.success());
    if !mounted {
        let _ = Command::new("umount").arg(&read_only).status();
        return skip_or_fail("could not make a read-only bind mount");
    }
    let mut results = Vec::new();
    {
        for name in ["local.memo", "shared.memo"] {
            for user in [None, Some("nobody")] {
                let mut cmd = match user {
                    Some(u) => {
                        let mut c = Command::new("runuser");
                        c.args(["-u", u, "--", env!("CARGO_BIN_EXE_memotag")]);
                        c
                    }
                    None => Command::new(env!("CARGO_BIN_EXE_memotag")),
                };
                let out = cmd.arg("calls").arg(read_only.join(name)).arg("f").output();
                results.push((name, user, out));
            }
        }
    }
    let listing = std::fs::read_dir(&read_only)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    let _ = Command::new("umount").arg(&read_only).status();
    for (name, user, out) in results {
        let out = out.unwrap();
        assert!(
            out.status.success(),
            "{name} as {user:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains('4'),
            "{name} as {user:?}"
        );
    }
    let mut listing = listing;
    listing.sort();
    assert_eq!(listing, vec!["local.memo", "shared.memo"]);
}

/// A store file the user may read but not write opens as a read-only store, and a write says
/// why, instead of a generic SQLite error.
#[test]
fn a_store_file_the_user_may_not_write_opens_read_only() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip_or_fail("not root (needed to run as another user)");
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let path = dir.path().join("team.memo");
    let store = OpenOptions::new().mode(Mode::Local).open(&path).unwrap();
    store
        .create_function(memotag::FunctionSpec::new("f", vec![]))
        .unwrap();
    drop(store);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    let as_nobody = |args: &[&str]| {
        Command::new("runuser")
            .args(["-u", "nobody", "--", env!("CARGO_BIN_EXE_memotag"), args[0]])
            .arg(&path)
            .args(&args[1..])
            .output()
            .unwrap()
    };
    assert!(as_nobody(&["functions"]).status.success());
    let write = as_nobody(&["create", "g"]);
    let stderr = String::from_utf8_lossy(&write.stderr);
    assert!(!write.status.success());
    assert!(
        stderr.contains("read-only") && stderr.contains("not writable"),
        "{stderr}"
    );
}
