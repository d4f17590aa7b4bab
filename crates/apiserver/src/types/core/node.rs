//! Node (core, v1): its defaults, validation, table columns and field
//! selectors — everything capstan knows about the kind, in one place.

use serde_json::{json, Value};

use crate::status::Cause;
use crate::types::strategy::Strategy;

pub struct Node;

impl Strategy for Node {
    /// Upstream's node strategy lets every field, status included, be set on create (a
    /// node agent registers its node with its capacity and addresses at once).
    fn prepare_for_create(&self, _obj: &mut Value, _has_status: bool) {}

    fn validate(&self, obj: &Value) -> Vec<Cause> {
        use crate::types::shared::validating::*;
        let mut c = Causes::default();
        for (i, t) in arr(obj, "/spec/taints").iter().enumerate() {
            let tp = format!("spec.taints[{i}]");
            let key = s(t, "/key");
            if key.is_empty() {
                c.required(&format!("{tp}.key"), "");
            } else {
                c.0.extend(crate::types::validation::qualified_name_errors(
                    &format!("{tp}.key"),
                    key,
                ));
            }
            c.one_of(
                t,
                "/effect",
                &format!("{tp}.effect"),
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
                true,
            );
        }
        let cidr = s(obj, "/spec/podCIDR");
        if !cidr.is_empty() && !is_cidr(cidr) {
            c.invalid("spec.podCIDR", &json!(cidr), CIDR_MSG);
        }
        for (i, v) in arr(obj, "/spec/podCIDRs").iter().enumerate() {
            if !v.as_str().is_some_and(is_cidr) {
                c.invalid(&format!("spec.podCIDRs[{i}]"), v, CIDR_MSG);
            }
        }
        c.0
    }

    /// Upstream's ValidateNodeUpdate: a pod CIDR may be set once (by the node-ipam loop or
    /// the node's agent), never changed.
    fn validate_update(&self, old: &Value, new: &Value) -> Vec<Cause> {
        let cidrs = |o: &Value| -> Vec<Value> {
            let list = o
                .pointer("/spec/podCIDRs")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if list.is_empty() {
                o.pointer("/spec/podCIDR")
                    .and_then(Value::as_str)
                    .filter(|c| !c.is_empty())
                    .map(|c| vec![json!(c)])
                    .unwrap_or_default()
            } else {
                list
            }
        };
        let before = cidrs(old);
        if !before.is_empty() && before != cidrs(new) {
            return vec![Cause::forbidden(
                "spec.podCIDRs",
                "node updates may not change podCIDR except from \"\" to valid",
            )];
        }
        Vec::new()
    }

    fn columns(&self) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let c = |spec: &[(&str, &str, i64)]| {
            Some(spec.iter().map(|(n, t, pr)| col(n, t, *pr)).collect())
        };
        c(&[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Roles", "string", 0),
            ("Age", "string", 0),
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
            ("External-IP", "string", 1),
            ("OS-Image", "string", 1),
            ("Kernel-Version", "string", 1),
            ("Container-Runtime", "string", 1),
        ])
    }

    fn cells(&self, o: &Value) -> Option<Vec<Value>> {
        use crate::types::shared::printing::*;
        let name = json!(object::name(o));

        let mut out = vec![name];
        let ready = arr(o, "/status/conditions")
            .iter()
            .find(|c| s(c, "/type") == "Ready");
        // upstream's printNode: Ready/NotReady from the Ready condition, Unknown without one.
        let mut status = match ready.map(|c| s(c, "/status")) {
            Some("True") => "Ready".to_string(),
            Some(_) => "NotReady".to_string(),
            None => "Unknown".to_string(),
        };
        if o.pointer("/spec/unschedulable") == Some(&json!(true)) {
            status.push_str(",SchedulingDisabled");
        }
        // findNodeRoles: `node-role.kubernetes.io/<role>` keys and the legacy
        // `kubernetes.io/role` value, sorted, once each.
        let mut roles = std::collections::BTreeSet::new();
        for (k, v) in o
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            } else if k == "kubernetes.io/role" {
                if let Some(role) = v.as_str().filter(|r| !r.is_empty()) {
                    roles.insert(role.to_string());
                }
            }
        }
        let roles: Vec<String> = roles.into_iter().collect();
        let addr = |t: &str| {
            arr(o, "/status/addresses")
                .iter()
                .find(|a| s(a, "/type") == t)
                .map(|a| s(a, "/address").to_string())
                .unwrap_or_else(|| "<none>".into())
        };
        out.extend([
            json!(status),
            or_none(roles.join(",")),
            age(o),
            json!(s(o, "/status/nodeInfo/kubeletVersion")),
            json!(addr("InternalIP")),
            json!(addr("ExternalIP")),
            json!(s(o, "/status/nodeInfo/osImage")),
            json!(s(o, "/status/nodeInfo/kernelVersion")),
            json!(s(o, "/status/nodeInfo/containerRuntimeVersion")),
        ]);
        Some(out)
    }

    fn field_selectors(&self) -> &'static [&'static str] {
        &["spec.unschedulable"]
    }
}

#[cfg(test)]
mod printer_tests {
    use super::*;

    #[test]
    fn nodes_print_as_upstreams_print_node() {
        let node = json!({"metadata": {"name": "n", "labels": {
            "node-role.kubernetes.io/worker": "", "node-role.kubernetes.io/control-plane": "",
            "kubernetes.io/role": "edge", "node-role.kubernetes.io/": "x"}},
            "spec": {"unschedulable": true}, "status": {}});
        let cells = Node.cells(&node).expect("cells");
        assert_eq!(cells[1], json!("Unknown,SchedulingDisabled"));
        assert_eq!(cells[2], json!("control-plane,edge,worker"));
    }
}
