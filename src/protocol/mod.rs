//! Versioned procedures: every store operation, declared once with all its generations, and the
//! negotiation that picks one generation per operation for a session.
//!
//! A generation owns its wire payload types and the conversions between them and the current
//! model types (the types the rest of the crate uses). When the negotiated generation is the
//! current one, a call passes its model values straight through; otherwise the request is
//! downgraded to that generation's wire form, encoded, decoded and upgraded again — exactly what a
//! server would do — so an older generation means precisely what it meant when it was current.
//! A downgrade that would change what a request means fails instead of guessing.
//!
//! This module does not know how an operation is carried out (that is the store session).

mod menu;
pub mod procedures;

use std::collections::BTreeSet;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use menu::{negotiate, Menu, Selection, VersionError};

/// The handshake number. Both sides must have exactly the same one; it changes only if the way
/// sessions start (handshake, menus) changes.
pub const PROTOCOL: u32 = 1;

/// The file read level this build understands (SQLite-header style: a file whose read level is
/// higher is refused). Level 2: shared-mode stores, readable only under their lease lock
/// (format generation 5; see docs/design.md §5 for when levels move).
pub const READ_LEVEL: u32 = 2;

/// The file write level this build understands (a file whose write level is higher is opened
/// read-only). Level 2: shared-mode stores, written only under their lease lock.
pub const WRITE_LEVEL: u32 = 2;

/// This build's library version, exchanged in the handshake.
pub const LIBRARY_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A wire payload of one generation, convertible to and from the model type `M`.
pub trait Wire<M>: Serialize + DeserializeOwned {
    /// The model value in this generation's form; `Err(reason)` if this generation cannot
    /// express it without changing its meaning.
    fn downgrade(model: &M) -> Result<Self, String>;
    /// The model value this wire value stands for.
    fn upgrade(self) -> M;
}

/// The current generation's wire form is the model type itself.
impl<T: Clone + Serialize + DeserializeOwned> Wire<T> for T {
    fn downgrade(model: &T) -> Result<Self, String> {
        Ok(model.clone())
    }
    fn upgrade(self) -> T {
        self
    }
}

type Encode<M> = fn(&M) -> Result<Vec<u8>, String>;
type Decode<M> = fn(&[u8]) -> Result<M, String>;

/// One generation of a procedure: a version number and its wire conversions in both directions.
pub struct Generation<Req, Resp> {
    pub version: u32,
    pub encode_request: Encode<Req>,
    pub decode_request: Decode<Req>,
    pub encode_response: Encode<Resp>,
    pub decode_response: Decode<Resp>,
}

fn encode_via<M, W: Wire<M>>(model: &M) -> Result<Vec<u8>, String> {
    let wire = W::downgrade(model)?;
    serde_json::to_vec(&wire).map_err(|e| e.to_string())
}

fn decode_via<M, W: Wire<M>>(bytes: &[u8]) -> Result<M, String> {
    let wire: W = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    Ok(wire.upgrade())
}

impl<Req, Resp> Generation<Req, Resp> {
    /// A generation whose request travels as `WReq` and whose response travels as `WResp`.
    pub fn new<WReq: Wire<Req>, WResp: Wire<Resp>>(version: u32) -> Self {
        let _ = PhantomData::<(WReq, WResp)>;
        Generation {
            version,
            encode_request: encode_via::<Req, WReq>,
            decode_request: decode_via::<Req, WReq>,
            encode_response: encode_via::<Resp, WResp>,
            decode_response: decode_via::<Resp, WResp>,
        }
    }
}

/// A procedure: a method name and every generation it has had (gaps allowed).
pub struct Procedure<Req, Resp> {
    pub method: &'static str,
    generations: Vec<Generation<Req, Resp>>,
    current: u32,
}

impl<Req, Resp> Procedure<Req, Resp> {
    /// Declares a procedure. Panics if a generation number appears twice — a declaration bug
    /// that the registry test catches before any release.
    pub fn new(method: &'static str, generations: Vec<Generation<Req, Resp>>) -> Self {
        let versions: Vec<u32> = generations.iter().map(|g| g.version).collect();
        let unique: BTreeSet<u32> = versions.iter().copied().collect();
        assert_eq!(
            unique.len(),
            versions.len(),
            "`{method}` declares a generation twice"
        );
        let current = *unique
            .iter()
            .next_back()
            .expect("a procedure has at least one generation");
        Procedure {
            method,
            generations,
            current,
        }
    }

    /// The newest generation: the one whose wire form is the model.
    pub fn current(&self) -> u32 {
        self.current
    }

    pub fn versions(&self) -> Vec<u32> {
        self.generations.iter().map(|g| g.version).collect()
    }

    pub fn generation(&self, version: u32) -> Option<&Generation<Req, Resp>> {
        self.generations.iter().find(|g| g.version == version)
    }

    /// Runs `exec` on `request` under the generation `selection` chose for this method. The
    /// choice is checked before anything else happens.
    pub fn call<E: From<VersionError>>(
        &self,
        selection: &Selection,
        request: &Req,
        exec: impl FnOnce(&Req) -> Result<Resp, E>,
    ) -> Result<Resp, E> {
        let version = selection.generation(self.method)?;
        if version == self.current {
            return exec(request);
        }
        let generation = self
            .generation(version)
            .ok_or_else(|| VersionError::MalformedMenu {
                reason: format!(
                    "generation {version} of `{}` was selected but is not declared",
                    self.method
                ),
            })?;
        let lossy = |reason| VersionError::LossyDowngrade {
            method: self.method.to_string(),
            generation: version,
            reason,
        };
        let decode = |reason| VersionError::Decode {
            method: self.method.to_string(),
            generation: version,
            reason,
        };
        let bytes = (generation.encode_request)(request).map_err(lossy)?;
        let request = (generation.decode_request)(&bytes).map_err(decode)?;
        let response = exec(&request)?;
        let bytes = (generation.encode_response)(&response).map_err(lossy)?;
        Ok((generation.decode_response)(&bytes).map_err(decode)?)
    }
}

/// Builds a menu from (method, generations) declarations, refusing a method declared twice.
pub fn build_menu<'a>(
    declarations: impl IntoIterator<Item = (&'a str, Vec<u32>)>,
) -> Result<Menu, VersionError> {
    let mut menu = Menu::new();
    for (method, versions) in declarations {
        if menu.0.contains_key(method) {
            return Err(VersionError::MalformedMenu {
                reason: format!("method `{method}` is declared twice"),
            });
        }
        let unique: BTreeSet<u32> = versions.iter().copied().collect();
        if unique.len() != versions.len() {
            return Err(VersionError::MalformedMenu {
                reason: format!("method `{method}` declares a generation twice"),
            });
        }
        if unique.is_empty() || unique.contains(&0) {
            return Err(VersionError::MalformedMenu {
                reason: format!("method `{method}` needs generations numbered from 1"),
            });
        }
        menu.0.insert(method.to_string(), unique);
    }
    Ok(menu)
}
