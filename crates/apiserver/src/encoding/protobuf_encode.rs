//! Protobuf responses: the reverse of `protobuf.rs` — a JSON object of a built-in kind
//! (objects, lists, `Status`) into the `k8s\0` + `runtime.Unknown` envelope, and watch
//! events into upstream's length-prefixed `metav1.WatchEvent` frames.

use base64::Engine;
use serde_json::{Map, Value};

use crate::encoding::k8s_fields::{normalize, table};
use crate::encoding::protobuf::{json_names, package, MAGIC, MAX_DEPTH};

/// The content type of a protobuf watch stream.
pub const WATCH_CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf;stream=watch";

/// Why an object could not be written as protobuf (the caller answers JSON instead).
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("{0} has no protobuf form")]
    NoMessage(String),
    #[error("{field}: {problem}")]
    Field { field: String, problem: String },
    #[error("nested too deeply")]
    TooDeep,
}

fn field_err(field: &str, problem: impl Into<String>) -> EncodeError {
    EncodeError::Field {
        field: field.to_string(),
        problem: problem.into(),
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, tag: u32, wire: u64) {
    put_varint(out, (u64::from(tag) << 3) | wire);
}

fn put_bytes(out: &mut Vec<u8>, tag: u32, b: &[u8]) {
    put_key(out, tag, 2);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// The message a `kind` of an `apiVersion` is written as: the group's own package, else
/// `meta.k8s.io/v1`'s (a `Status`, `WatchEvent`, `DeleteOptions` … is `v1` on the wire).
pub fn message_for(api_version: &str, kind: &str) -> Option<String> {
    if kind.is_empty() {
        return None;
    }
    let own = format!("{}.{kind}", package(api_version));
    if table().message(&own).is_some() {
        return Some(own);
    }
    let meta = format!("apimachinery.pkg.apis.meta.v1.{kind}");
    table().message(&meta).map(|_| meta)
}

fn scalar(
    out: &mut Vec<u8>,
    tag: u32,
    kind: &str,
    name: &str,
    v: &Value,
) -> Result<(), EncodeError> {
    let int = || {
        v.as_i64()
            .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .ok_or_else(|| field_err(name, format!("expected an integer, got {v}")))
    };
    match kind {
        "string" => {
            let s = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            put_bytes(out, tag, s.as_bytes());
        }
        "bytes" => {
            let s = v
                .as_str()
                .ok_or_else(|| field_err(name, "expected base64 text"))?;
            let b = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| field_err(name, e.to_string()))?;
            put_bytes(out, tag, &b);
        }
        "bool" => {
            let b = v
                .as_bool()
                .ok_or_else(|| field_err(name, format!("expected a boolean, got {v}")))?;
            put_key(out, tag, 0);
            put_varint(out, u64::from(b));
        }
        // Negative int32/int64 are ten-byte varints (sign-extended), as Go writes them.
        "int32" | "int64" | "uint32" | "uint64" => {
            put_key(out, tag, 0);
            put_varint(out, int()? as u64);
        }
        "double" => {
            let f = v
                .as_f64()
                .ok_or_else(|| field_err(name, format!("expected a number, got {v}")))?;
            put_key(out, tag, 1);
            out.extend_from_slice(&f.to_le_bytes());
        }
        "float" => {
            let f = v
                .as_f64()
                .ok_or_else(|| field_err(name, format!("expected a number, got {v}")))?;
            put_key(out, tag, 5);
            out.extend_from_slice(&(f as f32).to_le_bytes());
        }
        // A kind the table does not describe: left out, never guessed at.
        _ => {}
    }
    Ok(())
}

fn value(
    out: &mut Vec<u8>,
    tag: u32,
    kind: &str,
    target: &str,
    name: &str,
    v: &Value,
    depth: usize,
) -> Result<(), EncodeError> {
    if kind == "message" {
        if let Some(b) = message(target, name, v, depth + 1)? {
            put_bytes(out, tag, &b);
        }
        Ok(())
    } else if v.is_null() {
        Ok(())
    } else {
        scalar(out, tag, kind, name, v)
    }
}

/// apimachinery's messages that are one JSON scalar (a time, a quantity …).
fn special(msg: &str, name: &str, v: &Value) -> Result<Option<Vec<u8>>, EncodeError> {
    if !msg.starts_with("apimachinery.") {
        return Ok(None);
    }
    let short = msg.rsplit('.').next().unwrap_or(msg);
    let mut out = Vec::new();
    match short {
        "Time" | "MicroTime" => {
            let s = v
                .as_str()
                .ok_or_else(|| field_err(name, "expected an RFC 3339 time"))?;
            let t = chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|e| field_err(name, e.to_string()))?;
            put_key(&mut out, 1, 0);
            put_varint(&mut out, t.timestamp() as u64);
            put_key(&mut out, 2, 0);
            put_varint(&mut out, u64::from(t.timestamp_subsec_nanos()));
        }
        "Quantity" => {
            let s = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            put_bytes(&mut out, 1, s.as_bytes());
        }
        "IntOrString" => {
            let (ty, i, s) = match v {
                Value::String(s) => (1u64, 0i64, s.as_str()),
                other => (
                    0,
                    other
                        .as_i64()
                        .ok_or_else(|| field_err(name, "expected an integer or a string"))?,
                    "",
                ),
            };
            put_key(&mut out, 1, 0);
            put_varint(&mut out, ty);
            put_key(&mut out, 2, 0);
            put_varint(&mut out, i as u64);
            put_bytes(&mut out, 3, s.as_bytes());
        }
        // Embedded objects and managed fields travel as their JSON bytes, as upstream's.
        "RawExtension" | "FieldsV1" => {
            let raw = serde_json::to_vec(v).map_err(|e| field_err(name, e.to_string()))?;
            put_bytes(&mut out, 1, &raw);
        }
        _ => return Ok(None),
    }
    Ok(Some(out))
}

/// One message's bytes; `None` for a JSON null (an absent field).
fn message(msg: &str, name: &str, v: &Value, depth: usize) -> Result<Option<Vec<u8>>, EncodeError> {
    if depth > MAX_DEPTH {
        return Err(EncodeError::TooDeep);
    }
    if v.is_null() {
        return Ok(None);
    }
    if let Some(b) = special(msg, name, v)? {
        return Ok(Some(b));
    }
    let Value::Object(obj) = v else {
        return Err(field_err(name, format!("expected an object, got {v}")));
    };
    Ok(Some(fields(msg, name, obj, depth)?.0))
}

/// A message's fields in tag order (as Go's generated marshallers write them), and
/// whether any JSON key matched one.
fn fields(
    msg: &str,
    name: &str,
    obj: &Map<String, Value>,
    depth: usize,
) -> Result<(Vec<u8>, bool), EncodeError> {
    if depth > MAX_DEPTH {
        return Err(EncodeError::TooDeep);
    }
    // The table keeps each message's fields in tag order with their normalized names.
    let known = table()
        .message(msg)
        .ok_or_else(|| EncodeError::NoMessage(msg.to_string()))?;
    let names = json_names().get(&normalize(msg));
    let by_name: std::collections::HashMap<String, (&String, &Value)> =
        obj.iter().map(|(k, v)| (normalize(k), (k, v))).collect();
    let mut out = Vec::new();
    let mut matched = false;
    for f in known {
        let Some((key, v)) = by_name.get(f.norm.as_str()) else {
            // Go's embedded structs (a Volume's VolumeSource) are inline in JSON: their
            // fields are the parent's keys.
            let embedded = f.kind == "message"
                && f.card == b'o'
                && names.is_some_and(|n| !n.is_empty() && !n.contains_key(f.norm.as_str()));
            if embedded {
                let (b, any) = fields(f.target, name, obj, depth + 1)?;
                if any {
                    put_bytes(&mut out, f.tag, &b);
                    matched = true;
                }
            }
            continue;
        };
        matched = true;
        let path = format!("{name}.{key}");
        match f.card {
            b'm' => {
                let Some(map) = v.as_object() else {
                    if v.is_null() {
                        continue;
                    }
                    return Err(field_err(&path, "expected an object"));
                };
                let (kt, vt) = f
                    .kind
                    .strip_prefix("map:")
                    .and_then(|k| k.split_once(','))
                    .unwrap_or(("string", "string"));
                // Go's marshaller writes map entries in sorted key order.
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                for k in keys {
                    let mut entry = Vec::new();
                    scalar(&mut entry, 1, kt, &path, &Value::String(k.clone()))?;
                    let ev = &map[k];
                    if vt == "message" {
                        // A present entry keeps an empty value message.
                        let b = message(f.target, &path, ev, depth + 1)?.unwrap_or_default();
                        put_bytes(&mut entry, 2, &b);
                    } else if !ev.is_null() {
                        scalar(&mut entry, 2, vt, &path, ev)?;
                    }
                    put_bytes(&mut out, f.tag, &entry);
                }
            }
            b'r' => {
                let Some(items) = v.as_array() else {
                    if v.is_null() {
                        continue;
                    }
                    return Err(field_err(&path, "expected an array"));
                };
                for item in items {
                    if f.kind == "message" {
                        let b = message(f.target, &path, item, depth + 1)?.unwrap_or_default();
                        put_bytes(&mut out, f.tag, &b);
                    } else {
                        // proto2: repeated scalars are not packed.
                        value(&mut out, f.tag, f.kind, f.target, &path, item, depth)?;
                    }
                }
            }
            _ => value(&mut out, f.tag, f.kind, f.target, &path, v, depth)?,
        }
    }
    Ok((out, matched))
}

/// Write a built-in object (or list, or `Status`) as upstream's protobuf serializer does:
/// `k8s\0` and a `runtime.Unknown{typeMeta, raw, contentEncoding: "", contentType: ""}`.
pub fn encode(obj: &Value) -> Result<Vec<u8>, EncodeError> {
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let msg = message_for(api_version, kind)
        .ok_or_else(|| EncodeError::NoMessage(format!("{kind} ({api_version})")))?;
    let raw = message(&msg, kind, obj, 0)?.unwrap_or_default();
    let mut type_meta = Vec::new();
    put_bytes(&mut type_meta, 1, api_version.as_bytes());
    put_bytes(&mut type_meta, 2, kind.as_bytes());
    let mut out = Vec::with_capacity(raw.len() + type_meta.len() + 16);
    out.extend_from_slice(MAGIC);
    put_bytes(&mut out, 1, &type_meta);
    put_bytes(&mut out, 2, &raw);
    put_bytes(&mut out, 3, b"");
    put_bytes(&mut out, 4, b"");
    Ok(out)
}

/// One watch event as upstream frames it: a 4-byte big-endian length, then a bare
/// `metav1.WatchEvent{type, object: RawExtension{raw: <the object's envelope>}}`.
pub fn watch_frame(event_type: &str, obj: &Value) -> Result<Vec<u8>, EncodeError> {
    let inner = encode(obj)?;
    let mut raw_ext = Vec::with_capacity(inner.len() + 8);
    put_bytes(&mut raw_ext, 1, &inner);
    let mut event = Vec::with_capacity(raw_ext.len() + 16);
    put_bytes(&mut event, 1, event_type.as_bytes());
    put_bytes(&mut event, 2, &raw_ext);
    let len = u32::try_from(event.len()).map_err(|_| field_err("event", "larger than 4 GiB"))?;
    let mut out = Vec::with_capacity(event.len() + 4);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&event);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::protobuf::decode;
    use k8s_pb::api::core::v1 as core;
    use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
    use k8s_pb::apimachinery::pkg::runtime::Unknown;
    use prost::Message;
    use serde_json::json;

    /// The envelope, read back with prost's generated types (not our decoder).
    fn unwrap(b: &[u8]) -> Unknown {
        assert_eq!(&b[..4], b"k8s\0");
        Unknown::decode(&b[4..]).unwrap()
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "ns", "uid": "u-1",
                "labels": {"b": "2", "a": "1"},
                "creationTimestamp": "2026-01-02T03:04:05Z",
                "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {"f:containers": {}}}, "time": "2026-01-02T03:04:05Z"}]},
            "spec": {
                "containers": [{"name": "c", "image": "busybox", "args": ["sleep", "1"],
                    "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "livenessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 3},
                    "readinessProbe": {"tcpSocket": {"port": 8080}}}],
                "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cm", "defaultMode": 420}}],
                "terminationGracePeriodSeconds": 0,
                "hostIPC": true,
                "securityContext": {"runAsUser": -1}
            },
            "status": {"phase": "Running", "startTime": "2026-01-02T03:04:06Z",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": null}]}
        })
    }

    #[test]
    fn a_pod_reads_back_with_prost_types() {
        let b = encode(&pod()).unwrap();
        let u = unwrap(&b);
        let tm = u.type_meta.clone().unwrap();
        assert_eq!((tm.api_version(), tm.kind()), ("v1", "Pod"));
        assert_eq!((u.content_encoding(), u.content_type()), ("", ""));
        let p = core::Pod::decode(u.raw()).unwrap();
        let m = p.metadata.unwrap();
        assert_eq!((m.name(), m.namespace(), m.uid()), ("web", "ns", "u-1"));
        assert_eq!(m.labels["a"], "1");
        assert_eq!(m.creation_timestamp.unwrap().seconds(), 1_767_323_045);
        let mf = &m.managed_fields[0];
        assert_eq!(
            mf.fields_v1.as_ref().unwrap().raw(),
            br#"{"f:spec":{"f:containers":{}}}"#
        );
        let spec = p.spec.unwrap();
        let c = &spec.containers[0];
        assert_eq!(c.args, ["sleep", "1"]);
        assert_eq!(
            c.resources.as_ref().unwrap().limits["memory"].string(),
            "64Mi"
        );
        let probe = c.liveness_probe.as_ref().unwrap();
        let get = probe.handler.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(get.port.as_ref().unwrap().str_val(), "http");
        let tcp = c
            .readiness_probe
            .as_ref()
            .unwrap()
            .handler
            .as_ref()
            .unwrap();
        assert_eq!(
            tcp.tcp_socket
                .as_ref()
                .unwrap()
                .port
                .as_ref()
                .unwrap()
                .int_val(),
            8080
        );
        let vs = spec.volumes[0].volume_source.as_ref().unwrap();
        assert!(vs.empty_dir.is_some(), "an empty embedded message is kept");
        let cm = spec.volumes[1]
            .volume_source
            .as_ref()
            .unwrap()
            .config_map
            .as_ref()
            .unwrap();
        assert_eq!(cm.default_mode(), 420);
        assert_eq!(spec.termination_grace_period_seconds, Some(0));
        assert_eq!(spec.security_context.unwrap().run_as_user, Some(-1));
        assert_eq!(spec.host_ipc, Some(true));
        assert_eq!(p.status.unwrap().conditions[0].last_transition_time, None);
    }

    #[test]
    fn decode_of_encode_is_the_same_json() {
        for obj in [
            pod(),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "d"}, "data": {"x": "1", "a": ""}, "binaryData": {"b": "AAE="}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                "spec": {"replicas": 0, "selector": {"matchExpressions": [{"key": "a", "operator": "In", "values": ["x", "y"]}]},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
                "template": {"metadata": {"labels": {"a": "x"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
        ] {
            let mut back = decode(&encode(&obj).unwrap()).unwrap();
            let mut want = obj.clone();
            // Fields the decoder drops as Go's omitempty does.
            if let Some(c) = want
                .pointer_mut("/status/conditions/0")
                .and_then(Value::as_object_mut)
            {
                c.remove("lastTransitionTime");
            }
            if let Some(o) = back.as_object_mut() {
                o.retain(|_, v| !v.is_null());
            }
            if obj["kind"] == "Pod" {
                // Both volumes come back, the `emptyDir: {}` one included (an empty message
                // on the wire is a set pointer in Go).
                assert_eq!(back["spec"]["volumes"], want["spec"]["volumes"]);
                assert_eq!(back["spec"]["terminationGracePeriodSeconds"], 0);
                assert_eq!(back["metadata"], want["metadata"]);
                assert_eq!(back["spec"]["containers"], want["spec"]["containers"]);
            } else {
                assert_eq!(back, want);
            }
        }
    }

    #[test]
    fn lists_and_status_use_their_messages() {
        let list = json!({"apiVersion": "v1", "kind": "ConfigMapList", "metadata": {"resourceVersion": "42", "continue": "t"},
            "items": [{"metadata": {"name": "a"}}, {"metadata": {"name": "b"}, "data": {"k": "v"}}]});
        let u = unwrap(&encode(&list).unwrap());
        let l = core::ConfigMapList::decode(u.raw()).unwrap();
        assert_eq!(l.metadata.unwrap().resource_version(), "42");
        assert_eq!(l.items.len(), 2);
        assert_eq!(l.items[1].data["k"], "v");
        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "configmaps \"x\" not found", "reason": "NotFound",
            "details": {"name": "x", "kind": "configmaps"}, "code": 404});
        let u = unwrap(&encode(&status).unwrap());
        assert_eq!(u.type_meta.clone().unwrap().kind(), "Status");
        let s = meta::Status::decode(u.raw()).unwrap();
        assert_eq!((s.code(), s.reason()), (404, "NotFound"));
        assert_eq!(s.details.unwrap().name(), "x");
    }

    #[test]
    fn watch_frames_are_length_prefixed_events_around_envelopes() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "w"}});
        let f = watch_frame("ADDED", &cm).unwrap();
        let len = u32::from_be_bytes(f[..4].try_into().unwrap()) as usize;
        assert_eq!(len, f.len() - 4);
        let ev = meta::WatchEvent::decode(&f[4..]).unwrap();
        assert_eq!(ev.r#type(), "ADDED");
        let inner = unwrap(ev.object.unwrap().raw());
        assert_eq!(
            core::ConfigMap::decode(inner.raw())
                .unwrap()
                .metadata
                .unwrap()
                .name(),
            "w"
        );
    }

    #[test]
    fn bad_shapes_and_custom_kinds_are_errors_not_panics() {
        assert!(matches!(
            encode(&json!({"apiVersion": "example.com/v1", "kind": "Widget"})),
            Err(EncodeError::NoMessage(_))
        ));
        assert!(
            encode(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": "x"})).is_err()
        );
        assert!(encode(
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": 1}, "zzz": [1]})
        )
        .is_ok());
        assert!(encode(&json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"ports": [{"containerPort": "x"}]}]}})).is_err());
        let mut deep = json!({});
        for _ in 0..200 {
            deep = json!({"spec": {"containers": [{"name": "c"}]}, "x": deep});
        }
        let _ = encode(
            &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"labels": {"a": "b"}}, "spec": deep}),
        );
    }
}
