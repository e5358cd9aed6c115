//! Shared mode on a local disk (the cross-host scenarios are in netfs_scenarios.rs): the lease
//! lock is taken, a lock left by a dead holder is broken once its lease expired, the break is
//! recorded for `memotag info`, and `set-mode` switches mode and lock method together.

mod common;

use std::time::{Duration, Instant};

use common::int;
use memotag::{FunctionSpec, InputSpec, LockMethod, Mode, OpenOptions, StorageError};

#[test]
fn a_lock_left_by_a_dead_holder_is_broken_after_its_lease_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.memo");
    let open = || {
        OpenOptions::new()
            .mode(Mode::Shared)
            .lock_lease(Duration::from_millis(300))
            .open(&path)
            .unwrap()
    };
    let store = open();
    assert_eq!(store.lock_method(), LockMethod::LeaseDir);
    let f = store
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    // A holder that died holding the lock: its owner file never changes again.
    let lock = dir.path().join("s.memo.memotag-lock");
    std::fs::create_dir(&lock).unwrap();
    std::fs::write(
        lock.join("owner"),
        "token=dead\nhost=elsewhere\npid=4242\nstarted_ms=1\nacquired_ms=2\nrenewed_ms=3\nlease_ms=300\nrenewals=7\n",
    )
    .unwrap();
    let started = Instant::now();
    let call = store.bind(f.tag, vec![(f.inputs[0].tag, int(1))]).unwrap();
    store.record(&call, vec![int(2)]).unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "waited for the lease"
    );
    assert!(!lock.exists(), "released");
    drop(store);
    let info = memotag::maintenance::info(&path).unwrap();
    assert_eq!(info.lock_method, LockMethod::LeaseDir);
    let broken = info.last_lock_break.expect("recorded");
    assert_eq!(broken.holder.as_deref(), Some("elsewhere pid 4242"));
    assert!(broken.silent_ms >= 300);
    assert!(open().lookup(&call).unwrap().is_some());
}

#[test]
fn a_wait_for_a_live_holder_times_out_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.memo");
    let store = OpenOptions::new().mode(Mode::Shared).open(&path).unwrap();
    let lock = dir.path().join("s.memo.memotag-lock");
    std::fs::create_dir(&lock).unwrap();
    std::fs::write(
        lock.join("owner"),
        "token=alive\nhost=elsewhere\npid=7\nstarted_ms=1\nacquired_ms=2\nrenewed_ms=3\nlease_ms=60000\nrenewals=0\n",
    )
    .unwrap();
    drop(store);
    let quick = OpenOptions::new()
        .busy_timeout(Duration::from_millis(200))
        .open(&path);
    match quick {
        Err(memotag::OpenError::Storage(StorageError::LockTimeout { holder, .. })) => {
            assert!(holder.contains("elsewhere pid 7"), "{holder}")
        }
        other => panic!("expected a lock timeout, got {other:?}"),
    }
    std::fs::remove_dir_all(&lock).unwrap();
}

#[test]
fn set_mode_switches_mode_and_lock_method_together_and_old_clients_notice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.memo");
    let shared = OpenOptions::new().mode(Mode::Shared).open(&path).unwrap();
    shared
        .create_function(FunctionSpec::new("f", vec![InputSpec::required("x")]))
        .unwrap();
    let switched = memotag::maintenance::set_mode(&path, Mode::Local, false).unwrap();
    assert!(matches!(
        switched,
        memotag::maintenance::SetModeOutcome::Switched { .. }
    ));
    // The client that still has it open in shared mode stops at its next transaction.
    let err = shared
        .create_function(FunctionSpec::new("g", vec![InputSpec::required("x")]))
        .unwrap_err();
    assert!(err.to_string().contains("switched"), "{err}");
    drop(shared);
    let local = memotag::Store::open(&path).unwrap();
    assert_eq!(
        (local.mode(), local.lock_method()),
        (Mode::Local, LockMethod::Posix)
    );
    drop(local);
    memotag::maintenance::set_mode(&path, Mode::Shared, false).unwrap();
    let again = memotag::Store::open(&path).unwrap();
    assert_eq!(
        (again.mode(), again.lock_method()),
        (Mode::Shared, LockMethod::LeaseDir)
    );
    assert!(again.function("f", 1).is_ok());
}
