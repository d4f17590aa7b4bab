//! ClusterRole (rbac.authorization.k8s.io, rbac.authorization.k8s.io/v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::strategy::Strategy;
use crate::types::validation::NameRule;

pub struct ClusterRole;

impl Strategy for ClusterRole {
    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }

    fn validate(&self, obj: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        crate::types::rbac::role_validation(
            &mut c,
            "rbac.authorization.k8s.io",
            "ClusterRole",
            obj,
        );
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
