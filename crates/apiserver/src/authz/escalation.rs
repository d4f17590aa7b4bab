//! Escalation prevention on RBAC writes, as upstream's policy-based RBAC storage: a role may
//! only grant what its writer holds (or the writer has `escalate` on it), a binding only a
//! role whose permissions the writer holds (or `bind` on it). `system:masters` skips this.

use serde_json::Value;

use crate::authz::rbac::{self, go_quoted_list, PolicyRule};
use crate::authz::Decision;
use crate::serving::request_info::RequestInfo;
use crate::serving::user_info::UserInfo;
use crate::status::ApiError;
use crate::AppState;

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Whether the request writes a Role, ClusterRole or binding (what this module checks).
pub fn applies(info: &RequestInfo) -> bool {
    info.resource_request
        && info.api_group == RBAC_GROUP
        && info.subresource.is_empty()
        && matches!(info.verb.as_str(), "create" | "update" | "patch")
        && matches!(
            info.resource.as_str(),
            "roles" | "clusterroles" | "rolebindings" | "clusterrolebindings"
        )
}

/// The object the write would store, as far as this check needs it: the body for create
/// and update; for a patch, the stored object with the patch applied (server-side apply's
/// body holds the fields it sets, and `rules` is an atomic list).
async fn intended(
    state: &AppState,
    info: &RequestInfo,
    content_type: &str,
    body: &[u8],
) -> Result<Value, ApiError> {
    if info.verb != "patch" {
        return crate::rest::decode_body(content_type, body);
    }
    let rt = state
        .registry
        .find(RBAC_GROUP, "v1", &info.resource)
        .ok_or_else(|| ApiError::internal(format!("{} are not registered", info.resource)))?;
    let ns = (!info.namespace.is_empty()).then_some(info.namespace.as_str());
    let current = crate::storage::read(state, &rt, ns, &info.name)
        .await?
        .map(|(obj, _)| obj);
    if content_type.starts_with("application/apply-patch") {
        let applied = crate::patch::apply::decode(body)?;
        let mut out = current.unwrap_or(Value::Null);
        if !out.is_object() {
            out = serde_json::json!({});
        }
        for key in ["rules", "roleRef", "aggregationRule"] {
            if let Some(v) = applied.get(key) {
                out[key] = v.clone();
            }
        }
        return Ok(out);
    }
    // A patch of something absent is the handler's 404.
    let mut doc = current.unwrap_or_else(|| serde_json::json!({}));
    crate::patch::merge::apply_to(&mut doc, content_type, body, false)?;
    Ok(doc)
}

/// The refusal, worded as upstream's `ConfirmNoEscalation` inside `NewForbidden`.
fn refused(
    info: &RequestInfo,
    user: &UserInfo,
    missing: Vec<PolicyRule>,
    errors: &[String],
) -> ApiError {
    let mut described: Vec<String> = rbac::compact(missing)
        .iter()
        .map(PolicyRule::compact_string)
        .collect();
    described.sort();
    described.dedup();
    let mut msg = format!(
        "user {:?} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
        user.username,
        go_quoted_list(&user.groups),
        described.join("\n")
    );
    if !errors.is_empty() {
        msg = format!("{msg}; resolution errors: [{}]", errors.join(" "));
    }
    forbidden_named(info, &msg)
}

fn forbidden_named(info: &RequestInfo, why: &str) -> ApiError {
    let qualified = format!("{}.{RBAC_GROUP}", info.resource);
    let message = if info.name.is_empty() {
        format!("{qualified} is forbidden: {why}")
    } else {
        format!("{qualified} {:?} is forbidden: {why}", info.name)
    };
    ApiError::forbidden(message).with_details(serde_json::json!({
        "name": info.name, "group": RBAC_GROUP, "kind": info.resource,
    }))
}

/// Whether `user` has `verb` (escalate, bind) on the role `name` of `resource`.
async fn may(
    state: &AppState,
    user: &UserInfo,
    verb: &str,
    resource: &str,
    namespace: &str,
    name: &str,
) -> bool {
    let attrs = RequestInfo {
        resource_request: true,
        verb: verb.into(),
        api_group: RBAC_GROUP.into(),
        resource: resource.into(),
        namespace: namespace.into(),
        name: name.into(),
        ..RequestInfo::default()
    };
    matches!(
        state.authz.decide_current(state, user, &attrs).await,
        Decision::Allow { .. }
    )
}

/// Refuse a write that would grant `user` more than it holds.
pub async fn check(
    state: &AppState,
    user: &UserInfo,
    info: &RequestInfo,
    content_type: &str,
    body: &[u8],
) -> Result<(), ApiError> {
    if crate::authz::is_privileged(user) {
        return Ok(());
    }
    let obj = intended(state, info, content_type, body).await?;
    // Create carries the name in the body, not the path.
    let mut info = info.clone();
    if info.name.is_empty() {
        info.name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
    }
    let snapshot = state.authz.snapshot();
    match info.resource.as_str() {
        "roles" | "clusterroles" => {
            if may(
                state,
                user,
                "escalate",
                &info.resource,
                &info.namespace,
                &info.name,
            )
            .await
            {
                return Ok(());
            }
            let has_aggregation = obj
                .pointer("/aggregationRule/clusterRoleSelectors")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
            if has_aggregation {
                return Err(forbidden_named(
                    &info,
                    "must have cluster-admin privileges to use the aggregationRule",
                ));
            }
            let wanted = PolicyRule::list_from(&obj);
            let (owner, errors) = snapshot.rules_for(user, &info.namespace);
            let (ok, missing) = rbac::covers(&owner, &wanted);
            if ok {
                Ok(())
            } else {
                Err(refused(&info, user, missing, &errors))
            }
        }
        _ => {
            let kind = obj
                .pointer("/roleRef/kind")
                .and_then(Value::as_str)
                .unwrap_or("");
            let role = obj
                .pointer("/roleRef/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let role_resource = match kind {
                "Role" => "roles",
                "ClusterRole" => "clusterroles",
                // Validation words the refusal of anything else.
                _ => return Ok(()),
            };
            if may(state, user, "bind", role_resource, &info.namespace, role).await {
                return Ok(());
            }
            let rules = role_rules(state, kind, &info.namespace, role).await?;
            let Some(rules) = rules else {
                let what = if kind == "Role" {
                    "role"
                } else {
                    "clusterrole"
                };
                return Err(forbidden_named(
                    &info,
                    &format!("{what}.{RBAC_GROUP} {role:?} not found"),
                ));
            };
            let (owner, errors) = snapshot.rules_for(user, &info.namespace);
            let (ok, missing) = rbac::covers(&owner, &rules);
            if ok {
                Ok(())
            } else {
                Err(refused(&info, user, missing, &errors))
            }
        }
    }
}

/// The rules of the role a binding names, read from the store (None: no such role).
async fn role_rules(
    state: &AppState,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<Option<Vec<PolicyRule>>, ApiError> {
    let (plural, ns) = if kind == "Role" {
        ("roles", Some(namespace))
    } else {
        ("clusterroles", None)
    };
    let rt = state
        .registry
        .find(RBAC_GROUP, "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} are not registered")))?;
    Ok(crate::storage::read(state, &rt, ns, name)
        .await?
        .map(|(obj, _)| PolicyRule::list_from(&obj)))
}
