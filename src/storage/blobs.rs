//! Large values as content-addressed files in a folder beside the store.
//!
//! `<store>.blobs/ab/<32 hex>`: written to a temporary name, fsynced, renamed into place, the
//! folder fsynced; verified against the id on every read. A file is never modified once named.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::StorageError;
use crate::value::{EncodedValue, ValueId};

/// The folder of value files that belongs to one store.
#[derive(Clone, Debug)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    /// The blob folder of the store at `store_path`: `<store_path>.blobs`.
    /// The blob folder of the store at `store_path` (symlinks resolved: one folder per store,
    /// however it is named).
    pub fn beside(store_path: &Path) -> BlobStore {
        let store_path = super::file::resolve(store_path);
        let mut name = store_path.as_os_str().to_os_string();
        name.push(".blobs");
        BlobStore {
            root: PathBuf::from(name),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the value with this id lives.
    pub fn path_of(&self, id: &ValueId) -> PathBuf {
        let hex = id.to_hex();
        self.root.join(&hex[..2]).join(&hex)
    }

    /// Writes the value's file unless it is already there. The file holds the codec byte
    /// followed by the bytes, so that the id can be checked from the file alone.
    pub fn put(&self, value: &EncodedValue, id: &ValueId) -> Result<(), StorageError> {
        let target = self.path_of(id);
        if target.exists() {
            return Ok(());
        }
        let dir = target.parent().expect("blob paths have a parent");
        fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            id.to_hex(),
            uuid::Uuid::new_v4().simple()
        ));
        let written = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(&[value.codec as u8])?;
            f.write_all(&value.bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &target)?;
            File::open(dir)?.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(StorageError::io(&target, e));
        }
        Ok(())
    }

    /// Reads and verifies the value with this id.
    pub fn get(&self, id: &ValueId) -> Result<EncodedValue, StorageError> {
        let path = self.path_of(id);
        let data = match fs::read(&path) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StorageError::MissingBlob { id: *id, path });
            }
            Err(e) => return Err(StorageError::io(&path, e)),
        };
        let Some((&codec, bytes)) = data.split_first() else {
            return Err(StorageError::CorruptBlob { id: *id, path });
        };
        let Ok(codec) = crate::value::Codec::from_u8(codec) else {
            return Err(StorageError::CorruptBlob { id: *id, path });
        };
        let value = EncodedValue {
            codec,
            bytes: bytes.to_vec(),
        };
        if value.id() != *id {
            return Err(StorageError::CorruptBlob { id: *id, path });
        }
        Ok(value)
    }

    /// Whether the file for this id exists (not verified).
    pub fn contains(&self, id: &ValueId) -> bool {
        self.path_of(id).exists()
    }
}
