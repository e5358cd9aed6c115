//! Deciding what a path holds before SQLite touches it.
//!
//! Everything here reads raw bytes with `std::fs` and never writes, so that a file memotag
//! refuses is left exactly as it was (SQLite itself may roll back a journal or create `-wal`
//! files as soon as it opens a database).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

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

/// How many times an inspection is repeated when the file changed while it was read (a commit
/// or checkpoint of another client in progress) before the last reading is taken as it is.
const STABLE_READS: u32 = 20;

/// The path SQLite and memotag use for a store: symlinks resolved, so that every name of one
/// store file means one lock directory, one blob folder and one journal (SQLite names its
/// journal after the resolved path too). A path that does not exist yet resolves through its
/// folder (and through a dangling symlink to where the link points). Where nothing can be
/// resolved, the path as given.
pub fn resolve(path: &Path) -> PathBuf {
    if let Ok(real) = std::fs::canonicalize(path) {
        return real;
    }
    // A chain of links to a file that does not exist yet.
    let current = follow_links(path);
    if let Ok(real) = std::fs::canonicalize(&current) {
        return real;
    }
    let (Some(dir), Some(name)) = (current.parent(), current.file_name()) else {
        return path.to_path_buf();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    match std::fs::canonicalize(dir) {
        Ok(dir) => dir.join(name),
        Err(_) => path.to_path_buf(),
    }
}

/// Where a chain of symbolic links ends, followed by hand so that it works when the end does
/// not exist yet (bounded, as the kernel bounds it, so that a loop ends).
fn follow_links(path: &Path) -> PathBuf {
    let mut current = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::read_link(&current) {
            Ok(target) => {
                current = match current.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                };
            }
            Err(_) => break,
        }
    }
    current
}

/// Reads the SQLite header of `path` and decides whether memotag may open it.
///
/// Nothing here takes a lock, and other clients may be committing: a file shorter than its
/// header says is only called truncated when two readings, one before and one after looking
/// for a journal, agree and no hot journal or WAL was there in between. A commit in progress
/// always has its journal (or WAL) in place while it writes the file, so a reading it disturbs
/// either sees the journal or differs from the other reading, and is repeated. Callers that can
/// take the store's lock confirm a truncation under it (`Database::open`).
pub fn inspect(path: &Path) -> Result<FileState, OpenError> {
    if path.as_os_str().is_empty() {
        return Err(OpenError::EmptyPath);
    }
    match inspect_readings(path, || read_header(path), || has_hot_side_file(path))? {
        FileState::Missing => match missing_folder(path) {
            Some((link_to, folder)) => Err(OpenError::FolderMissing {
                path: path.to_path_buf(),
                link_to,
                folder,
            }),
            None => Ok(FileState::Missing),
        },
        state => Ok(state),
    }
}

/// For a path that does not exist: the folder it would be created in (through any symlinks), if
/// that folder does not exist either, with where the path links to if it is a dangling symbolic
/// link. SQLite would only say "unable to open database file".
fn missing_folder(path: &Path) -> Option<(Option<PathBuf>, PathBuf)> {
    let current = follow_links(path);
    let folder = match current.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => return None,
    };
    let link_to = (current != path).then(|| current.clone());
    match std::fs::metadata(folder) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some((link_to, folder.to_path_buf())),
        _ => None,
    }
}

/// `inspect` over any source of readings (the tests replay the interleavings of a commit).
fn inspect_readings(
    path: &Path,
    mut read: impl FnMut() -> Result<Reading, OpenError>,
    mut hot_side_file: impl FnMut() -> bool,
) -> Result<FileState, OpenError> {
    let mut last = None;
    for _ in 0..STABLE_READS {
        let first = read()?;
        // The common case, one reading: only a file that looks truncated is looked at twice
        // (a truncated file never changes, so a disturbed reading cannot hide one).
        if !matches!(
            decide(path, &first, false),
            Err(OpenError::Truncated { .. })
        ) {
            return decide(path, &first, false);
        }
        let recovering = hot_side_file();
        let second = read()?;
        if same_reading(&first, &second) {
            return decide(path, &second, recovering);
        }
        last = Some(second);
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // Changing all the time: some client is busy writing it, which a truncated file is not.
    decide(path, &last.expect("read at least once"), true)
}

fn same_reading(a: &Reading, b: &Reading) -> bool {
    match (a, b) {
        (
            Reading::Header {
                len: l1,
                header: h1,
            },
            Reading::Header {
                len: l2,
                header: h2,
            },
        ) => l1 == l2 && h1 == h2,
        _ => false,
    }
}

/// Whether a file refused as "not a SQLite database" may be a store that another client is
/// creating right now (its first page not fully visible yet, as seen through a network
/// filesystem): fewer than 100 bytes, or zeros where the SQLite magic belongs. A text file or a
/// foreign database is never taken for one.
pub fn may_be_in_creation(path: &Path) -> bool {
    // Never open anything but a regular file: opening a FIFO blocks.
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return false;
    }
    let mut header = Vec::with_capacity(100);
    let read = File::open(path).and_then(|f| f.take(100).read_to_end(&mut header));
    read.is_ok() && (header.len() < 100 || header[..16].iter().all(|b| *b == 0))
}

/// One reading of a path: its length and first 100 bytes, read through one open file (the
/// length from the open descriptor: `open` revalidates a network filesystem's cached
/// attributes).
enum Reading {
    Missing,
    Directory,
    /// Not a regular file (a FIFO, a device, a socket): never opened, since opening a FIFO for
    /// reading blocks until someone writes to it, and a device reads as endless zeros or nothing.
    Special(&'static str),
    Header {
        len: u64,
        header: Vec<u8>,
    },
}

fn read_header(path: &Path) -> Result<Reading, OpenError> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Reading::Missing),
        Ok(meta) if meta.is_dir() => return Ok(Reading::Directory),
        Ok(meta) => {
            let kind = meta.file_type();
            let special = if kind.is_fifo() {
                Some("it is a FIFO (named pipe), not a file")
            } else if kind.is_char_device() {
                Some("it is a character device, not a file")
            } else if kind.is_block_device() {
                Some("it is a block device, not a file")
            } else if kind.is_socket() {
                Some("it is a socket, not a file")
            } else {
                None
            };
            if let Some(reason) = special {
                return Ok(Reading::Special(reason));
            }
        }
        // Let opening the file say what is wrong (permissions, say).
        Err(_) => {}
    }
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Reading::Missing),
        Err(e) => {
            return match std::fs::metadata(path) {
                Ok(meta) if meta.is_dir() => Ok(Reading::Directory),
                _ => Err(StorageError::io(path, e).into()),
            }
        }
    };
    let mut header = Vec::with_capacity(100);
    let header_read = (&mut file)
        .take(100)
        .read_to_end(&mut header)
        .map_err(|e| StorageError::io(path, e));
    if header_read.is_err() && std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return Ok(Reading::Directory);
    }
    header_read?;
    // The length after the header: a file that grew while it was read is seen grown.
    let len = file
        .metadata()
        .map_err(|e| StorageError::io(path, e))?
        .len();
    Ok(Reading::Header { len, header })
}

/// Whether a non-empty rollback journal or WAL lies beside the store: an interrupted or running
/// commit or checkpoint, during which the file may legitimately be shorter than its header says.
fn has_hot_side_file(path: &Path) -> bool {
    ["-wal", "-journal"]
        .iter()
        .any(|suffix| std::fs::metadata(side_file(path, suffix)).is_ok_and(|m| m.len() > 0))
}

/// SQLite's file beside a store: `<store>-journal`, `-wal`, `-shm`.
pub fn side_file(path: &Path, suffix: &str) -> PathBuf {
    let mut side = path.as_os_str().to_os_string();
    side.push(suffix);
    PathBuf::from(side)
}

/// The folder a store lives in (`.` for a bare file name).
pub fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Whether this process may create files in `folder` (`access(W_OK)`; false on a read-only file
/// system).
pub fn may_write(folder: &Path) -> bool {
    let Ok(c_folder) = std::ffi::CString::new(folder.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: `c_folder` is a valid NUL-terminated path for the duration of the call.
    unsafe { libc::access(c_folder.as_ptr(), libc::W_OK) == 0 }
}

/// Whether `folder` is on a file system mounted read-only.
pub fn on_read_only_file_system(folder: &Path) -> bool {
    let Ok(c_folder) = std::ffi::CString::new(folder.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: `c_folder` is a valid NUL-terminated path for the call, and `stat` a plain struct
    // that statvfs fills in.
    unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        libc::statvfs(c_folder.as_ptr(), &mut stat) == 0 && stat.f_flag & libc::ST_RDONLY != 0
    }
}

fn decide(path: &Path, reading: &Reading, recovering: bool) -> Result<FileState, OpenError> {
    let not_a_store = |reason: &str| OpenError::NotAStore {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let (len, header) = match reading {
        Reading::Missing => return Ok(FileState::Missing),
        Reading::Directory => return Err(not_a_store("it is a directory")),
        Reading::Special(reason) => return Err(not_a_store(reason)),
        Reading::Header { len: 0, .. } => return Ok(FileState::Empty),
        Reading::Header { len, header } => (*len, header),
    };
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
    // header says (a checkpoint or commit was interrupted or is running); SQLite recovers it.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A memotag header saying `pages` pages of 4096 bytes (change counter `counter`).
    fn header(pages: u32, counter: u32) -> Vec<u8> {
        let mut h = vec![0u8; 100];
        h[..16].copy_from_slice(SQLITE_MAGIC);
        h[16..18].copy_from_slice(&4096u16.to_be_bytes());
        h[24..28].copy_from_slice(&counter.to_be_bytes());
        h[28..32].copy_from_slice(&pages.to_be_bytes());
        h[60..64].copy_from_slice(&5u32.to_be_bytes());
        h[68..72].copy_from_slice(&APPLICATION_ID.to_be_bytes());
        h[92..96].copy_from_slice(&counter.to_be_bytes());
        h
    }

    fn reading(len: u64, pages: u32, counter: u32) -> Reading {
        Reading::Header {
            len,
            header: header(pages, counter),
        }
    }

    /// Replays readings in order; the journal check answers from `hot` in order.
    fn replay(readings: Vec<Reading>, hot: Vec<bool>) -> Result<FileState, OpenError> {
        let mut readings = readings.into_iter();
        let mut hot = hot.into_iter();
        inspect_readings(
            Path::new("s.memo"),
            || Ok(readings.next().expect("no more readings")),
            || hot.next().expect("no more journal checks"),
        )
    }

    #[test]
    fn a_commit_between_the_readings_is_not_a_truncation() {
        // The race of issue 13, defect 1: the file is read at 16 pages with the header of the
        // commit that grows it to 28 (page 1 is written first), and the commit's journal is
        // gone by the time it is looked for. The second reading differs: read again.
        let state = replay(
            vec![
                reading(16 * 4096, 28, 8),
                reading(28 * 4096, 28, 8),
                reading(28 * 4096, 28, 8),
                reading(28 * 4096, 28, 8),
            ],
            vec![false, false],
        );
        assert!(
            matches!(state, Ok(FileState::Store { generation: 5 })),
            "{state:?}"
        );
    }

    #[test]
    fn a_file_short_while_its_journal_is_hot_is_a_store() {
        let state = replay(
            vec![reading(16 * 4096, 28, 8), reading(16 * 4096, 28, 8)],
            vec![true],
        );
        assert!(matches!(state, Ok(FileState::Store { .. })), "{state:?}");
    }

    #[test]
    fn a_file_that_stays_short_is_truncated() {
        let state = replay(
            vec![reading(16 * 4096, 28, 8), reading(16 * 4096, 28, 8)],
            vec![false],
        );
        assert!(
            matches!(
                state,
                Err(OpenError::Truncated {
                    expected: 114_688,
                    actual: 65_536,
                    ..
                })
            ),
            "{state:?}"
        );
    }

    #[test]
    fn a_file_that_never_settles_is_not_called_truncated() {
        let readings = (0..2 * STABLE_READS)
            .map(|i| reading(16 * 4096, 28, i))
            .collect();
        let state = replay(readings, vec![false; STABLE_READS as usize]);
        assert!(matches!(state, Ok(FileState::Store { .. })), "{state:?}");
    }

    #[test]
    fn only_a_first_page_not_yet_written_may_be_a_store_in_creation() {
        let dir = tempfile::tempdir().unwrap();
        let zeros = dir.path().join("zeros");
        std::fs::write(&zeros, vec![0u8; 4096]).unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, b"SQLite").unwrap();
        let text = dir.path().join("text");
        std::fs::write(
            &text,
            "hello, this is a text file and not a store at all\n".repeat(4),
        )
        .unwrap();
        assert!(may_be_in_creation(&zeros));
        assert!(may_be_in_creation(&short));
        assert!(!may_be_in_creation(&text));
    }

    #[test]
    fn a_symlink_and_its_target_resolve_alike() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("team.memo");
        std::fs::write(&real, b"").unwrap();
        std::os::unix::fs::symlink("team.memo", dir.path().join("alias.memo")).unwrap();
        // A dangling link resolves to where it points, so that creating through it and
        // opening the target later mean one store.
        std::os::unix::fs::symlink("later.memo", dir.path().join("soon.memo")).unwrap();
        let canonical_dir = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(
            resolve(&dir.path().join("alias.memo")),
            canonical_dir.join("team.memo")
        );
        assert_eq!(resolve(&real), canonical_dir.join("team.memo"));
        assert_eq!(
            resolve(&dir.path().join("soon.memo")),
            canonical_dir.join("later.memo")
        );
        assert_eq!(
            resolve(&dir.path().join("new.memo")),
            canonical_dir.join("new.memo")
        );
    }
}
