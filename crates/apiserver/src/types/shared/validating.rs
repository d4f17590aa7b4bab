//! Validation helpers the built-in kinds share (pod specs, selectors, resources, ports,
//! quantities): every problem a cause with upstream's field path, reason and message.

pub(crate) use std::collections::HashSet;

pub(crate) use capstan_schema::is_cidr;
use serde_json::{json, Value};

pub(crate) use crate::status::Cause;
pub(crate) use crate::types::validation::{is_dns1123_label, is_dns1123_subdomain};

pub const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
pub(crate) const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

/// Collects the causes of one object.
#[derive(Default)]
pub struct Causes(pub Vec<Cause>);

pub(crate) fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

impl Causes {
    pub(crate) fn required(&mut self, f: &str, detail: &str) {
        self.0.push(Cause::required(f, detail));
    }
    pub(crate) fn invalid(&mut self, f: &str, v: &Value, detail: &str) {
        self.0.push(Cause {
            reason: "FieldValueInvalid",
            field: f.into(),
            message: format!("Invalid value: {}: {detail}", show(v)),
        });
    }
    pub(crate) fn unsupported(&mut self, f: &str, v: &Value, allowed: &[&str]) {
        let list: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
        self.0.push(Cause {
            reason: "FieldValueNotSupported",
            field: f.into(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                show(v),
                list.join(", ")
            ),
        });
    }
    pub(crate) fn forbidden(&mut self, f: &str, detail: &str) {
        self.0.push(Cause::forbidden(f, detail));
    }
    pub(crate) fn duplicate(&mut self, f: &str, v: &Value) {
        self.0.push(Cause {
            reason: "FieldValueDuplicate",
            field: f.into(),
            message: format!("Duplicate value: {}", show(v)),
        });
    }
    pub(crate) fn not_found(&mut self, f: &str, v: &Value) {
        self.0.push(Cause {
            reason: "FieldValueNotFound",
            field: f.into(),
            message: format!("Not found: {}", show(v)),
        });
    }
    /// A string field that must be one of `allowed` (absent is fine unless `required`).
    pub(crate) fn one_of(
        &mut self,
        obj: &Value,
        ptr: &str,
        field: &str,
        allowed: &[&str],
        required: bool,
    ) {
        match obj.pointer(ptr) {
            None | Some(Value::Null) => {
                if required {
                    self.required(field, "");
                }
            }
            Some(v) if v.as_str().is_some_and(|s| allowed.contains(&s)) => {}
            Some(v) => self.unsupported(field, v, allowed),
        }
    }
    pub(crate) fn non_negative(&mut self, obj: &Value, ptr: &str, field: &str) {
        if let Some(n) = obj.pointer(ptr).and_then(Value::as_i64) {
            if n < 0 {
                self.invalid(field, &json!(n), "must be greater than or equal to 0");
            }
        }
    }
}

pub(crate) fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}
pub(crate) fn arr<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// A Kubernetes quantity (`500m`, `1Gi`, `2e3`) as a number, if well formed.
pub fn quantity(q: &str) -> Option<f64> {
    crate::types::quantity::Quantity::parse(q.trim()).map(|q| q.as_f64())
}

pub(crate) const QUANTITY_MSG: &str =
    "must match the regex ^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$";

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 15 characters, with a letter: a port name.
pub(crate) fn is_port_name(n: &str) -> bool {
    n.len() <= 15
        && is_dns1123_label(n)
        && n.bytes().any(|b| b.is_ascii_lowercase())
        && !n.contains("--")
}

pub(crate) fn is_env_name(n: &str) -> bool {
    !n.is_empty()
        && !n.as_bytes()[0].is_ascii_digit()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// validateContainerResourceName: a qualified name; unprefixed, one of the standard
/// container resources.
pub(crate) fn container_resource_name(c: &mut Causes, name: &str, field: &str) {
    c.0.extend(crate::types::validation::qualified_name_errors(field, name));
    let standard =
        ["cpu", "memory", "ephemeral-storage"].contains(&name) || name.starts_with("hugepages-");
    if !name.contains('/') && !standard {
        c.invalid(
            field,
            &json!(name),
            "must be a standard resource for containers",
        );
    }
}

pub(crate) fn resources(c: &mut Causes, res: &Value, p: &str) {
    for kind in ["limits", "requests"] {
        if let Some(m) = res.get(kind).and_then(Value::as_object) {
            for (k, v) in m {
                container_resource_name(c, k, &format!("{p}.{kind}[{k}]"));
                let text = v
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| v.to_string());
                if quantity(&text).is_none() {
                    c.invalid(&format!("{p}.{kind}[{k}]"), v, QUANTITY_MSG);
                } else if quantity(&text).is_some_and(|q| q < 0.0) {
                    c.invalid(
                        &format!("{p}.{kind}[{k}]"),
                        v,
                        "must be greater than or equal to 0",
                    );
                }
            }
        }
    }
    if let (Some(req), Some(lim)) = (
        res.get("requests").and_then(Value::as_object),
        res.get("limits").and_then(Value::as_object),
    ) {
        for (k, v) in req {
            let (Some(r), Some(l)) = (
                v.as_str().and_then(quantity),
                lim.get(k).and_then(Value::as_str).and_then(quantity),
            ) else {
                continue;
            };
            if r > l {
                let limit = lim.get(k).and_then(Value::as_str).unwrap_or("");
                c.invalid(
                    &format!("{p}.requests"),
                    v,
                    &format!("must be less than or equal to {k} limit of {limit}"),
                );
            }
        }
    }
}

/// Volume sources in the order upstream's validateVolumeSource checks them (defaulting
/// gives a volume with none of them an emptyDir).
pub const VOLUME_SOURCES: [&str; 30] = [
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "configMap",
    "projected",
    "csi",
    "ephemeral",
    "image",
];

/// ValidatePodSpec: containers, volumes, mounts, ports, resources, policies.
pub fn pod_spec(c: &mut Causes, spec: &Value, p: &str) {
    pod_spec_with(c, spec, p, &[]);
}

/// `pod_spec`, where mounts may also name `claims` (a StatefulSet's volumeClaimTemplates).
pub(crate) fn pod_spec_with(c: &mut Causes, spec: &Value, p: &str, claims: &[&str]) {
    let containers = arr(spec, "/containers");
    if containers.is_empty() {
        c.required(&format!("{p}.containers"), "");
    }
    let mut volumes: HashSet<String> = claims.iter().map(|c| c.to_string()).collect();
    for (i, v) in arr(spec, "/volumes").iter().enumerate() {
        let name = s(v, "/name");
        let vp = format!("{p}.volumes[{i}].name");
        if name.is_empty() {
            c.required(&vp, "");
        } else if !is_dns1123_label(name) {
            c.invalid(&vp, &json!(name), DNS1123_LABEL_MSG);
        } else if !volumes.insert(name.to_string()) {
            c.duplicate(&vp, &json!(name));
        }
        // One source per volume; each after the first (in upstream's order) is refused.
        VOLUME_SOURCES
            .iter()
            .filter(|src| v.get(**src).is_some_and(|x| !x.is_null()))
            .skip(1)
            .for_each(|src| {
                c.forbidden(
                    &format!("{p}.volumes[{i}].{src}"),
                    "may not specify more than 1 volume type",
                )
            });
    }
    let host_network = spec.get("hostNetwork") == Some(&Value::Bool(true));
    let mut names = HashSet::new();
    for key in ["initContainers", "containers"] {
        for (i, ct) in arr(spec, &format!("/{key}")).iter().enumerate() {
            let cp = format!("{p}.{key}[{i}]");
            let name = s(ct, "/name");
            if name.is_empty() {
                c.required(&format!("{cp}.name"), "");
            } else if !is_dns1123_label(name) {
                c.invalid(&format!("{cp}.name"), &json!(name), DNS1123_LABEL_MSG);
            } else if !names.insert(name.to_string()) {
                c.duplicate(&format!("{cp}.name"), &json!(name));
            }
            if s(ct, "/image").is_empty() {
                c.required(&format!("{cp}.image"), "");
            }
            // Only init containers may restart on their own (as sidecars), and only Always.
            if let Some(rp) = ct.get("restartPolicy").filter(|v| !v.is_null()) {
                if key == "initContainers" {
                    if rp.as_str() != Some("Always") {
                        c.unsupported(&format!("{cp}.restartPolicy"), rp, &["Always"]);
                    }
                } else {
                    c.forbidden(
                        &format!("{cp}.restartPolicy"),
                        "may not be set for non-init containers",
                    );
                }
            }
            c.one_of(
                ct,
                "/imagePullPolicy",
                &format!("{cp}.imagePullPolicy"),
                &["Always", "IfNotPresent", "Never"],
                false,
            );
            let mut port_names = HashSet::new();
            for (j, port) in arr(ct, "/ports").iter().enumerate() {
                let pp = format!("{cp}.ports[{j}]");
                match port.get("containerPort").and_then(Value::as_i64) {
                    None => c.required(&format!("{pp}.containerPort"), ""),
                    Some(n) if !(1..=65535).contains(&n) => c.invalid(
                        &format!("{pp}.containerPort"),
                        &json!(n),
                        "must be between 1 and 65535, inclusive",
                    ),
                    _ => {}
                }
                if let Some(hp) = port.get("hostPort").and_then(Value::as_i64) {
                    if !(0..=65535).contains(&hp) {
                        c.invalid(
                            &format!("{pp}.hostPort"),
                            &json!(hp),
                            "must be between 1 and 65535, inclusive",
                        );
                    } else if host_network
                        && hp
                            != port
                                .get("containerPort")
                                .and_then(Value::as_i64)
                                .unwrap_or(0)
                    {
                        c.invalid(
                            &format!("{pp}.hostPort"),
                            &json!(hp),
                            "must match `containerPort` when `hostNetwork` is true",
                        );
                    }
                }
                c.one_of(
                    port,
                    "/protocol",
                    &format!("{pp}.protocol"),
                    &["SCTP", "TCP", "UDP"],
                    false,
                );
                let pn = s(port, "/name");
                if !pn.is_empty() {
                    if !is_port_name(pn) {
                        c.invalid(&format!("{pp}.name"), &json!(pn), "must be no more than 15 characters, contain only lowercase alphanumeric characters or '-', and contain at least one letter (a-z)");
                    } else if !port_names.insert(pn.to_string()) {
                        c.duplicate(&format!("{pp}.name"), &json!(pn));
                    }
                }
            }
            for (j, e) in arr(ct, "/env").iter().enumerate() {
                let n = s(e, "/name");
                if n.is_empty() {
                    c.required(&format!("{cp}.env[{j}].name"), "");
                } else if !is_env_name(n) {
                    c.invalid(&format!("{cp}.env[{j}].name"), &json!(n), "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')");
                }
                if let Some(from) = e.get("valueFrom").and_then(Value::as_object) {
                    let vp = format!("{cp}.env[{j}].valueFrom");
                    if !s(e, "/value").is_empty() {
                        c.invalid(
                            &vp,
                            &json!(""),
                            "may not be specified when `value` is not empty",
                        );
                    }
                    let sources = from.values().filter(|v| !v.is_null()).count();
                    if sources == 0 {
                        c.invalid(&vp, &json!(""), "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`");
                    } else if sources > 1 {
                        c.invalid(
                            &vp,
                            &json!(""),
                            "may not have more than one field specified at a time",
                        );
                    }
                }
            }
            let mut paths = HashSet::new();
            for (j, m) in arr(ct, "/volumeMounts").iter().enumerate() {
                let mp = format!("{cp}.volumeMounts[{j}]");
                let mn = s(m, "/name");
                if mn.is_empty() {
                    c.required(&format!("{mp}.name"), "");
                } else if !volumes.contains(mn) {
                    c.not_found(&format!("{mp}.name"), &json!(mn));
                }
                let path = s(m, "/mountPath");
                if path.is_empty() {
                    c.required(&format!("{mp}.mountPath"), "");
                } else if !paths.insert(path) {
                    c.invalid(&format!("{mp}.mountPath"), &json!(path), "must be unique");
                }
            }
            if let Some(sc) = ct.get("securityContext") {
                security_context_ids(c, sc, &format!("{cp}.securityContext"));
            }
            if let Some(res) = ct.get("resources") {
                resources(c, res, &format!("{cp}.resources"));
            }
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                if let Some(pr) = ct.get(probe).filter(|x| x.is_object()) {
                    let handlers = ["exec", "httpGet", "tcpSocket", "grpc"]
                        .iter()
                        .filter(|h| pr.get(**h).is_some())
                        .count();
                    if handlers == 0 {
                        c.required(&format!("{cp}.{probe}"), "must specify a handler type");
                    } else if handlers > 1 {
                        c.forbidden(
                            &format!("{cp}.{probe}"),
                            "may not specify more than 1 handler type",
                        );
                    }
                    for field in [
                        "initialDelaySeconds",
                        "timeoutSeconds",
                        "periodSeconds",
                        "successThreshold",
                        "failureThreshold",
                        "terminationGracePeriodSeconds",
                    ] {
                        c.non_negative(pr, &format!("/{field}"), &format!("{cp}.{probe}.{field}"));
                    }
                    // Only readiness may ask for several successes in a row.
                    let st = pr.get("successThreshold").and_then(Value::as_i64);
                    if probe != "readinessProbe" && st.is_some_and(|n| n != 1) {
                        c.invalid(
                            &format!("{cp}.{probe}.successThreshold"),
                            &json!(st),
                            "must be 1",
                        );
                    }
                }
            }
        }
    }
    c.one_of(
        spec,
        "/restartPolicy",
        &format!("{p}.restartPolicy"),
        &["Always", "OnFailure", "Never"],
        false,
    );
    c.one_of(
        spec,
        "/dnsPolicy",
        &format!("{p}.dnsPolicy"),
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        false,
    );
    c.non_negative(
        spec,
        "/terminationGracePeriodSeconds",
        &format!("{p}.terminationGracePeriodSeconds"),
    );
    if s(spec, "/dnsPolicy") == "None" && spec.get("dnsConfig").is_none_or(Value::is_null) {
        c.required(
            &format!("{p}.dnsConfig"),
            "must provide `dnsConfig` when `dnsPolicy` is None",
        );
    }
    if let Some(n) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64) {
        if n < 1 {
            c.invalid(
                &format!("{p}.activeDeadlineSeconds"),
                &json!(n),
                "must be between 1 and 2147483647, inclusive",
            );
        }
    }
    if let Some(sel) = spec.get("nodeSelector").and_then(Value::as_object) {
        c.0.extend(crate::types::validation::label_map_errors(
            &format!("{p}.nodeSelector"),
            sel,
        ));
    }
    for key in ["hostname", "subdomain"] {
        let v = s(spec, &format!("/{key}"));
        if !v.is_empty() && !is_dns1123_label(v) {
            c.invalid(&format!("{p}.{key}"), &json!(v), DNS1123_LABEL_MSG);
        }
    }
    if let Some(sc) = spec.get("securityContext") {
        security_context_ids(c, sc, &format!("{p}.securityContext"));
        if let Some(g) = sc.get("fsGroup").and_then(Value::as_i64) {
            if !(0..=i64::from(i32::MAX)).contains(&g) {
                c.invalid(
                    &format!("{p}.securityContext.fsGroup"),
                    &json!(g),
                    "must be between 0 and 2147483647, inclusive",
                );
            }
        }
    }
    tolerations(c, spec, p);
    node_affinity(c, spec, p);
    pod_affinity(c, spec, p);
    topology_spread(c, spec, p);
}

/// runAsUser and runAsGroup are Linux ids: 0 to 2147483647.
pub(crate) fn security_context_ids(c: &mut Causes, sc: &Value, p: &str) {
    for key in ["runAsUser", "runAsGroup"] {
        if let Some(id) = sc.get(key).and_then(Value::as_i64) {
            if !(0..=i64::from(i32::MAX)).contains(&id) {
                c.invalid(
                    &format!("{p}.{key}"),
                    &json!(id),
                    "must be between 0 and 2147483647, inclusive",
                );
            }
        }
    }
}

/// ValidateTolerations: operator, key and value, effect.
pub(crate) fn tolerations(c: &mut Causes, spec: &Value, p: &str) {
    for (i, t) in arr(spec, "/tolerations").iter().enumerate() {
        let tp = format!("{p}.tolerations[{i}]");
        let key = s(t, "/key");
        if !key.is_empty() {
            c.0.extend(crate::types::validation::qualified_name_errors(
                &format!("{tp}.key"),
                key,
            ));
        }
        let op = s(t, "/operator");
        if key.is_empty() && op != "Exists" {
            c.invalid(
                &format!("{tp}.operator"),
                &json!(op),
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            );
        }
        match op {
            "" | "Equal" => {}
            "Exists" if s(t, "/value").is_empty() => {}
            "Exists" => c.invalid(
                &format!("{tp}.operator"),
                t,
                "value must be empty when `operator` is 'Exists'",
            ),
            _ => c.unsupported(&format!("{tp}.operator"), &json!(op), &["Equal", "Exists"]),
        }
        c.one_of(
            t,
            "/effect",
            &format!("{tp}.effect"),
            &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            false,
        );
    }
}

/// Node selector requirement operators in required and preferred node affinity.
pub(crate) fn node_affinity(c: &mut Causes, spec: &Value, p: &str) {
    let na = format!("{p}.affinity.nodeAffinity");
    let mut terms: Vec<(String, &Value)> = Vec::new();
    let required = "/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution";
    for (i, t) in arr(spec, &format!("{required}/nodeSelectorTerms"))
        .iter()
        .enumerate()
    {
        terms.push((
            format!("{na}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[{i}]"),
            t,
        ));
    }
    let preferred = "/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution";
    for (i, t) in arr(spec, preferred).iter().enumerate() {
        let weight = t.get("weight").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=100).contains(&weight) {
            c.invalid(
                &format!("{na}.preferredDuringSchedulingIgnoredDuringExecution[{i}].weight"),
                &json!(weight),
                "must be in the range 1-100",
            );
        }
        if let Some(pref) = t.get("preference") {
            terms.push((
                format!("{na}.preferredDuringSchedulingIgnoredDuringExecution[{i}].preference"),
                pref,
            ));
        }
    }
    for (tp, term) in terms {
        for list in ["matchExpressions", "matchFields"] {
            for (j, r) in arr(term, &format!("/{list}")).iter().enumerate() {
                let rp = format!("{tp}.{list}[{j}]");
                let values = arr(r, "/values");
                match s(r, "/operator") {
                    "In" | "NotIn" if values.is_empty() => c.required(
                        &format!("{rp}.values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ),
                    "Exists" | "DoesNotExist" if !values.is_empty() => c.forbidden(
                        &format!("{rp}.values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ),
                    "Gt" | "Lt" if values.len() != 1 => c.required(
                        &format!("{rp}.values"),
                        "must be specified single value when `operator` is 'Lt' or 'Gt'",
                    ),
                    "In" | "NotIn" | "Exists" | "DoesNotExist" | "Gt" | "Lt" => {}
                    op => c.invalid(
                        &format!("{rp}.operator"),
                        &json!(op),
                        "not a valid selector operator",
                    ),
                }
            }
        }
    }
}

/// A label selector's expressions (upstream's ValidateLabelSelectorRequirement).
pub(crate) fn label_selector(c: &mut Causes, sel: &Value, p: &str) {
    for (j, r) in arr(sel, "/matchExpressions").iter().enumerate() {
        let rp = format!("{p}.matchExpressions[{j}]");
        let values = arr(r, "/values");
        match s(r, "/operator") {
            "In" | "NotIn" if values.is_empty() => c.required(
                &format!("{rp}.values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            ),
            "Exists" | "DoesNotExist" if !values.is_empty() => c.forbidden(
                &format!("{rp}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            ),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            op => c.invalid(
                &format!("{rp}.operator"),
                &json!(op),
                "not a valid selector operator",
            ),
        }
        let key = s(r, "/key");
        c.0.extend(crate::types::validation::qualified_name_errors(
            &format!("{rp}.key"),
            key,
        ));
    }
}

/// Inter-pod affinity and anti-affinity terms: a topology key and valid selectors, and
/// preferred terms weighted 1-100 (upstream's validatePodAffinityTerm).
pub(crate) fn pod_affinity(c: &mut Causes, spec: &Value, p: &str) {
    for kind in ["podAffinity", "podAntiAffinity"] {
        let base = format!("{p}.affinity.{kind}");
        let ptr = format!("/affinity/{kind}");
        let mut terms: Vec<(String, &Value)> = Vec::new();
        for (i, t) in arr(
            spec,
            &format!("{ptr}/requiredDuringSchedulingIgnoredDuringExecution"),
        )
        .iter()
        .enumerate()
        {
            terms.push((
                format!("{base}.requiredDuringSchedulingIgnoredDuringExecution[{i}]"),
                t,
            ));
        }
        for (i, w) in arr(
            spec,
            &format!("{ptr}/preferredDuringSchedulingIgnoredDuringExecution"),
        )
        .iter()
        .enumerate()
        {
            let wp = format!("{base}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
            let weight = w.get("weight").and_then(Value::as_i64).unwrap_or(0);
            if !(1..=100).contains(&weight) {
                c.invalid(
                    &format!("{wp}.weight"),
                    &json!(weight),
                    "must be in the range 1-100",
                );
            }
            if let Some(t) = w.get("podAffinityTerm") {
                terms.push((format!("{wp}.podAffinityTerm"), t));
            }
        }
        for (tp, term) in terms {
            if s(term, "/topologyKey").is_empty() {
                c.required(&format!("{tp}.topologyKey"), "can not be empty");
            } else {
                c.0.extend(crate::types::validation::qualified_name_errors(
                    &format!("{tp}.topologyKey"),
                    s(term, "/topologyKey"),
                ));
            }
            for sel in ["labelSelector", "namespaceSelector"] {
                if let Some(v) = term.get(sel) {
                    label_selector(c, v, &format!("{tp}.{sel}"));
                }
            }
        }
    }
}

/// Topology spread constraints (upstream's validateTopologySpreadConstraints).
pub(crate) fn topology_spread(c: &mut Causes, spec: &Value, p: &str) {
    let mut seen = HashSet::new();
    for (i, t) in arr(spec, "/topologySpreadConstraints").iter().enumerate() {
        let tp = format!("{p}.topologySpreadConstraints[{i}]");
        let skew = t.get("maxSkew").and_then(Value::as_i64).unwrap_or(0);
        if skew <= 0 {
            c.invalid(
                &format!("{tp}.maxSkew"),
                &json!(skew),
                "must be greater than zero",
            );
        }
        let key = s(t, "/topologyKey");
        if key.is_empty() {
            c.required(&format!("{tp}.topologyKey"), "can not be empty");
        }
        let when = s(t, "/whenUnsatisfiable");
        if !["DoNotSchedule", "ScheduleAnyway"].contains(&when) {
            c.unsupported(
                &format!("{tp}.whenUnsatisfiable"),
                &json!(when),
                &["DoNotSchedule", "ScheduleAnyway"],
            );
        }
        if let Some(min) = t.get("minDomains").and_then(Value::as_i64) {
            if min <= 0 {
                c.invalid(
                    &format!("{tp}.minDomains"),
                    &json!(min),
                    "must be greater than 0",
                );
            } else if when != "DoNotSchedule" {
                c.invalid(
                    &format!("{tp}.minDomains"),
                    &json!(min),
                    &format!(
                        "can only use minDomains if whenUnsatisfiable=DoNotSchedule, not {when}"
                    ),
                );
            }
        }
        if !key.is_empty() && !seen.insert((key.to_string(), when.to_string())) {
            c.duplicate(
                &format!("{tp}.{{topologyKey, whenUnsatisfiable}}"),
                &json!(format!("{{{key}, {when}}}")),
            );
        }
        if let Some(sel) = t.get("labelSelector") {
            label_selector(c, sel, &format!("{tp}.labelSelector"));
        }
    }
}

/// A workload's selector must be set, non-empty, and match its template's labels.
pub(crate) fn selector_matches_template(c: &mut Causes, obj: &Value, kind: &str) {
    let sel = obj.pointer("/spec/selector");
    let match_labels = sel
        .and_then(|s| s.get("matchLabels"))
        .and_then(Value::as_object);
    let exprs = sel.map(|s| arr(s, "/matchExpressions")).unwrap_or(&[]);
    match sel {
        None | Some(Value::Null) => {
            c.required("spec.selector", "");
            return;
        }
        Some(_) if match_labels.is_none_or(|m| m.is_empty()) && exprs.is_empty() => {
            c.invalid(
                "spec.selector",
                sel.unwrap_or(&Value::Null),
                &format!("empty selector is invalid for {kind}"),
            );
            return;
        }
        _ => {}
    }
    let labels = obj
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object);
    let matches = match_labels.is_none_or(|m| {
        m.iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    }) && exprs.iter().all(|e| {
        let val = labels
            .and_then(|l| l.get(s(e, "/key")))
            .and_then(Value::as_str);
        let values: Vec<&str> = arr(e, "/values").iter().filter_map(Value::as_str).collect();
        match s(e, "/operator") {
            "In" => val.is_some_and(|v| values.contains(&v)),
            "NotIn" => val.is_none_or(|v| !values.contains(&v)),
            "Exists" => val.is_some(),
            "DoesNotExist" => val.is_none(),
            _ => false,
        }
    });
    if !matches {
        c.invalid(
            "spec.template.metadata.labels",
            &json!(labels.cloned().unwrap_or_default()),
            "`selector` does not match template `labels`",
        );
    }
}

pub(crate) fn template_restart(
    c: &mut Causes,
    obj: &Value,
    ptr: &str,
    field: &str,
    allowed: &[&str],
) {
    match obj.pointer(ptr).and_then(Value::as_str) {
        Some(v) if allowed.contains(&v) => {}
        Some(v) => c.unsupported(field, &json!(v), allowed),
        None => {}
    }
}

/// ValidatePositiveIntOrPercent, and with `at_most_100` IsNotMoreThan100Percent (a
/// Deployment's maxSurge may exceed 100%; unavailability and PDB budgets may not).
pub(crate) fn intstr_percent_ok(v: &Value, at_most_100: bool) -> Option<String> {
    match v {
        Value::Number(n) if n.as_i64().is_some_and(|x| x < 0) => Some("must be greater than or equal to 0".into()),
        Value::String(p) => match p.strip_suffix('%').and_then(|x| x.parse::<i64>().ok()) {
            None => Some("a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')".into()),
            Some(x) if at_most_100 && x > 100 => Some("must not be greater than 100%".into()),
            _ => None,
        },
        _ => None,
    }
}

pub(crate) const CIDR_MSG: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";

pub(crate) const ACCESS_MODES: [&str; 4] = [
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

pub(crate) fn access_modes(c: &mut Causes, obj: &Value) {
    for (i, m) in arr(obj, "/spec/accessModes").iter().enumerate() {
        if !m.as_str().is_some_and(|x| ACCESS_MODES.contains(&x)) {
            c.unsupported(&format!("spec.accessModes[{i}]"), m, &ACCESS_MODES);
        }
    }
}

/// ValidateLimitRange: known limit types, and min ≤ default request ≤ default ≤ max.
pub(crate) fn limit_range(c: &mut Causes, obj: &Value) {
    for (i, l) in arr(obj, "/spec/limits").iter().enumerate() {
        let lp = format!("spec.limits[{i}]");
        c.one_of(
            l,
            "/type",
            &format!("{lp}.type"),
            &["Pod", "Container", "PersistentVolumeClaim"],
            true,
        );
        let q = |section: &str, k: &str| {
            l.get(section)
                .and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .and_then(quantity)
        };
        let mut names: Vec<&String> = Vec::new();
        for section in [
            "max",
            "min",
            "default",
            "defaultRequest",
            "maxLimitRequestRatio",
        ] {
            if let Some(m) = l.get(section).and_then(Value::as_object) {
                names.extend(m.keys());
            }
        }
        names.sort();
        names.dedup();
        // (lower section, upper section, how upstream names each in its message)
        let order = [
            ("min", "max", "min value", "max value"),
            (
                "defaultRequest",
                "max",
                "default request value",
                "max value",
            ),
            (
                "defaultRequest",
                "default",
                "default request value",
                "default limit value",
            ),
            ("default", "max", "default value", "max value"),
        ];
        for k in names {
            let text = |section: &str| {
                l.pointer(&format!("/{section}/{k}"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            for (lo, hi, lo_name, hi_name) in order {
                if let (Some(a), Some(b)) = (q(lo, k), q(hi, k)) {
                    if a > b {
                        c.invalid(
                            &format!("{lp}.{lo}[{k}]"),
                            &json!(text(lo)),
                            &format!(
                                "{lo_name} {} is greater than {hi_name} {}",
                                text(lo),
                                text(hi)
                            ),
                        );
                    }
                }
            }
        }
    }
}

pub(crate) fn job(c: &mut Causes, obj: &Value, p: &str, ptr: &str) {
    for f in [
        "parallelism",
        "completions",
        "backoffLimit",
        "ttlSecondsAfterFinished",
    ] {
        c.non_negative(obj, &format!("{ptr}/{f}"), &format!("{p}.{f}"));
    }
    let indexed = obj
        .pointer(&format!("{ptr}/completionMode"))
        .and_then(Value::as_str)
        == Some("Indexed");
    if indexed
        && obj
            .pointer(&format!("{ptr}/completions"))
            .is_none_or(Value::is_null)
    {
        c.required(
            &format!("{p}.completions"),
            "when completion mode is Indexed",
        );
    }
    c.one_of(
        obj,
        &format!("{ptr}/completionMode"),
        &format!("{p}.completionMode"),
        &["NonIndexed", "Indexed"],
        false,
    );
    match obj
        .pointer(&format!("{ptr}/template/spec/restartPolicy"))
        .and_then(Value::as_str)
    {
        Some("OnFailure" | "Never") => {}
        Some(other) => c.unsupported(
            &format!("{p}.template.spec.restartPolicy"),
            &json!(other),
            &["OnFailure", "Never"],
        ),
        None => c.required(
            &format!("{p}.template.spec.restartPolicy"),
            "valid values: \"OnFailure\", \"Never\"",
        ),
    }
    match obj.pointer(&format!("{ptr}/template/spec")) {
        Some(spec) => pod_spec(c, spec, &format!("{p}.template.spec")),
        None => c.required(&format!("{p}.template.spec.containers"), ""),
    }
}

pub(crate) fn service(c: &mut Causes, obj: &Value) {
    let ty = obj
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    if let Some(sel) = obj.pointer("/spec/selector").and_then(Value::as_object) {
        c.0.extend(crate::types::validation::label_map_errors(
            "spec.selector",
            sel,
        ));
    }
    c.one_of(
        obj,
        "/spec/type",
        "spec.type",
        &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        false,
    );
    c.one_of(
        obj,
        "/spec/sessionAffinity",
        "spec.sessionAffinity",
        &["ClientIP", "None"],
        false,
    );
    let headless = s(obj, "/spec/clusterIP") == "None";
    let ports = arr(obj, "/spec/ports");
    if ty == "ExternalName" {
        let en = s(obj, "/spec/externalName");
        if en.is_empty() {
            c.required("spec.externalName", "");
        } else if !is_dns1123_subdomain(en.trim_end_matches('.')) {
            c.invalid(
                "spec.externalName",
                &json!(en),
                "must be a valid DNS subdomain",
            );
        }
    } else if ports.is_empty() && !headless {
        c.required("spec.ports", "");
    }
    let mut names = HashSet::new();
    let mut keys = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        let name = s(port, "/name");
        if ports.len() > 1 && name.is_empty() {
            c.required(&format!("{pp}.name"), "");
        } else if !name.is_empty() {
            if !is_dns1123_label(name) {
                c.invalid(&format!("{pp}.name"), &json!(name), DNS1123_LABEL_MSG);
            } else if !names.insert(name.to_string()) {
                c.duplicate(&format!("{pp}.name"), &json!(name));
            }
        }
        match port.get("port").and_then(Value::as_i64) {
            None => c.required(&format!("{pp}.port"), ""),
            Some(n) if !(1..=65535).contains(&n) => c.invalid(
                &format!("{pp}.port"),
                &json!(n),
                "must be between 1 and 65535, inclusive",
            ),
            Some(n) => {
                let key = (n, s(port, "/protocol").to_string());
                if !keys.insert(key) {
                    c.duplicate(&pp, &json!({"port": n, "protocol": s(port, "/protocol")}));
                }
            }
        }
        c.one_of(
            port,
            "/protocol",
            &format!("{pp}.protocol"),
            &["SCTP", "TCP", "UDP"],
            false,
        );
        match port.get("targetPort") {
            Some(Value::Number(n)) if !n.as_i64().is_some_and(|x| (1..=65535).contains(&x)) => c
                .invalid(
                    &format!("{pp}.targetPort"),
                    &json!(n),
                    "must be between 1 and 65535, inclusive",
                ),
            Some(Value::String(t)) if !is_port_name(t) => c.invalid(
                &format!("{pp}.targetPort"),
                &json!(t),
                "must contain at least one letter or number (a-z, 0-9)",
            ),
            _ => {}
        }
        if port
            .get("nodePort")
            .and_then(Value::as_i64)
            .is_some_and(|n| n != 0)
            && ty == "ClusterIP"
        {
            c.forbidden(
                &format!("{pp}.nodePort"),
                "may not be used when `type` is 'ClusterIP'",
            );
        }
    }
}

/// ConfigMap and Secret keys: `[-._a-zA-Z0-9]+`, at most 253 characters, not `.` or `..`.
pub(crate) fn config_key_errors(field: &str, key: &str) -> Vec<Cause> {
    let ok = !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        vec![]
    } else {
        vec![Cause::invalid(
            format!("{field}[{key}]"),
            key,
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
        )]
    }
}

pub(crate) fn string_map(obj: &Value, field: &str, causes: &mut Vec<Cause>) -> Vec<String> {
    match obj.get(field) {
        None | Some(Value::Null) => vec![],
        Some(Value::Object(m)) => {
            let mut keys = Vec::new();
            for (k, v) in m {
                if !v.is_string() {
                    causes.push(Cause::invalid(
                        format!("{field}[{k}]"),
                        &v.to_string(),
                        "must be a string",
                    ));
                }
                causes.extend(config_key_errors(field, k));
                keys.push(k.clone());
            }
            keys
        }
        Some(other) => {
            causes.push(Cause::invalid(
                field,
                &other.to_string(),
                "must be an object of strings",
            ));
            vec![]
        }
    }
}

pub(crate) fn is_base64(s: &str) -> bool {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The built-in kind's strategy (tests exercise the helpers through the kinds).
    fn strategy(group: &str, kind: &str) -> std::sync::Arc<dyn crate::types::strategy::Strategy> {
        crate::types::builtin::builtin()
            .into_iter()
            .find(|t| t.group == group && t.kind == kind)
            .expect("a built-in kind")
            .strategy
    }

    fn validate(group: &str, kind: &str, obj: &Value) -> Vec<Cause> {
        strategy(group, kind).validate(obj)
    }

    #[test]
    fn quantities() {
        assert_eq!(quantity("500m"), Some(0.5));
        assert_eq!(quantity("1Gi"), Some(1073741824.0));
        assert_eq!(quantity("2e3"), Some(2000.0));
        assert!(quantity("lots").is_none() && quantity("1Gb").is_none());
    }

    #[test]
    fn a_bad_deployment_reports_every_cause() {
        let d = json!({"spec": {"replicas": -1, "selector": {"matchLabels": {"app": "a"}},
            "strategy": {"type": "Recreate", "rollingUpdate": {}},
            "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 70000}], "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}, "volumeMounts": [{"name": "nope", "mountPath": "/x"}]},
                               {"name": "c", "image": ""}]}}}});
        let fields: Vec<String> = validate("apps", "Deployment", &d)
            .into_iter()
            .map(|c| c.field)
            .collect();
        for f in [
            "spec.template.metadata.labels",
            "spec.replicas",
            "spec.template.spec.containers[0].ports[0].containerPort",
            "spec.template.spec.containers[0].resources.requests",
            "spec.template.spec.containers[0].volumeMounts[0].name",
            "spec.template.spec.containers[1].name",
            "spec.template.spec.containers[1].image",
            "spec.template.spec.restartPolicy",
            "spec.strategy.rollingUpdate",
        ] {
            assert!(fields.iter().any(|x| x == f), "missing {f} in {fields:?}");
        }
    }

    #[test]
    fn affinity_and_spread_are_checked_as_upstream() {
        let pod = json!({"spec": {"containers": [{"name": "a", "image": "x"}],
            "affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "cores", "operator": "Gt", "values": ["1", "2"]}, {"key": "zone", "operator": "In"}]}]},
                "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 500, "preference": {}}]},
              "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchExpressions": [{"key": "app", "operator": "Within", "values": ["a"]}]}}],
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 0, "podAffinityTerm": {"topologyKey": "zone", "labelSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}}]}},
            "topologySpreadConstraints": [
                {"maxSkew": 0, "topologyKey": "zone", "whenUnsatisfiable": "Sometimes"},
                {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway", "minDomains": 2},
                {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"}]}});
        let fields: Vec<String> = validate("", "Pod", &pod)
            .into_iter()
            .map(|c| c.field)
            .collect();
        for f in [
            "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey",
            "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].labelSelector.matchExpressions[0].operator",
            "spec.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight",
            "spec.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm.labelSelector.matchExpressions[0].values",
            "spec.topologySpreadConstraints[0].maxSkew",
            "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values",
            "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[1].values",
            "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight",
            "spec.topologySpreadConstraints[0].whenUnsatisfiable",
            "spec.topologySpreadConstraints[1].minDomains",
            "spec.topologySpreadConstraints[2].{topologyKey, whenUnsatisfiable}",
        ] {
            assert!(fields.iter().any(|x| x == f), "{f} missing in {fields:?}");
        }
    }
}
