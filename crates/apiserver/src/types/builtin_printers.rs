//! Table columns and cells for the workload, networking, storage and RBAC types, as
//! kube-apiserver's printers show them (priority-1 columns appear with `-o wide`).

use serde_json::{json, Value};

use crate::object;
use crate::types::registry::Printer as P;

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}
fn i(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}
fn or_none(x: String) -> Value {
    if x.is_empty() {
        json!("<none>")
    } else {
        json!(x)
    }
}
fn arr<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}
fn age(obj: &Value) -> Value {
    json!(object::age(object::meta_str(obj, "creationTimestamp")))
}
fn duration_since(ts: &str) -> String {
    object::age(Some(ts))
}

/// `app=web,tier=db` from a LabelSelector (or a plain map selector).
fn selector(sel: Option<&Value>) -> String {
    let Some(sel) = sel else { return String::new() };
    let labels = sel.get("matchLabels").unwrap_or(sel);
    let mut parts: Vec<String> = labels
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, v)| v.is_string())
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let vals: Vec<&str> = arr(e, "/values").iter().filter_map(Value::as_str).collect();
        let key = s(e, "/key");
        match s(e, "/operator") {
            "In" => parts.push(format!("{key} in ({})", vals.join(","))),
            "NotIn" => parts.push(format!("{key} notin ({})", vals.join(","))),
            "Exists" => parts.push(key.to_string()),
            "DoesNotExist" => parts.push(format!("!{key}")),
            _ => {}
        }
    }
    parts.join(",")
}

fn containers(template_spec: &Value) -> (String, String) {
    let cs = arr(template_spec, "/containers");
    let names: Vec<&str> = cs.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(c, "/image")).collect();
    (names.join(","), images.join(","))
}

fn col(name: &str, ty: &str, priority: i64) -> Value {
    json!({"name": name, "type": ty, "format": if name == "Name" { "name" } else { "" }, "description": "", "priority": priority})
}

/// Column definitions (after none: the NAME column is included here).
pub fn columns(p: P) -> Option<Vec<Value>> {
    let c =
        |spec: &[(&str, &str, i64)]| Some(spec.iter().map(|(n, t, pr)| col(n, t, *pr)).collect());
    match p {
        P::Pod => c(&[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ]),
        P::Service => c(&[
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            ("Age", "string", 0),
            ("Selector", "string", 1),
        ]),
        P::Deployment => c(&[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Up-to-date", "string", 0),
            ("Available", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ]),
        P::ReplicaSet | P::ReplicationController => c(&[
            ("Name", "string", 0),
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ]),
        P::StatefulSet => c(&[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
        ]),
        P::DaemonSet => c(&[
            ("Name", "string", 0),
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Node Selector", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ]),
        P::Job => c(&[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Completions", "string", 0),
            ("Duration", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ]),
        P::CronJob => c(&[
            ("Name", "string", 0),
            ("Schedule", "string", 0),
            ("Timezone", "string", 0),
            ("Suspend", "boolean", 0),
            ("Active", "integer", 0),
            ("Last Schedule", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ]),
        P::Node => c(&[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Roles", "string", 0),
            ("Age", "string", 0),
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
            ("External-IP", "string", 1),
            ("OS-Image", "string", 1),
            ("Kernel-Version", "string", 1),
            ("Container-Runtime", "string", 1),
        ]),
        P::PersistentVolume => c(&[
            ("Name", "string", 0),
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("Reclaim Policy", "string", 0),
            ("Status", "string", 0),
            ("Claim", "string", 0),
            ("StorageClass", "string", 0),
            ("VolumeAttributesClass", "string", 0),
            ("Reason", "string", 0),
            ("Age", "string", 0),
            ("VolumeMode", "string", 1),
        ]),
        P::PersistentVolumeClaim => c(&[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Volume", "string", 0),
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("StorageClass", "string", 0),
            ("VolumeAttributesClass", "string", 0),
            ("Age", "string", 0),
            ("VolumeMode", "string", 1),
        ]),
        P::Endpoints => c(&[
            ("Name", "string", 0),
            ("Endpoints", "string", 0),
            ("Age", "string", 0),
        ]),
        P::EndpointSlice => c(&[
            ("Name", "string", 0),
            ("AddressType", "string", 0),
            ("Ports", "string", 0),
            ("Endpoints", "string", 0),
            ("Age", "string", 0),
        ]),
        P::Ingress => c(&[
            ("Name", "string", 0),
            ("Class", "string", 0),
            ("Hosts", "string", 0),
            ("Address", "string", 0),
            ("Ports", "string", 0),
            ("Age", "string", 0),
        ]),
        P::IngressClass => c(&[
            ("Name", "string", 0),
            ("Controller", "string", 0),
            ("Parameters", "string", 0),
            ("Age", "string", 0),
        ]),
        P::NetworkPolicy => c(&[
            ("Name", "string", 0),
            ("Pod-Selector", "string", 0),
            ("Age", "string", 0),
        ]),
        P::Hpa => c(&[
            ("Name", "string", 0),
            ("Reference", "string", 0),
            ("Targets", "string", 0),
            ("MinPods", "string", 0),
            ("MaxPods", "integer", 0),
            ("Replicas", "integer", 0),
            ("Age", "string", 0),
        ]),
        P::Pdb => c(&[
            ("Name", "string", 0),
            ("Min Available", "string", 0),
            ("Max Unavailable", "string", 0),
            ("Allowed Disruptions", "integer", 0),
            ("Age", "string", 0),
        ]),
        P::StorageClass => c(&[
            ("Name", "string", 0),
            ("Provisioner", "string", 0),
            ("ReclaimPolicy", "string", 0),
            ("VolumeBindingMode", "string", 0),
            ("AllowVolumeExpansion", "string", 0),
            ("Age", "string", 0),
        ]),
        P::PriorityClass => c(&[
            ("Name", "string", 0),
            ("Value", "integer", 0),
            ("Global-Default", "boolean", 0),
            ("Age", "string", 0),
            ("PreemptionPolicy", "string", 0),
        ]),
        P::RuntimeClass => c(&[
            ("Name", "string", 0),
            ("Handler", "string", 0),
            ("Age", "string", 0),
        ]),
        P::RoleBinding => c(&[
            ("Name", "string", 0),
            ("Role", "string", 0),
            ("Age", "string", 0),
            ("Users", "string", 1),
            ("Groups", "string", 1),
            ("ServiceAccounts", "string", 1),
        ]),
        P::ResourceQuota => c(&[
            ("Name", "string", 0),
            ("Age", "string", 0),
            ("Request", "string", 0),
            ("Limit", "string", 0),
        ]),
        P::Csr => c(&[
            ("Name", "string", 0),
            ("Age", "string", 0),
            ("SignerName", "string", 0),
            ("Requestor", "string", 0),
            ("RequestedDuration", "string", 0),
            ("Condition", "string", 0),
        ]),
        P::Webhooks => c(&[
            ("Name", "string", 0),
            ("Webhooks", "integer", 0),
            ("Age", "string", 0),
        ]),
        P::ControllerRevision => c(&[
            ("Name", "string", 0),
            ("Controller", "string", 0),
            ("Revision", "integer", 0),
            ("Age", "string", 0),
        ]),
        P::PodTemplate => c(&[
            ("Name", "string", 0),
            ("Containers", "string", 0),
            ("Images", "string", 0),
            ("Pod Labels", "string", 0),
        ]),
        P::CreatedAt => c(&[("Name", "string", 0), ("Created At", "date", 0)]),
        _ => None,
    }
}

fn pod_cells(o: &Value) -> Vec<Value> {
    let statuses = arr(o, "/status/containerStatuses");
    let total = arr(o, "/spec/containers").len();
    let ready = statuses
        .iter()
        .filter(|c| c.get("ready") == Some(&json!(true)))
        .count();
    let restarts: i64 = statuses.iter().map(|c| i(c, "/restartCount")).sum();
    let mut status = s(o, "/status/phase").to_string();
    if status.is_empty() {
        status = "Pending".into();
    }
    let reason = s(o, "/status/reason");
    if !reason.is_empty() {
        status = reason.to_string();
    }
    for c in statuses {
        let waiting = s(c, "/state/waiting/reason");
        let terminated = s(c, "/state/terminated/reason");
        if !waiting.is_empty() {
            status = waiting.to_string();
        } else if !terminated.is_empty() {
            status = terminated.to_string();
        }
    }
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        status = "Terminating".into();
    }
    let gates = arr(o, "/spec/readinessGates");
    vec![
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts.to_string()),
        age(o),
        or_none(s(o, "/status/podIP").to_string()),
        or_none(s(o, "/spec/nodeName").to_string()),
        or_none(s(o, "/status/nominatedNodeName").to_string()),
        if gates.is_empty() {
            json!("<none>")
        } else {
            json!(format!("0/{}", gates.len()))
        },
    ]
}

fn service_cells(o: &Value) -> Vec<Value> {
    let ty = s(o, "/spec/type");
    let ports: Vec<String> = arr(o, "/spec/ports")
        .iter()
        .map(|p| {
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            match p.get("nodePort").and_then(Value::as_i64) {
                Some(np) => format!("{}:{np}/{proto}", i(p, "/port")),
                None => format!("{}/{proto}", i(p, "/port")),
            }
        })
        .collect();
    let mut external: Vec<String> = arr(o, "/spec/externalIPs")
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    external.extend(arr(o, "/status/loadBalancer/ingress").iter().map(|x| {
        x.get("ip")
            .or(x.get("hostname"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    }));
    let ext = match ty {
        "ExternalName" => s(o, "/spec/externalName").to_string(),
        "LoadBalancer" if external.is_empty() => "<pending>".into(),
        _ if external.is_empty() => "<none>".into(),
        _ => external.join(","),
    };
    let cluster_ip = s(o, "/spec/clusterIP");
    vec![
        json!(ty),
        json!(if cluster_ip.is_empty() {
            "<none>"
        } else {
            cluster_ip
        }),
        json!(ext),
        json!(if ports.is_empty() {
            "<none>".to_string()
        } else {
            ports.join(",")
        }),
        age(o),
        or_none(selector(o.pointer("/spec/selector"))),
    ]
}

/// The cells after NAME (NAME itself is included: every printer here lists it first).
pub fn cells(p: P, o: &Value) -> Option<Vec<Value>> {
    let name = json!(object::name(o));
    let tpl = o
        .pointer("/spec/template/spec")
        .cloned()
        .unwrap_or(json!({}));
    let (cnames, images) = containers(&tpl);
    let sel = or_none(selector(o.pointer("/spec/selector")));
    let mut out = vec![name];
    match p {
        P::Pod => out.extend(pod_cells(o)),
        P::Service => out.extend(service_cells(o)),
        P::Deployment => out.extend([
            json!(format!(
                "{}/{}",
                i(o, "/status/readyReplicas"),
                i(o, "/spec/replicas")
            )),
            json!(i(o, "/status/updatedReplicas")),
            json!(i(o, "/status/availableReplicas")),
            age(o),
            json!(cnames),
            json!(images),
            sel,
        ]),
        P::ReplicaSet | P::ReplicationController => out.extend([
            json!(i(o, "/spec/replicas")),
            json!(i(o, "/status/replicas")),
            json!(i(o, "/status/readyReplicas")),
            age(o),
            json!(cnames),
            json!(images),
            sel,
        ]),
        P::StatefulSet => out.extend([
            json!(format!(
                "{}/{}",
                i(o, "/status/readyReplicas"),
                i(o, "/spec/replicas")
            )),
            age(o),
            json!(cnames),
            json!(images),
        ]),
        P::DaemonSet => out.extend([
            json!(i(o, "/status/desiredNumberScheduled")),
            json!(i(o, "/status/currentNumberScheduled")),
            json!(i(o, "/status/numberReady")),
            json!(i(o, "/status/updatedNumberScheduled")),
            json!(i(o, "/status/numberAvailable")),
            or_none(selector(o.pointer("/spec/template/spec/nodeSelector"))),
            age(o),
            json!(cnames),
            json!(images),
            sel,
        ]),
        P::Job => {
            let conds = arr(o, "/status/conditions");
            let has = |t: &str| {
                conds
                    .iter()
                    .any(|c| s(c, "/type") == t && s(c, "/status") == "True")
            };
            let status = if has("Complete") {
                "Complete"
            } else if has("Failed") {
                "Failed"
            } else if o.pointer("/spec/suspend") == Some(&json!(true)) {
                "Suspended"
            } else {
                "Running"
            };
            let completions = o.pointer("/spec/completions").and_then(Value::as_i64);
            let done = i(o, "/status/succeeded");
            let duration = match (
                o.pointer("/status/startTime").and_then(Value::as_str),
                o.pointer("/status/completionTime").and_then(Value::as_str),
            ) {
                (Some(start), None) => duration_since(start),
                (Some(_), Some(end)) => duration_since(end),
                _ => String::new(),
            };
            out.extend([
                json!(status),
                json!(match completions {
                    Some(c) => format!("{done}/{c}"),
                    None => format!("{done}/1 of {}", i(o, "/spec/parallelism").max(1)),
                }),
                json!(duration),
                age(o),
                json!(cnames),
                json!(images),
                sel,
            ]);
        }
        P::CronJob => {
            let jt = o
                .pointer("/spec/jobTemplate/spec/template/spec")
                .cloned()
                .unwrap_or(json!({}));
            let (n, im) = containers(&jt);
            let last = s(o, "/status/lastScheduleTime");
            out.extend([
                json!(s(o, "/spec/schedule")),
                or_none(s(o, "/spec/timeZone").to_string()),
                json!(o.pointer("/spec/suspend") == Some(&json!(true))),
                json!(arr(o, "/status/active").len()),
                json!(if last.is_empty() {
                    "<none>".to_string()
                } else {
                    duration_since(last)
                }),
                age(o),
                json!(n),
                json!(im),
                or_none(selector(o.pointer("/spec/jobTemplate/spec/selector"))),
            ]);
        }
        P::Node => {
            let ready = arr(o, "/status/conditions")
                .iter()
                .find(|c| s(c, "/type") == "Ready");
            let mut status = match ready.map(|c| s(c, "/status")) {
                Some("True") => "Ready".to_string(),
                _ => "NotReady".to_string(),
            };
            if o.pointer("/spec/unschedulable") == Some(&json!(true)) {
                status.push_str(",SchedulingDisabled");
            }
            let roles: Vec<String> = o
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|l| {
                    l.keys()
                        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            let addr = |t: &str| {
                arr(o, "/status/addresses")
                    .iter()
                    .find(|a| s(a, "/type") == t)
                    .map(|a| s(a, "/address").to_string())
                    .unwrap_or_else(|| "<none>".into())
            };
            out.extend([
                json!(status),
                or_none(roles.join(",")),
                age(o),
                json!(s(o, "/status/nodeInfo/kubeletVersion")),
                json!(addr("InternalIP")),
                json!(addr("ExternalIP")),
                json!(s(o, "/status/nodeInfo/osImage")),
                json!(s(o, "/status/nodeInfo/kernelVersion")),
                json!(s(o, "/status/nodeInfo/containerRuntimeVersion")),
            ]);
        }
        P::PersistentVolume => {
            let claim = match (
                s(o, "/spec/claimRef/namespace"),
                s(o, "/spec/claimRef/name"),
            ) {
                ("", "") => String::new(),
                (ns, n) => format!("{ns}/{n}"),
            };
            out.extend([
                json!(s(o, "/spec/capacity/storage")),
                json!(access_modes(arr(o, "/spec/accessModes"))),
                json!(s(o, "/spec/persistentVolumeReclaimPolicy")),
                json!(s(o, "/status/phase")),
                json!(claim),
                json!(s(o, "/spec/storageClassName")),
                or_none(s(o, "/spec/volumeAttributesClassName").to_string()),
                json!(s(o, "/status/reason")),
                age(o),
                json!(s(o, "/spec/volumeMode")),
            ]);
        }
        P::PersistentVolumeClaim => out.extend([
            json!(s(o, "/status/phase")),
            json!(s(o, "/spec/volumeName")),
            json!(s(o, "/status/capacity/storage")),
            json!(access_modes(arr(o, "/status/accessModes"))),
            json!(s(o, "/spec/storageClassName")),
            or_none(s(o, "/spec/volumeAttributesClassName").to_string()),
            age(o),
            json!(s(o, "/spec/volumeMode")),
        ]),
        P::Endpoints => {
            let mut eps = Vec::new();
            for sub in arr(o, "/subsets") {
                for a in arr(sub, "/addresses") {
                    for p in arr(sub, "/ports") {
                        eps.push(format!("{}:{}", s(a, "/ip"), i(p, "/port")));
                    }
                }
            }
            out.extend([or_none(eps.join(",")), age(o)]);
        }
        P::EndpointSlice => {
            let ports: Vec<String> = arr(o, "/ports")
                .iter()
                .map(|p| i(p, "/port").to_string())
                .collect();
            let eps: Vec<&str> = arr(o, "/endpoints")
                .iter()
                .flat_map(|e| arr(e, "/addresses").iter().filter_map(Value::as_str))
                .collect();
            out.extend([
                json!(s(o, "/addressType")),
                or_none(ports.join(",")),
                or_none(eps.join(",")),
                age(o),
            ]);
        }
        P::Ingress => {
            let hosts: Vec<&str> = arr(o, "/spec/rules")
                .iter()
                .map(|r| s(r, "/host"))
                .filter(|h| !h.is_empty())
                .collect();
            let addrs: Vec<&str> = arr(o, "/status/loadBalancer/ingress")
                .iter()
                .map(|a| {
                    if s(a, "/ip").is_empty() {
                        s(a, "/hostname")
                    } else {
                        s(a, "/ip")
                    }
                })
                .collect();
            let ports = if arr(o, "/spec/tls").is_empty() {
                "80"
            } else {
                "80, 443"
            };
            out.extend([
                or_none(s(o, "/spec/ingressClassName").to_string()),
                json!(if hosts.is_empty() {
                    "*".to_string()
                } else {
                    hosts.join(",")
                }),
                json!(addrs.join(",")),
                json!(ports),
                age(o),
            ]);
        }
        P::IngressClass => {
            let params = match o.pointer("/spec/parameters") {
                Some(p) => format!("{}/{}", s(p, "/kind"), s(p, "/name")),
                None => "<none>".into(),
            };
            out.extend([json!(s(o, "/spec/controller")), json!(params), age(o)]);
        }
        P::NetworkPolicy => out.extend([or_none(selector(o.pointer("/spec/podSelector"))), age(o)]),
        P::Hpa => {
            let target = format!(
                "{}/{}",
                s(o, "/spec/scaleTargetRef/kind"),
                s(o, "/spec/scaleTargetRef/name")
            );
            out.extend([
                json!(target),
                json!("<unknown>"),
                json!(o
                    .pointer("/spec/minReplicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(1)
                    .to_string()),
                json!(i(o, "/spec/maxReplicas")),
                json!(i(o, "/status/currentReplicas")),
                age(o),
            ]);
        }
        P::Pdb => {
            let show = |p: &str| match o.pointer(p) {
                Some(Value::String(x)) => x.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => "N/A".into(),
            };
            out.extend([
                json!(show("/spec/minAvailable")),
                json!(show("/spec/maxUnavailable")),
                json!(i(o, "/status/disruptionsAllowed")),
                age(o),
            ]);
        }
        P::StorageClass => {
            let mut name_cell = object::name(o).to_string();
            if o.pointer("/metadata/annotations/storageclass.kubernetes.io~1is-default-class")
                .and_then(Value::as_str)
                == Some("true")
            {
                name_cell.push_str(" (default)");
            }
            out[0] = json!(name_cell);
            out.extend([
                json!(s(o, "/provisioner")),
                json!(s(o, "/reclaimPolicy")),
                json!(s(o, "/volumeBindingMode")),
                json!(o
                    .get("allowVolumeExpansion")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                    .to_string()),
                age(o),
            ]);
        }
        P::PriorityClass => out.extend([
            json!(i(o, "/value")),
            json!(o
                .get("globalDefault")
                .and_then(Value::as_bool)
                .unwrap_or(false)),
            age(o),
            json!(s(o, "/preemptionPolicy")),
        ]),
        P::RuntimeClass => out.extend([json!(s(o, "/handler")), age(o)]),
        P::RoleBinding => {
            let subjects = arr(o, "/subjects");
            let of = |kind: &str| -> Vec<String> {
                subjects
                    .iter()
                    .filter(|x| s(x, "/kind") == kind)
                    .map(|x| {
                        if kind == "ServiceAccount" {
                            format!("{}/{}", s(x, "/namespace"), s(x, "/name"))
                        } else {
                            s(x, "/name").to_string()
                        }
                    })
                    .collect()
            };
            out.extend([
                json!(format!(
                    "{}/{}",
                    s(o, "/roleRef/kind"),
                    s(o, "/roleRef/name")
                )),
                age(o),
                json!(of("User").join(", ")),
                json!(of("Group").join(", ")),
                json!(of("ServiceAccount").join(", ")),
            ]);
        }
        P::ResourceQuota => {
            let hard = |p: &str| -> String {
                o.pointer(p)
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| {
                                let used = o
                                    .pointer(&format!("/status/used/{}", k.replace('/', "~1")))
                                    .and_then(Value::as_str)
                                    .unwrap_or("0");
                                format!("{k}: {used}/{}", v.as_str().unwrap_or(""))
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default()
            };
            out.extend([age(o), json!(hard("/spec/hard")), json!("")]);
        }
        P::Csr => {
            let conds: Vec<&str> = arr(o, "/status/conditions")
                .iter()
                .map(|c| s(c, "/type"))
                .collect();
            let cond = if conds.is_empty() {
                "Pending".to_string()
            } else {
                conds.join(",")
            };
            let dur = o
                .pointer("/spec/expirationSeconds")
                .and_then(Value::as_i64)
                .map(|x| format!("{}m", x / 60))
                .unwrap_or_else(|| "<none>".into());
            out.extend([
                age(o),
                json!(s(o, "/spec/signerName")),
                json!(s(o, "/spec/username")),
                json!(dur),
                json!(cond),
            ]);
        }
        P::Webhooks => out.extend([json!(arr(o, "/webhooks").len()), age(o)]),
        P::ControllerRevision => {
            let owner = arr(o, "/metadata/ownerReferences")
                .iter()
                .find(|r| r.get("controller") == Some(&json!(true)));
            let controller = owner
                .map(|r| format!("{}/{}", s(r, "/kind").to_lowercase(), s(r, "/name")))
                .unwrap_or_else(|| "<none>".into());
            out.extend([json!(controller), json!(i(o, "/revision")), age(o)]);
        }
        P::PodTemplate => {
            let (n, im) = containers(o.pointer("/template/spec").unwrap_or(&json!({})));
            out.extend([
                json!(n),
                json!(im),
                or_none(selector(o.pointer("/template/metadata/labels"))),
            ]);
        }
        P::CreatedAt => out.push(json!(object::meta_str(o, "creationTimestamp").unwrap_or(""))),
        _ => return None,
    }
    Some(out)
}

fn access_modes(modes: &[Value]) -> String {
    modes
        .iter()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_printer_has_as_many_cells_as_columns() {
        let obj = json!({"metadata": {"name": "x", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"selector": {"matchLabels": {"app": "x"}}, "ports": [{"port": 80, "protocol": "TCP"}], "type": "ClusterIP", "clusterIP": "10.0.0.1",
                     "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        for p in [
            P::Pod,
            P::Service,
            P::Deployment,
            P::ReplicaSet,
            P::ReplicationController,
            P::StatefulSet,
            P::DaemonSet,
            P::Job,
            P::CronJob,
            P::Node,
            P::PersistentVolume,
            P::PersistentVolumeClaim,
            P::Endpoints,
            P::EndpointSlice,
            P::Ingress,
            P::IngressClass,
            P::NetworkPolicy,
            P::Hpa,
            P::Pdb,
            P::StorageClass,
            P::PriorityClass,
            P::RuntimeClass,
            P::RoleBinding,
            P::ResourceQuota,
            P::Csr,
            P::Webhooks,
            P::ControllerRevision,
            P::PodTemplate,
            P::CreatedAt,
        ] {
            assert_eq!(
                columns(p).unwrap().len(),
                cells(p, &obj).unwrap().len(),
                "{p:?}"
            );
        }
        let svc = cells(P::Service, &obj).unwrap();
        assert_eq!(
            svc[1..5],
            [
                json!("ClusterIP"),
                json!("10.0.0.1"),
                json!("<none>"),
                json!("80/TCP")
            ]
        );
        assert_eq!(
            selector(Some(
                &json!({"matchLabels": {"a": "b"}, "matchExpressions": [{"key": "t", "operator": "In", "values": ["x", "y"]}]})
            )),
            "a=b,t in (x,y)"
        );
    }
}
