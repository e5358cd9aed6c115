//! Menus and their negotiation: pure, no I/O.
//!
//! A menu maps each method to the generations one side supports. Two sides negotiate by taking,
//! per method, the greatest generation both support; methods with none in common are left out,
//! and if nothing is left the session cannot start.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// Method name → the generations supported for it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Menu(pub BTreeMap<String, BTreeSet<u32>>);

impl Menu {
    pub fn new() -> Self {
        Menu::default()
    }

    /// Adds generations of a method.
    pub fn with(mut self, method: &str, generations: impl IntoIterator<Item = u32>) -> Self {
        self.0
            .entry(method.to_string())
            .or_default()
            .extend(generations);
        self
    }

    /// The generations of one method (empty if the method is not on the menu).
    pub fn generations(&self, method: &str) -> Vec<u32> {
        self.0
            .get(method)
            .map(|g| g.iter().copied().collect())
            .unwrap_or_default()
    }

    pub fn methods(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.values().all(BTreeSet::is_empty)
    }

    /// Keeps only what both menus have (for a client that pretends to be older).
    pub fn intersect(&self, other: &Menu) -> Menu {
        let mut out = Menu::new();
        for (method, gens) in &self.0 {
            if let Some(theirs) = other.0.get(method) {
                let common: BTreeSet<u32> = gens.intersection(theirs).copied().collect();
                if !common.is_empty() {
                    out.0.insert(method.clone(), common);
                }
            }
        }
        out
    }
}

impl fmt::Display for Menu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (method, gens)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            let gens: Vec<String> = gens.iter().map(u32::to_string).collect();
            write!(f, "{method}: [{}]", gens.join(", "))?;
        }
        f.write_str("}")
    }
}

/// The generation chosen for each method in one session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    pub chosen: BTreeMap<String, u32>,
    pub local: Menu,
    pub remote: Menu,
}

/// Negotiates two menus: the greatest common generation per method.
pub fn negotiate(local: &Menu, remote: &Menu) -> Result<Selection, VersionError> {
    let mut chosen = BTreeMap::new();
    for (method, gens) in &local.0 {
        if let Some(theirs) = remote.0.get(method) {
            if let Some(best) = gens.intersection(theirs).max() {
                chosen.insert(method.clone(), *best);
            }
        }
    }
    Selection::of(local, remote, chosen)
}

impl Selection {
    /// The generation to use for `method`, decided before any I/O.
    pub fn generation(&self, method: &str) -> Result<u32, VersionError> {
        if let Some(g) = self.chosen.get(method) {
            return Ok(*g);
        }
        if !self.local.0.contains_key(method) && !self.remote.0.contains_key(method) {
            return Err(VersionError::UnknownMethod {
                method: method.to_string(),
            });
        }
        Err(VersionError::NoCommonGeneration {
            method: method.to_string(),
            local: self.local.generations(method),
            remote: self.remote.generations(method),
        })
    }

    /// Checks a selection made by the other side (a server telling the client what it chose):
    /// every chosen generation must be on both menus.
    pub fn validate(
        local: &Menu,
        remote: &Menu,
        chosen: BTreeMap<String, u32>,
    ) -> Result<Selection, VersionError> {
        for (method, g) in &chosen {
            let on_local = local.0.get(method).is_some_and(|gs| gs.contains(g));
            let on_remote = remote.0.get(method).is_some_and(|gs| gs.contains(g));
            if !on_local || !on_remote {
                return Err(VersionError::MalformedMenu {
                    reason: format!(
                        "generation {g} of `{method}` was selected but is not on both menus"
                    ),
                });
            }
        }
        Selection::of(local, remote, chosen)
    }

    /// A session's selection; a session with no method at all cannot start.
    fn of(
        local: &Menu,
        remote: &Menu,
        chosen: BTreeMap<String, u32>,
    ) -> Result<Selection, VersionError> {
        if chosen.is_empty() {
            return Err(VersionError::NoCommonMethods {
                local: local.clone(),
                remote: remote.clone(),
            });
        }
        Ok(Selection {
            chosen,
            local: local.clone(),
            remote: remote.clone(),
        })
    }
}

/// Versioning failures: every one is raised before anything is read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("protocol mismatch: this memotag speaks protocol {local}, the store {remote}; both must match exactly")]
    ProtocolMismatch { local: u32, remote: u32 },
    #[error("no operation in common: this memotag offers {local}, the store {remote}")]
    NoCommonMethods { local: Menu, remote: Menu },
    #[error("unknown operation `{method}`: neither this memotag nor the store declares it")]
    UnknownMethod { method: String },
    #[error("operation `{method}` has no generation in common (this memotag: {local:?}, the store: {remote:?}); upgrade the older side or `memotag migrate` the store")]
    NoCommonGeneration {
        method: String,
        local: Vec<u32>,
        remote: Vec<u32>,
    },
    #[error("`{method}` generation {generation}: cannot decode the payload: {reason}")]
    Decode {
        method: String,
        generation: u32,
        reason: String,
    },
    #[error("`{method}` generation {generation} cannot carry this request without changing its meaning: {reason}")]
    LossyDowngrade {
        method: String,
        generation: u32,
        reason: String,
    },
    #[error("malformed menu: {reason}")]
    MalformedMenu { reason: String },
    #[error("the store needs read level {file} but this memotag reads up to {supported}; upgrade memotag")]
    ReadLevel { file: u32, supported: u32 },
}
