//! What a user sees when a path is not a store, and why a store got its mode (issue 14, items 4
//! and 8): every refusal names the path and says what is there, before anything opens it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use assert_cmd::prelude::*;
use memotag::{OpenError, Store};

fn memotag() -> Command {
    Command::cargo_bin("memotag").expect("the memotag binary is built")
}

/// Opens `path` on another thread: a refusal that blocks (opening a FIFO) fails the test.
fn open_error(path: &Path) -> OpenError {
    let (tx, rx) = mpsc::channel();
    let owned = path.to_path_buf();
    std::thread::spawn(move || tx.send(Store::open(&owned).err()).unwrap());
    rx.recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("opening {} blocked", path.display()))
        .unwrap_or_else(|| panic!("opening {} succeeded", path.display()))
}

/// `memotag ARGS`: (exit code, stderr), failing the test if it blocks.
fn cli(args: &[&str]) -> (i32, String) {
    let child = memotag()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    let started = std::time::Instant::now();
    while !waiter.is_finished() {
        if started.elapsed() > Duration::from_secs(10) {
            // SAFETY: a plain kill of the child this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("memotag {args:?} blocked");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = waiter.join().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

#[test]
fn a_fifo_is_refused_without_being_opened() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.memo");
    mkfifo(&fifo);
    let e = open_error(&fifo);
    assert!(matches!(e, OpenError::NotAStore { .. }), "{e:?}");
    assert!(e.to_string().contains("FIFO"), "{e}");
    let (code, stderr) = cli(&["info", fifo.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("FIFO") && stderr.contains("pipe.memo"),
        "{stderr}"
    );
    let (code, stderr) = cli(&["check", fifo.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
}

#[test]
fn devices_are_refused_by_name() {
    for device in ["/dev/null", "/dev/zero"] {
        let e = open_error(Path::new(device));
        let text = e.to_string();
        assert!(matches!(e, OpenError::NotAStore { .. }), "{e:?}");
        assert!(
            text.contains(device) && text.contains("character device"),
            "{text}"
        );
        let (code, stderr) = cli(&["info", device]);
        assert_eq!(code, 1);
        assert!(stderr.contains("character device"), "{stderr}");
    }
}

#[test]
fn an_empty_path_is_named() {
    let e = open_error(Path::new(""));
    assert!(matches!(e, OpenError::EmptyPath), "{e:?}");
    assert!(e.to_string().contains("empty"), "{e}");
}

#[test]
fn a_missing_folder_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nowhere").join("team.memo");
    let e = open_error(&path);
    assert!(
        matches!(&e, OpenError::FolderMissing { folder, .. } if folder.ends_with("nowhere")),
        "{e:?}"
    );
    let (code, stderr) = cli(&["create", path.to_str().unwrap(), "f", "--output", "y"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("folder") && stderr.contains("nowhere"),
        "{stderr}"
    );
    assert!(!dir.path().join("nowhere").exists());
}

#[test]
fn a_dangling_link_into_a_missing_folder_names_the_link_and_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("team.memo");
    std::os::unix::fs::symlink("gone/team.memo", &link).unwrap();
    let e = open_error(&link);
    let text = e.to_string();
    assert!(
        matches!(
            &e,
            OpenError::FolderMissing {
                link_to: Some(_),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        text.contains("symbolic link") && text.contains("gone"),
        "{text}"
    );
}

#[test]
fn a_dangling_link_into_an_existing_folder_creates_the_store_where_it_points() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("team.memo");
    std::os::unix::fs::symlink("real.memo", &link).unwrap();
    drop(Store::open(&link).unwrap());
    assert!(
        std::fs::metadata(dir.path().join("real.memo"))
            .unwrap()
            .len()
            > 0
    );
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
}

fn store_with(dir: &Path, sql: &str) -> PathBuf {
    let path = dir.join("levels.memo");
    drop(Store::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(sql).unwrap();
    drop(conn);
    path
}

#[test]
fn check_fails_a_store_whose_read_level_this_build_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_with(
        dir.path(),
        "UPDATE meta SET value = '99' WHERE key = 'read_level'",
    );
    let out = memotag()
        .args(["check", path.to_str().unwrap(), "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("format_unreadable") && stdout.contains("read level is 99"),
        "{stdout}"
    );
}

#[test]
fn check_fails_a_store_whose_write_level_is_newer() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_with(
        dir.path(),
        "UPDATE meta SET value = '99' WHERE key = 'write_level'",
    );
    let out = memotag()
        .args(["check", path.to_str().unwrap(), "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("write level is 99"), "{stdout}");
}

#[test]
fn check_fails_a_store_of_a_newer_format_generation() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_with(dir.path(), "PRAGMA user_version = 99");
    let (code, stderr) = cli(&["check", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("format generation 99"), "{stderr}");
}

fn info_json(path: &Path) -> serde_json::Value {
    let out = memotag()
        .args(["info", path.to_str().unwrap(), "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn info_says_why_a_store_has_its_mode() {
    let dir = tempfile::tempdir().unwrap();
    let detected = dir.path().join("detected.memo");
    drop(Store::open(&detected).unwrap());
    let info = info_json(&detected);
    let kind = memotag::storage::filesystem_kind(dir.path());
    assert_eq!(info["mode"], kind.mode().as_str());
    assert_eq!(info["mode_reason"], kind.reason(), "{info}");
    let asked = dir.path().join("asked.memo");
    drop(
        memotag::OpenOptions::new()
            .mode(memotag::Mode::Shared)
            .open(&asked)
            .unwrap(),
    );
    let info = info_json(&asked);
    assert_eq!(info["mode"], "shared");
    assert!(
        info["mode_reason"].as_str().unwrap().contains("asked for"),
        "{info}"
    );
}

/// A real tmpfs (needs root; skipped otherwise, saying so) is a local filesystem.
#[test]
fn a_store_on_tmpfs_is_local_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mount = Command::new("mount")
        .args(["-t", "tmpfs", "none", dir.path().to_str().unwrap()])
        .output();
    if !mount.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root?)");
        return;
    }
    let path = dir.path().join("t.memo");
    let store = Store::open(&path).unwrap();
    let mode = store.mode();
    drop(store);
    let info = info_json(&path);
    let _ = Command::new("umount").arg(dir.path()).status();
    assert_eq!(mode, memotag::Mode::Local);
    assert_eq!(info["mode_reason"], "detected: tmpfs is a local filesystem");
    assert_eq!(info["filesystem"]["kind"], "local");
}
