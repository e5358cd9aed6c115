//! Copying a live store: SQLite's online backup of one consistent view, written beside the
//! destination and renamed into place only when complete, with the value files it references.
//!
//! A local-mode store is copied from one read snapshot (a WAL reader: writers go on meanwhile);
//! a shared-mode store under its lease lock, held for the whole copy, like any other read. The
//! copy is a store of the same mode, with the same `store_id`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::Backup;
use rusqlite::{Connection, OpenFlags};

use super::maintenance::counts;
use super::{BlobStore, Database, Mode};
use crate::error::{BackupError, StorageError};
use crate::value::ValueId;

/// What a backup copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupReport {
    /// The new store.
    pub dest: PathBuf,
    pub mode: Mode,
    /// Results (memo rows) in the copy.
    pub results: u64,
    /// Rows of the `values` table in the copy.
    pub values: u64,
    /// Value files copied into `<dest>.blobs/` (each verified against its id).
    pub value_files: u64,
    /// Bytes written: the store file and the value files.
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Database {
    /// Copies this store to `dest` (see the module documentation). An existing `dest` is
    /// refused unless `overwrite`; whatever happens, `dest` is either the old file or the whole
    /// copy, never part of one.
    pub fn backup(&mut self, dest: &Path, overwrite: bool) -> Result<BackupReport, BackupError> {
        let started = Instant::now();
        let dest = absolute(dest);
        let src = self.path.clone();
        if fs::canonicalize(&dest).is_ok_and(|d| d == src) {
            return Err(BackupError::SameStore { path: src });
        }
        check_destination(&src, &dest, overwrite)?;
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "store".to_string());
        let tmp = dir.join(format!(".{name}.backup-{}", uuid::Uuid::new_v4().simple()));
        let failed = |source: StorageError| BackupError::Failed {
            src: src.clone(),
            dest: dest.clone(),
            source,
        };
        let copied = self.copy_into(&tmp, &dest);
        let (value_files, blob_bytes) = match copied {
            Ok(copied) => copied,
            Err(e) => {
                remove_temporary(&tmp);
                return Err(failed(e));
            }
        };
        let summary = summarize(&tmp).and_then(|summary| {
            let size = fs::metadata(&tmp)
                .map_err(|e| StorageError::io(&tmp, e))?
                .len();
            Ok((summary, size))
        });
        let ((results, values), size) = match summary {
            Ok(summary) => summary,
            Err(e) => {
                remove_temporary(&tmp);
                return Err(failed(e));
            }
        };
        if let Err(e) = put_in_place(&tmp, &dest, overwrite) {
            remove_temporary(&tmp);
            return Err(e);
        }
        if let Err(e) = File::open(&dir).and_then(|d| d.sync_all()) {
            return Err(failed(StorageError::io(&dir, e)));
        }
        Ok(BackupReport {
            dest,
            mode: self.mode,
            results,
            values,
            value_files,
            bytes: size + blob_bytes,
            elapsed: started.elapsed(),
        })
    }

    /// The online backup into `tmp` and the value files into `<dest>.blobs/`, all from one read
    /// transaction (under the lease lock in shared mode). Returns the value files and their bytes.
    fn copy_into(&mut self, tmp: &Path, dest: &Path) -> Result<(u64, u64), StorageError> {
        let source_blobs = self.blobs.clone();
        let dest_blobs = BlobStore::beside(dest);
        self.read(|conn| -> Result<(u64, u64), StorageError> {
            let mut out = Connection::open_with_flags(
                tmp,
                OpenFlags::SQLITE_OPEN_READ_WRITE
                    | OpenFlags::SQLITE_OPEN_CREATE
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            out.execute_batch("PRAGMA synchronous=FULL")?;
            {
                // One step: every page of this read transaction's snapshot, at once.
                let backup = Backup::new(conn, &mut out)?;
                backup.step(-1)?;
            }
            let verdict: String = out.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
            if verdict != "ok" {
                return Err(StorageError::Corrupt(format!(
                    "the copy fails SQLite's quick_check: {verdict}"
                )));
            }
            out.close().map_err(|(_, e)| e)?;
            let ids = file_value_ids(conn)?;
            let mut bytes = 0;
            for id in &ids {
                let value = source_blobs.get(id)?;
                dest_blobs.put(&value, id)?;
                bytes += 1 + value.bytes.len() as u64;
            }
            Ok((ids.len() as u64, bytes))
        })
    }
}

/// The ids of the values kept as files, in the caller's read transaction.
fn file_value_ids(conn: &Connection) -> Result<Vec<ValueId>, StorageError> {
    let mut stmt = conn.prepare("SELECT id FROM \"values\" WHERE data IS NULL ORDER BY id")?;
    let mut rows = stmt.query([])?;
    let mut ids = Vec::new();
    while let Some(row) = rows.next()? {
        let id: Vec<u8> = row.get(0)?;
        let id = <[u8; 16]>::try_from(id.as_slice()).map_err(|_| {
            StorageError::Corrupt(format!(
                "a values row has a malformed id {}",
                hex::encode(&id)
            ))
        })?;
        ids.push(ValueId(id));
    }
    Ok(ids)
}

/// Results and values in the finished copy (0 where a newer format keeps them elsewhere).
fn summarize(path: &Path) -> Result<(u64, u64), StorageError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let summary = counts(&conn)
        .map(|c| (c.results, c.values))
        .unwrap_or((0, 0));
    drop(conn);
    Ok(summary)
}

/// Refuses a destination that exists (unless `overwrite`), and always one that a client has
/// open or did not close: its journal or WAL would be applied to the copy.
fn check_destination(src: &Path, dest: &Path, overwrite: bool) -> Result<(), BackupError> {
    if fs::symlink_metadata(dest).is_ok() {
        if !overwrite {
            return Err(BackupError::DestinationExists {
                dest: dest.to_path_buf(),
            });
        }
        if fs::metadata(dest).is_ok_and(|m| m.is_dir()) {
            return Err(BackupError::Failed {
                src: src.to_path_buf(),
                dest: dest.to_path_buf(),
                source: StorageError::io(
                    dest,
                    std::io::Error::new(std::io::ErrorKind::IsADirectory, "a directory"),
                ),
            });
        }
    }
    for suffix in ["-wal", "-journal"] {
        let side = super::file::side_file(dest, suffix);
        if fs::symlink_metadata(&side).is_ok() {
            return Err(BackupError::DestinationInUse {
                dest: dest.to_path_buf(),
                journal: side,
            });
        }
    }
    Ok(())
}

/// Renames the finished copy to `dest`: atomically, and without replacing an existing `dest`
/// unless `overwrite` (a hard link fails on an existing name; the temporary name is removed).
fn put_in_place(tmp: &Path, dest: &Path, overwrite: bool) -> Result<(), BackupError> {
    let placed = if overwrite {
        fs::rename(tmp, dest)
    } else {
        fs::hard_link(tmp, dest).and_then(|()| fs::remove_file(tmp))
    };
    match placed {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(BackupError::DestinationExists {
                dest: dest.to_path_buf(),
            })
        }
        Err(e) => Err(BackupError::Failed {
            src: tmp.to_path_buf(),
            dest: dest.to_path_buf(),
            source: StorageError::io(dest, e),
        }),
    }
}

fn remove_temporary(tmp: &Path) {
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let _ = fs::remove_file(super::file::side_file(tmp, suffix));
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
