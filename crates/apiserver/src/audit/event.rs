//! One audit.k8s.io/v1 `Event`: what is known when the request arrives (who, what, from
//! where) and what its response adds (status, objects per level, annotations).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::policy::{Level, Stage};
use crate::serving::request_info::RequestInfo;

/// upstream's MicroTime.
fn micro(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

pub struct Event {
    pub level: Level,
    pub audit_id: String,
    pub request_uri: String,
    pub verb: String,
    pub user: Value,
    pub source_ips: Vec<String>,
    pub user_agent: Option<String>,
    pub object_ref: Option<Map<String, Value>>,
    pub received: DateTime<Utc>,
    pub request_object: Option<Value>,
}

impl Event {
    pub fn new(info: &RequestInfo, level: Level, user: Value, received: DateTime<Utc>) -> Event {
        let object_ref = info.resource_request.then(|| {
            let mut r = Map::new();
            let mut put = |k: &str, v: &str| {
                if !v.is_empty() {
                    r.insert(k.into(), json!(v));
                }
            };
            put("resource", &info.resource);
            put("namespace", &info.namespace);
            put("name", &info.name);
            put("apiGroup", &info.api_group);
            put("apiVersion", api_version(&info.path));
            put("subresource", &info.subresource);
            r
        });
        Event {
            level,
            audit_id: String::new(),
            request_uri: String::new(),
            verb: info.verb.clone(),
            user,
            source_ips: Vec::new(),
            user_agent: None,
            object_ref,
            received,
            request_object: None,
        }
    }

    /// A created object's name is known only from the object.
    pub fn name_from(&mut self, obj: &Value) {
        if let Some(r) = self.object_ref.as_mut() {
            if !r.contains_key("name") {
                if let Some(n) = obj.pointer("/metadata/name").and_then(Value::as_str) {
                    r.insert("name".into(), json!(n));
                }
            }
        }
    }

    /// The JSON line for `stage`; `status` and `response` only for later stages.
    pub fn line(
        &self,
        stage: Stage,
        status: Option<Value>,
        response: Option<&Value>,
        annotations: &BTreeMap<String, String>,
    ) -> Vec<u8> {
        let mut e = Map::new();
        e.insert("kind".into(), json!("Event"));
        e.insert("apiVersion".into(), json!("audit.k8s.io/v1"));
        e.insert("level".into(), json!(self.level.as_str()));
        e.insert("auditID".into(), json!(self.audit_id));
        e.insert("stage".into(), json!(stage.as_str()));
        e.insert("requestURI".into(), json!(self.request_uri));
        e.insert("verb".into(), json!(self.verb));
        e.insert("user".into(), self.user.clone());
        e.insert("sourceIPs".into(), json!(self.source_ips));
        if let Some(ua) = &self.user_agent {
            e.insert("userAgent".into(), json!(ua));
        }
        if let Some(r) = &self.object_ref {
            e.insert("objectRef".into(), Value::Object(r.clone()));
        }
        if let Some(s) = status {
            e.insert("responseStatus".into(), s);
        }
        if self.level >= Level::Request {
            if let Some(o) = &self.request_object {
                e.insert("requestObject".into(), o.clone());
            }
        }
        if self.level >= Level::RequestResponse {
            if let Some(o) = response {
                e.insert("responseObject".into(), o.clone());
            }
        }
        e.insert(
            "requestReceivedTimestamp".into(),
            json!(micro(self.received)),
        );
        e.insert("stageTimestamp".into(), json!(micro(Utc::now())));
        if !annotations.is_empty() {
            e.insert("annotations".into(), json!(annotations));
        }
        serde_json::to_vec(&Value::Object(e)).unwrap_or_default()
    }
}

/// `/api/v1/...` → `v1`; `/apis/apps/v1/...` → `v1`.
fn api_version(path: &str) -> &str {
    let mut parts = path.trim_start_matches('/').split('/');
    match parts.next() {
        Some("api") => parts.next().unwrap_or(""),
        Some("apis") => parts.nth(1).unwrap_or(""),
        _ => "",
    }
}

/// The response's `responseStatus`: the code, and for a failure the Status it carried.
pub fn response_status(code: u16, body: Option<&Value>) -> Value {
    let mut s = json!({"metadata": {}, "code": code});
    if code >= 400 {
        if let Some(b) = body.filter(|b| b.get("kind") == Some(&json!("Status"))) {
            for k in ["status", "message", "reason", "details"] {
                if let Some(v) = b.get(k) {
                    s[k] = v.clone();
                }
            }
        }
    }
    s
}

/// Drop `metadata.managedFields` from an object and a list's items (`omitManagedFields`).
pub fn strip_managed_fields(v: &mut Value) {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
        for i in items {
            strip_managed_fields(i);
        }
    }
}
