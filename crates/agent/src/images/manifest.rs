//! The JSON documents of images: OCI/Docker v2 manifests and indexes, image configs, and the
//! `manifest.json` of `docker save`; only the fields the store uses, unknown ones ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ImageConfig;

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub(crate) const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub(crate) const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub(crate) const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// containerd's annotation for a full image name (what `ctr export` writes).
pub(crate) const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// The OCI annotation: a full reference or, by convention, only a tag.
pub(crate) const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The digest a registry gave for a multi-platform image (its index), when pulled from one.
pub(crate) const ANNOTATION_INDEX_DIGEST: &str = "io.capstan.image.index-digest";
/// Set on a name that came from a registry (not from an imported archive).
pub(crate) const ANNOTATION_PULLED: &str = "io.capstan.image.pulled";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// An image config (`application/vnd.oci.image.config.v1+json` and Docker's equivalent).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ConfigFile {
    #[serde(default)]
    pub config: Option<ContainerConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ContainerConfig {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// One image of a `docker save` archive's `manifest.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DockerSaveEntry {
    pub config: String,
    #[serde(default)]
    pub repo_tags: Option<Vec<String>>,
    pub layers: Vec<String>,
}

impl ConfigFile {
    pub(crate) fn image_config(&self) -> ImageConfig {
        let c = self.config.clone().unwrap_or_default();
        ImageConfig {
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            env: c.env.unwrap_or_default(),
            working_dir: c.working_dir.unwrap_or_default(),
            user: c.user.unwrap_or_default(),
        }
    }
}

/// A manifest or an index, told apart by media type (or, where absent, by shape).
pub(crate) enum AnyManifest {
    Image(Manifest),
    Index(Index),
}

pub(crate) fn parse_any(bytes: &[u8]) -> Result<AnyManifest, String> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("manifest is not JSON: {e}"))?;
    let media_type = v.get("mediaType").and_then(|m| m.as_str()).unwrap_or("");
    let is_index = media_type == OCI_INDEX
        || media_type == DOCKER_LIST
        || (media_type.is_empty() && v.get("manifests").is_some());
    if is_index {
        serde_json::from_value(v)
            .map(AnyManifest::Index)
            .map_err(|e| format!("invalid image index: {e}"))
    } else if v.get("schemaVersion").and_then(|s| s.as_u64()) == Some(1) {
        Err("Docker schema 1 manifests are not supported".to_string())
    } else {
        serde_json::from_value(v)
            .map(AnyManifest::Image)
            .map_err(|e| format!("invalid image manifest: {e}"))
    }
}

/// The host's platform as OCI spells it.
pub(crate) fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// The manifest of an index to run here: linux on the host's architecture (arm64 prefers
/// variant v8 or none); a single entry without platform is taken as it is.
pub(crate) fn pick_platform(index: &Index) -> Option<&Descriptor> {
    let arch = host_architecture();
    let candidates: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| d.media_type != OCI_CONFIG)
        .filter(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
        .collect();
    if let Some(best) = candidates.iter().find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| matches!(p.variant.as_deref(), None | Some("v8")))
    }) {
        return Some(best);
    }
    if let Some(first) = candidates.first() {
        return Some(first);
    }
    match index.manifests.as_slice() {
        [only] if only.platform.is_none() => Some(only),
        _ => None,
    }
}

/// The media type of a layer blob, from its first bytes (a `docker save` archive says none).
pub(crate) fn layer_media_type(head: &[u8]) -> &'static str {
    if head.starts_with(&[0x1f, 0x8b]) {
        OCI_LAYER_GZIP
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        OCI_LAYER_ZSTD
    } else {
        OCI_LAYER_TAR
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(arch: &str, variant: Option<&str>, digest: &str) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: digest.into(),
            size: 1,
            annotations: BTreeMap::new(),
            platform: Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: variant.map(Into::into),
            }),
        }
    }

    #[test]
    fn picks_the_host_platform_from_an_index() {
        let index = Index {
            schema_version: 2,
            media_type: Some(OCI_INDEX.into()),
            manifests: vec![
                desc("s390x", None, "a"),
                desc(host_architecture(), Some("v7"), "b"),
                desc(host_architecture(), None, "c"),
            ],
        };
        assert_eq!(pick_platform(&index).map(|d| d.digest.as_str()), Some("c"));
        let other = Index {
            manifests: vec![desc("s390x", None, "a")],
            ..index
        };
        assert!(pick_platform(&other).is_none());
    }

    #[test]
    fn tells_manifests_from_indexes() {
        let m =
            br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"d","size":1},"layers":[]}"#;
        assert!(matches!(parse_any(m), Ok(AnyManifest::Image(_))));
        let i = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(parse_any(i), Ok(AnyManifest::Index(_))));
        assert!(parse_any(br#"{"schemaVersion":1,"fsLayers":[]}"#).is_err());
        assert!(parse_any(b"not json").is_err());
    }
}
