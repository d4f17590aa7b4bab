//! A pod's container turned into what the runtime runs: argv from image and spec with
//! `$(VAR)` expansion, identity and privileges from `securityContext`, cgroup limits from
//! `resources` (upstream's conversions), mounts from `volumeMounts` plus the files the kubelet
//! manages (/etc/hosts, /etc/hostname, /etc/resolv.conf, the termination-message file).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};

use super::env::expand;
use super::quantity;
use super::volumes::Prepared;
use crate::images::ImageConfig;
use crate::runtime::{Mount, MountKind, QosClass, Resources, Security};

/// Why the container's configuration is unusable (`CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// `command`/`args` over the image's Entrypoint/Cmd, as Kubernetes documents it.
pub fn argv(
    container: &Container,
    image: &ImageConfig,
    env: &[String],
) -> Result<Vec<String>, ConfigError> {
    let known: BTreeMap<&str, &str> = env.iter().filter_map(|e| e.split_once('=')).collect();
    let exp = |v: &Vec<String>| v.iter().map(|s| expand(s, &known)).collect::<Vec<_>>();
    let argv = match (&container.command, &container.args) {
        (Some(cmd), Some(args)) => [exp(cmd), exp(args)].concat(),
        (Some(cmd), None) => exp(cmd),
        (None, Some(args)) => [image.entrypoint.clone(), exp(args)].concat(),
        (None, None) => [image.entrypoint.clone(), image.cmd.clone()].concat(),
    };
    if argv.is_empty() {
        return Err(ConfigError(
            "no command specified: the image has no Entrypoint or Cmd and the container no command"
                .into(),
        ));
    }
    Ok(argv)
}

/// The pod's QoS class, as upstream computes it.
pub fn qos_class(pod: &Pod) -> QosClass {
    let spec = match &pod.spec {
        Some(s) => s,
        None => return QosClass::BestEffort,
    };
    let all: Vec<&Container> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &all {
        let res = c.resources.as_ref();
        let req = res.and_then(|r| r.requests.as_ref());
        let lim = res.and_then(|r| r.limits.as_ref());
        for name in ["cpu", "memory"] {
            let r = req
                .and_then(|m| m.get(name))
                .or_else(|| lim.and_then(|m| m.get(name)));
            let l = lim.and_then(|m| m.get(name));
            if r.is_some() || l.is_some() {
                any = true;
            }
            match (r, l) {
                (Some(r), Some(l)) if quantity::parse(&r.0) == quantity::parse(&l.0) => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        QosClass::BestEffort
    } else if guaranteed {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    }
}

/// Cgroup limits: shares from the CPU request (2 minimum, as upstream), quota from the CPU
/// limit over a 100 ms period, the memory limit.
pub fn resources(container: &Container) -> Resources {
    let res = container.resources.as_ref();
    let req = res.and_then(|r| r.requests.as_ref());
    let lim = res.and_then(|r| r.limits.as_ref());
    let cpu_req = req
        .and_then(|m| m.get("cpu"))
        .or_else(|| lim.and_then(|m| m.get("cpu")))
        .and_then(|q| quantity::milli(&q.0));
    let cpu_lim = lim
        .and_then(|m| m.get("cpu"))
        .and_then(|q| quantity::milli(&q.0));
    let mem_lim = lim
        .and_then(|m| m.get("memory"))
        .and_then(|q| quantity::whole(&q.0));
    let period: u64 = 100_000;
    Resources {
        cpu_shares: Some(cpu_req.map_or(2, |m| ((m as u64) * 1024 / 1000).max(2))),
        cpu_quota: cpu_lim.map(|m| (m * period as i64 / 1000).max(1000)),
        cpu_period: cpu_lim.map(|_| period),
        memory_limit: mem_lim,
        pids_limit: None,
    }
}

/// The pod-level cgroup: sums of the containers' limits when every container sets one.
pub fn pod_resources(pod: &Pod) -> Resources {
    let Some(spec) = &pod.spec else {
        return Resources::default();
    };
    let each: Vec<Resources> = spec.containers.iter().map(resources).collect();
    let sum_opt = |f: &dyn Fn(&Resources) -> Option<i64>| -> Option<i64> {
        each.iter().map(f).sum::<Option<i64>>()
    };
    let quota = sum_opt(&|r| r.cpu_quota);
    Resources {
        cpu_shares: Some(each.iter().filter_map(|r| r.cpu_shares).sum::<u64>().max(2)),
        cpu_quota: quota,
        cpu_period: quota.map(|_| 100_000),
        memory_limit: sum_opt(&|r| r.memory_limit),
        pids_limit: None,
    }
}

/// Identity and privileges: the container's securityContext over the pod's over the image.
pub fn security(
    pod: &Pod,
    container: &Container,
    image: &ImageConfig,
    layers: &[PathBuf],
) -> Result<Security, ConfigError> {
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = container.security_context.as_ref();
    let (image_uid, image_gid) = image_user(&image.user, layers)?;
    let uid = sc
        .and_then(|s| s.run_as_user)
        .or_else(|| pod_sc.and_then(|p| p.run_as_user))
        .map_or(Ok(image_uid), |u| {
            u32::try_from(u).map_err(|_| ConfigError(format!("runAsUser {u} is out of range")))
        })?;
    let gid = sc
        .and_then(|s| s.run_as_group)
        .or_else(|| pod_sc.and_then(|p| p.run_as_group))
        .map_or(Ok(image_gid), |g| {
            u32::try_from(g).map_err(|_| ConfigError(format!("runAsGroup {g} is out of range")))
        })?;
    let run_as_non_root = sc
        .and_then(|s| s.run_as_non_root)
        .or_else(|| pod_sc.and_then(|p| p.run_as_non_root))
        .unwrap_or(false);
    if run_as_non_root && uid == 0 {
        return Err(ConfigError(
            "container has runAsNonRoot and image will run as root".into(),
        ));
    }
    let mut additional: Vec<u32> = pod_sc
        .and_then(|p| p.supplemental_groups.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|g| u32::try_from(*g).ok())
        .collect();
    if let Some(fs) = pod_sc
        .and_then(|p| p.fs_group)
        .and_then(|g| u32::try_from(g).ok())
    {
        additional.push(fs);
    }
    let caps = sc.and_then(|s| s.capabilities.as_ref());
    let privileged = sc.and_then(|s| s.privileged).unwrap_or(false);
    let profile = sc
        .and_then(|s| s.seccomp_profile.as_ref())
        .or_else(|| pod_sc.and_then(|p| p.seccomp_profile.as_ref()));
    // A profile that cannot be applied refuses the container rather than running it
    // unconfined (privileged containers run unconfined whatever they ask, as upstream).
    if let Some(p) = profile.filter(|p| p.type_ == "Localhost" && !privileged) {
        return Err(ConfigError(format!(
            "seccomp profile {:?} (Localhost) is not supported by capstan's agent",
            p.localhost_profile.as_deref().unwrap_or("")
        )));
    }
    let seccomp = profile.is_some_and(|p| p.type_ == "RuntimeDefault");
    Ok(Security {
        uid,
        gid,
        additional_gids: additional,
        privileged,
        read_only_rootfs: sc
            .and_then(|s| s.read_only_root_filesystem)
            .unwrap_or(false),
        cap_add: caps.and_then(|c| c.add.clone()).unwrap_or_default(),
        cap_drop: caps.and_then(|c| c.drop.clone()).unwrap_or_default(),
        no_new_privileges: !privileged
            && sc.and_then(|s| s.allow_privilege_escalation) == Some(false),
        seccomp_runtime_default: seccomp,
    })
}

/// The image's `user` as uid/gid: numbers as they are, names looked up in the image's
/// /etc/passwd and /etc/group (the top-most layer that has them).
fn image_user(user: &str, layers: &[PathBuf]) -> Result<(u32, u32), ConfigError> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let find = |file: &str| -> Option<String> {
        layers
            .iter()
            .rev()
            .find_map(|l| std::fs::read_to_string(l.join(file)).ok())
    };
    let (uid, primary) = match u.parse::<u32>() {
        Ok(n) => (n, None),
        Err(_) => {
            let passwd = find("etc/passwd").unwrap_or_default();
            let entry = passwd
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.first() == Some(&u))
                .ok_or_else(|| {
                    ConfigError(format!(
                        "unable to find user {u}: no matching entries in passwd file"
                    ))
                })?;
            let uid = entry.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
            let gid = entry.get(3).and_then(|s| s.parse().ok());
            (uid, gid)
        }
    };
    let gid = match g {
        None => primary.unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let group = find("etc/group").unwrap_or_default();
                group
                    .lines()
                    .map(|l| l.split(':').collect::<Vec<_>>())
                    .find(|f| f.first() == Some(&g))
                    .and_then(|f| f.get(2).and_then(|s| s.parse().ok()))
                    .ok_or_else(|| {
                        ConfigError(format!(
                            "unable to find group {g}: no matching entries in group file"
                        ))
                    })?
            }
        },
    };
    Ok((uid, gid))
}

/// The container's mounts: its volumeMounts (with subPath) then the kubelet-managed files.
pub fn mounts(
    container: &Container,
    volumes: &BTreeMap<String, Prepared>,
    managed: &ManagedFiles,
    termination_log: &Path,
) -> Result<Vec<Mount>, ConfigError> {
    let mut out = Vec::new();
    let has = |dest: &str| {
        container
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path.trim_end_matches('/') == dest)
    };
    for m in container.volume_mounts.iter().flatten() {
        let vol = volumes.get(&m.name).ok_or_else(|| {
            ConfigError(format!(
                "cannot find volume {:?} to mount into container {:?}",
                m.name, container.name
            ))
        })?;
        let mut source = vol.path.clone();
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if Path::new(sub)
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                return Err(ConfigError(format!(
                    "invalid subPath {sub:?}: must be relative without '..'"
                )));
            }
            source = source.join(sub);
            if !source.exists() && !vol.read_only {
                std::fs::create_dir_all(&source)
                    .map_err(|e| ConfigError(format!("creating subPath {sub:?}: {e}")))?;
            }
        }
        out.push(Mount {
            source,
            destination: m.mount_path.clone(),
            read_only: vol.read_only || m.read_only.unwrap_or(false),
            kind: MountKind::Bind,
        });
    }
    for (dest, src) in [
        ("/etc/hosts", &managed.hosts),
        ("/etc/hostname", &managed.hostname),
        ("/etc/resolv.conf", &managed.resolv_conf),
    ] {
        if !has(dest) {
            out.push(Mount {
                source: src.clone(),
                destination: dest.to_string(),
                read_only: false,
                kind: MountKind::Bind,
            });
        }
    }
    let path = container
        .termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".into());
    if !has(&path) {
        out.push(Mount {
            source: termination_log.to_path_buf(),
            destination: path,
            read_only: false,
            kind: MountKind::Bind,
        });
    }
    Ok(out)
}

/// The per-pod files the kubelet writes and mounts into every container.
#[derive(Debug, Clone)]
pub struct ManagedFiles {
    pub hosts: PathBuf,
    pub hostname: PathBuf,
    pub resolv_conf: PathBuf,
}

/// Writes /etc/hosts, /etc/hostname and /etc/resolv.conf (its text rendered by
/// `resolv_conf`) for the pod into its dir.
pub fn write_managed_files(
    pod: &Pod,
    pod_dir: &Path,
    hostname: &str,
    pod_ip: Option<&str>,
    resolv_conf: &str,
) -> std::io::Result<ManagedFiles> {
    let dir = pod_dir.join("etc");
    std::fs::create_dir_all(&dir)?;
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let hosts = dir.join("hosts");
    let mut text = if host_network {
        std::fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        let mut t = String::from("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n");
        if let Some(ip) = pod_ip {
            t.push_str(&format!("{ip}\t{hostname}\n"));
        }
        t
    };
    for alias in spec
        .and_then(|s| s.host_aliases.as_ref())
        .into_iter()
        .flatten()
    {
        let ip = &alias.ip;
        text.push_str(&format!(
            "\n# Entries added by HostAliases.\n{ip}\t{}\n",
            alias.hostnames.clone().unwrap_or_default().join("\t")
        ));
    }
    std::fs::write(&hosts, text)?;
    let hostname_file = dir.join("hostname");
    std::fs::write(&hostname_file, format!("{hostname}\n"))?;
    let resolv = dir.join("resolv.conf");
    std::fs::write(&resolv, resolv_conf)?;
    Ok(ManagedFiles {
        hosts,
        hostname: hostname_file,
        resolv_conf: resolv,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(cmd: Option<&[&str]>, args: Option<&[&str]>) -> Container {
        Container {
            name: "c".into(),
            command: cmd.map(|c| c.iter().map(|s| s.to_string()).collect()),
            args: args.map(|c| c.iter().map(|s| s.to_string()).collect()),
            ..Container::default()
        }
    }

    #[test]
    fn a_localhost_seccomp_profile_refuses_the_container_unless_privileged() {
        use k8s_openapi::api::core::v1::{SeccompProfile, SecurityContext};
        let pod = Pod::default();
        let mut c = container(None, None);
        c.security_context = Some(SecurityContext {
            seccomp_profile: Some(SeccompProfile {
                type_: "Localhost".into(),
                localhost_profile: Some("my.json".into()),
            }),
            ..SecurityContext::default()
        });
        let err = security(&pod, &c, &ImageConfig::default(), &[]).expect_err("refused");
        assert!(
            err.0.contains("my.json") && err.0.contains("Localhost"),
            "{}",
            err.0
        );
        if let Some(sc) = c.security_context.as_mut() {
            sc.privileged = Some(true);
        }
        let sec = security(&pod, &c, &ImageConfig::default(), &[]).expect("privileged runs");
        assert!(!sec.seccomp_runtime_default);
    }

    #[test]
    fn argv_follows_the_documented_table() {
        let image = ImageConfig {
            entrypoint: vec!["/ep".into()],
            cmd: vec!["default".into()],
            ..ImageConfig::default()
        };
        let env = vec!["X=1".to_string()];
        assert_eq!(
            argv(&container(None, None), &image, &env).expect("argv"),
            ["/ep", "default"]
        );
        assert_eq!(
            argv(&container(Some(&["sh"]), None), &image, &env).expect("argv"),
            ["sh"]
        );
        assert_eq!(
            argv(&container(None, Some(&["$(X)"])), &image, &env).expect("argv"),
            ["/ep", "1"]
        );
        assert_eq!(
            argv(&container(Some(&["a"]), Some(&["b"])), &image, &env).expect("argv"),
            ["a", "b"]
        );
        assert!(argv(&container(None, None), &ImageConfig::default(), &env).is_err());
    }

    #[test]
    fn shares_and_quota_as_upstream() {
        use k8s_openapi::api::core::v1::ResourceRequirements;
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let mut c = container(None, None);
        c.resources = Some(ResourceRequirements {
            requests: Some([("cpu".to_string(), Quantity("250m".into()))].into()),
            limits: Some(
                [
                    ("cpu".to_string(), Quantity("500m".into())),
                    ("memory".to_string(), Quantity("64Mi".into())),
                ]
                .into(),
            ),
            ..ResourceRequirements::default()
        });
        let r = resources(&c);
        assert_eq!(r.cpu_shares, Some(256));
        assert_eq!(r.cpu_quota, Some(50_000));
        assert_eq!(r.cpu_period, Some(100_000));
        assert_eq!(r.memory_limit, Some(64 * 1024 * 1024));
        assert_eq!(resources(&container(None, None)).cpu_shares, Some(2));
    }
}
