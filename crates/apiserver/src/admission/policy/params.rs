//! A binding's params: the object(s) its `paramRef` names, of the policy's `paramKind`, read
//! when a request needs them (by name, or every object a selector picks).

use bytes::Bytes;
use capstan_store::{KeyRange, RangeRequest};
use serde_json::Value;

use super::compiled::{Binding, Policy};
use crate::status::ApiError;
use crate::AppState;

pub enum Params {
    /// The policy takes none: evaluate once with `params` null.
    NotUsed,
    Found(Vec<Value>),
    /// None matched; deny per `parameterNotFoundAction: Deny`, else allow.
    Missing {
        deny: bool,
    },
    /// A configuration the request cannot be judged with (failurePolicy decides).
    Misconfigured(String),
}

pub async fn resolve(
    state: &AppState,
    policy: &Policy,
    binding: &Binding,
    request_namespace: Option<&str>,
) -> Result<Params, ApiError> {
    let Some((api_version, kind)) = &policy.param_kind else {
        return Ok(Params::NotUsed);
    };
    let Some(pref) = &binding.param_ref else {
        return Ok(Params::Misconfigured(format!(
            "policy {:?} has a paramKind but binding {:?} no paramRef",
            policy.name, binding.name
        )));
    };
    let types = state.registry.all();
    let Some(rt) = types
        .iter()
        .find(|t| &t.api_version() == api_version && &t.kind == kind)
    else {
        return Ok(Params::Misconfigured(format!(
            "failed to find resource referenced by paramKind: '{api_version}, Kind={kind}'"
        )));
    };
    let namespace = if rt.namespaced {
        match (pref.namespace.as_str(), request_namespace) {
            ("", Some(ns)) if !ns.is_empty() => Some(ns),
            ("", _) => return Ok(Params::Misconfigured(
                "cannot use a namespaced paramRef without a namespace for a cluster-scoped request"
                    .into(),
            )),
            (ns, _) => Some(ns),
        }
    } else {
        None
    };
    let found = if !pref.name.is_empty() {
        crate::storage::read(state, rt, namespace, &pref.name)
            .await?
            .map(|(obj, _)| vec![obj])
            .unwrap_or_default()
    } else {
        let prefix = match namespace {
            Some(ns) => format!("{}{ns}/", rt.key_prefix()),
            None => rt.key_prefix(),
        };
        let empty = serde_json::Map::new();
        let selector = pref.selector.clone().unwrap_or(Value::Null);
        state
            .store
            .range(RangeRequest::new(KeyRange::prefix(Bytes::from(prefix))))
            .await?
            .kvs
            .iter()
            .filter_map(|kv| crate::storage::decode_for(rt, kv).ok())
            .filter(|obj| {
                crate::types::selector::label_selector_matches(
                    &selector,
                    crate::object::labels(obj).unwrap_or(&empty),
                )
            })
            .collect()
    };
    Ok(if found.is_empty() {
        Params::Missing {
            deny: pref.deny_if_missing,
        }
    } else {
        Params::Found(found)
    })
}
