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

pub(crate) fn pod_cells(o: &Value) -> Vec<Value> {
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
