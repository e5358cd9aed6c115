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

    /// The mode a new store in `dir` gets: local on a filesystem known to be local, shared on
    /// one known to be a network filesystem and on one that cannot be identified (shared works
    /// everywhere; local mode on a network filesystem corrupts stores).
    pub fn detect(dir: &Path) -> Mode {
        Self::detect_with_reason(dir).0
    }

    /// [`Mode::detect`], with why, in words (recorded in the store's `meta` as `mode_reason`
    /// and shown by `memotag info`).
    pub fn detect_with_reason(dir: &Path) -> (Mode, String) {
        let kind = filesystem_kind(dir);
        (kind.mode(), kind.reason())
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
    /// Known to be local to this machine.
    Local(String),
    /// Known to reach other machines.
    Network(String),
    /// Not identified (`statfs` failed, an unknown magic number or FUSE subtype, or a platform
    /// where memotag does not look): treated as a network filesystem.
    Unknown(String),
}

impl FilesystemKind {
    /// The mode a new store on this filesystem gets.
    pub fn mode(&self) -> Mode {
        match self {
            FilesystemKind::Local(_) => Mode::Local,
            FilesystemKind::Network(_) | FilesystemKind::Unknown(_) => Mode::Shared,
        }
    }

    /// Why a new store on this filesystem gets its mode.
    pub fn reason(&self) -> String {
        match self {
            FilesystemKind::Local(name) => format!("detected: {name} is a local filesystem"),
            FilesystemKind::Network(name) => format!("detected: {name} is a network filesystem"),
            FilesystemKind::Unknown(what) => format!(
                "the filesystem could not be identified ({what}); shared is the mode that is \
                 safe everywhere"
            ),
        }
    }
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

/// FUSE filesystems over a disk of this machine (`fuseblk` is FUSE on a block device).
const LOCAL_FUSE_SUBTYPES: &[&str] = &[
    "fuseblk",
    "ntfs-3g",
    "ntfs",
    "exfat",
    "fuse-overlayfs",
    "squashfuse",
];

const FUSE_MAGIC: i64 = 0x6573_5546;

/// Filesystem magic numbers (`statfs.f_type`, see `statfs(2)`) and their names.
const NETWORK_MAGICS: &[(i64, &str)] = &[
    (0x6969, "nfs"),
    (0x517B, "smb"),
    (0xFE53_4D42, "smb2"),
    (0xFF53_4D42, "cifs"),
    (0x5346_414F, "afs"),
    (0x7375_7245, "coda"),
    (0x564C, "ncp"),
    (0x00C3_6400, "ceph"),
    (0x0102_1997, "9p"),
    (0x0BD0_0BD0, "lustre"),
    (0x0116_1970, "gfs2"),
    (0x7461_636F, "ocfs2"),
];

const LOCAL_MAGICS: &[(i64, &str)] = &[
    (0xEF53, "ext2/3/4"),
    (0x5846_5342, "xfs"),
    (0x9123_683E, "btrfs"),
    (0x0102_1994, "tmpfs"),
    (0x8584_58F6, "ramfs"),
    (0x2FC1_2FC1, "zfs"),
    (0xF2F5_2010, "f2fs"),
    (0xCA45_1A4E, "bcachefs"),
    (0xE0F5_E1E2, "erofs"),
    (0x7371_7368, "squashfs"),
    (0x3153_464A, "jfs"),
    (0x5265_4973, "reiserfs"),
    (0x3434, "nilfs2"),
    (0x4D44, "vfat"),
    (0x2011_BAB0, "exfat"),
    (0x5346_544E, "ntfs"),
    (0x7366_746E, "ntfs3"),
    (0x4244, "hfs"),
    (0x482B, "hfsplus"),
    (0x9660, "iso9660"),
    // Overlay (containers) is taken as local: its upper layer is a directory of this machine,
    // whose own filesystem is usually not visible from inside the container.
    (0x794C_7630, "overlay"),
];

/// Classifies a filesystem from its `statfs` magic number and, for FUSE, the `fstype` its
/// mountinfo line gives (`fuse.sshfs`, `fuseblk`; `None` if it could not be read). Pure.
pub fn classify(magic: i64, fuse_fstype: Option<&str>) -> FilesystemKind {
    let magic = magic & 0xFFFF_FFFF;
    if let Some((_, name)) = NETWORK_MAGICS.iter().find(|(m, _)| *m == magic) {
        return FilesystemKind::Network((*name).to_string());
    }
    if let Some((_, name)) = LOCAL_MAGICS.iter().find(|(m, _)| *m == magic) {
        return FilesystemKind::Local((*name).to_string());
    }
    if magic == FUSE_MAGIC {
        let Some(fstype) = fuse_fstype else {
            return FilesystemKind::Unknown(
                "a FUSE filesystem whose type mountinfo does not give".to_string(),
            );
        };
        let subtype = fstype.strip_prefix("fuse.").unwrap_or(fstype);
        return if NETWORK_FUSE_SUBTYPES.contains(&subtype) {
            FilesystemKind::Network(fstype.to_string())
        } else if LOCAL_FUSE_SUBTYPES.contains(&subtype) {
            FilesystemKind::Local(fstype.to_string())
        } else {
            FilesystemKind::Unknown(format!("FUSE filesystem {fstype}, not known to be local"))
        };
    }
    FilesystemKind::Unknown(format!("filesystem magic number 0x{magic:x}, not known"))
}

/// Classifies the filesystem holding `dir` (`statfs`, then the FUSE subtype from mountinfo).
pub fn filesystem_kind(dir: &Path) -> FilesystemKind {
    #[cfg(target_os = "linux")]
    {
        linux::filesystem_kind(dir)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        FilesystemKind::Unknown(
            "memotag identifies filesystems on Linux only; pass mode=\"local\" for a local disk"
                .to_string(),
        )
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::{classify, FilesystemKind, FUSE_MAGIC};
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    pub(super) fn filesystem_kind(dir: &Path) -> FilesystemKind {
        let Ok(c_path) = CString::new(dir.as_os_str().as_bytes()) else {
            return FilesystemKind::Unknown(format!("{} contains a NUL byte", dir.display()));
        };
        // SAFETY: statfs writes into the zeroed struct we own; the path is NUL-terminated.
        let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statfs(c_path.as_ptr(), &mut buf) } != 0 {
            let e = std::io::Error::last_os_error();
            return FilesystemKind::Unknown(format!("statfs of {} failed: {e}", dir.display()));
        }
        #[allow(clippy::unnecessary_cast)]
        let magic = buf.f_type as i64 & 0xFFFF_FFFF;
        let fstype = if magic == FUSE_MAGIC {
            mount_fstype(dir)
        } else {
            None
        };
        classify(magic, fstype.as_deref())
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

#[cfg(test)]
mod tests {
    use super::{classify, FilesystemKind, Mode};

    fn mode(magic: i64, fuse: Option<&str>) -> Mode {
        classify(magic, fuse).mode()
    }

    #[test]
    fn known_local_filesystems_are_local() {
        for magic in [
            0xEF53,
            0x5846_5342,
            0x9123_683E,
            0x0102_1994,
            0x2FC1_2FC1,
            0xF2F5_2010,
        ] {
            assert_eq!(mode(magic, None), Mode::Local, "0x{magic:x}");
        }
        assert_eq!(
            classify(0x794C_7630, None),
            FilesystemKind::Local("overlay".into())
        );
        // statfs's f_type is signed on some targets: the magic is its low 32 bits.
        assert_eq!(mode(0xFFFF_FFFF_9123_683Eu64 as i64, None), Mode::Local);
    }

    #[test]
    fn network_filesystems_are_shared() {
        for magic in [
            0x6969,
            0x517B,
            0xFE53_4D42,
            0xFF53_4D42,
            0x00C3_6400,
            0x0102_1997,
        ] {
            assert!(
                matches!(classify(magic, None), FilesystemKind::Network(_)),
                "0x{magic:x}"
            );
        }
        assert_eq!(
            classify(0x6573_5546, Some("fuse.sshfs")),
            FilesystemKind::Network("fuse.sshfs".into())
        );
        assert_eq!(mode(0x6573_5546, Some("fuse.rclone")), Mode::Shared);
    }

    #[test]
    fn local_fuse_filesystems_are_local() {
        assert_eq!(mode(0x6573_5546, Some("fuseblk")), Mode::Local);
        assert_eq!(mode(0x6573_5546, Some("fuse.fuse-overlayfs")), Mode::Local);
    }

    #[test]
    fn what_cannot_be_identified_is_shared_and_says_why() {
        let unknown_fuse = classify(0x6573_5546, Some("fuse.somethingnew"));
        assert_eq!(unknown_fuse.mode(), Mode::Shared);
        assert!(
            unknown_fuse.reason().contains("fuse.somethingnew"),
            "{}",
            unknown_fuse.reason()
        );
        let no_mountinfo = classify(0x6573_5546, None);
        assert_eq!(no_mountinfo.mode(), Mode::Shared);
        let unknown_magic = classify(0x1234_5678, None);
        assert_eq!(unknown_magic.mode(), Mode::Shared);
        assert!(
            unknown_magic.reason().contains("0x12345678"),
            "{}",
            unknown_magic.reason()
        );
    }

    #[test]
    fn a_directory_that_cannot_be_statted_is_shared() {
        let (mode, reason) = Mode::detect_with_reason(std::path::Path::new("/no/such/dir"));
        assert_eq!(mode, Mode::Shared);
        assert!(reason.contains("statfs"), "{reason}");
    }
}
