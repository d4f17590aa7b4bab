//! A pod's volumes on the node: emptyDir (disk, or a tmpfs of `sizeLimit` for
//! `medium: Memory`), configMap, secret, downwardAPI and projected (service-account tokens
//! too; written by `atomic_dir`, refreshed on every sync), hostPath (with its type checks),
//! persistentVolumeClaim (the bound volume's directory, by `claim_volume`). `setup` returns
//! each volume's host path; `teardown` unmounts what it mounted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMapProjection, DownwardAPIVolumeFile, KeyToPath, Pod, SecretProjection, Volume,
};

use super::atomic_dir::{self, File};
use super::env::{field_value, resource_value, Sources};
use super::quantity;
use super::service_account_token::{PodTokens, DEFAULT_EXPIRATION_SECONDS};

/// Why a volume could not be set up (the `FailedMount` event's message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("MountVolume.SetUp failed for volume \"{volume}\" : {reason}")]
pub struct VolumeError {
    pub volume: String,
    pub reason: String,
}

/// A volume ready to mount.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub path: PathBuf,
    /// configMap, secret, downwardAPI and projected volumes are read-only to containers.
    pub read_only: bool,
}

fn err(volume: &Volume, reason: impl Into<String>) -> VolumeError {
    VolumeError {
        volume: volume.name.clone(),
        reason: reason.into(),
    }
}

/// `<pod dir>/volumes/<name>`: one dir per volume.
pub fn volume_dir(pod_dir: &Path, name: &str) -> PathBuf {
    pod_dir.join("volumes").join(name)
}

/// Prepares (or refreshes) every volume of the pod.
pub async fn setup(
    pod: &Pod,
    pod_dir: &Path,
    host_ip: &str,
    sources: &mut Sources,
    tokens: &mut PodTokens,
) -> Result<BTreeMap<String, Prepared>, VolumeError> {
    let mut out = BTreeMap::new();
    let spec = pod.spec.as_ref();
    let fs_group = spec
        .and_then(|s| s.security_context.as_ref())
        .and_then(|c| c.fs_group)
        .and_then(|g| u32::try_from(g).ok());
    for volume in spec.and_then(|s| s.volumes.as_ref()).into_iter().flatten() {
        let dir = volume_dir(pod_dir, &volume.name);
        let prepared = if let Some(empty) = &volume.empty_dir {
            create_dir(volume, &dir)?;
            if empty.medium.as_deref() == Some("Memory") {
                let size = empty
                    .size_limit
                    .as_ref()
                    .and_then(|q| quantity::whole(&q.0));
                mount_tmpfs(&dir, size).map_err(|e| err(volume, e))?;
            }
            if let Some(g) = fs_group {
                let _ = std::os::unix::fs::chown(&dir, None, Some(g));
                set_mode(&dir, 0o2777);
            } else {
                set_mode(&dir, 0o777);
            }
            Prepared {
                path: dir,
                read_only: false,
            }
        } else if let Some(host) = &volume.host_path {
            host_path(volume, &host.path, host.type_.as_deref().unwrap_or(""))?;
            Prepared {
                path: PathBuf::from(&host.path),
                read_only: false,
            }
        } else if let Some(claim) = &volume.persistent_volume_claim {
            let path = super::claim_volume::resolve(
                sources.client(),
                sources.namespace(),
                &claim.claim_name,
            )
            .await
            .map_err(|e| err(volume, e))?;
            if let Some(g) = fs_group {
                // As for a local volume: the pod's group owns the top directory, and what it
                // creates there inherits the group (setgid).
                let _ = std::os::unix::fs::chown(&path, None, Some(g));
                add_mode(&path, 0o2070);
            }
            Prepared {
                path,
                read_only: claim.read_only.unwrap_or(false),
            }
        } else if let Some(cm) = &volume.config_map {
            let mut files = BTreeMap::new();
            let proj = ConfigMapProjection {
                name: cm.name.clone(),
                items: cm.items.clone(),
                optional: cm.optional,
            };
            config_map_files(volume, &proj, cm.default_mode, sources, &mut files).await?;
            write(volume, &dir, &files, fs_group)?
        } else if let Some(secret) = &volume.secret {
            let mut files = BTreeMap::new();
            let proj = SecretProjection {
                name: secret.secret_name.clone().unwrap_or_default(),
                items: secret.items.clone(),
                optional: secret.optional,
            };
            secret_files(volume, &proj, secret.default_mode, sources, &mut files).await?;
            write(volume, &dir, &files, fs_group)?
        } else if let Some(down) = &volume.downward_api {
            let mut files = BTreeMap::new();
            downward_files(
                volume,
                pod,
                down.items.as_deref().unwrap_or(&[]),
                down.default_mode,
                host_ip,
                &mut files,
            )?;
            write(volume, &dir, &files, fs_group)?
        } else if let Some(projected) = &volume.projected {
            let mut files = BTreeMap::new();
            for source in projected.sources.iter().flatten() {
                if let Some(cm) = &source.config_map {
                    config_map_files(volume, cm, projected.default_mode, sources, &mut files)
                        .await?;
                }
                if let Some(s) = &source.secret {
                    secret_files(volume, s, projected.default_mode, sources, &mut files).await?;
                }
                if let Some(d) = &source.downward_api {
                    downward_files(
                        volume,
                        pod,
                        d.items.as_deref().unwrap_or(&[]),
                        projected.default_mode,
                        host_ip,
                        &mut files,
                    )?;
                }
                if let Some(t) = &source.service_account_token {
                    let token = tokens
                        .token(
                            t.audience.as_deref().unwrap_or(""),
                            t.expiration_seconds.unwrap_or(DEFAULT_EXPIRATION_SECONDS),
                        )
                        .await
                        .map_err(|e| err(volume, e))?;
                    files.insert(
                        t.path.clone(),
                        File {
                            data: token,
                            mode: mode_of(None, projected.default_mode, 0o644),
                        },
                    );
                }
            }
            write(volume, &dir, &files, fs_group)?
        } else {
            return Err(err(
                volume,
                "this volume type is not supported by capstan's agent yet",
            ));
        };
        out.insert(volume.name.clone(), prepared);
    }
    Ok(out)
}

/// Unmounts the pod's memory-backed emptyDirs (before the pod dir is removed).
pub fn teardown(pod: &Pod, pod_dir: &Path) {
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    for volume in volumes.into_iter().flatten() {
        if volume
            .empty_dir
            .as_ref()
            .is_some_and(|e| e.medium.as_deref() == Some("Memory"))
        {
            unmount(&volume_dir(pod_dir, &volume.name));
        }
    }
}

fn write(
    volume: &Volume,
    dir: &Path,
    files: &BTreeMap<String, File>,
    gid: Option<u32>,
) -> Result<Prepared, VolumeError> {
    atomic_dir::write(dir, files, gid).map_err(|e| err(volume, e.to_string()))?;
    Ok(Prepared {
        path: dir.to_path_buf(),
        read_only: true,
    })
}

fn create_dir(volume: &Volume, dir: &Path) -> Result<(), VolumeError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| err(volume, format!("creating {}: {e}", dir.display())))
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

fn add_mode(path: &Path, bits: u32) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() | bits;
        set_mode(path, mode);
    }
}

fn mode_of(item: Option<i32>, default: Option<i32>, fallback: u32) -> u32 {
    item.or(default)
        .and_then(|m| u32::try_from(m).ok())
        .map_or(fallback, |m| m & 0o7777)
}

/// Which object a projection reads (for messages) and whether it may be missing.
struct Origin<'a> {
    kind: &'a str,
    name: &'a str,
    optional: bool,
}

fn project(
    volume: &Volume,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: Option<i32>,
    origin: Origin<'_>,
    files: &mut BTreeMap<String, File>,
) -> Result<(), VolumeError> {
    let Origin {
        kind,
        name,
        optional,
    } = origin;
    match items {
        None => {
            for (k, v) in data {
                files.insert(
                    k.clone(),
                    File {
                        data: v.clone(),
                        mode: mode_of(None, default_mode, 0o644),
                    },
                );
            }
        }
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(v) => {
                        files.insert(
                            item.path.clone(),
                            File {
                                data: v.clone(),
                                mode: mode_of(item.mode, default_mode, 0o644),
                            },
                        );
                    }
                    None if optional => {}
                    None => {
                        return Err(err(
                            volume,
                            format!(
                                "configured to use key {:?} of {kind} {name:?}, which is missing",
                                item.key
                            ),
                        ))
                    }
                }
            }
        }
    }
    Ok(())
}

async fn config_map_files(
    volume: &Volume,
    cm: &ConfigMapProjection,
    default_mode: Option<i32>,
    sources: &mut Sources,
    files: &mut BTreeMap<String, File>,
) -> Result<(), VolumeError> {
    let optional = cm.optional.unwrap_or(false);
    let found = sources
        .config_map(&cm.name)
        .await
        .map_err(|e| err(volume, e.0))?;
    let Some(found) = found else {
        if optional {
            return Ok(());
        }
        return Err(err(volume, format!("configmap \"{}\" not found", cm.name)));
    };
    let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, v) in found.data.iter().flatten() {
        data.insert(k.clone(), v.clone().into_bytes());
    }
    for (k, v) in found.binary_data.iter().flatten() {
        data.insert(k.clone(), v.0.clone());
    }
    project(
        volume,
        &data,
        cm.items.as_ref(),
        default_mode,
        Origin {
            kind: "configmap",
            name: &cm.name,
            optional,
        },
        files,
    )
}

async fn secret_files(
    volume: &Volume,
    s: &SecretProjection,
    default_mode: Option<i32>,
    sources: &mut Sources,
    files: &mut BTreeMap<String, File>,
) -> Result<(), VolumeError> {
    let optional = s.optional.unwrap_or(false);
    let found = sources
        .secret(&s.name)
        .await
        .map_err(|e| err(volume, e.0))?;
    let Some(found) = found else {
        if optional {
            return Ok(());
        }
        return Err(err(volume, format!("secret \"{}\" not found", s.name)));
    };
    let data: BTreeMap<String, Vec<u8>> = found
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    project(
        volume,
        &data,
        s.items.as_ref(),
        default_mode,
        Origin {
            kind: "secret",
            name: &s.name,
            optional,
        },
        files,
    )
}

fn downward_files(
    volume: &Volume,
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: Option<i32>,
    host_ip: &str,
    files: &mut BTreeMap<String, File>,
) -> Result<(), VolumeError> {
    for item in items {
        let value = if let Some(f) = &item.field_ref {
            field_value(pod, &f.field_path, host_ip, None)
                .ok_or_else(|| err(volume, format!("unsupported fieldPath {}", f.field_path)))?
        } else if let Some(r) = &item.resource_field_ref {
            let container = pod
                .spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .find(|c| Some(c.name.as_str()) == r.container_name.as_deref())
                .ok_or_else(|| err(volume, format!("no container {:?}", r.container_name)))?;
            resource_value(
                container,
                &r.resource,
                r.divisor.as_ref().map(|d| d.0.as_str()),
            )
            .ok_or_else(|| err(volume, format!("unsupported resource {}", r.resource)))?
        } else {
            continue;
        };
        files.insert(
            item.path.clone(),
            File {
                data: value.into_bytes(),
                mode: mode_of(item.mode, default_mode, 0o644),
            },
        );
    }
    Ok(())
}

/// hostPath's `type` checks, as upstream words them.
fn host_path(volume: &Volume, path: &str, ty: &str) -> Result<(), VolumeError> {
    use std::os::unix::fs::FileTypeExt;
    let p = Path::new(path);
    let meta = std::fs::metadata(p);
    let fail = |what: &str| {
        Err(err(
            volume,
            format!("hostPath type check failed: {path} is not {what}"),
        ))
    };
    match ty {
        "" => Ok(()),
        "DirectoryOrCreate" => {
            if meta.is_err() {
                std::fs::create_dir_all(p).map_err(|e| err(volume, e.to_string()))?;
                set_mode(p, 0o755);
            }
            Ok(())
        }
        "FileOrCreate" => {
            if meta.is_err() {
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| err(volume, e.to_string()))?;
                }
                std::fs::write(p, b"").map_err(|e| err(volume, e.to_string()))?;
                set_mode(p, 0o644);
            }
            Ok(())
        }
        "Directory" => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            _ => fail("a directory"),
        },
        "File" => match meta {
            Ok(m) if m.is_file() => Ok(()),
            _ => fail("a file"),
        },
        "Socket" => match meta {
            Ok(m) if m.file_type().is_socket() => Ok(()),
            _ => fail("a socket file"),
        },
        "CharDevice" => match meta {
            Ok(m) if m.file_type().is_char_device() => Ok(()),
            _ => fail("a character device"),
        },
        "BlockDevice" => match meta {
            Ok(m) if m.file_type().is_block_device() => Ok(()),
            _ => fail("a block device"),
        },
        other => Err(err(volume, format!("unknown hostPath type {other:?}"))),
    }
}

fn is_mountpoint(dir: &Path) -> bool {
    crate::mountinfo::mount_points().iter().any(|p| p == dir)
}

fn mount_tmpfs(dir: &Path, size: Option<i64>) -> Result<(), String> {
    if is_mountpoint(dir) {
        return Ok(());
    }
    let target = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| "path holds a NUL byte".to_string())?;
    let data = match size {
        Some(bytes) if bytes > 0 => format!("size={bytes},mode=0777"),
        _ => "mode=0777".to_string(),
    };
    let data = std::ffi::CString::new(data).map_err(|e| e.to_string())?;
    let fstype = c"tmpfs";
    // SAFETY: every pointer is a valid NUL-terminated string living across the call.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "mounting tmpfs: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn unmount(dir: &Path) {
    if !is_mountpoint(dir) {
        return;
    }
    if let Ok(target) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) {
        // SAFETY: a valid NUL-terminated path.
        let rc = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        if rc != 0 {
            tracing::warn!(dir = %dir.display(), error = %std::io::Error::last_os_error(), "unmounting an emptyDir failed");
        }
    }
}
