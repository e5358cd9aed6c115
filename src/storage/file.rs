//! Deciding what a path holds before SQLite touches it.
//!
//! Everything here reads raw bytes with `std::fs` and never writes, so that a file memotag
//! refuses is left exactly as it was (SQLite itself may roll back a journal or create `-wal`
//! files as soon as it opens a database).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::{OpenError, StorageError};

/// "memo" in ASCII, stored big-endian at offset 68 of the SQLite header.
pub const APPLICATION_ID: u32 = 0x6D65_6D6F;

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// What a path holds.
#[derive(Debug)]
pub enum FileState {
    /// Nothing there yet.
    Missing,
    /// A 0-byte file: becomes a new store.
    Empty,
    /// A memotag store of this format generation (SQLite `user_version`).
    Store { generation: u32 },
}

/// Reads the SQLite header of `path` and decides whether memotag may open it.
pub fn inspect(path: &Path) -> Result<FileState, OpenError> {
    let not_a_store = |reason: &str| OpenError::NotAStore {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileState::Missing),
        Err(e) => return Err(StorageError::io(path, e).into()),
    };
    if meta.is_dir() {
        return Err(not_a_store("it is a directory"));
    }
    let len = meta.len();
    if len == 0 {
        return Ok(FileState::Empty);
    }
    let mut header = Vec::with_capacity(100);
    File::open(path)
        .and_then(|f| f.take(100).read_to_end(&mut header))
        .map_err(|e| StorageError::io(path, e))?;
    if header.len() < SQLITE_MAGIC.len() || &header[..16] != SQLITE_MAGIC {
        return Err(not_a_store("it is not a SQLite database"));
    }
    if header.len() < 100 {
        return Err(OpenError::Truncated {
            path: path.to_path_buf(),
            expected: 100,
            actual: len,
        });
    }
    let be32 = |at: usize| u32::from_be_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    if be32(68) != APPLICATION_ID {
        return Err(not_a_store(
            "it is a SQLite database that memotag did not create (its application_id is not memotag's)",
        ));
    }
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536u64,
        n => u64::from(n),
    };
    let change_counter = be32(24);
    let page_count = u64::from(be32(28));
    let valid_for = be32(92);
    // With a hot WAL or rollback journal beside it, a file may legitimately be shorter than its
    // header says (a checkpoint or commit was interrupted); SQLite recovers it on open.
    let recovering = ["-wal", "-journal"].iter().any(|suffix| {
        let mut side = path.as_os_str().to_os_string();
        side.push(suffix);
        std::fs::metadata(std::path::PathBuf::from(side)).is_ok_and(|m| m.len() > 0)
    });
    if valid_for == change_counter && page_count > 0 && !recovering {
        let expected = page_count * page_size;
        if len < expected {
            return Err(OpenError::Truncated {
                path: path.to_path_buf(),
                expected,
                actual: len,
            });
        }
    }
    Ok(FileState::Store {
        generation: be32(60),
    })
}

/// Whether the file's header says WAL (file format write version 2, byte 18). Unreadable or
/// short files count as not WAL.
pub fn is_wal(path: &Path) -> bool {
    let mut header = Vec::with_capacity(19);
    File::open(path)
        .and_then(|f| f.take(19).read_to_end(&mut header))
        .is_ok()
        && header.get(18) == Some(&2)
}
