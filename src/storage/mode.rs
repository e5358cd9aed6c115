//! Sharing modes: what each mode sets on a connection, and which mode a new store gets.
//!
//! The mode is a property of the store (recorded in its `meta` table at creation); this module
//! only knows what a mode means for SQLite and how to guess one for a directory. Cross-host
//! locking for shared mode is `lock`'s.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use rusqlite::Connection;

/// Local mode checkpoints the write-ahead log into the main file once it holds this many pages
/// (SQLite's default; 4 KiB pages: ~4 MiB). The WAL grows past the bound only while a reader's
/// snapshot holds a checkpoint back.
pub(crate) const WAL_AUTOCHECKPOINT_PAGES: u32 = 1000;

/// The size (bytes) a checkpointed WAL file is truncated back to, so that a WAL that grew while
/// a reader held a checkpoint back does not keep its space on disk.
pub(crate) const WAL_SIZE_LIMIT: u64 = 4 << 20;

/// How a store is shared, chosen when it is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// A local disk: WAL, `synchronous=NORMAL`, readers never wait for writers.
    Local,
    /// A network filesystem: rollback journal, `synchronous=FULL`, no mmap.
    Shared,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Local => "local",
            Mode::Shared => "shared",
        }
    }

    /// Sets the pragmas this mode needs on a connection that may write.
    pub(crate) fn configure(
        self,
        conn: &Connection,
        full_durability: bool,
    ) -> rusqlite::Result<()> {
        match self {
            Mode::Local => {
                let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
                debug_assert_eq!(mode.to_ascii_lowercase(), "wal");
                let sync = if full_durability { "FULL" } else { "NORMAL" };
                // Memory-mapped reads and a larger page cache make hits on large stores cost
                // what they cost on small ones. The WAL bound: see `WAL_AUTOCHECKPOINT_PAGES`.
                conn.execute_batch(&format!(
                    "PRAGMA synchronous={sync}; PRAGMA mmap_size=1073741824; \
                     PRAGMA cache_size=-65536; \
                     PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}; \
                     PRAGMA journal_size_limit={WAL_SIZE_LIMIT};"
                ))?;
            }
            Mode::Shared => {
                let _: String = conn.query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))?;
                self.configure_connection(conn)?;
            }
        }
        Ok(())
    }

    /// The per-connection pragmas of a mode (the journal mode is in the file and left alone).
    /// In shared mode `cache_spill=OFF` keeps every change in the cache until COMMIT, so that a
    /// holder that loses its lock mid-transaction has written nothing to the database file.
    pub(crate) fn configure_connection(self, conn: &Connection) -> rusqlite::Result<()> {
        if self == Mode::Shared {
            conn.execute_batch(
                "PRAGMA synchronous=FULL; PRAGMA mmap_size=0; PRAGMA cache_spill=OFF;",
            )?;
        }
        Ok(())
    }

    /// The mode a new store in `dir` gets: shared on network filesystems, local otherwise.
    pub fn detect(dir: &Path) -> Mode {
        match filesystem_kind(dir) {
            FilesystemKind::Network(_) => Mode::Shared,
            FilesystemKind::Local(_) => Mode::Local,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "local" => Ok(Mode::Local),
            "shared" => Ok(Mode::Shared),
            other => Err(format!(
                "unknown mode `{other}` (expected `local` or `shared`)"
            )),
        }
    }
}

/// What kind of filesystem a directory is on, with the name used to decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FilesystemKind {
    Local(String),
    Network(String),
}

/// FUSE filesystems that talk to another machine.
const NETWORK_FUSE_SUBTYPES: &[&str] = &[
    "sshfs",
    "s3fs",
    "gcsfuse",
    "rclone",
    "davfs",
    "curlftpfs",
    "glusterfs",
    "ceph",
    "cephfs",
    "lizardfs",
    "moosefs",
    "mfs",
    "juicefs",
    "goofys",
    "blobfuse",
    "blobfuse2",
    "smbnetfs",
];

/// Classifies the filesystem holding `dir` (`statfs`, then the FUSE subtype from mountinfo).
pub fn filesystem_kind(dir: &Path) -> FilesystemKind {
    #[cfg(target_os = "linux")]
    {
        linux::filesystem_kind(dir)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        FilesystemKind::Local("unknown".to_string())
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::{FilesystemKind, NETWORK_FUSE_SUBTYPES};
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    const NFS: i64 = 0x6969;
    const SMB: i64 = 0x517B;
    const SMB2: i64 = 0xFE53_4D42;
    const CIFS: i64 = 0xFF53_4D42;
    const FUSE: i64 = 0x6573_5546;
    const AFS: i64 = 0x5346_414F;
    const CODA: i64 = 0x7375_7245;
    const NCP: i64 = 0x564C;
    const CEPH: i64 = 0x00C3_6400;
    const V9FS: i64 = 0x0102_1997;
    const LUSTRE: i64 = 0x0BD0_0BD0;
    const GFS2: i64 = 0x0116_1970;
    const OCFS2: i64 = 0x7461_636F;

    pub(super) fn filesystem_kind(dir: &Path) -> FilesystemKind {
        let Ok(c_path) = CString::new(dir.as_os_str().as_bytes()) else {
            return FilesystemKind::Local("unknown".into());
        };
        // SAFETY: statfs writes into the zeroed struct we own; the path is NUL-terminated.
        let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statfs(c_path.as_ptr(), &mut buf) } != 0 {
            return FilesystemKind::Local("unknown".into());
        }
        #[allow(clippy::unnecessary_cast)]
        let magic = buf.f_type as i64 & 0xFFFF_FFFF;
        let network = |name: &str| FilesystemKind::Network(name.to_string());
        match magic {
            NFS => network("nfs"),
            SMB | SMB2 | CIFS => network("smb"),
            AFS => network("afs"),
            CODA => network("coda"),
            NCP => network("ncp"),
            CEPH => network("ceph"),
            V9FS => network("9p"),
            LUSTRE => network("lustre"),
            GFS2 => network("gfs2"),
            OCFS2 => network("ocfs2"),
            FUSE => {
                let fstype = mount_fstype(dir).unwrap_or_else(|| "fuse".to_string());
                let subtype = fstype.strip_prefix("fuse.").unwrap_or(&fstype);
                if NETWORK_FUSE_SUBTYPES.contains(&subtype) {
                    FilesystemKind::Network(fstype)
                } else {
                    FilesystemKind::Local(fstype)
                }
            }
            other => FilesystemKind::Local(format!("0x{other:x}")),
        }
    }

    /// The fstype field of the mountinfo line whose mount point is the longest prefix of `dir`.
    fn mount_fstype(dir: &Path) -> Option<String> {
        let dir = std::fs::canonicalize(dir).ok()?;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let mut best: Option<(usize, String)> = None;
        for line in mountinfo.lines() {
            // id parent major:minor root mountpoint options [optional...] - fstype source super
            let mut fields = line.split(' ');
            let mount_point = unescape(fields.nth(4)?);
            let fstype = line.split(" - ").nth(1)?.split(' ').next()?.to_string();
            if dir.starts_with(&mount_point) {
                let len = mount_point.len();
                if best.as_ref().is_none_or(|(l, _)| len >= *l) {
                    best = Some((len, fstype));
                }
            }
        }
        best.map(|(_, fstype)| fstype)
    }

    /// mountinfo escapes space, tab, newline and backslash as octal.
    fn unescape(field: &str) -> String {
        let mut out = Vec::with_capacity(field.len());
        let bytes = field.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'\\' && i + 4 <= bytes.len() {
                if let Some(Ok(n)) = field.get(i + 1..i + 4).map(|d| u8::from_str_radix(d, 8)) {
                    out.push(n);
                    i += 4;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn unescapes_mountinfo_octal() {
            assert_eq!(super::unescape(r"/mnt/my\040disk"), "/mnt/my disk");
            assert_eq!(super::unescape("/plain"), "/plain");
        }
    }
}
