//! Compatibility levels follow the way a store is locked (issue 13, defect 4): shared-mode stores
//! have read and write level 2, so that builds which do not take the lease lock (read and write
//! level 1: v0.1.0 and every older one) refuse them before SQLite opens the file for them;
//! local-mode stores keep level 1 and stay shared with older builds. The real old build is
//! exercised by `make compat`; here the levels themselves, at creation, migrate and set-mode.

use std::path::Path;
use std::process::Command;

use memotag::{Mode, OpenOptions, Store};

fn levels(path: &Path) -> (String, String) {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let level = |key: &str| -> String {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .unwrap()
    };
    (level("read_level"), level("write_level"))
}

fn level_pair(read: &str, write: &str) -> (String, String) {
    (read.to_string(), write.to_string())
}

/// What a build that reads only level 1 decides from the levels it finds.
fn level_one_build_refuses(path: &Path) -> bool {
    levels(path).0.parse::<u32>().unwrap() > 1
}

#[test]
fn a_new_shared_store_is_closed_to_builds_without_the_lease_lock() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared.memo");
    let local = dir.path().join("local.memo");
    drop(OpenOptions::new().mode(Mode::Shared).open(&shared).unwrap());
    drop(OpenOptions::new().mode(Mode::Local).open(&local).unwrap());
    assert_eq!(levels(&shared), level_pair("2", "2"));
    assert!(level_one_build_refuses(&shared));
    assert_eq!(levels(&local), level_pair("1", "1"));
    // This build reads and writes both.
    for path in [&shared, &local] {
        let store = Store::open(path).unwrap();
        assert!(!store.is_read_only());
    }
}

/// A shared store made by a format-4 build (levels 1) gets level 2 when it is migrated.
#[test]
fn migrating_a_format_4_shared_store_raises_its_levels() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.memo");
    drop(OpenOptions::new().mode(Mode::Shared).open(&path).unwrap());
    // Back to what a format-4 build created: generation 4, levels 1.
    let conn = rusqlite::Connection::open_with_flags_and_vfs(
        &path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE,
        "unix-none",
    )
    .unwrap();
    conn.execute_batch(
        "UPDATE meta SET value = '1' WHERE key IN ('read_level', 'write_level');
         DELETE FROM format_migrations WHERE generation = 5;
         PRAGMA user_version = 4;",
    )
    .unwrap();
    drop(conn);
    assert_eq!(levels(&path), level_pair("1", "1"));
    let outcome = Store::migrate(&path).unwrap();
    assert!(
        format!("{outcome:?}").contains("0005_levels_follow_locking"),
        "{outcome:?}"
    );
    assert_eq!(levels(&path), level_pair("2", "2"));
}

/// Switching a local store to shared raises its levels; switching back never lowers them.
#[test]
fn set_mode_raises_levels_and_never_lowers_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.memo");
    drop(OpenOptions::new().mode(Mode::Local).open(&path).unwrap());
    let memotag = env!("CARGO_BIN_EXE_memotag");
    let set_mode = |mode: &str| {
        let out = Command::new(memotag)
            .args(["set-mode", path.to_str().unwrap(), mode])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    set_mode("shared");
    assert_eq!(levels(&path), level_pair("2", "2"));
    set_mode("local");
    assert_eq!(levels(&path), level_pair("2", "2"));
    let store = Store::open(&path).unwrap();
    assert_eq!(store.mode(), Mode::Local);
    assert!(!store.is_read_only());
}
