//! Defaulting helpers the built-in kinds share (kube-apiserver's SetDefaults_* building
//! blocks: pod specs, containers, probes, volumes, templates, services, jobs).

use serde_json::{json, Value};

/// Set `obj[key]` to `value` unless it is present (and not null).
pub(crate) fn default(obj: &mut Value, key: &str, value: Value) {
    if let Some(o) = obj.as_object_mut() {
        match o.get(key) {
            Some(v) if !v.is_null() => {}
            _ => {
                o.insert(key.to_string(), value);
            }
        }
    }
}

/// The object at `obj[key]`, created empty if missing.
pub(crate) fn child<'a>(obj: &'a mut Value, key: &str) -> &'a mut Value {
    default(obj, key, json!({}));
    &mut obj[key]
}

pub(crate) fn each(obj: &mut Value, key: &str, mut f: impl FnMut(&mut Value)) {
    if let Some(list) = obj.get_mut(key).and_then(Value::as_array_mut) {
        for item in list {
            f(item);
        }
    }
}

/// `Always` for `:latest` or no tag (and no digest), else `IfNotPresent`.
pub fn image_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

pub(crate) fn probe(p: &mut Value) {
    if !p.is_object() {
        return;
    }
    default(p, "timeoutSeconds", json!(1));
    default(p, "periodSeconds", json!(10));
    default(p, "successThreshold", json!(1));
    default(p, "failureThreshold", json!(3));
    if let Some(h) = p.get_mut("httpGet").filter(|h| h.is_object()) {
        default(h, "path", json!("/"));
        default(h, "scheme", json!("HTTP"));
    }
}

pub(crate) fn container(c: &mut Value) {
    let image = c
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    default(c, "imagePullPolicy", json!(image_pull_policy(&image)));
    default(c, "terminationMessagePath", json!("/dev/termination-log"));
    default(c, "terminationMessagePolicy", json!("File"));
    default(c, "resources", json!({}));
    each(c, "ports", |p| default(p, "protocol", json!("TCP")));
    for key in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(key) {
            probe(p);
        }
    }
    each(c, "env", |e| {
        if let Some(f) = e
            .pointer_mut("/valueFrom/fieldRef")
            .filter(|f| f.is_object())
        {
            default(f, "apiVersion", json!("v1"));
        }
    });
    // Requests default to limits where only limits are given.
    let limits = c
        .pointer("/resources/limits")
        .and_then(Value::as_object)
        .cloned();
    if let Some(limits) = limits {
        let res = child(c, "resources");
        let req = child(res, "requests");
        for (k, v) in limits {
            default(req, &k, v);
        }
    }
}

pub(crate) fn volume(v: &mut Value) {
    let sources = crate::types::shared::validating::VOLUME_SOURCES;
    if !sources
        .iter()
        .any(|s| v.get(*s).is_some_and(|x| !x.is_null()))
    {
        v["emptyDir"] = json!({});
    }
    for key in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(src) = v.get_mut(key).filter(|s| s.is_object()) {
            default(src, "defaultMode", json!(420));
        }
    }
    if let Some(h) = v.get_mut("hostPath").filter(|s| s.is_object()) {
        default(h, "type", json!(""));
    }
}

/// SetDefaults_PodSpec and its containers, volumes and probes.
pub fn pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "securityContext", json!({}));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "enableServiceLinks", json!(true));
    let host_network = spec.get("hostNetwork") == Some(&json!(true));
    for key in ["containers", "initContainers", "ephemeralContainers"] {
        each(spec, key, |c| {
            container(c);
            if host_network {
                each(c, "ports", |p| {
                    if let Some(cp) = p.get("containerPort").cloned() {
                        default(p, "hostPort", cp);
                    }
                });
            }
        });
    }
    each(spec, "volumes", volume);
}

/// The QoS class upstream reports for a pod's resources.
pub(crate) fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| spec.get(*k).and_then(Value::as_array))
        .flatten()
        .collect();
    let res =
        |c: &Value, kind: &str, r: &str| c.pointer(&format!("/resources/{kind}/{r}")).cloned();
    let any = containers.iter().any(|c| {
        ["requests", "limits"].iter().any(|k| {
            c.pointer(&format!("/resources/{k}"))
                .and_then(Value::as_object)
                .is_some_and(|m| !m.is_empty())
        })
    });
    if !any {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let l = res(c, "limits", r);
            l.is_some() && res(c, "requests", r).is_none_or(|q| Some(q) == l)
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// A new Pod starts Pending with its QoS class (upstream's pod PrepareForCreate; the
/// service account, tolerations and priority come from admission plugins).
pub(crate) fn pod_on_create(obj: &mut Value) {
    let qos = qos_class(child(obj, "spec"));
    obj["status"] = json!({"phase": "Pending", "qosClass": qos});
}

pub(crate) fn template(obj: &mut Value, pointer: &str) {
    if let Some(spec) = obj.pointer_mut(pointer) {
        pod_spec(spec);
    }
}

pub(crate) fn pvc_spec(spec: &mut Value) {
    if spec.is_object() {
        default(spec, "volumeMode", json!("Filesystem"));
    }
}

pub(crate) fn label_selector_from_template(obj: &mut Value) {
    let labels = obj.pointer("/spec/template/metadata/labels").cloned();
    if let Some(labels) = labels.filter(|l| l.as_object().is_some_and(|m| !m.is_empty())) {
        let spec = child(obj, "spec");
        default(spec, "selector", labels.clone());
        let meta = child(obj, "metadata");
        default(meta, "labels", labels);
    }
}

pub(crate) fn job_spec(spec: &mut Value) {
    let has = |spec: &Value, k: &str| spec.get(k).is_some_and(|v| !v.is_null());
    if !has(spec, "completions") && !has(spec, "parallelism") {
        spec["completions"] = json!(1);
        spec["parallelism"] = json!(1);
    }
    default(spec, "parallelism", json!(1));
    let per_index = has(spec, "backoffLimitPerIndex");
    default(
        spec,
        "backoffLimit",
        json!(if per_index { i32::MAX } else { 6 }),
    );
    default(spec, "completionMode", json!("NonIndexed"));
    default(spec, "suspend", json!(false));
    let replacement = if has(spec, "podFailurePolicy") {
        "Failed"
    } else {
        "TerminatingOrFailed"
    };
    default(spec, "podReplacementPolicy", json!(replacement));
}

/// A new Job's generated selector and pod labels (unless it chose its own selector).
pub fn job_selector(obj: &mut Value, uid: &str) {
    if obj.pointer("/spec/manualSelector") == Some(&json!(true)) {
        return;
    }
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let spec = child(obj, "spec");
    spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    let tmeta = child(child(spec, "template"), "metadata");
    let labels = child(tmeta, "labels");
    if let Some(l) = labels.as_object_mut() {
        for (k, v) in [
            ("batch.kubernetes.io/controller-uid", uid),
            ("batch.kubernetes.io/job-name", name.as_str()),
            ("controller-uid", uid),
            ("job-name", name.as_str()),
        ] {
            l.insert(k.to_string(), json!(v));
        }
    }
}

pub(crate) fn service(obj: &mut Value) {
    let spec = child(obj, "spec");
    default(spec, "type", json!("ClusterIP"));
    let ty = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
    default(spec, "sessionAffinity", json!("None"));
    if spec["sessionAffinity"] == "ClientIP" {
        let cfg = child(spec, "sessionAffinityConfig");
        default(child(cfg, "clientIP"), "timeoutSeconds", json!(10800));
    }
    each(spec, "ports", |p| {
        default(p, "protocol", json!("TCP"));
        if let Some(port) = p.get("port").cloned() {
            let unset = match p.get("targetPort") {
                None | Some(Value::Null) => true,
                Some(Value::Number(n)) => n.as_i64() == Some(0),
                Some(Value::String(s)) => s.is_empty(),
                _ => false,
            };
            if unset {
                p["targetPort"] = port;
            }
        }
    });
    if ty != "ExternalName" {
        default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
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

    fn apply(group: &str, kind: &str, obj: &mut Value, creating: bool) {
        strategy(group, kind).defaults(obj, creating);
    }

    #[test]
    fn a_pod_gets_upstreams_defaults() {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {
            "containers": [
                {"name": "a", "image": "nginx", "ports": [{"containerPort": 80}], "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                 "readinessProbe": {"httpGet": {"port": 80}}, "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]},
                {"name": "b", "image": "busybox:1.36"}, {"name": "c", "image": "reg:5000/x@sha256:abc"}],
            "volumes": [{"name": "v"}, {"name": "s", "secret": {"secretName": "x"}}]}});
        apply("", "Pod", &mut pod, true);
        let s = &pod["spec"];
        assert_eq!(s["restartPolicy"], "Always");
        assert_eq!(s["dnsPolicy"], "ClusterFirst");
        assert_eq!(s["terminationGracePeriodSeconds"], 30);
        assert_eq!(s["schedulerName"], "default-scheduler");
        let c = &s["containers"];
        assert_eq!(c[0]["imagePullPolicy"], "Always");
        assert_eq!(c[1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c[2]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c[0]["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c[0]["terminationMessagePolicy"], "File");
        assert_eq!(c[0]["ports"][0]["protocol"], "TCP");
        assert_eq!(
            c[0]["resources"]["requests"],
            json!({"cpu": "1", "memory": "1Gi"})
        );
        assert_eq!(c[0]["readinessProbe"]["periodSeconds"], 10);
        assert_eq!(c[0]["readinessProbe"]["httpGet"]["scheme"], "HTTP");
        assert_eq!(c[0]["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
        assert_eq!(s["volumes"][0]["emptyDir"], json!({}));
        assert_eq!(s["volumes"][1]["secret"]["defaultMode"], 420);
        assert_eq!(
            pod["status"],
            json!({"phase": "Pending", "qosClass": "Burstable"})
        );
    }

    #[test]
    fn workloads_and_services_get_upstreams_defaults() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x:1"}]}}}});
        apply("apps", "Deployment", &mut d, true);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(
            d["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        let mut svc =
            json!({"spec": {"ports": [{"port": 80}, {"port": 443, "targetPort": "https"}]}});
        apply("", "Service", &mut svc, true);
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        assert_eq!(svc["spec"]["sessionAffinity"], "None");
        assert_eq!(
            svc["spec"]["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
        assert_eq!(svc["spec"]["ports"][1]["targetPort"], "https");
        let mut job =
            json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {"containers": []}}}});
        apply("batch", "Job", &mut job, true);
        job_selector(&mut job, "u1");
        assert_eq!(job["spec"]["completions"], 1);
        assert_eq!(job["spec"]["backoffLimit"], 6);
        assert_eq!(
            job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
            "u1"
        );
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"]["job-name"],
            "j"
        );
        assert_eq!(image_pull_policy("localhost:5000/app"), "Always");
        assert_eq!(image_pull_policy("localhost:5000/app:v2"), "IfNotPresent");
    }
}
