//! Template hashes (`pod-template-hash`, ControllerRevision names): FNV-32a over the
//! template's canonical JSON plus the collision count, written in upstream's alphabet
//! without vowels (`rand.SafeEncodeString`), so names never spell words.

use serde_json::Value;

const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn fnv32a(bytes: &[u8], mut h: u32) -> u32 {
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The hash of `template` (any serializable value; serde_json writes object keys sorted, so
/// equal templates hash equal) and the owner's `collisionCount`.
pub fn template_hash(template: &Value, collision_count: Option<i32>) -> String {
    let text = serde_json::to_string(template).unwrap_or_default();
    let mut h = fnv32a(text.as_bytes(), 0x811c_9dc5);
    if let Some(c) = collision_count {
        h = fnv32a(&c.to_le_bytes(), h);
    }
    safe_encode(&h.to_string())
}

fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stable_and_changed_by_template_and_collisions() {
        let a = json!({"spec": {"containers": [{"name": "c", "image": "x"}]}});
        let b = json!({"spec": {"containers": [{"name": "c", "image": "y"}]}});
        assert_eq!(template_hash(&a, None), template_hash(&a.clone(), None));
        assert_ne!(template_hash(&a, None), template_hash(&b, None));
        assert_ne!(template_hash(&a, None), template_hash(&a, Some(1)));
        assert!(template_hash(&a, None)
            .bytes()
            .all(|c| ALPHANUMS.contains(&c)));
    }
}
