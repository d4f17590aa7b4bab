//! ControllerRevision (apps, apps/v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::types::strategy::Strategy;

pub struct ControllerRevision;

impl Strategy for ControllerRevision {
    fn columns(&self) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let c = |spec: &[(&str, &str, i64)]| {
            Some(spec.iter().map(|(n, t, pr)| col(n, t, *pr)).collect())
        };
        c(&[
            ("Name", "string", 0),
            ("Controller", "string", 0),
            ("Revision", "integer", 0),
            ("Age", "string", 0),
        ])
    }

    fn cells(&self, o: &Value) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let name = json!(object::name(o));

        let mut out = vec![name];
        let owner = arr(o, "/metadata/ownerReferences")
            .iter()
            .find(|r| r.get("controller") == Some(&json!(true)));
        let controller = owner
            .map(|r| format!("{}/{}", s(r, "/kind").to_lowercase(), s(r, "/name")))
            .unwrap_or_else(|| "<none>".into());
        out.extend([json!(controller), json!(i(o, "/revision")), age(o)]);
        Some(out)
    }
}
