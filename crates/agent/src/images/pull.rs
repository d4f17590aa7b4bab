//! Pulling from a registry with `oci-client`: the manifest (this host's platform from a
//! multi-platform index), the config and the layers, each checked against its digest and
//! staged, then committed like an import. HTTP for loopback registries, HTTPS otherwise.

use std::net::IpAddr;
use std::sync::Once;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth as OciAuth;
use oci_client::Client;
use tokio::io::AsyncWriteExt;

use super::catalog::Incoming;
use super::digest;
use super::layout::{Layout, Staging};
use super::manifest::{self, AnyManifest, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use super::reference::Reference;
use super::{ImagesError, RegistryAuth};

const ACCEPTED: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// A registry served on this machine (`localhost`, `127.0.0.0/8`, `::1`) is spoken to in
/// plain HTTP, as containerd and docker treat them as insecure registries by default.
pub(crate) fn is_loopback(domain: &str) -> bool {
    let host = if let Some(rest) = domain.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(h, _)| h)
    } else {
        domain.split_once(':').map_or(domain, |(h, _)| h)
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// reqwest is built without a TLS crypto provider of its own; capstan uses ring everywhere.
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means a provider is already installed (kube's client may have done it).
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Fetches the image into a staging dir (blobs the store already has are not downloaded).
pub(crate) async fn fetch(
    layout: &Layout,
    reference: &Reference,
    auth: &RegistryAuth,
) -> Result<(Incoming, Staging), ImagesError> {
    let name = reference.to_string();
    let fail = |reason: String| ImagesError::Pull {
        reference: name.clone(),
        reason,
    };
    install_crypto_provider();
    let protocol = if is_loopback(&reference.domain) {
        ClientProtocol::Http
    } else {
        ClientProtocol::Https
    };
    let client = Client::new(ClientConfig {
        protocol,
        connect_timeout: Some(std::time::Duration::from_secs(30)),
        ..Default::default()
    });
    let oci_ref: oci_client::Reference = name
        .parse()
        .map_err(|e| fail(format!("invalid reference: {e}")))?;
    let auth = match auth {
        RegistryAuth::Anonymous => OciAuth::Anonymous,
        RegistryAuth::Basic { username, password } => {
            OciAuth::Basic(username.clone(), password.clone())
        }
    };

    let (bytes, top_digest) = client
        .pull_manifest_raw(&oci_ref, &auth, ACCEPTED)
        .await
        .map_err(|e| fail(format!("fetching the manifest: {e}")))?;
    check_digest(&bytes, &top_digest).map_err(&fail)?;
    let (manifest_bytes, manifest_digest, index_digest) =
        match manifest::parse_any(&bytes).map_err(&fail)? {
            AnyManifest::Image(_) => (bytes.to_vec(), top_digest, None),
            AnyManifest::Index(index) => {
                let pick = manifest::pick_platform(&index).ok_or_else(|| {
                    fail(format!(
                        "no linux/{} image in its index",
                        manifest::host_architecture()
                    ))
                })?;
                let by_digest = oci_ref.clone_with_digest(pick.digest.clone());
                let (m, d) = client
                    .pull_manifest_raw(&by_digest, &auth, ACCEPTED)
                    .await
                    .map_err(|e| fail(format!("fetching manifest {}: {e}", pick.digest)))?;
                check_digest(&m, &d).map_err(&fail)?;
                (m.to_vec(), d, Some(top_digest))
            }
        };
    let manifest = match manifest::parse_any(&manifest_bytes).map_err(&fail)? {
        AnyManifest::Image(m) => m,
        AnyManifest::Index(_) => return Err(fail("an index where a manifest was expected".into())),
    };

    let staging = layout.staging()?;
    let manifest_path = staging.path().join("manifest");
    std::fs::write(&manifest_path, &manifest_bytes).map_err(|e| ImagesError::Io {
        context: format!("writing {}", manifest_path.display()),
        source: e,
    })?;
    let mut blobs = vec![(manifest_digest.clone(), manifest_path)];
    let started = std::time::Instant::now();
    let mut downloaded = 0u64;
    for (i, desc) in std::iter::once(&manifest.config)
        .chain(&manifest.layers)
        .enumerate()
    {
        digest::sha256_hex(&desc.digest).map_err(&fail)?;
        let path = staging.path().join(format!("blob{i}"));
        if !layout.has_blob(&desc.digest) {
            let mut file = tokio::fs::File::create(&path)
                .await
                .map_err(|e| ImagesError::Io {
                    context: format!("creating {}", path.display()),
                    source: e,
                })?;
            client
                .pull_blob(&oci_ref, desc.digest.as_str(), &mut file)
                .await
                .map_err(|e| fail(format!("fetching blob {}: {e}", desc.digest)))?;
            file.flush().await.map_err(|e| ImagesError::Io {
                context: format!("writing {}", path.display()),
                source: e,
            })?;
            // oci-client checks the digest as it streams; this also catches a short write.
            let p = path.clone();
            let got = tokio::task::spawn_blocking(move || digest::of_file(&p))
                .await
                .map_err(|e| fail(format!("hashing task: {e}")))?
                .map_err(|e| ImagesError::Io {
                    context: format!("hashing {}", path.display()),
                    source: e,
                })?;
            if got != desc.digest {
                return Err(fail(format!("blob {} arrived as {got}", desc.digest)));
            }
            downloaded += desc.size;
        }
        blobs.push((desc.digest.clone(), path));
    }
    tracing::info!(image = %name, manifest = %manifest_digest, bytes = downloaded,
        elapsed_ms = started.elapsed().as_millis() as u64, "image pulled");
    Ok((
        Incoming {
            names: vec![name.clone()],
            manifest_digest,
            manifest_size: manifest_bytes.len() as u64,
            index_digest,
            pulled: true,
            blobs,
        },
        staging,
    ))
}

fn check_digest(bytes: &[u8], expected: &str) -> Result<(), String> {
    let got = digest::of_bytes(bytes);
    if got == expected {
        Ok(())
    } else {
        Err(format!("manifest {expected} arrived as {got}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_plain_http() {
        for d in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
        ] {
            assert!(is_loopback(d), "{d}");
        }
        for d in [
            "docker.io",
            "registry.local:5000",
            "10.0.0.1:5000",
            "[2001:db8::1]:443",
        ] {
            assert!(!is_loopback(d), "{d}");
        }
    }
}
