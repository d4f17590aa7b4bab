//! Defaulting on the write path: the kind's strategy decides what create resets and what
//! update keeps, then applies upstream's defaults.

use rand::RngExt;
use serde_json::Value;

use crate::status::Cause;
use crate::types::registry::ResourceType;

/// Five characters from upstream's alphabet (no vowels, no ambiguous digits).
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A new object: what creation resets, then defaults.
pub fn on_create(rt: &ResourceType, obj: &mut Value) {
    rt.strategy.prepare_for_create(obj, rt.has_status);
    rt.strategy.defaults(obj, true);
}

/// An updated object's defaults (what the endpoint may change was settled by the
/// strategy's `prepare_for_update` before the server-owned metadata was restored).
pub fn on_update(rt: &ResourceType, new: &mut Value) {
    rt.strategy.defaults(new, false);
}

pub fn immutable_checks(rt: &ResourceType, old: &Value, new: &Value, causes: &mut Vec<Cause>) {
    causes.extend(rt.strategy.validate_update(old, new));
}
