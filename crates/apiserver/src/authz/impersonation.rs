//! Impersonation (`Impersonate-User`, `-Group`, `-Uid`, `-Extra-*` headers), as upstream's
//! WithImpersonation filter: each asked-for identity needs the `impersonate` verb on it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::HeaderMap;

use crate::serving::forbidden::forbidden;
use crate::serving::request_info::{decode_path, RequestInfo};
use crate::serving::user_info::{User, UserInfo};
use crate::status::ApiError;
use crate::AppState;

const USER: &str = "impersonate-user";
const UID: &str = "impersonate-uid";
const GROUP: &str = "impersonate-group";
const EXTRA_PREFIX: &str = "impersonate-extra-";

const SA_PREFIX: &str = "system:serviceaccount:";

/// One identity asked for, as the authorizer sees the `impersonate` check.
#[derive(Debug)]
enum Asked {
    User(String),
    ServiceAccount { namespace: String, name: String },
    Group(String),
    Uid(String),
    Extra { key: String, value: String },
}

impl Asked {
    /// Upstream's `%v` of an impersonation request, for the "without a user" refusal.
    fn describe(&self) -> String {
        match self {
            Asked::User(n) => format!("{{User  {n}  /v1 }}"),
            Asked::ServiceAccount { namespace, name } => {
                format!("{{ServiceAccount {namespace} {name}  /v1 }}")
            }
            Asked::Group(n) => format!("{{Group  {n}  /v1 }}"),
            Asked::Uid(n) => format!("{{UID  {n}  authentication.k8s.io/v1 }}"),
            Asked::Extra { key, value } => {
                format!("{{UserExtra  {value} {key} authentication.k8s.io/v1 }}")
            }
        }
    }

    /// The `impersonate` check upstream makes for it.
    fn attributes(&self) -> RequestInfo {
        let mut info = RequestInfo {
            resource_request: true,
            verb: "impersonate".into(),
            ..RequestInfo::default()
        };
        match self {
            Asked::User(n) => {
                info.resource = "users".into();
                info.name = n.clone();
            }
            Asked::ServiceAccount { namespace, name } => {
                info.resource = "serviceaccounts".into();
                info.namespace = namespace.clone();
                info.name = name.clone();
            }
            Asked::Group(n) => {
                info.resource = "groups".into();
                info.name = n.clone();
            }
            Asked::Uid(n) => {
                info.api_group = "authentication.k8s.io".into();
                info.resource = "uids".into();
                info.name = n.clone();
            }
            Asked::Extra { key, value } => {
                info.api_group = "authentication.k8s.io".into();
                info.resource = "userextras".into();
                info.subresource = key.clone();
                info.name = value.clone();
            }
        }
        info
    }
}

fn header_values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

/// What the headers ask for; a 400 for groups, extras or a uid without a user.
fn asked(headers: &HeaderMap) -> Result<Vec<Asked>, ApiError> {
    let mut out = Vec::new();
    let mut has_user = false;
    if let Some(user) = header_values(headers, USER).first() {
        has_user = true;
        out.push(
            match user.strip_prefix(SA_PREFIX).and_then(|r| r.split_once(':')) {
                Some((ns, name)) => Asked::ServiceAccount {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                },
                None => Asked::User(user.to_string()),
            },
        );
    }
    for g in header_values(headers, GROUP) {
        out.push(Asked::Group(g.to_string()));
    }
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix(EXTRA_PREFIX) else {
            continue;
        };
        // Keys are percent-encoded in header names (upstream unescapes them).
        let key = decode_path(key).unwrap_or_else(|_| key.to_string());
        if let Ok(v) = value.to_str() {
            out.push(Asked::Extra {
                key: key.to_ascii_lowercase(),
                value: v.to_string(),
            });
        }
    }
    if let Some(uid) = header_values(headers, UID).first() {
        out.push(Asked::Uid(uid.to_string()));
    }
    if !has_user && !out.is_empty() {
        let described: Vec<String> = out.iter().map(Asked::describe).collect();
        return Err(ApiError::bad_request(format!(
            "requested [{}] without impersonating a user",
            described.join(" ")
        )));
    }
    Ok(out)
}

/// The user the request acts as when it asks to impersonate one (`None`: it does not);
/// a 403 naming the first identity the requester may not impersonate.
pub async fn impersonate(
    state: &AppState,
    requester: &User,
    headers: &HeaderMap,
) -> Result<Option<User>, ApiError> {
    let asked = asked(headers)?;
    if asked.is_empty() {
        return Ok(None);
    }
    let groups_given = asked.iter().any(|a| matches!(a, Asked::Group(_)));
    let mut out = UserInfo::default();
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in &asked {
        let attrs = a.attributes();
        let decision = state
            .authz
            .decide_current(state, &requester.0, &attrs)
            .await;
        if let crate::authz::Decision::Deny { reason } = decision {
            return Err(forbidden(&attrs, &requester.0.username, &reason));
        }
        match a {
            Asked::User(n) => out.username = n.clone(),
            Asked::ServiceAccount { namespace, name } => {
                out.username = format!("{SA_PREFIX}{namespace}:{name}");
                if !groups_given {
                    out.groups.push("system:serviceaccounts".into());
                    out.groups
                        .push(format!("system:serviceaccounts:{namespace}"));
                }
            }
            Asked::Group(g) => out.groups.push(g.clone()),
            Asked::Uid(u) => out.uid = u.clone(),
            Asked::Extra { key, value } => {
                extra.entry(key.clone()).or_default().push(value.clone())
            }
        }
    }
    out.extra = extra;
    let everyone = if out.username == "system:anonymous" {
        "system:unauthenticated"
    } else {
        "system:authenticated"
    };
    if !out.groups.iter().any(|g| g == everyone) {
        out.groups.push(everyone.to_string());
    }
    tracing::debug!(requester = %requester.0.username, user = %out.username, "impersonating");
    Ok(Some(User(Arc::new(out))))
}

/// Drop the impersonation headers once they have been acted on.
pub fn strip_headers(headers: &mut HeaderMap) {
    let extras: Vec<_> = headers
        .keys()
        .filter(|k| k.as_str().starts_with(EXTRA_PREFIX))
        .cloned()
        .collect();
    for k in extras {
        headers.remove(k);
    }
    for k in [USER, UID, GROUP] {
        headers.remove(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn headers_become_identities_and_a_user_is_required() {
        let mut h = HeaderMap::new();
        h.insert(
            USER,
            HeaderValue::from_static("system:serviceaccount:ns:robot"),
        );
        h.append(GROUP, HeaderValue::from_static("dev"));
        h.insert("impersonate-extra-scopes", HeaderValue::from_static("view"));
        let a = asked(&h).unwrap();
        assert!(
            matches!(&a[0], Asked::ServiceAccount { namespace, name } if namespace == "ns" && name == "robot")
        );
        assert!(matches!(&a[1], Asked::Group(g) if g == "dev"));
        let extra = a[2].attributes();
        assert_eq!(
            (
                extra.resource.as_str(),
                extra.subresource.as_str(),
                extra.name.as_str()
            ),
            ("userextras", "scopes", "view")
        );
        let mut only_group = HeaderMap::new();
        only_group.insert(GROUP, HeaderValue::from_static("dev"));
        let e = asked(&only_group).unwrap_err();
        assert_eq!(e.code.as_u16(), 400);
        assert!(
            e.message.ends_with("without impersonating a user"),
            "{}",
            e.message
        );
    }
}
