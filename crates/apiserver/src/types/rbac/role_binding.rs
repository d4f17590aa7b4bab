//! RoleBinding (rbac.authorization.k8s.io, rbac.authorization.k8s.io/v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::strategy::Strategy;
use crate::types::validation::NameRule;

pub struct RoleBinding;

impl Strategy for RoleBinding {
    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }

    fn defaults(&self, obj: &mut Value, creating: bool) {
        crate::types::rbac::role_binding_defaults(
            "rbac.authorization.k8s.io",
            "RoleBinding",
            obj,
            creating,
        );
    }

    fn validate(&self, obj: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        crate::types::rbac::role_binding_validation(
            &mut c,
            "rbac.authorization.k8s.io",
            "RoleBinding",
            obj,
        );
        c.0
    }

    fn validate_update(&self, old: &Value, new: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        crate::types::rbac::role_ref_immutable(
            &mut c,
            "rbac.authorization.k8s.io",
            "RoleBinding",
            old,
            new,
        );
        c.0
    }

    fn columns(&self) -> Option<Vec<Value>> {
        crate::types::rbac::role_binding_columns()
    }

    fn cells(&self, o: &Value) -> Option<Vec<Value>> {
        let mut out = vec![json!(crate::object::name(o))];
        crate::types::rbac::role_binding_cells(o, &mut out)?;
        Some(out)
    }
}
