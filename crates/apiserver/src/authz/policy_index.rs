//! The RBAC objects indexed for decisions: every binding's resolved rules by subject (user
//! or group name), cluster-wide and per namespace, rebuilt from the store as it changes.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::authz::rbac::{PolicyRule, Request};
use crate::serving::user_info::UserInfo;

pub const RBAC_PREFIX: &str = "/registry/rbac.authorization.k8s.io/";

/// What one binding gives one of its subjects.
#[derive(Debug, Clone)]
pub enum Grant {
    Rules {
        rules: Arc<[PolicyRule]>,
        /// Upstream's describer: `RoleBinding "rb/ns" of ClusterRole "view" to User "alice"`.
        source: Arc<str>,
    },
    /// The binding names a role that does not exist (upstream's resolution error).
    Missing(Arc<str>),
}

#[derive(Debug, Default)]
struct BySubject {
    users: HashMap<String, Vec<Grant>>,
    groups: HashMap<String, Vec<Grant>>,
}

impl BySubject {
    fn visit<'a>(&'a self, user: &UserInfo, out: &mut impl FnMut(&'a Grant) -> bool) -> bool {
        if let Some(grants) = self.users.get(&user.username) {
            for g in grants {
                if !out(g) {
                    return false;
                }
            }
        }
        for group in &user.groups {
            if let Some(grants) = self.groups.get(group) {
                for g in grants {
                    if !out(g) {
                        return false;
                    }
                }
            }
        }
        true
    }
}

/// One consistent view of every Role, ClusterRole and binding.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The store revision it was read at.
    pub revision: i64,
    cluster: BySubject,
    namespaces: HashMap<String, BySubject>,
}

/// A stored RBAC object, by its plural.
pub struct Stored {
    pub plural: String,
    pub namespace: String,
    pub obj: Value,
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

impl Snapshot {
    pub fn build(revision: i64, objects: &[Stored]) -> Snapshot {
        let mut roles: HashMap<(&str, &str), Arc<[PolicyRule]>> = HashMap::new();
        let mut cluster_roles: HashMap<&str, Arc<[PolicyRule]>> = HashMap::new();
        for o in objects {
            let name = str_at(&o.obj, "/metadata/name");
            let rules: Arc<[PolicyRule]> = PolicyRule::list_from(&o.obj).into();
            match o.plural.as_str() {
                "roles" => {
                    roles.insert((o.namespace.as_str(), name), rules);
                }
                "clusterroles" => {
                    cluster_roles.insert(name, rules);
                }
                _ => {}
            }
        }
        let mut snap = Snapshot {
            revision,
            ..Snapshot::default()
        };
        for o in objects {
            let namespaced = match o.plural.as_str() {
                "rolebindings" => true,
                "clusterrolebindings" => false,
                _ => continue,
            };
            let name = str_at(&o.obj, "/metadata/name");
            let kind = str_at(&o.obj, "/roleRef/kind");
            let role = str_at(&o.obj, "/roleRef/name");
            let rules = match kind {
                "Role" if namespaced => roles.get(&(o.namespace.as_str(), role)).cloned(),
                "ClusterRole" => cluster_roles.get(role).cloned(),
                _ => None,
            };
            let missing = || -> Arc<str> {
                match kind {
                    "Role" => format!("role.rbac.authorization.k8s.io {role:?} not found"),
                    "ClusterRole" => {
                        format!("clusterrole.rbac.authorization.k8s.io {role:?} not found")
                    }
                    other => format!("unsupported role reference kind: {other:?}"),
                }
                .into()
            };
            let index = if namespaced {
                snap.namespaces.entry(o.namespace.clone()).or_default()
            } else {
                &mut snap.cluster
            };
            let subjects = o
                .obj
                .get("subjects")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for s in &subjects {
                let s_kind = str_at(s, "/kind");
                let s_name = str_at(s, "/name");
                let (key, is_group, described) = match s_kind {
                    "User" => (s_name.to_string(), false, format!("User {s_name:?}")),
                    "Group" => (s_name.to_string(), true, format!("Group {s_name:?}")),
                    "ServiceAccount" => {
                        let sa_ns = match str_at(s, "/namespace") {
                            "" => o.namespace.as_str(),
                            ns => ns,
                        };
                        if sa_ns.is_empty() {
                            continue;
                        }
                        (
                            format!("system:serviceaccount:{sa_ns}:{s_name}"),
                            false,
                            format!("ServiceAccount {:?}", format!("{s_name}/{sa_ns}")),
                        )
                    }
                    _ => continue,
                };
                let grant = match &rules {
                    Some(rules) => {
                        let binding = if namespaced {
                            format!("RoleBinding {:?}", format!("{name}/{}", o.namespace))
                        } else {
                            format!("ClusterRoleBinding {name:?}")
                        };
                        Grant::Rules {
                            rules: rules.clone(),
                            source: format!("{binding} of {kind} {role:?} to {described}").into(),
                        }
                    }
                    None => Grant::Missing(missing()),
                };
                let map = if is_group {
                    &mut index.groups
                } else {
                    &mut index.users
                };
                map.entry(key).or_default().push(grant);
            }
        }
        snap
    }

    /// Visit what applies to `user` cluster-wide, then in `namespace` (if any), until `out`
    /// returns false. Returns whether the visit ran to the end.
    pub fn visit<'a>(
        &'a self,
        user: &UserInfo,
        namespace: &str,
        mut out: impl FnMut(&'a Grant) -> bool,
    ) -> bool {
        if !self.cluster.visit(user, &mut out) {
            return false;
        }
        if namespace.is_empty() {
            return true;
        }
        match self.namespaces.get(namespace) {
            Some(ns) => ns.visit(user, &mut out),
            None => true,
        }
    }

    /// The rule that allows the request, as upstream's RBAC authorizer decides: allowed with
    /// the granting binding's description, or not, with the resolution errors met.
    pub fn authorize(&self, user: &UserInfo, req: &Request<'_>) -> Result<String, String> {
        let mut errors: Vec<&str> = Vec::new();
        let mut allowed_by: Option<&str> = None;
        self.visit(user, &req.info.namespace, |g| match g {
            Grant::Rules { rules, source } => {
                if rules.iter().any(|r| r.allows(req)) {
                    allowed_by = Some(source.as_ref());
                    return false;
                }
                true
            }
            Grant::Missing(e) => {
                errors.push(e.as_ref());
                true
            }
        });
        match allowed_by {
            Some(source) => Ok(format!("RBAC: allowed by {source}")),
            None if errors.is_empty() => Err(String::new()),
            None if errors.len() == 1 => Err(format!("RBAC: {}", errors[0])),
            None => Err(format!("RBAC: [{}]", errors.join(", "))),
        }
    }

    /// Every rule `user` holds in `namespace` (cluster-wide ones included), and the
    /// resolution errors met (upstream's `RulesFor`).
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> (Vec<PolicyRule>, Vec<String>) {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        self.visit(user, namespace, |g| {
            match g {
                Grant::Rules { rules: r, .. } => rules.extend(r.iter().cloned()),
                Grant::Missing(e) => errors.push(e.to_string()),
            }
            true
        });
        (rules, errors)
    }
}

/// The plural and namespace a key under `RBAC_PREFIX` names.
pub fn parse_key(key: &[u8]) -> Option<(String, String)> {
    let rest = std::str::from_utf8(key).ok()?.strip_prefix(RBAC_PREFIX)?;
    let mut parts = rest.split('/');
    let plural = parts.next()?.to_string();
    let parts: Vec<&str> = parts.collect();
    let namespace = match parts.as_slice() {
        [ns, _name] => ns.to_string(),
        _ => String::new(),
    };
    Some((plural, namespace))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap as Map;

    use crate::serving::request_info::RequestInfo;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            username: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..UserInfo::default()
        }
    }

    fn stored(plural: &str, ns: &str, obj: Value) -> Stored {
        Stored {
            plural: plural.into(),
            namespace: ns.into(),
            obj,
        }
    }

    fn view_and_bindings(extra_bindings: usize) -> Vec<Stored> {
        let mut objs = vec![
            stored(
                "clusterroles",
                "",
                json!({"metadata": {"name": "view"}, "rules": [{"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["pods", "configmaps"]}]}),
            ),
            stored(
                "rolebindings",
                "a",
                json!({"metadata": {"name": "alice-view"}, "roleRef": {"kind": "ClusterRole", "name": "view"}, "subjects": [{"kind": "User", "name": "alice"}]}),
            ),
            stored(
                "rolebindings",
                "a",
                json!({"metadata": {"name": "sa"}, "roleRef": {"kind": "Role", "name": "r"}, "subjects": [{"kind": "ServiceAccount", "name": "robot"}]}),
            ),
            stored(
                "roles",
                "a",
                json!({"metadata": {"name": "r"}, "rules": [{"verbs": ["list"], "apiGroups": [""], "resources": ["secrets"]}]}),
            ),
            stored(
                "clusterrolebindings",
                "",
                json!({"metadata": {"name": "dev-missing"}, "roleRef": {"kind": "ClusterRole", "name": "gone"}, "subjects": [{"kind": "Group", "name": "dev"}]}),
            ),
        ];
        for i in 0..extra_bindings {
            objs.push(stored(
                "rolebindings",
                &format!("ns{}", i % 50),
                json!({"metadata": {"name": format!("rb{i}")}, "roleRef": {"kind": "ClusterRole", "name": "view"}, "subjects": [{"kind": "User", "name": format!("user{i}")}, {"kind": "Group", "name": format!("group{i}")}]}),
            ));
        }
        objs
    }

    fn decide(s: &Snapshot, u: &UserInfo, method: &str, path: &str) -> Result<String, String> {
        let info = RequestInfo::new(method, path, &Map::new());
        s.authorize(u, &Request::new(&info))
    }

    #[test]
    fn bindings_grant_their_role_to_users_groups_and_service_accounts() {
        let s = Snapshot::build(1, &view_and_bindings(0));
        let alice = user("alice", &["system:authenticated"]);
        assert_eq!(
            decide(&s, &alice, "GET", "/api/v1/namespaces/a/pods").unwrap(),
            "RBAC: allowed by RoleBinding \"alice-view/a\" of ClusterRole \"view\" to User \"alice\""
        );
        assert!(decide(&s, &alice, "GET", "/api/v1/namespaces/b/pods").is_err());
        assert!(decide(&s, &alice, "GET", "/api/v1/namespaces/a/secrets").is_err());
        let robot = user(
            "system:serviceaccount:a:robot",
            &["system:serviceaccounts", "system:serviceaccounts:a"],
        );
        assert!(decide(&s, &robot, "GET", "/api/v1/namespaces/a/secrets").is_ok());
        assert!(decide(&s, &robot, "GET", "/api/v1/namespaces/b/secrets").is_err());
        let dev = user("bob", &["dev"]);
        assert_eq!(
            decide(&s, &dev, "GET", "/api/v1/namespaces/a/pods").unwrap_err(),
            "RBAC: clusterrole.rbac.authorization.k8s.io \"gone\" not found"
        );
    }

    #[test]
    fn a_decision_among_a_thousand_role_bindings_is_fast() {
        let s = Snapshot::build(1, &view_and_bindings(1000));
        let u = user("user999", &["group998", "system:authenticated"]);
        let info = RequestInfo::new("GET", "/api/v1/namespaces/ns49/pods/p", &Map::new());
        let mut times = Vec::with_capacity(20_000);
        for _ in 0..20_000 {
            let started = std::time::Instant::now();
            let req = Request::new(&info);
            let d = s.authorize(&u, &req);
            times.push(started.elapsed());
            assert!(d.is_ok());
        }
        times.sort();
        let p50 = times[times.len() / 2];
        let p99 = times[times.len() * 99 / 100];
        eprintln!("RBAC decision with 1000 RoleBindings: p50 {p50:?} p99 {p99:?}");
        // Debug builds are far slower; the bound is for what users run.
        if !cfg!(debug_assertions) {
            assert!(p50 < std::time::Duration::from_micros(20), "p50 {p50:?}");
        }
    }

    #[test]
    fn keys_name_plural_and_namespace() {
        assert_eq!(
            parse_key(b"/registry/rbac.authorization.k8s.io/rolebindings/ns/x"),
            Some(("rolebindings".into(), "ns".into()))
        );
        assert_eq!(
            parse_key(b"/registry/rbac.authorization.k8s.io/clusterroles/view"),
            Some(("clusterroles".into(), String::new()))
        );
    }
}
