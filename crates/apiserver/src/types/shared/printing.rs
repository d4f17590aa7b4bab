//! Table helpers the built-in kinds' printers share (kube-apiserver's printers: selectors,
//! ages, container lists, `<none>`), and the columns every kind without its own prints.

use serde_json::{json, Value};

pub(crate) use crate::object;

pub(crate) fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}
pub(crate) fn i(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}
pub(crate) fn or_none(x: String) -> Value {
    if x.is_empty() {
        json!("<none>")
    } else {
        json!(x)
    }
}
pub(crate) fn arr<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}
pub(crate) fn age(obj: &Value) -> Value {
    json!(object::age(object::meta_str(obj, "creationTimestamp")))
}
pub(crate) fn duration_since(ts: &str) -> String {
    object::age(Some(ts))
}

/// `app=web,tier=db` from a LabelSelector (or a plain map selector).
pub(crate) fn selector(sel: Option<&Value>) -> String {
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

pub(crate) fn containers(template_spec: &Value) -> (String, String) {
    let cs = arr(template_spec, "/containers");
    let names: Vec<&str> = cs.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(c, "/image")).collect();
    (names.join(","), images.join(","))
}

/// A column as the printers declare it (NAME gets the `name` format).
pub(crate) fn col(name: &str, ty: &str, priority: i64) -> Value {
    json!({"name": name, "type": ty, "format": if name == "Name" { "name" } else { "" }, "description": "", "priority": priority})
}

/// An init container that keeps running beside the app containers (a sidecar).
fn restartable_init(c: Option<&Value>) -> bool {
    c.is_some_and(|c| s(c, "/restartPolicy") == "Always")
}

/// `reason`, else `Signal:N` / `ExitCode:N` of a terminated state (upstream's wording).
fn terminated_reason(t: &Value, prefix: &str) -> String {
    let reason = s(t, "/reason");
    if !reason.is_empty() {
        return format!("{prefix}{reason}");
    }
    match i(t, "/signal") {
        0 => format!("{prefix}ExitCode:{}", i(t, "/exitCode")),
        sig => format!("{prefix}Signal:{sig}"),
    }
}

fn condition_true(o: &Value, ty: &str) -> bool {
    arr(o, "/status/conditions")
        .iter()
        .find(|c| s(c, "/type") == ty)
        .is_some_and(|c| s(c, "/status") == "True")
}

/// The later of two RFC 3339 times (both as the API writes them, so they compare as text).
fn later<'a>(a: &'a str, b: &'a str) -> &'a str {
    if b > a {
        b
    } else {
        a
    }
}

/// kube-apiserver's printPod: READY counts ready running containers (and started sidecars),
/// STATUS is the phase refined by init progress (`Init:1/2`, `Init:CrashLoopBackOff`), the
/// last container's waiting/terminated reason, `NotReady`/`Running` for a pod with some
/// containers done and some running, `Terminating`/`Unknown` when deleted; RESTARTS says how
/// long ago the last one was.
pub(crate) fn pod_cells(o: &Value) -> Vec<Value> {
    let init_specs = arr(o, "/spec/initContainers");
    let by_name = |name: &str| init_specs.iter().find(|c| s(c, "/name") == name);
    let total = arr(o, "/spec/containers").len()
        + init_specs
            .iter()
            .filter(|c| restartable_init(Some(c)))
            .count();
    let phase = s(o, "/status/phase");
    let mut reason = match s(o, "/status/reason") {
        "" => phase.to_string(),
        r => r.to_string(),
    };
    if arr(o, "/status/conditions")
        .iter()
        .any(|c| s(c, "/type") == "PodScheduled" && s(c, "/reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".into();
    }
    let mut ready = 0;
    let mut restarts: i64 = 0;
    let mut sidecar_restarts: i64 = 0;
    let mut last_restart = "";
    let mut last_sidecar_restart = "";
    let mut initializing = false;
    let init_statuses = arr(o, "/status/initContainerStatuses");
    for (idx, c) in init_statuses.iter().enumerate() {
        let sidecar = restartable_init(by_name(s(c, "/name")));
        let finished = s(c, "/lastState/terminated/finishedAt");
        restarts += i(c, "/restartCount");
        last_restart = later(last_restart, finished);
        if sidecar {
            sidecar_restarts += i(c, "/restartCount");
            last_sidecar_restart = later(last_sidecar_restart, finished);
        }
        let terminated = c.pointer("/state/terminated");
        let waiting = s(c, "/state/waiting/reason");
        if terminated.is_some_and(|t| i(t, "/exitCode") == 0) {
            continue;
        }
        if sidecar && c.get("started") == Some(&json!(true)) {
            if c.get("ready") == Some(&json!(true)) {
                ready += 1;
            }
            continue;
        }
        reason = match terminated {
            Some(t) => terminated_reason(t, "Init:"),
            None if !waiting.is_empty() && waiting != "PodInitializing" => {
                format!("Init:{waiting}")
            }
            None => format!("Init:{idx}/{}", init_specs.len()),
        };
        initializing = true;
        break;
    }
    if !initializing || condition_true(o, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for c in arr(o, "/status/containerStatuses").iter().rev() {
            restarts += i(c, "/restartCount");
            last_restart = later(last_restart, s(c, "/lastState/terminated/finishedAt"));
            let waiting = s(c, "/state/waiting/reason");
            if !waiting.is_empty() {
                reason = waiting.to_string();
            } else if let Some(t) = c.pointer("/state/terminated") {
                reason = terminated_reason(t, "");
            } else if c.get("ready") == Some(&json!(true)) && c.pointer("/state/running").is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if condition_true(o, "Ready") {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        if s(o, "/status/reason") == "NodeLost" {
            reason = "Unknown".into();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".into();
        }
    }
    if reason.is_empty() {
        // No phase yet (a pod as first written): upstream prints the empty phase; kubectl
        // users know it as Pending.
        reason = "Pending".into();
    }
    let restarts_cell = if restarts != 0 && !last_restart.is_empty() {
        format!("{restarts} ({} ago)", duration_since(last_restart))
    } else {
        restarts.to_string()
    };
    let gates = arr(o, "/spec/readinessGates");
    let gates_cell = if gates.is_empty() {
        json!("<none>")
    } else {
        let met = gates
            .iter()
            .filter(|g| condition_true(o, s(g, "/conditionType")))
            .count();
        json!(format!("{met}/{}", gates.len()))
    };
    let pod_ip = arr(o, "/status/podIPs")
        .first()
        .map(|p| s(p, "/ip"))
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| s(o, "/status/podIP"));
    vec![
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        age(o),
        or_none(pod_ip.to_string()),
        or_none(s(o, "/spec/nodeName").to_string()),
        or_none(s(o, "/status/nominatedNodeName").to_string()),
        gates_cell,
    ]
}

pub(crate) fn service_cells(o: &Value) -> Vec<Value> {
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
    // kube-apiserver's getServiceExternalIP (tables are always built wide there, so the
    // load balancer list is not clipped): spec.externalIPs for ClusterIP and NodePort; for a
    // LoadBalancer its ingress addresses (sorted, once each) then spec.externalIPs.
    let spec_ips: Vec<&str> = arr(o, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let ext = match ty {
        "ClusterIP" | "NodePort" | "" if spec_ips.is_empty() => "<none>".to_string(),
        "ClusterIP" | "NodePort" | "" => spec_ips.join(","),
        "LoadBalancer" => {
            let lb: std::collections::BTreeSet<&str> = arr(o, "/status/loadBalancer/ingress")
                .iter()
                .filter_map(|x| {
                    [s(x, "/ip"), s(x, "/hostname")]
                        .into_iter()
                        .find(|v| !v.is_empty())
                })
                .collect();
            let all: Vec<&str> = lb.into_iter().chain(spec_ips).collect();
            if all.is_empty() {
                "<pending>".to_string()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => s(o, "/spec/externalName").to_string(),
        _ => "<unknown>".to_string(),
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

pub(crate) fn access_modes(modes: &[Value]) -> String {
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

/// A column with upstream's description (the columns kube-apiserver's default printers
/// and the core types' printers declare).
pub(crate) fn described_col(
    name: &str,
    ty: &str,
    format: &str,
    description: &str,
    priority: i64,
) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority})
}

/// How many entries the named maps of `obj` hold together.
pub(crate) fn count(obj: &Value, fields: &[&str]) -> i64 {
    fields
        .iter()
        .map(|f| {
            obj.get(*f)
                .and_then(Value::as_object)
                .map_or(0, |m| m.len() as i64)
        })
        .sum()
}

pub(crate) fn created_at_columns() -> Option<Vec<Value>> {
    Some(vec![col("Name", "string", 0), col("Created At", "date", 0)])
}

pub(crate) fn created_at_cells(o: &Value, out: &mut Vec<Value>) -> Option<()> {
    out.push(json!(object::meta_str(o, "creationTimestamp").unwrap_or("")));
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// READY, STATUS and RESTARTS of a pod with `status` (and `spec`).
    fn printed(spec: Value, status: Value, deleted: bool) -> (String, String, String) {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": spec, "status": status});
        if deleted {
            pod["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        let cells = pod_cells(&pod);
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        (text(&cells[0]), text(&cells[1]), text(&cells[2]))
    }

    #[test]
    fn pods_print_as_upstreams_print_pod() {
        let two = json!({"containers": [{"name": "a"}, {"name": "b"}]});
        let running = json!({"running": {}});
        let done = json!({"terminated": {"exitCode": 0, "reason": "Completed"}});
        // One container done beside a running one: NotReady, or Running once the pod is Ready.
        let status = |ready: &str| {
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": ready}],
                "containerStatuses": [{"name": "a", "state": done, "ready": false},
                                      {"name": "b", "state": running, "ready": true}]})
        };
        assert_eq!(printed(two.clone(), status("False"), false).1, "NotReady");
        assert_eq!(printed(two.clone(), status("True"), false).1, "Running");
        assert_eq!(printed(two.clone(), status("True"), false).0, "1/2");
        // A killed container without a reason: its signal; deleted: Terminating; lost: Unknown.
        let killed = json!({"phase": "Running", "containerStatuses": [
            {"name": "a", "state": {"terminated": {"exitCode": 137, "signal": 9}}}]});
        assert_eq!(printed(two.clone(), killed.clone(), false).1, "Signal:9");
        assert_eq!(printed(two.clone(), killed, true).1, "Terminating");
        let lost = json!({"phase": "Running", "reason": "NodeLost"});
        assert_eq!(printed(two.clone(), lost, true).1, "Unknown");
        // Init progress, failures and back-off; a started sidecar counts as a container.
        let inits = json!({"initContainers": [{"name": "i1"}, {"name": "side", "restartPolicy": "Always"},
            {"name": "i2"}], "containers": [{"name": "a"}]});
        let init_status = |second: Value| {
            json!({"phase": "Pending", "initContainerStatuses": [
                {"name": "i1", "state": done},
                {"name": "side", "state": running, "started": true, "ready": true},
                second]})
        };
        let (ready, reason, _) = printed(
            inits.clone(),
            init_status(json!({"name": "i2", "state": running})),
            false,
        );
        assert_eq!((ready.as_str(), reason.as_str()), ("1/2", "Init:2/3"));
        let failed = json!({"name": "i2", "state": {"terminated": {"exitCode": 2}}});
        assert_eq!(
            printed(inits.clone(), init_status(failed), false).1,
            "Init:ExitCode:2"
        );
        let backoff = json!({"name": "i2", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "restartCount": 3, "lastState": {"terminated": {"finishedAt": "2026-01-01T00:00:00Z"}}});
        let (_, reason, restarts) = printed(inits, init_status(backoff), false);
        assert_eq!(reason, "Init:CrashLoopBackOff");
        assert!(
            restarts.starts_with("3 (") && restarts.ends_with(" ago)"),
            "{restarts}"
        );
        // Scheduling gates win over the phase.
        let gated = json!({"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]});
        assert_eq!(printed(two.clone(), gated, false).1, "SchedulingGated");
        // A LoadBalancer lists its ingress (sorted, once) then spec.externalIPs; a NodePort
        // only spec.externalIPs.
        let svc = |ty: &str| {
            json!({"metadata": {"name": "s"}, "spec": {"type": ty, "externalIPs": ["192.0.2.9"]},
                "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.2"}, {"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]}}})
        };
        assert_eq!(
            service_cells(&svc("LoadBalancer"))[2],
            json!("10.0.0.1,10.0.0.2,192.0.2.9")
        );
        assert_eq!(service_cells(&svc("NodePort"))[2], json!("192.0.2.9"));
        let pending = json!({"metadata": {"name": "s"}, "spec": {"type": "LoadBalancer"}});
        assert_eq!(service_cells(&pending)[2], json!("<pending>"));
    }

    #[test]
    fn every_printer_has_as_many_cells_as_columns() {
        let obj = json!({"metadata": {"name": "x", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"selector": {"matchLabels": {"app": "x"}}, "ports": [{"port": 80, "protocol": "TCP"}], "type": "ClusterIP", "clusterIP": "10.0.0.1",
                     "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let mut printed = 0;
        for rt in crate::types::builtin::builtin() {
            let Some(cols) = rt.strategy.columns() else {
                continue;
            };
            let cells = rt
                .strategy
                .cells(&obj)
                .expect("cells for every kind with columns");
            assert_eq!(cols.len(), cells.len(), "{}", rt.kind);
            printed += 1;
            if rt.kind == "Service" {
                assert_eq!(
                    cells[1..5],
                    [
                        json!("ClusterIP"),
                        json!("10.0.0.1"),
                        json!("<none>"),
                        json!("80/TCP")
                    ]
                );
            }
        }
        assert!(
            printed >= 35,
            "only {printed} kinds print their own columns"
        );
        assert_eq!(
            selector(Some(
                &json!({"matchLabels": {"a": "b"}, "matchExpressions": [{"key": "t", "operator": "In", "values": ["x", "y"]}]})
            )),
            "a=b,t in (x,y)"
        );
    }
}
