//! Single-object verbs: get, create, update (PUT, main and `/status`), delete; plus the
//! shared read/write helpers every verb (patch, lists, namespace lifecycle) goes through.

pub mod apply;
pub mod binding;
pub mod eviction;
pub mod list;
pub mod node_proxy;
pub mod node_tunnel;
pub mod patch;
pub mod pod_connect;
pub mod pod_log;
pub mod scale;
pub mod watch;

use std::collections::{BTreeSet, HashMap};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use capstan_store::{StoreError, StoreExt, Txn, TxnResponse};
use serde_json::{json, Value};

use crate::admission::{Attributes, Operation, Plugin};
use crate::discovery::table;
use crate::encoding::field_validation;
use crate::object::{self, meta_mut, set_meta};
use crate::status::{ApiError, Cause};
use crate::types::defaults;
use crate::types::registry::ResourceType;
use crate::types::validation;
use crate::AppState;

pub use crate::storage::{
    decode_for, decode_stored, encode_as_stored, encode_for_store, key, present, read,
};
pub use crate::types::Target;

pub fn is_dry_run(query: &HashMap<String, String>) -> bool {
    query.get("dryRun").is_some_and(|v| v == "All")
}

pub fn decode_body(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    let v: Value = match ct {
        "" | "application/json" | "*/*" => {
            crate::limits::parse_request_json(body, "the body of the request")?.map_err(|e| {
                ApiError::bad_request(format!(
                    "the body of the request could not be decoded as JSON: {e}"
                ))
            })?
        }
        "application/yaml" => {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_request("the body of the request is not UTF-8"))?;
            crate::limits::parse_request_yaml(text).map_err(|e| {
                ApiError::bad_request(format!(
                    "the body of the request could not be decoded as YAML: {e}"
                ))
            })?
        }
        crate::encoding::protobuf::CONTENT_TYPE => return crate::encoding::protobuf::decode(body),
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    check_shape(&v)?;
    Ok(v)
}

/// An object must be a JSON object whose `metadata`, if present, is one too: anything else
/// cannot decode into a Kubernetes object at all (upstream answers 400 too). Every write
/// path (bodies and patch results) goes through this.
pub fn check_shape(v: &Value) -> Result<(), ApiError> {
    crate::limits::check_value_depth(v, "the object")?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    }
    match v.get("metadata") {
        None | Some(Value::Null) | Some(Value::Object(_)) => Ok(()),
        Some(other) => Err(ApiError::bad_request(format!(
            "metadata must be an object (ObjectMeta), got {}",
            match other {
                Value::String(_) => "a string",
                Value::Array(_) => "an array",
                Value::Number(_) => "a number",
                _ => "a boolean",
            }
        ))),
    }
}

pub fn json_response(code: StatusCode, obj: &Value) -> Response {
    match serde_json::to_vec(obj) {
        Ok(body) => raw_json_response(code, body),
        Err(e) => ApiError::internal(format!("encoding the response: {e}")).into_response(),
    }
}

/// A response whose body is already JSON bytes.
pub fn raw_json_response(code: StatusCode, body: Vec<u8>) -> Response {
    (
        code,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// Render one object, as a one-row Table or as PartialObjectMetadata if the client asked.
pub fn object_response(rt: &ResourceType, code: StatusCode, obj: &Value, accept: &str) -> Response {
    if let Some(version) = table::table_version(accept) {
        let rv = object::meta_str(obj, "resourceVersion")
            .unwrap_or("")
            .to_string();
        return json_response(
            code,
            &table::table(rt, std::slice::from_ref(obj), &rv, None, version),
        );
    }
    if crate::encoding::negotiation::metadata_only(accept) {
        return json_response(code, &crate::encoding::negotiation::partial_metadata(obj));
    }
    json_response(code, obj)
}

/// The named object of the target with its mod revision, or a 404 naming it.
pub async fn read_existing(
    state: &AppState,
    t: &Target,
    name: &str,
) -> Result<(Value, i64), ApiError> {
    read(state, &t.rt, t.namespace.as_deref(), name)
        .await?
        .ok_or_else(|| ApiError::not_found(&t.rt.group, &t.rt.plural, name))
}

fn require_name(t: &Target) -> Result<&str, ApiError> {
    t.name
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("a resource name is required"))
}

pub async fn get(state: &AppState, t: &Target, accept: &str) -> Result<Response, ApiError> {
    let name = require_name(t)?;
    match read(state, &t.rt, t.namespace.as_deref(), name).await? {
        Some((obj, _)) => Ok(object_response(&t.rt, StatusCode::OK, &obj, accept)),
        None => Err(ApiError::not_found(&t.rt.group, &t.rt.plural, name)),
    }
}

/// Check `apiVersion`/`kind` against the endpoint and fill them in when missing.
fn check_type(rt: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
    let want_av = rt.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => obj["apiVersion"] = json!(want_av),
        Some(av) if av == want_av => {}
        Some(av) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )))
        }
    }
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => obj["kind"] = json!(rt.kind),
        Some(k) if k == rt.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                rt.kind
            )))
        }
    }
    Ok(())
}

/// Put the namespace from the URL into the object, refusing a different one in the body.
fn check_namespace(t: &Target, obj: &mut Value) -> Result<(), ApiError> {
    if !t.rt.namespaced {
        meta_mut(obj).remove("namespace");
        return Ok(());
    }
    let url_ns = t
        .namespace
        .clone()
        .ok_or_else(|| ApiError::bad_request("a namespace is required for this resource"))?;
    match object::meta_str(obj, "namespace") {
        None | Some("") => set_meta(obj, "namespace", json!(url_ns)),
        Some(ns) if ns == url_ns => {}
        Some(_) => return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
    }
    Ok(())
}

async fn invalid_or_ok(
    state: &AppState,
    rt: &ResourceType,
    obj: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let mut causes = validation::validate_metadata(rt, obj);
    causes.extend(validation::validate_type(rt, obj));
    causes.extend(validation::validate_rules(&state.cel, rt, obj, old).await?);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            &rt.group,
            &rt.kind,
            object::name(obj),
            causes,
        ))
    }
}

/// Decode a full object body and apply `fieldValidation` (duplicate and unknown fields).
fn decode_validated(
    state: &AppState,
    rt: &ResourceType,
    query: &HashMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> Result<(Value, Vec<String>), ApiError> {
    let mode = field_validation::mode(query)?;
    let mut obj = decode_body(content_type, body)?;
    let mut warnings = field_validation::duplicates(body, content_type, mode)?;
    warnings.extend(field_validation::check(state, rt, &mut obj, mode)?);
    Ok((obj, warnings))
}

pub async fn create(
    state: &AppState,
    t: &Target,
    query: &HashMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let (obj, warnings) = decode_validated(state, &t.rt, query, content_type, body)?;
    let (obj, _) = create_object(state, t, obj, is_dry_run(query)).await?;
    Ok(field_validation::with_warnings(
        json_response(StatusCode::CREATED, &obj),
        &warnings,
    ))
}

/// Admit and store a new object; returns it with its resourceVersion.
pub async fn create_object(
    state: &AppState,
    t: &Target,
    mut obj: Value,
    dry_run: bool,
) -> Result<(Value, i64), ApiError> {
    let rt = &t.rt;
    if rt.custom.as_ref().is_some_and(|c| c.terminating) {
        return Err(ApiError::method_not_allowed(format!(
            "create not allowed while custom resource definition is terminating ({})",
            rt.qualified()
        )));
    }
    check_type(rt, &mut obj)?;
    check_namespace(t, &mut obj)?;
    object::drop_empty_meta(&mut obj);
    if object::name(&obj).is_empty() {
        if let Some(prefix) = object::meta_str(&obj, "generateName").map(String::from) {
            if !prefix.is_empty() {
                set_meta(
                    &mut obj,
                    "name",
                    json!(format!("{prefix}{}", defaults::random_suffix())),
                );
            }
        }
    }
    let m = meta_mut(&mut obj);
    for f in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        m.remove(f);
    }
    m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    m.insert("creationTimestamp".into(), json!(object::now_rfc3339()));
    if rt.tracks_generation() {
        m.insert("generation".into(), json!(1));
    } else {
        m.remove("generation");
    }
    defaults::on_create(rt, &mut obj);
    let name = object::name(&obj).to_string();
    let attrs = Attributes {
        state,
        operation: Operation::Create,
        target: t,
        name: &name,
        dry_run,
    };
    state.admission.mutate(&attrs, &mut obj, None).await?;
    invalid_or_ok(state, rt, &obj, None).await?;
    if let Some(manager) = &t.manager {
        record_fields(state, t, None, &mut obj, manager);
    }
    state.admission.validate(&attrs, &obj, None).await?;
    let claimers = state.admission.claimers(rt);
    if dry_run {
        if read(state, rt, t.namespace.as_deref(), &name)
            .await?
            .is_some()
        {
            return Err(ApiError::already_exists(&rt.group, &rt.plural, &name));
        }
        for p in &claimers {
            p.allocate(state, &mut obj, &BTreeSet::new())?;
        }
        return Ok((obj, 0));
    }
    let k = key(rt, t.namespace.as_deref(), &name);
    if !claimers.is_empty() {
        return create_claiming(state, rt, &k, obj, &claimers).await;
    }
    match state
        .store
        .create(k.as_bytes(), encode_as_stored(rt, &obj)?)
        .await
    {
        Ok(rev) => {
            set_meta(&mut obj, "resourceVersion", json!(rev.to_string()));
            tracing::debug!(resource = rt.plural, name = %name, revision = rev, "created");
            Ok((obj, rev))
        }
        Err(StoreError::CompareFailed) => {
            Err(ApiError::already_exists(&rt.group, &rt.plural, &name))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn update(
    state: &AppState,
    t: &Target,
    query: &HashMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let name = require_name(t)?.to_string();
    let (mut obj, warnings) = decode_validated(state, &t.rt, query, content_type, body)?;
    check_type(&t.rt, &mut obj)?;
    match object::meta_str(&obj, "name") {
        Some(n) if n == name => {}
        None | Some("") => set_meta(&mut obj, "name", json!(name)),
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )))
        }
    }
    check_namespace(t, &mut obj)?;
    let (old, old_rev) = read_existing(state, t, &name).await?;
    let expected = match object::meta_str(&obj, "resourceVersion") {
        None | Some("") => old_rev,
        Some(rv) => rv.parse::<i64>().map_err(|_| {
            ApiError::invalid(
                &t.rt.group,
                &t.rt.kind,
                &name,
                vec![Cause::invalid(
                    "metadata.resourceVersion",
                    rv,
                    "must be an integer",
                )],
            )
        })?,
    };
    let out = update_object(state, t, old, old_rev, obj, expected, is_dry_run(query)).await?;
    Ok(field_validation::with_warnings(
        json_response(StatusCode::OK, &out),
        &warnings,
    ))
}

/// Replace `old` (at `old_rev`) by `new`, which must have been read at `expected`.
/// The main endpoint keeps the stored status; `/status` keeps everything but status.
pub async fn update_object(
    state: &AppState,
    t: &Target,
    old: Value,
    old_rev: i64,
    mut new: Value,
    expected: i64,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let rt = &t.rt;
    let name = object::name(&old).to_string();
    if expected != old_rev {
        return Err(ApiError::conflict(&rt.group, &rt.plural, &name, "the object has been modified; please apply your changes to the latest version and try again"));
    }
    // What this endpoint may change (the kind's PrepareForUpdate).
    rt.strategy
        .prepare_for_update(&mut new, &old, t.subresource.as_deref(), rt.has_status);
    // Server-owned metadata comes from the stored object.
    let old_meta = old.get("metadata");
    {
        let m = meta_mut(&mut new);
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match old_meta.and_then(|o| o.get(f)) {
                Some(v) => {
                    m.insert(f.into(), v.clone());
                }
                None => {
                    m.remove(f);
                }
            }
        }
        m.remove("resourceVersion");
        m.remove("selfLink");
    }
    object::drop_empty_meta(&mut new);
    defaults::on_update(rt, &mut new);
    let attrs = Attributes {
        state,
        operation: Operation::Update,
        target: t,
        name: &name,
        dry_run,
    };
    state.admission.mutate(&attrs, &mut new, Some(&old)).await?;
    if rt.tracks_generation() && spec_changed(&old, &new, rt.has_status) {
        let g = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            + 1;
        set_meta(&mut new, "generation", json!(g));
    }
    invalid_or_ok(state, rt, &new, Some(&old)).await?;
    let mut causes = Vec::new();
    defaults::immutable_checks(rt, &old, &new, &mut causes);
    if !causes.is_empty() {
        return Err(ApiError::invalid(&rt.group, &rt.kind, &name, causes));
    }
    state.admission.validate(&attrs, &new, Some(&old)).await?;
    if let Some(manager) = &t.manager {
        record_fields(state, t, Some(&old), &mut new, manager);
    }
    let k = key(rt, t.namespace.as_deref(), &name);
    if same_but_resource_version(&old, &new) && !state.store.needs_rewrite(k.as_bytes(), old_rev) {
        // Nothing changed: no write, the resourceVersion stays.
        return Ok(old);
    }
    if dry_run {
        set_meta(&mut new, "resourceVersion", json!(old_rev.to_string()));
        return Ok(new);
    }
    // An object marked for deletion goes once its last finalizer is removed.
    let finishing = new.pointer("/metadata/deletionTimestamp").is_some()
        && object::finalizers(&new).is_empty()
        && rt.strategy.goes_when_finalized(&new);
    let owner = format!("{}/{name}", t.namespace.as_deref().unwrap_or(""));
    let txn = if finishing {
        let txn = Txn::new()
            .when(Bytes::from(k.clone()), old_rev)
            .delete(Bytes::from(k));
        claim_ops(state, rt, txn, Some(&old), None, &owner)
    } else {
        let txn = Txn::new()
            .when(Bytes::from(k.clone()), old_rev)
            .put(Bytes::from(k), encode_as_stored(rt, &new)?);
        claim_ops(state, rt, txn, Some(&old), Some(&new), &owner)
    };
    match state.store.txn(txn).await? {
        TxnResponse::Succeeded { revision, .. } => {
            set_meta(&mut new, "resourceVersion", json!(revision.to_string()));
            Ok(new)
        }
        TxnResponse::Failed { .. } => Err(ApiError::conflict(
            &rt.group,
            &rt.plural,
            &name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )),
    }
}

/// Whether anything but metadata (and status, when it has its own endpoint) changed.
/// Note in `metadata.managedFields` what `manager` set with this write.
fn record_fields(
    state: &AppState,
    t: &Target,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
) {
    let openapi = state.openapi();
    let schema = openapi
        .schema_for(&t.rt.group, &t.rt.version, &t.rt.kind)
        .map(|(root, defs)| crate::patch::strategic_merge::Cursor::new(root, defs));
    crate::patch::managed_fields::record_update(
        old,
        new,
        manager,
        &t.rt.api_version(),
        t.subresource.as_deref().unwrap_or(""),
        schema,
    );
}

/// Add the keys admission plugins claim for the object to the transaction that writes
/// it: keys it now holds and did not are claimed (and must be free), keys it no longer
/// holds are released.
fn claim_ops(
    state: &AppState,
    rt: &ResourceType,
    mut txn: Txn,
    old: Option<&Value>,
    new: Option<&Value>,
    owner: &str,
) -> Txn {
    let claims = |v: Option<&Value>| v.map(|o| state.admission.claims(rt, o)).unwrap_or_default();
    let (before, after) = (claims(old), claims(new));
    for k in after.difference(&before) {
        txn = txn
            .when(Bytes::from(k.clone()), 0)
            .put(Bytes::from(k.clone()), Bytes::from(owner.to_string()));
    }
    for k in before.difference(&after) {
        txn = txn.delete(Bytes::from(k.clone()));
    }
    txn
}

/// Store a new object with the keys admission plugins allocate for it (a Service's
/// address and ports) in one transaction; keys the server picked are picked again if
/// another object got them first, keys the user asked for that are taken are a 422.
async fn create_claiming(
    state: &AppState,
    rt: &ResourceType,
    k: &str,
    obj: Value,
    claimers: &[&dyn Plugin],
) -> Result<(Value, i64), ApiError> {
    let name = object::name(&obj).to_string();
    let owner = format!("{}/{name}", object::namespace(&obj));
    // First try blind; after a clash, pick among what the store says is free.
    let mut taken = BTreeSet::new();
    for attempt in 0..32 {
        if attempt > 0 {
            taken.clear();
            for prefix in claimers.iter().flat_map(|p| p.claim_prefixes()) {
                let mut req = capstan_store::RangeRequest::new(capstan_store::KeyRange::prefix(
                    Bytes::from_static(prefix.as_bytes()),
                ));
                req.keys_only = true;
                let held = state.store.range(req).await?;
                taken.extend(
                    held.kvs
                        .iter()
                        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned()),
                );
            }
        }
        let mut candidate = obj.clone();
        let mut chosen = BTreeSet::new();
        for p in claimers {
            chosen.extend(p.allocate(state, &mut candidate, &taken)?);
        }
        let txn = Txn::new().when(Bytes::from(k.to_string()), 0).put(
            Bytes::from(k.to_string()),
            encode_as_stored(rt, &candidate)?,
        );
        let txn = claim_ops(state, rt, txn, None, Some(&candidate), &owner);
        let compared: Vec<Bytes> = txn.compares.iter().map(|c| c.key.clone()).collect();
        match state.store.txn(txn).await? {
            TxnResponse::Succeeded { revision, .. } => {
                set_meta(
                    &mut candidate,
                    "resourceVersion",
                    json!(revision.to_string()),
                );
                return Ok((candidate, revision));
            }
            TxnResponse::Failed { current, .. } => {
                if current.first().is_some_and(Option::is_some) {
                    return Err(ApiError::already_exists(&rt.group, &rt.plural, &name));
                }
                let users: Vec<Cause> = compared
                    .iter()
                    .zip(current.iter())
                    .skip(1)
                    .filter(|(_, cur)| cur.is_some())
                    .map(|(key, _)| String::from_utf8_lossy(key).into_owned())
                    .filter(|key| !chosen.contains(key))
                    .filter_map(|key| {
                        claimers
                            .iter()
                            .find(|p| p.claim_prefixes().iter().any(|pre| key.starts_with(pre)))
                            .map(|p| p.clash_cause(&candidate, &key))
                    })
                    .collect();
                if !users.is_empty() {
                    return Err(ApiError::invalid(&rt.group, &rt.kind, &name, users));
                }
                // Only our own picks clashed: pick again.
            }
        }
    }
    Err(ApiError::internal(
        "could not allocate the keys this object needs; the ranges may be full",
    ))
}

/// Whether `old` and `new` differ outside the keys `skip` names (compared in place: an
/// update compares whole objects several times, and copies to compare cost more than the
/// comparing).
fn differ_outside(old: &Value, new: &Value, skip: impl Fn(&str) -> bool) -> bool {
    match (old.as_object(), new.as_object()) {
        (Some(o), Some(n)) => {
            let kept =
                |m: &'_ serde_json::Map<String, Value>| m.keys().filter(|k| !skip(k)).count();
            kept(o) != kept(n)
                || o.iter()
                    .filter(|(k, _)| !skip(k))
                    .any(|(k, v)| n.get(k) != Some(v))
        }
        _ => old != new,
    }
}

fn spec_changed(old: &Value, new: &Value, status_separate: bool) -> bool {
    differ_outside(old, new, |k| {
        k == "metadata" || (status_separate && k == "status")
    })
}

/// `old` (as stored, with its resourceVersion) and `new` (without one) are the same object.
fn same_but_resource_version(old: &Value, new: &Value) -> bool {
    !differ_outside(old, new, |k| k == "metadata")
        && match (old.get("metadata"), new.get("metadata")) {
            (Some(o), Some(n)) => !differ_outside(o, n, |k| k == "resourceVersion"),
            (o, n) => o == n,
        }
}

/// DeleteOptions from the body (JSON) with query parameters as fallback.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub dry_run: bool,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    /// `gracePeriodSeconds` (pods only; None: the pod's own).
    pub grace_period_seconds: Option<i64>,
    /// `propagationPolicy`: what becomes of the object's dependents.
    pub propagation: Option<Propagation>,
    /// The older `orphanDependents` (cannot be set together with `propagationPolicy`).
    pub orphan_dependents: Option<bool>,
}

/// `propagationPolicy` of a delete (upstream's DeletionPropagation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Orphan,
    Background,
    Foreground,
}

impl Propagation {
    fn parse(p: &str) -> Result<Self, ApiError> {
        match p {
            "Orphan" => Ok(Propagation::Orphan),
            "Background" => Ok(Propagation::Background),
            "Foreground" => Ok(Propagation::Foreground),
            _ => Err(ApiError::bad_request(format!(
                "propagationPolicy {p:?} is not supported: use Orphan, Background or Foreground"
            ))),
        }
    }
}

/// The finalizer that makes the garbage collector remove the object's reference from every
/// dependent before the object goes (upstream's `metav1.FinalizerOrphanDependents`).
pub const FINALIZER_ORPHAN: &str = "orphan";
/// The finalizer that keeps the object until the garbage collector has deleted its blocking
/// dependents (upstream's `metav1.FinalizerDeleteDependents`).
pub const FINALIZER_FOREGROUND: &str = "foregroundDeletion";

/// Upstream's deletionFinalizersForGarbageCollection: the finalizers a delete with `opts`
/// leaves on `obj` for the garbage collector, when they differ from what it has. An explicit
/// `orphanDependents` or `propagationPolicy` decides; else a GC finalizer the object already
/// carries; else the kind's default (orphan for core/v1 ReplicationControllers and batch/v1
/// Jobs, for backward compatibility; background for everything else).
fn gc_finalizers(rt: &ResourceType, obj: &Value, opts: &DeleteOptions) -> Option<Vec<String>> {
    let current = object::finalizers(obj);
    let has = |f: &str| current.iter().any(|x| x == f);
    let orphan = match (opts.orphan_dependents, opts.propagation) {
        (Some(o), _) => o,
        (None, Some(p)) => p == Propagation::Orphan,
        (None, None) if has(FINALIZER_ORPHAN) => true,
        (None, None) if has(FINALIZER_FOREGROUND) => false,
        (None, None) => rt.strategy.orphans_dependents_by_default(),
    };
    let foreground = match (opts.orphan_dependents, opts.propagation) {
        (Some(_), _) => false,
        (None, Some(p)) => p == Propagation::Foreground,
        (None, None) => !has(FINALIZER_ORPHAN) && has(FINALIZER_FOREGROUND),
    };
    let mut new: Vec<String> = current
        .iter()
        .filter(|f| *f != FINALIZER_ORPHAN && *f != FINALIZER_FOREGROUND)
        .cloned()
        .collect();
    if orphan {
        new.push(FINALIZER_ORPHAN.into());
    }
    if foreground {
        new.push(FINALIZER_FOREGROUND.into());
    }
    let as_set = |v: &[String]| v.iter().cloned().collect::<std::collections::BTreeSet<_>>();
    (as_set(&new) != as_set(&current)).then_some(new)
}

pub fn delete_options(
    query: &HashMap<String, String>,
    body: &[u8],
) -> Result<DeleteOptions, ApiError> {
    let mut opts = DeleteOptions {
        dry_run: is_dry_run(query),
        ..DeleteOptions::default()
    };
    if let Some(p) = query.get("propagationPolicy") {
        opts.propagation = Some(Propagation::parse(p)?);
    }
    if let Some(o) = query.get("orphanDependents") {
        opts.orphan_dependents = Some(o.parse::<bool>().map_err(|_| {
            ApiError::bad_request(format!("orphanDependents: invalid boolean {o:?}"))
        })?);
    }
    if let Some(g) = query.get("gracePeriodSeconds") {
        opts.grace_period_seconds =
            Some(g.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                ApiError::bad_request("gracePeriodSeconds must be a non-negative integer")
            })?);
    }
    if body.iter().any(|b| !b.is_ascii_whitespace()) {
        // client-go sends DeleteOptions in protobuf (`k8s\0…`, never valid JSON).
        let v: Value = if body.starts_with(crate::encoding::protobuf::MAGIC) {
            crate::encoding::protobuf::decode(body)?
        } else {
            crate::limits::parse_request_json(body, "DeleteOptions")?
                .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
        };
        if let Some(d) = v.get("dryRun").and_then(Value::as_array) {
            opts.dry_run |= d.iter().any(|x| x == "All");
        }
        if let Some(p) = v.get("preconditions") {
            opts.uid = p.get("uid").and_then(Value::as_str).map(String::from);
            opts.resource_version = p
                .get("resourceVersion")
                .and_then(Value::as_str)
                .map(String::from);
        }
        if let Some(g) = v.get("gracePeriodSeconds") {
            if !g.is_null() && g.as_i64().is_none_or(|n| n < 0) {
                return Err(ApiError::bad_request(
                    "gracePeriodSeconds must be a non-negative integer",
                ));
            }
            opts.grace_period_seconds = g.as_i64().or(opts.grace_period_seconds);
        }
        if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
            opts.propagation = Some(Propagation::parse(p)?);
        }
        if let Some(o) = v.get("orphanDependents").and_then(Value::as_bool) {
            opts.orphan_dependents = Some(o);
        }
    }
    // Upstream's ValidateDeleteOptions.
    if let (Some(_), Some(p)) = (opts.orphan_dependents, opts.propagation) {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "DeleteOptions",
            "",
            vec![Cause::invalid(
                "propagationPolicy",
                &format!("{p:?}"),
                "orphanDependents and deletionPropagation cannot be both set",
            )],
        ));
    }
    Ok(opts)
}

pub async fn delete(
    state: &AppState,
    t: &Target,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let name = require_name(t)?.to_string();
    let opts = delete_options(query, body)?;
    let attrs = Attributes {
        state,
        operation: Operation::Delete,
        target: t,
        name: &name,
        dry_run: opts.dry_run,
    };
    state.admission.validate(&attrs, &Value::Null, None).await?;
    let (obj, code) = delete_object(state, t, &name, &opts).await?;
    Ok(json_response(code, &obj))
}

/// Delete one object: at once, or (finalizers, namespaces) by marking it for deletion.
pub async fn delete_object(
    state: &AppState,
    t: &Target,
    name: &str,
    opts: &DeleteOptions,
) -> Result<(Value, StatusCode), ApiError> {
    let rt = &t.rt;
    for _ in 0..8 {
        let Some((obj, rev)) = read(state, rt, t.namespace.as_deref(), name).await? else {
            return Err(ApiError::not_found(&rt.group, &rt.plural, name));
        };
        if let Some(uid) = &opts.uid {
            let have = object::meta_str(&obj, "uid").unwrap_or("");
            if have != uid {
                return Err(ApiError::conflict(&rt.group, &rt.plural, name, &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {have}")));
            }
        }
        if let Some(want) = &opts.resource_version {
            if *want != rev.to_string() {
                return Err(ApiError::conflict(&rt.group, &rt.plural, name, &format!("Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {rev}")));
            }
        }
        let k = key(rt, t.namespace.as_deref(), name);
        // The garbage collector's finalizers this delete asks for (Orphan, Foreground).
        let gc = gc_finalizers(rt, &obj, opts);
        use crate::types::strategy::GracefulDelete;
        match rt
            .strategy
            .graceful_delete(&obj, opts.grace_period_seconds, chrono::Utc::now())
        {
            GracefulDelete::Proceed => {}
            GracefulDelete::Pending => return Ok((obj, StatusCode::OK)),
            GracefulDelete::Mark(mut marked) => {
                if let Some(f) = &gc {
                    set_meta(&mut marked, "finalizers", json!(f));
                }
                if opts.dry_run {
                    return Ok((*marked, StatusCode::OK));
                }
                let txn = Txn::new()
                    .when(Bytes::from(k.clone()), rev)
                    .put(Bytes::from(k), encode_for_store(&marked)?);
                match state.store.txn(txn).await? {
                    TxnResponse::Succeeded { revision, .. } => {
                        set_meta(&mut marked, "resourceVersion", json!(revision.to_string()));
                        return Ok((*marked, StatusCode::OK));
                    }
                    TxnResponse::Failed { .. } => continue,
                }
            }
        }
        let mut marked = obj.clone();
        if let Some(f) = &gc {
            if f.is_empty() {
                object::meta_mut(&mut marked).remove("finalizers");
            } else {
                set_meta(&mut marked, "finalizers", json!(f));
            }
        }
        let needs_marking =
            !object::finalizers(&marked).is_empty() || rt.strategy.deletion_is_two_phase();
        if needs_marking {
            let already = obj.pointer("/metadata/deletionTimestamp").is_some();
            if already && gc.is_none() {
                return Ok((obj, StatusCode::OK));
            }
            if !already {
                set_meta(
                    &mut marked,
                    "deletionTimestamp",
                    json!(object::now_rfc3339()),
                );
                set_meta(&mut marked, "deletionGracePeriodSeconds", json!(0));
                rt.strategy.prepare_for_delete(&mut marked);
            }
            if opts.dry_run {
                return Ok((marked, StatusCode::OK));
            }
            let txn = Txn::new()
                .when(Bytes::from(k.clone()), rev)
                .put(Bytes::from(k), encode_for_store(&marked)?);
            match state.store.txn(txn).await? {
                TxnResponse::Succeeded { revision, .. } => {
                    set_meta(&mut marked, "resourceVersion", json!(revision.to_string()));
                    return Ok((marked, StatusCode::OK));
                }
                TxnResponse::Failed { .. } => continue,
            }
        }
        if opts.dry_run {
            return Ok((obj, StatusCode::OK));
        }
        let owner = format!("{}/{name}", object::namespace(&obj));
        let txn = Txn::new()
            .when(Bytes::from(k.clone()), rev)
            .delete(Bytes::from(k));
        match state
            .store
            .txn(claim_ops(state, rt, txn, Some(&obj), None, &owner))
            .await?
        {
            TxnResponse::Succeeded { .. } => return Ok((obj, StatusCode::OK)),
            TxnResponse::Failed { .. } => continue,
        }
    }
    Err(ApiError::conflict(
        &rt.group,
        &rt.plural,
        name,
        "the object kept changing while being deleted; try again",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_in_place_ignore_only_what_they_name() {
        let old = json!({"kind": "Pod", "metadata": {"name": "p", "resourceVersion": "7", "generation": 1},
            "spec": {"a": [1, 2]}, "status": {"phase": "Pending"}});
        let mut new = old.clone();
        new["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
        assert!(same_but_resource_version(&old, &new));
        assert!(!spec_changed(&old, &new, true));
        new["status"]["phase"] = json!("Running");
        assert!(!same_but_resource_version(&old, &new));
        assert!(!spec_changed(&old, &new, true));
        assert!(spec_changed(&old, &new, false));
        new["metadata"]["labels"] = json!({"x": "y"});
        assert!(!spec_changed(&old, &new, true));
        new["spec"]["a"] = json!([2, 1]);
        assert!(spec_changed(&old, &new, true));
        // A key added or removed outside is a change.
        let mut more = old.clone();
        more["data"] = json!(null);
        assert!(spec_changed(&old, &more, true));
        assert!(spec_changed(&more, &old, true));
        let mut less = old.clone();
        less["metadata"]["annotations"] = json!({});
        less["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
        assert!(!same_but_resource_version(&old, &less));
    }
}
