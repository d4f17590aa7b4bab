//! The OCI runtime config (`config.json`) libcontainer runs a container from: containerd's
//! defaults (mounts, capabilities, masked and read-only paths) plus the pod's sandbox
//! namespaces, the container's cgroup and resources, identity and mounts.

use serde_json::{json, Value};

use super::{ContainerSpec, MountKind, SandboxInfo};

/// containerd's default capability set.
pub const DEFAULT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Every capability, in kernel numbering order (index = capability number): privileged
/// containers and `add: [ALL]` get those of them the runtime itself holds.
pub const ALL_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The capability bounding set this process runs with (a container can hold no capability
/// outside it: some sandboxes drop e.g. SYS_RESOURCE).
pub fn current_bounding_set() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX)
}

/// The container's capability set: the default (or all, privileged) with `add`/`drop`
/// applied, within `bounding`; names as the kernel's (`CAP_…`).
pub fn capabilities(spec: &ContainerSpec, bounding: u64) -> Vec<String> {
    let norm = |c: &String| c.trim().trim_start_matches("CAP_").to_ascii_uppercase();
    let adds: Vec<String> = spec.security.cap_add.iter().map(norm).collect();
    let drops: Vec<String> = spec.security.cap_drop.iter().map(norm).collect();
    let mut caps: Vec<String> = if spec.security.privileged || adds.iter().any(|c| c == "ALL") {
        ALL_CAPS.iter().map(|c| c.to_string()).collect()
    } else {
        DEFAULT_CAPS.iter().map(|c| c.to_string()).collect()
    };
    if !spec.security.privileged {
        if drops.iter().any(|c| c == "ALL") {
            caps.clear();
        }
        caps.retain(|c| !drops.contains(c));
        for add in adds {
            if add != "ALL" && !caps.contains(&add) && ALL_CAPS.contains(&add.as_str()) {
                caps.push(add);
            }
        }
    }
    let held = |name: &str| {
        ALL_CAPS
            .iter()
            .position(|c| *c == name)
            .is_some_and(|bit| bounding & (1u64 << bit) != 0)
    };
    caps.into_iter()
        .filter(|c| held(c))
        .map(|c| format!("CAP_{c}"))
        .collect()
}

/// The config for `spec` in `sandbox`; `rootfs` is the mounted overlay, `cgroup_path` the
/// container's cgroup, `cgroup_ns` whether to give it a cgroup namespace (v2 hosts).
pub fn config(
    spec: &ContainerSpec,
    sandbox: &SandboxInfo,
    rootfs: &std::path::Path,
    cgroup_path: &str,
    cgroup_ns: bool,
) -> Value {
    let sec = &spec.security;
    let caps = capabilities(spec, current_bounding_set());
    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    let cwd = if spec.working_dir.is_empty() {
        "/".to_string()
    } else {
        spec.working_dir.clone()
    };

    let sys_options = if sec.privileged {
        json!(["nosuid", "noexec", "nodev"])
    } else {
        json!(["nosuid", "noexec", "nodev", "ro"])
    };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys_options}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
    ];
    // A container joining another's process namespace (`kubectl debug --target`) goes
    // without /sys/fs/cgroup: libcontainer's cgroup v1 mount looks its own pid (numbered in
    // the joined namespace) up in the host's /proc and fails when no host process has it.
    if spec.pid_ns.is_none() {
        mounts.insert(
            5,
            json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                   "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
        );
    }
    for m in &spec.mounts {
        let mount = match &m.kind {
            MountKind::Bind => {
                let mut options = vec!["rbind", "rprivate"];
                options.push(if m.read_only { "ro" } else { "rw" });
                json!({"destination": m.destination, "type": "bind",
                       "source": m.source, "options": options})
            }
            MountKind::Tmpfs { size_bytes } => {
                let mut options = vec![
                    "nosuid".to_string(),
                    "nodev".to_string(),
                    "mode=1777".to_string(),
                ];
                if let Some(size) = size_bytes {
                    options.push(format!("size={size}"));
                }
                if m.read_only {
                    options.push("ro".to_string());
                }
                json!({"destination": m.destination, "type": "tmpfs",
                       "source": "tmpfs", "options": options})
            }
        };
        mounts.push(mount);
    }

    let ns = |kind: &str, path: &Option<std::path::PathBuf>| match path {
        Some(p) => json!({"type": kind, "path": p}),
        None => json!({"type": kind}),
    };
    let pid_ns = spec.pid_ns.clone().or_else(|| sandbox.pid_ns.clone());
    let mut namespaces = vec![json!({"type": "mount"}), ns("pid", &pid_ns)];
    // No path for ipc/uts/network means the host's (hostNetwork pods): leave them out.
    for (kind, path) in [
        ("ipc", &sandbox.ipc_ns),
        ("uts", &sandbox.uts_ns),
        ("network", &sandbox.net_ns),
    ] {
        if path.is_some() {
            namespaces.push(ns(kind, path));
        }
    }
    if cgroup_ns {
        namespaces.push(json!({"type": "cgroup"}));
    }

    let mut resources = serde_json::Map::new();
    let devices = if sec.privileged {
        json!([{"allow": true, "access": "rwm"}])
    } else {
        json!([{"allow": false, "access": "rwm"}])
    };
    resources.insert("devices".into(), devices);
    let r = &spec.resources;
    let mut cpu = serde_json::Map::new();
    if let Some(shares) = r.cpu_shares {
        cpu.insert("shares".into(), json!(shares));
    }
    if let Some(quota) = r.cpu_quota.filter(|q| *q > 0) {
        cpu.insert("quota".into(), json!(quota));
        cpu.insert("period".into(), json!(r.cpu_period.unwrap_or(100_000)));
    }
    if !cpu.is_empty() {
        resources.insert("cpu".into(), Value::Object(cpu));
    }
    if let Some(limit) = r.memory_limit.filter(|m| *m > 0) {
        // Swap equal to the limit: no swap beyond it, as the kubelet configures.
        resources.insert("memory".into(), json!({"limit": limit, "swap": limit}));
    }
    if let Some(pids) = r.pids_limit.filter(|p| *p > 0) {
        resources.insert("pids".into(), json!({"limit": pids}));
    }

    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": cgroup_path,
        "resources": resources,
    });
    if !sec.privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
    }

    // No hostname here: the pod's UTS namespace (joined above) got it when the sandbox was
    // made, and a host-UTS container keeps the node's.
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": spec.tty,
            "user": {"uid": sec.uid, "gid": sec.gid, "additionalGids": sec.additional_gids},
            "args": spec.argv,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
            },
            "noNewPrivileges": sec.no_new_privileges,
        },
        "root": {"path": rootfs, "readonly": sec.read_only_rootfs},
        "mounts": mounts,
        "linux": linux,
        // A privileged container runs unconfined, as upstream's runtimes do.
        "annotations": if sec.seccomp_runtime_default && !sec.privileged {
            json!({super::seccomp::ANNOTATION: super::seccomp::RUNTIME_DEFAULT})
        } else {
            json!({})
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Security;

    fn spec(security: Security) -> ContainerSpec {
        ContainerSpec {
            id: "c".into(),
            pod_uid: "p".into(),
            container_name: "c".into(),
            attempt: 0,
            layers: vec![],
            argv: vec!["true".into()],
            env: vec![],
            working_dir: String::new(),
            security,
            mounts: vec![],
            resources: Default::default(),
            hostname: "h".into(),
            log_path: "/tmp/x.log".into(),
            labels: Default::default(),
            stdin: false,
            stdin_once: false,
            tty: false,
            pid_ns: None,
        }
    }

    #[test]
    fn capabilities_apply_add_and_drop_to_the_default_set() {
        let caps = capabilities(
            &spec(Security {
                cap_add: vec!["NET_ADMIN".into()],
                cap_drop: vec!["CAP_KILL".into(), "chown".into()],
                ..Default::default()
            }),
            u64::MAX,
        );
        assert!(caps.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!caps.contains(&"CAP_KILL".to_string()));
        assert!(!caps.contains(&"CAP_CHOWN".to_string()));
        assert_eq!(caps.len(), DEFAULT_CAPS.len() - 1);
        let none = capabilities(
            &spec(Security {
                cap_drop: vec!["ALL".into()],
                cap_add: vec!["NET_BIND_SERVICE".into()],
                ..Default::default()
            }),
            u64::MAX,
        );
        assert_eq!(none, vec!["CAP_NET_BIND_SERVICE".to_string()]);
        let privileged = spec(Security {
            privileged: true,
            ..Default::default()
        });
        assert_eq!(capabilities(&privileged, u64::MAX).len(), ALL_CAPS.len());
        // Without SYS_RESOURCE (bit 24) in the bounding set, nobody gets it.
        let bounded = capabilities(&privileged, !(1 << 24));
        assert_eq!(bounded.len(), ALL_CAPS.len() - 1);
        assert!(!bounded.contains(&"CAP_SYS_RESOURCE".to_string()));
    }
}
