//! `pods/exec`, `pods/attach`, `pods/portforward` (GET and POST, connect verbs): validated as
//! upstream's pod REST does, then the upgrade is forwarded to the pod's node's kubelet and the
//! two upgraded connections are spliced; the streaming protocol is the kubelet's business.

use axum::http::{HeaderMap, Method};
use axum::response::Response;
use hyper::upgrade::OnUpgrade;

use crate::rest::node_proxy;
// The container is picked and worded as for pods/log (upstream shares one validation too).
use crate::rest::pod_log::{escape, node_of, pick_container as container};
use crate::status::ApiError;
use crate::types::Target;
use crate::AppState;

/// Whether the target is one of the pod subresources this module serves.
pub fn is_connect(t: &Target) -> bool {
    t.rt.group.is_empty()
        && t.rt.plural == "pods"
        && matches!(
            t.subresource.as_deref(),
            Some("exec" | "attach" | "portforward")
        )
}

/// The last value of `key` in a raw query (`container=a`), percent-decoded.
fn query_value(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == key).then(|| decode(v))
        })
        .next_back()
}

fn decode(v: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h << 4) | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET|POST .../pods/{name}/{exec|attach|portforward}`.
pub async fn connect(
    state: &AppState,
    t: &Target,
    method: &Method,
    headers: &HeaderMap,
    query: &str,
    client: Option<OnUpgrade>,
) -> Result<Response, ApiError> {
    let name = t.name.as_deref().unwrap_or("");
    let ns = t.namespace.as_deref().unwrap_or("");
    let sub = t.subresource.as_deref().unwrap_or("");
    let (pod, _) = crate::rest::read_existing(state, t, name).await?;
    let path = if sub == "portforward" {
        format!("/portforward/{}/{}", escape(ns), escape(name))
    } else {
        let asked = query_value(query, "container").unwrap_or_default();
        let c = container(&pod, name, &asked)?;
        format!("/{sub}/{}/{}/{}", escape(ns), escape(name), escape(&c))
    };
    let node = node_of(&pod, name)?;
    let Some(client) = client else {
        return Err(ApiError::bad_request(
            "Upgrade request required: this connection cannot be upgraded (HTTP/1.1 is needed)",
        ));
    };
    let path_and_query = if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    };
    tracing::debug!(
        namespace = ns,
        pod = name,
        subresource = sub,
        node,
        "proxying a streaming request"
    );
    node_proxy::upgrade(state, node, method, &path_and_query, headers, client).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_are_picked_and_worded_as_upstream() {
        let pod = json!({"spec": {
            "containers": [{"name": "a"}, {"name": "b"}],
            "initContainers": [{"name": "i"}]}});
        assert_eq!(container(&pod, "p", "i").expect("init"), "i");
        assert_eq!(
            container(&pod, "p", "x").expect_err("unknown").message,
            "container x is not valid for pod p"
        );
        assert_eq!(
            container(&pod, "p", "").expect_err("ambiguous").message,
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]"
        );
        let single = json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(container(&single, "p", "").expect("single"), "only");
    }

    #[test]
    fn query_values_are_decoded() {
        let q = "command=sh&command=-c&container=my%2Dc&stdout=true&x";
        assert_eq!(query_value(q, "container").as_deref(), Some("my-c"));
        assert_eq!(query_value(q, "missing"), None);
        assert_eq!(decode("a%2"), "a%2");
        assert_eq!(decode("%zz+%41"), "%zz A");
    }
}
