//! LimitRange (core, v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::strategy::Strategy;

pub struct LimitRange;

impl Strategy for LimitRange {
    fn validate(&self, obj: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        limit_range(&mut c, obj);
        c.0
    }

    fn columns(&self) -> Option<Vec<Value>> {
        crate::types::shared::printing::created_at_columns()
    }

    fn cells(&self, o: &Value) -> Option<Vec<Value>> {
        let mut out = vec![json!(crate::object::name(o))];
        crate::types::shared::printing::created_at_cells(o, &mut out)?;
        Some(out)
    }
}
