//! What the offer announced, and the archive MUST match: the top-level names (each
//! entry's first component, and the order of the commit), their kinds, and how many
//! entries the archive holds.
//!
//! # Invariants
//!
//! - Every announced name MUST be a plain file name, or no unpacker is made.
//! - An entry's first component is looked up in a set, never a list: an offer may
//!   announce 65,536 names and an archive hold millions of entries.
//! - A top-level entry MUST be of the kind announced. One entry more than announced is
//!   refused at once, and an archive that ends with fewer is refused at its end.

use std::collections::{HashMap, HashSet};

use super::{ArchiveError, Unpacker, plain_name};
use crate::message::{Offer, TopKind};

/// What the offer announced, and the archive MUST match.
#[derive(Debug, Clone, Default)]
pub(crate) struct Announced {
    /// The top-level names, in order.
    pub(crate) names: Vec<String>,
    /// Their kinds, parallel to `names`; empty: not checked.
    pub(crate) kinds: Vec<TopKind>,
    /// How many entries the archive holds; `None`: not checked.
    pub(crate) entries: Option<u64>,
}

impl Announced {
    /// What an archive offer announces.
    pub(crate) fn of(offer: &Offer) -> Announced {
        Announced { names: offer.entries.clone(), kinds: offer.kinds.clone(), entries: offer.files }
    }
}

impl From<Vec<String>> for Announced {
    fn from(names: Vec<String>) -> Announced {
        Announced { names, ..Announced::default() }
    }
}

/// [`Announced`], in the form every entry is checked against.
#[derive(Debug)]
pub(super) struct Rules {
    /// The announced top-level names, once each, in the order announced (the order of
    /// the commit).
    pub(super) top: Vec<String>,
    /// The same names, for the check of every entry: an Offer may announce 65,536 names
    /// and an archive hold millions of entries, so a linear search per entry (or per
    /// name at commit) would let a peer buy minutes of CPU with a few MiB.
    pub(super) allowed: HashSet<String>,
    /// Each name's announced kind (empty: not checked).
    kinds: HashMap<String, TopKind>,
    pub(super) entries: Option<u64>,
}

impl Rules {
    pub(super) fn new(announced: Announced) -> Result<Rules, ArchiveError> {
        if let Some(bad) = announced.names.iter().find(|name| plain_name(name).is_none()) {
            return Err(ArchiveError::Unsafe {
                entry: bad.clone(),
                reason: "an announced top-level name is not a plain file name",
            });
        }
        let mut allowed = HashSet::with_capacity(announced.names.len());
        let kinds: HashMap<String, TopKind> = if announced.kinds.len() == announced.names.len() {
            announced.names.iter().cloned().zip(announced.kinds.iter().copied()).collect()
        } else {
            HashMap::new()
        };
        let top: Vec<String> =
            announced.names.into_iter().filter(|name| allowed.insert(name.clone())).collect();
        Ok(Rules { top, allowed, kinds, entries: announced.entries })
    }

    /// A top-level entry MUST be what the offer said it is.
    pub(super) fn check_kind(&self, name: &str, arrived: TopKind) -> Result<(), ArchiveError> {
        match self.kinds.get(name) {
            Some(&announced) if announced != arrived => Err(ArchiveError::KindMismatch {
                name: name.to_owned(),
                announced: announced.noun(),
                arrived: arrived.noun(),
            }),
            _ => Ok(()),
        }
    }
}

impl Unpacker {
    /// Counts an entry against the offer.
    pub(super) fn count(&mut self) -> Result<(), ArchiveError> {
        self.seen += 1;
        match self.announced.entries {
            Some(offered) if self.seen > offered => Err(ArchiveError::TooManyEntries { offered }),
            _ => Ok(()),
        }
    }
}
