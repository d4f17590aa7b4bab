//! Short, stable names for host resources (cgroups, bridges, veths, runtime state dirs) from
//! longer identities: FNV-1a, whose value does not change across builds as std's hasher may.

/// The 64-bit FNV-1a hash of `parts`, each followed by a NUL so `("ab","c")` ≠ `("a","bc")`.
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for part in parts {
        for b in part.iter().chain(&[0u8]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h
}
