//! The Pod Security Standards' checks over a pod's metadata and spec (JSON), each as
//! upstream's k8s.io/pod-security-admission words it: a reason and a detail per failure.

use std::collections::BTreeSet;

use serde_json::Value;

/// One failed check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub reason: String,
    pub detail: String,
}

fn found(reason: impl Into<String>, detail: impl Into<String>) -> Option<Finding> {
    Some(Finding {
        reason: reason.into(),
        detail: detail.into(),
    })
}

/// The pod under check: its metadata and spec, and the policy version's minor number.
pub struct PodView<'a> {
    pub meta: &'a Value,
    pub spec: &'a Value,
    pub minor: u32,
}

impl PodView<'_> {
    /// Init containers, containers, then ephemeral containers, as upstream visits them.
    fn containers(&self) -> impl Iterator<Item = &Value> {
        ["initContainers", "containers", "ephemeralContainers"]
            .into_iter()
            .flat_map(|k| {
                self.spec
                    .get(k)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
    }

    fn pod_sc(&self, field: &str) -> Option<&Value> {
        self.spec.get("securityContext").and_then(|s| s.get(field))
    }

    fn windows(&self) -> bool {
        self.spec.pointer("/os/name").and_then(Value::as_str) == Some("windows")
    }
}

fn name(c: &Value) -> String {
    c.get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn sc<'a>(c: &'a Value, field: &str) -> Option<&'a Value> {
    c.get("securityContext").and_then(|s| s.get(field))
}

fn join_quote<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(|s| format!("\"{}\"", s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn plural<'a>(singular: &'a str, plural: &'a str, n: usize) -> &'a str {
    if n == 1 {
        singular
    } else {
        plural
    }
}

/// `container "a"` / `containers "a", "b"`.
fn containers_named(names: &[String]) -> String {
    format!(
        "{} {}",
        plural("container", "containers", names.len()),
        join_quote(names)
    )
}

fn strs(v: Option<&Value>) -> impl Iterator<Item = &str> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

pub fn host_namespaces(p: &PodView<'_>) -> Option<Finding> {
    let set: Vec<&str> = [
        ("hostNetwork", "hostNetwork=true"),
        ("hostPID", "hostPID=true"),
        ("hostIPC", "hostIPC=true"),
    ]
    .into_iter()
    .filter(|(f, _)| p.spec.get(*f) == Some(&Value::Bool(true)))
    .map(|(_, s)| s)
    .collect();
    (!set.is_empty())
        .then(|| found("host namespaces", set.join(", ")))
        .flatten()
}

pub fn privileged(p: &PodView<'_>) -> Option<Finding> {
    let bad: Vec<String> = p
        .containers()
        .filter(|c| sc(c, "privileged") == Some(&Value::Bool(true)))
        .map(name)
        .collect();
    (!bad.is_empty())
        .then(|| {
            found(
                "privileged",
                format!(
                    "{} must not set securityContext.privileged=true",
                    containers_named(&bad)
                ),
            )
        })
        .flatten()
}

const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

fn added(c: &Value) -> impl Iterator<Item = &str> {
    strs(c.pointer("/securityContext/capabilities/add"))
}

pub fn capabilities_baseline(p: &PodView<'_>) -> Option<Finding> {
    let mut caps = BTreeSet::new();
    let mut bad = Vec::new();
    for c in p.containers() {
        let extra: Vec<&str> = added(c)
            .filter(|a| !BASELINE_CAPABILITIES.contains(a))
            .collect();
        if !extra.is_empty() {
            bad.push(name(c));
            caps.extend(extra.into_iter().map(String::from));
        }
    }
    let caps: Vec<String> = caps.into_iter().collect();
    (!bad.is_empty())
        .then(|| {
            found(
                "non-default capabilities",
                format!(
                    "{} must not include {} in securityContext.capabilities.add",
                    containers_named(&bad),
                    join_quote(&caps)
                ),
            )
        })
        .flatten()
}

fn volumes<'a>(p: &PodView<'a>) -> impl Iterator<Item = &'a Value> {
    p.spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

pub fn host_path_volumes(p: &PodView<'_>) -> Option<Finding> {
    let bad: Vec<String> = volumes(p)
        .filter(|v| v.get("hostPath").is_some_and(|h| !h.is_null()))
        .map(name)
        .collect();
    (!bad.is_empty())
        .then(|| {
            found(
                "hostPath volumes",
                format!(
                    "{} {}",
                    plural("volume", "volumes", bad.len()),
                    join_quote(&bad)
                ),
            )
        })
        .flatten()
}

pub fn host_ports(p: &PodView<'_>) -> Option<Finding> {
    let mut ports = BTreeSet::new();
    let mut bad = Vec::new();
    for c in p.containers() {
        let used: Vec<String> = c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|port| port.get("hostPort").and_then(Value::as_i64))
            .filter(|h| *h != 0)
            .map(|h| h.to_string())
            .collect();
        if !used.is_empty() {
            bad.push(name(c));
            ports.extend(used);
        }
    }
    // Sorted as strings, as upstream's string set lists them.
    let ports: Vec<String> = ports.into_iter().collect();
    (!bad.is_empty())
        .then(|| {
            found(
                "hostPort",
                format!(
                    "{} {} {} {}",
                    containers_named(&bad),
                    plural("uses", "use", bad.len()),
                    plural("hostPort", "hostPorts", ports.len()),
                    ports.join(", ")
                ),
            )
        })
        .flatten()
}

const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

pub fn app_armor(p: &PodView<'_>) -> Option<Finding> {
    let allowed_type = |v: Option<&Value>| {
        v.and_then(|a| a.get("type"))
            .and_then(Value::as_str)
            .is_some_and(|t| t == "RuntimeDefault" || t == "Localhost")
    };
    let bad_type = |v: Option<&Value>| -> Option<String> {
        let v = v.filter(|v| v.is_object())?;
        (!allowed_type(Some(v))).then(|| {
            v.get("type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        })
    };
    let mut setters = Vec::new();
    let mut values = BTreeSet::new();
    if let Some(t) = bad_type(p.pod_sc("appArmorProfile")) {
        setters.push("pod".to_string());
        values.insert(t);
    }
    let mut bad = Vec::new();
    for c in p.containers() {
        if let Some(t) = bad_type(sc(c, "appArmorProfile")) {
            bad.push(name(c));
            values.insert(t);
        }
    }
    if !bad.is_empty() {
        setters.push(containers_named(&bad));
    }
    let mut annotations: Vec<String> = p
        .meta
        .get("annotations")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(APPARMOR_ANNOTATION_PREFIX))
        .filter_map(|(k, v)| {
            let v = v.as_str().unwrap_or("");
            let ok = v.is_empty() || v == "runtime/default" || v.starts_with("localhost/");
            (!ok).then(|| format!("{k}={v:?}"))
        })
        .collect();
    let mut values: Vec<String> = values.into_iter().collect();
    if !annotations.is_empty() {
        annotations.sort();
        setters.push(plural("annotation", "annotations", annotations.len()).to_string());
        values.extend(annotations);
    }
    (!setters.is_empty())
        .then(|| {
            found(
                plural(
                    "forbidden AppArmor profile",
                    "forbidden AppArmor profiles",
                    values.len(),
                ),
                format!(
                    "{} must not set AppArmor profile type to {}",
                    setters.join(" and "),
                    join_quote(&values)
                ),
            )
        })
        .flatten()
}

pub fn se_linux_options(p: &PodView<'_>) -> Option<Finding> {
    let mut allowed = vec!["", "container_t", "container_init_t", "container_kvm_t"];
    if p.minor >= 31 {
        allowed.push("container_engine_t");
    }
    let mut bad_types = BTreeSet::new();
    let (mut set_user, mut set_role) = (false, false);
    let mut check = |o: Option<&Value>| -> bool {
        let Some(o) = o.filter(|o| o.is_object()) else {
            return true;
        };
        let field = |f: &str| o.get(f).and_then(Value::as_str).unwrap_or("");
        let mut ok = true;
        if !allowed.contains(&field("type")) {
            ok = false;
            bad_types.insert(field("type").to_string());
        }
        if !field("user").is_empty() {
            ok = false;
            set_user = true;
        }
        if !field("role").is_empty() {
            ok = false;
            set_role = true;
        }
        ok
    };
    let mut setters = Vec::new();
    if !check(p.pod_sc("seLinuxOptions")) {
        setters.push("pod".to_string());
    }
    let bad: Vec<String> = p
        .containers()
        .filter(|c| !check(sc(c, "seLinuxOptions")))
        .map(name)
        .collect();
    if !bad.is_empty() {
        setters.push(containers_named(&bad));
    }
    if setters.is_empty() {
        return None;
    }
    let mut data = Vec::new();
    if !bad_types.is_empty() {
        let types: Vec<String> = bad_types.into_iter().collect();
        data.push(format!(
            "{} {}",
            plural("type", "types", types.len()),
            join_quote(&types)
        ));
    }
    if set_user {
        data.push("user may not be set".to_string());
    }
    if set_role {
        data.push("role may not be set".to_string());
    }
    found(
        "seLinuxOptions",
        format!(
            "{} set forbidden securityContext.seLinuxOptions: {}",
            setters.join(" and "),
            data.join("; ")
        ),
    )
}

pub fn proc_mount(p: &PodView<'_>) -> Option<Finding> {
    let mut types = BTreeSet::new();
    let mut bad = Vec::new();
    for c in p.containers() {
        if let Some(m) = sc(c, "procMount").and_then(Value::as_str) {
            if m != "Default" {
                bad.push(name(c));
                types.insert(m.to_string());
            }
        }
    }
    let types: Vec<String> = types.into_iter().collect();
    (!bad.is_empty())
        .then(|| {
            found(
                "procMount",
                format!(
                    "{} must not set securityContext.procMount to {}",
                    containers_named(&bad),
                    join_quote(&types)
                ),
            )
        })
        .flatten()
}

fn seccomp_type(v: Option<&Value>) -> Option<&str> {
    v.filter(|v| v.is_object())
        .map(|v| v.get("type").and_then(Value::as_str).unwrap_or(""))
}

fn valid_seccomp(t: &str) -> bool {
    t == "RuntimeDefault" || t == "Localhost"
}

const SECCOMP_POD_ANNOTATION: &str = "seccomp.security.alpha.kubernetes.io/pod";
const SECCOMP_CONTAINER_ANNOTATION: &str = "container.seccomp.security.alpha.kubernetes.io/";

/// Before 1.19 the profile was in annotations; from 1.19 on the fields are checked.
pub fn seccomp_baseline(p: &PodView<'_>) -> Option<Finding> {
    if p.minor < 19 {
        let ann = p.meta.get("annotations");
        let get = |k: &str| ann.and_then(|a| a.get(k)).and_then(Value::as_str);
        let ok = |v: &str| {
            v == "runtime/default" || v == "docker/default" || v.starts_with("localhost/")
        };
        let mut bad = BTreeSet::new();
        if let Some(v) = get(SECCOMP_POD_ANNOTATION).filter(|v| !ok(v)) {
            bad.insert(format!("{SECCOMP_POD_ANNOTATION}={v:?}"));
        }
        for c in p.containers() {
            let k = format!("{SECCOMP_CONTAINER_ANNOTATION}{}", name(c));
            if let Some(v) = get(&k).filter(|v| !ok(v)) {
                bad.insert(format!("{k}={v:?}"));
            }
        }
        let bad: Vec<String> = bad.into_iter().collect();
        return (!bad.is_empty())
            .then(|| {
                found(
                    "seccompProfile",
                    format!(
                        "forbidden {} {}",
                        plural("annotation", "annotations", bad.len()),
                        bad.join(", ")
                    ),
                )
            })
            .flatten();
    }
    let mut setters = Vec::new();
    let mut values = BTreeSet::new();
    if let Some(t) = seccomp_type(p.pod_sc("seccompProfile")).filter(|t| !valid_seccomp(t)) {
        setters.push("pod".to_string());
        values.insert(t.to_string());
    }
    let mut bad = Vec::new();
    for c in p.containers() {
        if let Some(t) = seccomp_type(sc(c, "seccompProfile")).filter(|t| !valid_seccomp(t)) {
            bad.push(name(c));
            values.insert(t.to_string());
        }
    }
    if !bad.is_empty() {
        setters.push(containers_named(&bad));
    }
    let values: Vec<String> = values.into_iter().collect();
    (!setters.is_empty())
        .then(|| {
            found(
                "seccompProfile",
                format!(
                    "{} must not set securityContext.seccompProfile.type to {}",
                    setters.join(" and "),
                    join_quote(&values)
                ),
            )
        })
        .flatten()
}

fn safe_sysctl(name: &str, minor: u32) -> bool {
    const V1_0: [&str; 5] = [
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_unprivileged_port_start",
    ];
    const V1_29: [&str; 4] = [
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    ];
    V1_0.contains(&name)
        || (minor >= 27 && name == "net.ipv4.ip_local_reserved_ports")
        || (minor >= 29 && V1_29.contains(&name))
        || (minor >= 32 && (name == "net.ipv4.tcp_rmem" || name == "net.ipv4.tcp_wmem"))
}

pub fn sysctls(p: &PodView<'_>) -> Option<Finding> {
    let bad: Vec<&str> = p
        .pod_sc("sysctls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("name").and_then(Value::as_str))
        .filter(|n| !safe_sysctl(n, p.minor))
        .collect();
    (!bad.is_empty())
        .then(|| found("forbidden sysctls", bad.join(", ")))
        .flatten()
}

pub fn windows_host_process(p: &PodView<'_>) -> Option<Finding> {
    let host = |v: Option<&Value>| v.and_then(|w| w.get("hostProcess")) == Some(&Value::Bool(true));
    let mut setters = Vec::new();
    if host(p.pod_sc("windowsOptions")) {
        setters.push("pod".to_string());
    }
    let bad: Vec<String> = p
        .containers()
        .filter(|c| host(sc(c, "windowsOptions")))
        .map(name)
        .collect();
    if !bad.is_empty() {
        setters.push(containers_named(&bad));
    }
    (!setters.is_empty())
        .then(|| {
            found(
                "hostProcess",
                format!(
                    "{} must not set securityContext.windowsOptions.hostProcess=true",
                    setters.join(" and ")
                ),
            )
        })
        .flatten()
}

const RESTRICTED_VOLUME_SOURCES: [&str; 9] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "image",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// The volume source fields upstream names, in its order (the first present names the type).
const NAMED_VOLUME_SOURCES: [&str; 21] = [
    "hostPath",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "nfs",
    "iscsi",
    "glusterfs",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "fc",
    "azureFile",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "portworxVolume",
    "scaleIO",
    "storageos",
];

pub fn restricted_volumes(p: &PodView<'_>) -> Option<Finding> {
    let present = |v: &Value, f: &str| v.get(f).is_some_and(|x| !x.is_null());
    let mut types = BTreeSet::new();
    let mut bad = Vec::new();
    for v in volumes(p) {
        if RESTRICTED_VOLUME_SOURCES.iter().any(|f| present(v, f)) {
            continue;
        }
        bad.push(name(v));
        let t = NAMED_VOLUME_SOURCES
            .iter()
            .find(|f| present(v, f))
            .copied()
            .unwrap_or("unknown");
        types.insert(t.to_string());
    }
    let types: Vec<String> = types.into_iter().collect();
    (!bad.is_empty())
        .then(|| {
            found(
                "restricted volume types",
                format!(
                    "{} {} {} {} {}",
                    plural("volume", "volumes", bad.len()),
                    join_quote(&bad),
                    plural("uses", "use", bad.len()),
                    plural(
                        "restricted volume type",
                        "restricted volume types",
                        types.len()
                    ),
                    join_quote(&types)
                ),
            )
        })
        .flatten()
}

pub fn allow_privilege_escalation(p: &PodView<'_>) -> Option<Finding> {
    if p.minor >= 25 && p.windows() {
        return None;
    }
    let bad: Vec<String> = p
        .containers()
        .filter(|c| sc(c, "allowPrivilegeEscalation") != Some(&Value::Bool(false)))
        .map(name)
        .collect();
    (!bad.is_empty())
        .then(|| {
            found(
                "allowPrivilegeEscalation != false",
                format!(
                    "{} must set securityContext.allowPrivilegeEscalation=false",
                    containers_named(&bad)
                ),
            )
        })
        .flatten()
}

pub fn run_as_non_root(p: &PodView<'_>) -> Option<Finding> {
    let mut setters = Vec::new();
    let pod = p.pod_sc("runAsNonRoot").and_then(Value::as_bool);
    if pod == Some(false) {
        setters.push("pod".to_string());
    }
    let (mut explicit, mut implicit) = (Vec::new(), Vec::new());
    for c in p.containers() {
        match sc(c, "runAsNonRoot").and_then(Value::as_bool) {
            Some(false) => explicit.push(name(c)),
            Some(true) => {}
            None if pod != Some(true) => implicit.push(name(c)),
            None => {}
        }
    }
    if !explicit.is_empty() {
        setters.push(containers_named(&explicit));
    }
    if !setters.is_empty() {
        return found(
            "runAsNonRoot != true",
            format!(
                "{} must not set securityContext.runAsNonRoot=false",
                setters.join(" and ")
            ),
        );
    }
    (!implicit.is_empty())
        .then(|| {
            found(
                "runAsNonRoot != true",
                format!(
                    "pod or {} must set securityContext.runAsNonRoot=true",
                    containers_named(&implicit)
                ),
            )
        })
        .flatten()
}

pub fn run_as_user(p: &PodView<'_>) -> Option<Finding> {
    if p.minor < 23 {
        return None;
    }
    let root = |v: Option<&Value>| v.and_then(Value::as_i64) == Some(0);
    let mut setters = Vec::new();
    if root(p.pod_sc("runAsUser")) {
        setters.push("pod".to_string());
    }
    let bad: Vec<String> = p
        .containers()
        .filter(|c| root(sc(c, "runAsUser")))
        .map(name)
        .collect();
    if !bad.is_empty() {
        setters.push(containers_named(&bad));
    }
    (!setters.is_empty())
        .then(|| {
            found(
                "runAsUser=0",
                format!("{} must not set runAsUser=0", setters.join(" and ")),
            )
        })
        .flatten()
}

pub fn seccomp_restricted(p: &PodView<'_>) -> Option<Finding> {
    if p.minor >= 25 && p.windows() {
        return None;
    }
    let mut setters = Vec::new();
    let mut values = BTreeSet::new();
    let pod = seccomp_type(p.pod_sc("seccompProfile"));
    if let Some(t) = pod.filter(|t| !valid_seccomp(t)) {
        setters.push("pod".to_string());
        values.insert(t.to_string());
    }
    let pod_set = pod.is_some_and(valid_seccomp);
    let (mut explicit, mut implicit) = (Vec::new(), Vec::new());
    for c in p.containers() {
        match seccomp_type(sc(c, "seccompProfile")) {
            Some(t) if !valid_seccomp(t) => {
                explicit.push(name(c));
                values.insert(t.to_string());
            }
            Some(_) => {}
            None if !pod_set => implicit.push(name(c)),
            None => {}
        }
    }
    if !explicit.is_empty() {
        setters.push(containers_named(&explicit));
    }
    if !setters.is_empty() {
        let values: Vec<String> = values.into_iter().collect();
        return found(
            "seccompProfile",
            format!(
                "{} must not set securityContext.seccompProfile.type to {}",
                setters.join(" and "),
                join_quote(&values)
            ),
        );
    }
    (!implicit.is_empty())
        .then(|| {
            found(
                "seccompProfile",
                format!(
                    "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                    containers_named(&implicit)
                ),
            )
        })
        .flatten()
}

pub fn capabilities_restricted(p: &PodView<'_>) -> Option<Finding> {
    if p.minor >= 25 && p.windows() {
        return None;
    }
    let mut missing_drop = Vec::new();
    let mut adding = Vec::new();
    let mut caps = BTreeSet::new();
    for c in p.containers() {
        let Some(capabilities) = c
            .pointer("/securityContext/capabilities")
            .filter(|v| v.is_object())
        else {
            missing_drop.push(name(c));
            continue;
        };
        if !strs(capabilities.get("drop")).any(|d| d == "ALL") {
            missing_drop.push(name(c));
        }
        let extra: Vec<&str> = added(c).filter(|a| *a != "NET_BIND_SERVICE").collect();
        if !extra.is_empty() {
            adding.push(name(c));
            caps.extend(extra.into_iter().map(String::from));
        }
    }
    let mut details = Vec::new();
    if !missing_drop.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            containers_named(&missing_drop)
        ));
    }
    if !adding.is_empty() {
        let caps: Vec<String> = caps.into_iter().collect();
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_named(&adding),
            join_quote(&caps)
        ));
    }
    (!details.is_empty())
        .then(|| found("unrestricted capabilities", details.join("; ")))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(check: fn(&PodView<'_>) -> Option<Finding>, meta: Value, spec: Value) -> Option<String> {
        run_at(check, meta, spec, 33)
    }

    fn run_at(
        check: fn(&PodView<'_>) -> Option<Finding>,
        meta: Value,
        spec: Value,
        minor: u32,
    ) -> Option<String> {
        check(&PodView {
            meta: &meta,
            spec: &spec,
            minor,
        })
        .map(|f| format!("{} ({})", f.reason, f.detail))
    }

    fn c(name: &str, sc: Value) -> Value {
        json!({"name": name, "image": "busybox", "securityContext": sc})
    }

    #[test]
    fn host_namespaces() {
        let spec =
            json!({"hostNetwork": true, "hostIPC": true, "hostPID": false, "containers": []});
        assert_eq!(
            run(super::host_namespaces, json!({}), spec).unwrap(),
            "host namespaces (hostNetwork=true, hostIPC=true)"
        );
        assert_eq!(
            run(super::host_namespaces, json!({}), json!({"hostPID": false})),
            None
        );
    }

    #[test]
    fn privileged() {
        let spec = json!({"initContainers": [c("i", json!({"privileged": true}))], "containers": [c("a", json!({"privileged": true})), c("b", json!({"privileged": false}))]});
        assert_eq!(
            run(super::privileged, json!({}), spec).unwrap(),
            r#"privileged (containers "i", "a" must not set securityContext.privileged=true)"#
        );
    }

    #[test]
    fn capabilities_baseline() {
        let spec = json!({"containers": [c("a", json!({"capabilities": {"add": ["NET_ADMIN", "CHOWN", "SYS_ADMIN"]}})), c("b", json!({"capabilities": {"add": ["KILL"]}}))]});
        assert_eq!(
            run(super::capabilities_baseline, json!({}), spec).unwrap(),
            r#"non-default capabilities (container "a" must not include "NET_ADMIN", "SYS_ADMIN" in securityContext.capabilities.add)"#
        );
    }

    #[test]
    fn host_path_volumes() {
        let spec = json!({"volumes": [{"name": "h", "hostPath": {"path": "/"}}, {"name": "e", "emptyDir": {}}]});
        assert_eq!(
            run(super::host_path_volumes, json!({}), spec).unwrap(),
            r#"hostPath volumes (volume "h")"#
        );
    }

    #[test]
    fn host_ports() {
        let spec = json!({"containers": [
            {"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81}]},
            {"name": "b", "ports": [{"containerPort": 443, "hostPort": 443}]}]});
        assert_eq!(
            run(super::host_ports, json!({}), spec).unwrap(),
            r#"hostPort (containers "a", "b" use hostPorts 443, 8080)"#
        );
    }

    #[test]
    fn app_armor() {
        let meta = json!({"annotations": {"container.apparmor.security.beta.kubernetes.io/a": "unconfined", "container.apparmor.security.beta.kubernetes.io/b": "runtime/default"}});
        let spec = json!({"securityContext": {"appArmorProfile": {"type": "Unconfined"}}, "containers": [c("a", json!({"appArmorProfile": {"type": "Localhost", "localhostProfile": "p"}}))]});
        assert_eq!(
            run(super::app_armor, meta, spec).unwrap(),
            r#"forbidden AppArmor profiles (pod and annotation must not set AppArmor profile type to "Unconfined", "container.apparmor.security.beta.kubernetes.io/a="unconfined"")"#
        );
        assert_eq!(
            run(
                super::app_armor,
                json!({}),
                json!({"containers": [c("a", json!({"appArmorProfile": {"type": "RuntimeDefault"}}))]})
            ),
            None
        );
    }

    #[test]
    fn se_linux_options() {
        let spec = json!({"securityContext": {"seLinuxOptions": {"type": "spc_t"}}, "containers": [c("a", json!({"seLinuxOptions": {"type": "container_t", "user": "root"}}))]});
        assert_eq!(
            run(super::se_linux_options, json!({}), spec).unwrap(),
            r#"seLinuxOptions (pod and container "a" set forbidden securityContext.seLinuxOptions: type "spc_t"; user may not be set)"#
        );
        let engine = json!({"containers": [c("a", json!({"seLinuxOptions": {"type": "container_engine_t"}}))]});
        assert_eq!(
            run(super::se_linux_options, json!({}), engine.clone()),
            None
        );
        assert!(run_at(super::se_linux_options, json!({}), engine, 30).is_some());
    }

    #[test]
    fn proc_mount() {
        let spec = json!({"containers": [c("a", json!({"procMount": "Unmasked"})), c("b", json!({"procMount": "Default"}))]});
        assert_eq!(
            run(super::proc_mount, json!({}), spec).unwrap(),
            r#"procMount (container "a" must not set securityContext.procMount to "Unmasked")"#
        );
    }

    #[test]
    fn seccomp_baseline() {
        let spec = json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}, "containers": [c("a", json!({}))]});
        assert_eq!(
            run(super::seccomp_baseline, json!({}), spec).unwrap(),
            r#"seccompProfile (pod must not set securityContext.seccompProfile.type to "Unconfined")"#
        );
        let old =
            json!({"annotations": {"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}});
        assert_eq!(
            run_at(super::seccomp_baseline, old, json!({}), 18).unwrap(),
            r#"seccompProfile (forbidden annotation seccomp.security.alpha.kubernetes.io/pod="unconfined")"#
        );
    }

    #[test]
    fn sysctls() {
        let spec = json!({"securityContext": {"sysctls": [{"name": "kernel.shm_rmid_forced", "value": "1"}, {"name": "net.core.somaxconn", "value": "1"}, {"name": "net.ipv4.tcp_rmem", "value": "1"}]}});
        assert_eq!(
            run(super::sysctls, json!({}), spec.clone()).unwrap(),
            "forbidden sysctls (net.core.somaxconn)"
        );
        assert_eq!(
            run_at(super::sysctls, json!({}), spec, 31).unwrap(),
            "forbidden sysctls (net.core.somaxconn, net.ipv4.tcp_rmem)"
        );
    }

    #[test]
    fn windows_host_process() {
        let spec = json!({"securityContext": {"windowsOptions": {"hostProcess": true}}, "containers": [c("a", json!({"windowsOptions": {"hostProcess": true}}))]});
        assert_eq!(
            run(super::windows_host_process, json!({}), spec).unwrap(),
            r#"hostProcess (pod and container "a" must not set securityContext.windowsOptions.hostProcess=true)"#
        );
    }

    #[test]
    fn restricted_volumes() {
        let spec = json!({"volumes": [{"name": "h", "hostPath": {"path": "/"}}, {"name": "n", "nfs": {"server": "s", "path": "/"}}, {"name": "s", "secret": {"secretName": "x"}}]});
        assert_eq!(
            run(super::restricted_volumes, json!({}), spec).unwrap(),
            r#"restricted volume types (volumes "h", "n" use restricted volume types "hostPath", "nfs")"#
        );
    }

    #[test]
    fn allow_privilege_escalation() {
        let spec = json!({"containers": [c("a", json!({"allowPrivilegeEscalation": true})), c("b", json!({"allowPrivilegeEscalation": false})), json!({"name": "d"})]});
        assert_eq!(
            run(super::allow_privilege_escalation, json!({}), spec).unwrap(),
            r#"allowPrivilegeEscalation != false (containers "a", "d" must set securityContext.allowPrivilegeEscalation=false)"#
        );
        let windows = json!({"os": {"name": "windows"}, "containers": [json!({"name": "a"})]});
        assert_eq!(
            run(super::allow_privilege_escalation, json!({}), windows),
            None
        );
    }

    #[test]
    fn run_as_non_root() {
        let explicit = json!({"securityContext": {"runAsNonRoot": false}, "containers": [c("a", json!({"runAsNonRoot": false}))]});
        assert_eq!(
            run(super::run_as_non_root, json!({}), explicit).unwrap(),
            r#"runAsNonRoot != true (pod and container "a" must not set securityContext.runAsNonRoot=false)"#
        );
        let implicit = json!({"containers": [json!({"name": "a"})]});
        assert_eq!(
            run(super::run_as_non_root, json!({}), implicit).unwrap(),
            r#"runAsNonRoot != true (pod or container "a" must set securityContext.runAsNonRoot=true)"#
        );
        let pod = json!({"securityContext": {"runAsNonRoot": true}, "containers": [json!({"name": "a"})]});
        assert_eq!(run(super::run_as_non_root, json!({}), pod), None);
    }

    #[test]
    fn run_as_user() {
        let spec = json!({"securityContext": {"runAsUser": 0}, "containers": [c("a", json!({"runAsUser": 0})), c("b", json!({"runAsUser": 1000}))]});
        assert_eq!(
            run(super::run_as_user, json!({}), spec.clone()).unwrap(),
            r#"runAsUser=0 (pod and container "a" must not set runAsUser=0)"#
        );
        assert_eq!(run_at(super::run_as_user, json!({}), spec, 22), None);
    }

    #[test]
    fn seccomp_restricted() {
        let implicit = json!({"containers": [json!({"name": "a"})]});
        assert_eq!(
            run(super::seccomp_restricted, json!({}), implicit).unwrap(),
            r#"seccompProfile (pod or container "a" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")"#
        );
        let explicit =
            json!({"containers": [c("a", json!({"seccompProfile": {"type": "Unconfined"}}))]});
        assert_eq!(
            run(super::seccomp_restricted, json!({}), explicit).unwrap(),
            r#"seccompProfile (container "a" must not set securityContext.seccompProfile.type to "Unconfined")"#
        );
        let pod = json!({"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}, "containers": [json!({"name": "a"})]});
        assert_eq!(run(super::seccomp_restricted, json!({}), pod), None);
    }

    #[test]
    fn capabilities_restricted() {
        let spec = json!({"containers": [json!({"name": "a"}), c("b", json!({"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE", "NET_RAW"]}}))]});
        assert_eq!(
            run(super::capabilities_restricted, json!({}), spec).unwrap(),
            r#"unrestricted capabilities (container "a" must set securityContext.capabilities.drop=["ALL"]; container "b" must not include "NET_RAW" in securityContext.capabilities.add)"#
        );
    }
}
