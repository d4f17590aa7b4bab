//! The LimitRanger admission plugin (upstream's plugin/pkg/admission/limitranger): a new
//! pod's containers get their namespace's LimitRange defaults (`default` limits,
//! `defaultRequest` requests), then Container and Pod `min`, `max` and
//! `maxLimitRequestRatio` are enforced with upstream's 403 messages; a PVC's storage
//! request (on create and on update, where it may grow) is held to PersistentVolumeClaim
//! `min` and `max`.

use std::collections::BTreeMap;

use bytes::Bytes;
use capstan_store::{KeyRange, RangeRequest};
use serde_json::{json, Value};

use crate::admission::{creates_pod, forbidden, Attributes, Operation, Plugin, Verdict};
use crate::status::ApiError;
use crate::storage::decode_for;
use crate::types::quantity::Quantity;
use crate::types::registry::ResourceType;

pub struct LimitRanger;

const ANNOTATION: &str = "kubernetes.io/limit-ranger";

impl Plugin for LimitRanger {
    fn name(&self) -> &'static str {
        "LimitRanger"
    }

    fn handles(&self, operation: Operation, rt: &ResourceType) -> bool {
        creates_pod(operation, rt) || (is_claim(rt) && operation != Operation::Delete)
    }

    fn mutate<'a>(
        &'a self,
        attrs: &'a Attributes<'a>,
        pod: &'a mut Value,
        _old: Option<&'a Value>,
    ) -> Verdict<'a> {
        Box::pin(async move {
            if is_claim(&attrs.target.rt) {
                return Ok(());
            }
            let ns = crate::object::namespace(pod).to_string();
            for item in items(attrs, &ns, "Container").await? {
                apply_defaults(pod, &item);
            }
            Ok(())
        })
    }

    fn validate<'a>(
        &'a self,
        attrs: &'a Attributes<'a>,
        pod: &'a Value,
        _old: Option<&'a Value>,
    ) -> Verdict<'a> {
        Box::pin(async move {
            let ns = crate::object::namespace(pod);
            let mut errs = Vec::new();
            if is_claim(&attrs.target.rt) {
                // Only the claim itself: its status is not the user's request.
                if attrs.target.subresource.is_none() {
                    let req = list_of(pod.get("spec").unwrap_or(&Value::Null), "requests");
                    for item in items(attrs, ns, "PersistentVolumeClaim").await? {
                        errs.extend(claim_constraints(&item, &req));
                    }
                }
                return refuse(attrs, errs);
            }
            for item in items(attrs, ns, "Container").await? {
                for list in ["containers", "initContainers"] {
                    for c in pod
                        .pointer(&format!("/spec/{list}"))
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        let req = list_of(c, "requests");
                        let lim = list_of(c, "limits");
                        errs.extend(constraints(&item, "Container", &req, &lim));
                    }
                }
            }
            for item in items(attrs, ns, "Pod").await? {
                let (req, lim) = pod_totals(pod);
                errs.extend(constraints(&item, "Pod", &req, &lim));
            }
            refuse(attrs, errs)
        })
    }
}

fn is_claim(rt: &ResourceType) -> bool {
    rt.group.is_empty() && rt.plural == "persistentvolumeclaims"
}

/// upstream's aggregate of the violations: one as it is, several in brackets.
fn refuse(attrs: &Attributes<'_>, errs: Vec<String>) -> Result<(), ApiError> {
    match errs.len() {
        0 => Ok(()),
        1 => Err(forbidden(attrs, &errs[0])),
        _ => Err(forbidden(attrs, &format!("[{}]", errs.join(", ")))),
    }
}

/// A LimitRange item's `key` (`min`, `max`, …): resource, the quantity as upstream prints
/// it, milli-units.
fn bounds(item: &Value, key: &str) -> Vec<(String, String, i128)> {
    item.get(key)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            let q = Quantity::parse(v.as_str()?)?;
            Some((k.clone(), q.canonical(), q.milli()))
        })
        .collect()
}

/// upstream's PersistentVolumeClaimValidateLimitFunc: `min` and `max` against the claim's
/// requests (a claim's limits are not the user's input here).
fn claim_constraints(item: &Value, req: &List) -> Vec<String> {
    const KIND: &str = "PersistentVolumeClaim";
    let mut errs = Vec::new();
    let bound = |key: &str| bounds(item, key);
    for (res, text, min) in bound("min") {
        match req.get(&res) {
            None => errs.push(format!(
                "minimum {res} usage per {KIND} is {text}.  No request is specified"
            )),
            Some((r, rn)) if *rn < min => errs.push(format!(
                "minimum {res} usage per {KIND} is {text}, but request is {r}"
            )),
            _ => {}
        }
    }
    for (res, text, max) in bound("max") {
        match req.get(&res) {
            None => errs.push(format!(
                "maximum {res} usage per {KIND} is {text}.  No request is specified"
            )),
            Some((r, rn)) if *rn > max => errs.push(format!(
                "maximum {res} usage per {KIND} is {text}, but request is {r}"
            )),
            _ => {}
        }
    }
    errs
}

/// The `limits` items of `type_` of every LimitRange in the namespace.
async fn items(attrs: &Attributes<'_>, ns: &str, type_: &str) -> Result<Vec<Value>, ApiError> {
    let Some(rt) = attrs.state.registry.find("", "v1", "limitranges") else {
        return Ok(Vec::new());
    };
    let prefix = format!("{}{ns}/", rt.key_prefix());
    let resp = attrs
        .state
        .store
        .range(RangeRequest::new(KeyRange::prefix(Bytes::from(prefix))))
        .await?;
    let mut out = Vec::new();
    for kv in &resp.kvs {
        let lr = decode_for(&rt, kv)?;
        for item in lr
            .pointer("/spec/limits")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if item.get("type").and_then(Value::as_str) == Some(type_) {
                out.push(item.clone());
            }
        }
    }
    Ok(out)
}

/// resource → (text as written, milli-units).
type List = BTreeMap<String, (String, i128)>;

fn list_of(c: &Value, which: &str) -> List {
    c.pointer(&format!("/resources/{which}"))
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            let text = v.as_str()?.to_string();
            let q = Quantity::parse(&text)?;
            Some((k.clone(), (q.canonical(), q.milli())))
        })
        .collect()
}

fn pod_totals(pod: &Value) -> (List, List) {
    let sum = |which: &str| {
        let mut total: BTreeMap<String, i128> = BTreeMap::new();
        for c in pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for (k, (_, n)) in list_of(c, which) {
                *total.entry(k).or_default() += n;
            }
        }
        total
            .into_iter()
            .map(|(k, n)| {
                let text = crate::admission::resource_quota::quantity_text(&k, n);
                (k, (text, n))
            })
            .collect::<List>()
    };
    (sum("requests"), sum("limits"))
}

/// upstream's mergeContainerResources: what the container leaves out, the range fills in;
/// the pod's `kubernetes.io/limit-ranger` annotation says what was set.
fn apply_defaults(pod: &mut Value, item: &Value) {
    let mut set: Vec<String> = Vec::new();
    for list in ["containers", "initContainers"] {
        let Some(cs) = pod
            .pointer_mut(&format!("/spec/{list}"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for c in cs {
            let name = c
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            for (from, which, word) in [
                ("defaultRequest", "requests", "request"),
                ("default", "limits", "limit"),
            ] {
                let Some(defaults) = item.get(from).and_then(Value::as_object) else {
                    continue;
                };
                for (res, q) in defaults {
                    if !c.get("resources").is_some_and(Value::is_object) {
                        c["resources"] = json!({});
                    }
                    if !c["resources"].get(which).is_some_and(Value::is_object) {
                        c["resources"][which] = json!({});
                    }
                    if c["resources"][which].get(res).is_none() {
                        c["resources"][which][res] = q.clone();
                        set.push(format!("{res} {word} for {} {name}", container_word(list)));
                    }
                }
            }
        }
    }
    if set.is_empty() {
        return;
    }
    let meta = crate::object::meta_mut(pod);
    if !meta.get("annotations").is_some_and(Value::is_object) {
        meta.insert("annotations".into(), json!({}));
    }
    meta["annotations"][ANNOTATION] = json!(format!("LimitRanger plugin set: {}", set.join("; ")));
}

fn container_word(list: &str) -> &'static str {
    if list == "initContainers" {
        "init container"
    } else {
        "container"
    }
}

/// upstream's minConstraint, maxConstraint and limitRequestRatioConstraint, in its words.
fn constraints(item: &Value, kind: &str, req: &List, lim: &List) -> Vec<String> {
    let mut errs = Vec::new();
    let bound = |key: &str| bounds(item, key);
    for (res, text, min) in bound("min") {
        match (req.get(&res), lim.get(&res)) {
            (None, _) => errs.push(format!(
                "minimum {res} usage per {kind} is {text}.  No request is specified"
            )),
            (Some((r, rn)), _) if *rn < min => errs.push(format!(
                "minimum {res} usage per {kind} is {text}, but request is {r}"
            )),
            (_, Some((l, ln))) if *ln < min => errs.push(format!(
                "minimum {res} usage per {kind} is {text}, but limit is {l}"
            )),
            _ => {}
        }
    }
    for (res, text, max) in bound("max") {
        match (req.get(&res), lim.get(&res)) {
            (_, None) => errs.push(format!(
                "maximum {res} usage per {kind} is {text}.  No limit is specified"
            )),
            (_, Some((l, ln))) if *ln > max => errs.push(format!(
                "maximum {res} usage per {kind} is {text}, but limit is {l}"
            )),
            (Some((r, rn)), _) if *rn > max => errs.push(format!(
                "maximum {res} usage per {kind} is {text}, but request is {r}"
            )),
            _ => {}
        }
    }
    for (res, text, ratio) in bound("maxLimitRequestRatio") {
        match (req.get(&res), lim.get(&res)) {
            (None, _) | (Some((_, 0)), _) => errs.push(format!(
                "{res} max limit to request ratio per {kind} is {text}, but no request is specified or request is 0"
            )),
            (_, None) | (_, Some((_, 0))) => errs.push(format!(
                "{res} max limit to request ratio per {kind} is {text}, but no limit is specified or limit is 0"
            )),
            (Some((_, rn)), Some((_, ln))) => {
                let observed = *ln as f64 / *rn as f64;
                if observed * 1000.0 > ratio as f64 {
                    errs.push(format!(
                        "{res} max limit to request ratio per {kind} is {text}, but provided ratio is {observed:.6}"
                    ));
                }
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_what_containers_leave_out() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a"}, {"name": "b", "resources": {"limits": {"cpu": "2"}}}]}});
        let item = json!({"type": "Container", "default": {"cpu": "500m"},
            "defaultRequest": {"cpu": "100m"}});
        apply_defaults(&mut pod, &item);
        assert_eq!(
            pod["spec"]["containers"][0]["resources"]["limits"]["cpu"],
            "500m"
        );
        assert_eq!(
            pod["spec"]["containers"][0]["resources"]["requests"]["cpu"],
            "100m"
        );
        assert_eq!(
            pod["spec"]["containers"][1]["resources"]["limits"]["cpu"],
            "2"
        );
        assert!(pod["metadata"]["annotations"][ANNOTATION]
            .as_str()
            .unwrap()
            .starts_with("LimitRanger plugin set: cpu request for container a"));
    }

    #[test]
    fn a_claims_request_is_held_to_min_and_max() {
        let item = json!({"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"storage": "2Gi"}});
        let claim = |size: &str| {
            list_of(
                &json!({"resources": {"requests": {"storage": size}}}),
                "requests",
            )
        };
        assert!(claim_constraints(&item, &claim("1536Mi")).is_empty());
        assert_eq!(
            claim_constraints(&item, &claim("500Mi")),
            ["minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi"]
        );
        assert_eq!(
            claim_constraints(&item, &List::new()),
            [
                "minimum storage usage per PersistentVolumeClaim is 1Gi.  No request is specified",
                "maximum storage usage per PersistentVolumeClaim is 2Gi.  No request is specified"
            ]
        );
    }

    #[test]
    fn bounds_are_worded_as_upstream() {
        let c = json!({"resources": {"requests": {"cpu": "50m"}, "limits": {"cpu": "2", "memory": "1Gi"}}});
        let item = json!({"type": "Container", "min": {"cpu": "100m"}, "max": {"cpu": "1"},
            "maxLimitRequestRatio": {"memory": "2"}});
        let errs = constraints(
            &item,
            "Container",
            &list_of(&c, "requests"),
            &list_of(&c, "limits"),
        );
        assert_eq!(
            errs,
            [
                "minimum cpu usage per Container is 100m, but request is 50m",
                "maximum cpu usage per Container is 1, but limit is 2",
                "memory max limit to request ratio per Container is 2, but no request is specified or request is 0",
            ]
        );
    }
}
