//! Compiled `pattern` regular expressions, shared: a pattern CRDs write many times (the
//! quantity pattern of every `resources` field) is compiled once and freed with its last user.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use regex::Regex;

struct Interned {
    by_text: HashMap<String, Weak<Regex>>,
    /// Dead entries are swept when the table reaches this size.
    sweep_at: usize,
}

fn table() -> &'static Mutex<Interned> {
    static TABLE: OnceLock<Mutex<Interned>> = OnceLock::new();
    TABLE.get_or_init(|| {
        Mutex::new(Interned {
            by_text: HashMap::new(),
            sweep_at: 64,
        })
    })
}

/// The compiled form of `pattern`, shared with every other live schema that has it.
pub fn compile(pattern: &str) -> Result<Arc<Regex>, regex::Error> {
    let live = |t: &Interned| t.by_text.get(pattern).and_then(Weak::upgrade);
    if let Some(re) = live(&table().lock().unwrap_or_else(|p| p.into_inner())) {
        return Ok(re);
    }
    // Compiled outside the lock: two schemas racing on one new pattern compile it twice,
    // and the second wins the table, which costs nothing but the duplicate's lifetime.
    let re = Arc::new(Regex::new(pattern)?);
    let mut t = table().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(existing) = live(&t) {
        return Ok(existing);
    }
    t.by_text.insert(pattern.to_string(), Arc::downgrade(&re));
    if t.by_text.len() >= t.sweep_at {
        t.by_text.retain(|_, w| w.strong_count() > 0);
        t.sweep_at = (t.by_text.len() * 2).max(64);
    }
    Ok(re)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_compiled_pattern_per_text_while_used() {
        let a = compile("^[0-9]+m?$").expect("valid");
        let b = compile("^[0-9]+m?$").expect("valid");
        assert!(Arc::ptr_eq(&a, &b));
        let weak = Arc::downgrade(&a);
        drop((a, b));
        assert!(weak.upgrade().is_none(), "freed with its last user");
        assert!(compile("(").is_err());
    }
}
