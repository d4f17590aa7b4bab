//! `capstan agent --server URL --token T --ca-cert-hash sha256:H`: a node joins as kubeadm's
//! do — discovery, a client certificate from a CSR, and a kubeconfig of its own kept.
//!
//! 1. Discovery: `kube-public/cluster-info` is read without credentials or trust; the CA in
//!    it must hash (SHA-256 of its public key) to `--ca-cert-hash`, so a server in the middle
//!    cannot hand out its own. From then on the server is verified against that CA.
//! 2. With the bootstrap token (`system:bootstrappers`), a `kube-apiserver-client-kubelet`
//!    CSR for `system:node:<name>` in `system:nodes` is filed; the csrapproving loop approves
//!    it and the signer issues the certificate.
//! 3. `<data-dir>/agent/kubelet.kubeconfig` holds the server, CA, certificate and key
//!    (mode 0600); a restarted agent uses it and needs no token.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, PostParams};

/// The CSR must be signed within this.
const ISSUE_TIMEOUT: Duration = Duration::from_secs(120);

/// Where a joined agent keeps its credentials.
pub fn kubeconfig_path(data_dir: &Path) -> PathBuf {
    data_dir.join("agent").join("kubelet.kubeconfig")
}

/// The agent's kubeconfig: the one kept from an earlier join, or a new one from joining.
pub async fn credentials(
    data_dir: &Path,
    server: &str,
    token: Option<&str>,
    ca_cert_hash: Option<&str>,
    node_name: &str,
) -> anyhow::Result<PathBuf> {
    let path = kubeconfig_path(data_dir);
    if path.exists() {
        tracing::info!(path = %path.display(), "using the credentials of an earlier join");
        return Ok(path);
    }
    let Some(token) = token else {
        bail!(
            "{} does not exist: join with --token (and --ca-cert-hash) first",
            path.display()
        );
    };
    let Some(hash) = ca_cert_hash else {
        bail!("--ca-cert-hash sha256:<hex> is needed to trust the server a token joins (`capstan token create --print-join-command` prints it)");
    };
    let url: http::Uri = server
        .parse()
        .with_context(|| format!("--server {server:?} is not a URL"))?;
    let ca_pem = discover_ca(&url, hash).await?;
    let (cert_pem, key_pem) = request_certificate(&url, &ca_pem, token, node_name).await?;
    write_kubeconfig(&path, server, &ca_pem, &cert_pem, &key_pem)?;
    tracing::info!(node = node_name, path = %path.display(), "joined: node credentials issued");
    Ok(path)
}

/// The CA from `kube-public/cluster-info`, checked against the pinned hash.
async fn discover_ca(url: &http::Uri, want_hash: &str) -> anyhow::Result<String> {
    let mut config = kube::Config::new(url.clone());
    config.accept_invalid_certs = true;
    let client = kube::Client::try_from(config).context("building the discovery client")?;
    let (_, ca_pem) = cluster_info(client)
        .await
        .with_context(|| format!("discovery at {url}"))?;
    let got = capstan_apiserver::serving::pki::ca_cert_hash(&ca_pem)?;
    if !got.eq_ignore_ascii_case(want_hash.trim()) {
        bail!("the server's CA hashes to {got}, not to the --ca-cert-hash given: refusing to join");
    }
    Ok(ca_pem)
}

/// kubeadm's discovery document: the server URL and CA (PEM) that `kube-public/cluster-info`
/// names (read by a joining node, and by `capstan token create --print-join-command`).
pub async fn cluster_info(client: kube::Client) -> anyhow::Result<(String, String)> {
    let cm = Api::<ConfigMap>::namespaced(client, "kube-public")
        .get("cluster-info")
        .await
        .context("reading kube-public/cluster-info")?;
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get("kubeconfig"))
        .context("cluster-info holds no kubeconfig")?;
    let doc: kube::config::Kubeconfig = capstan_apiserver::limits::parse_config_yaml(text)
        .map_err(|why| anyhow::anyhow!("cluster-info's kubeconfig: {why}"))?;
    let cluster = doc
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .context("cluster-info names no cluster")?;
    let server = cluster.server.context("cluster-info names no server")?;
    let ca_b64 = cluster
        .certificate_authority_data
        .context("cluster-info names no CA")?;
    let ca_pem = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(ca_b64.trim())
            .context("cluster-info's CA is not base64")?,
    )
    .context("cluster-info's CA is not PEM text")?;
    Ok((server, ca_pem))
}

/// Files the node's CSR with the bootstrap token and waits for its certificate.
async fn request_certificate(
    url: &http::Uri,
    ca_pem: &str,
    token: &str,
    node_name: &str,
) -> anyhow::Result<(String, String)> {
    let mut config = kube::Config::new(url.clone());
    config.root_cert = Some(capstan_apiserver::serving::pki::pem_certs(ca_pem)?);
    config.auth_info.token = Some(token.to_string().into());
    let client = kube::Client::try_from(config).context("building the bootstrap client")?;
    let user = format!("system:node:{node_name}");
    let (csr_pem, key_pem) =
        capstan_apiserver::serving::pki::client_csr(&user, &["system:nodes".to_string()])?;
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some("node-csr-".into()),
            ..ObjectMeta::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(csr_pem.into_bytes()),
            signer_name: "kubernetes.io/kube-apiserver-client-kubelet".into(),
            usages: Some(vec!["digital signature".into(), "client auth".into()]),
            ..CertificateSigningRequestSpec::default()
        },
        status: None,
    };
    let created = api
        .create(&PostParams::default(), &csr)
        .await
        .context("filing the node's CertificateSigningRequest (is the token valid?)")?;
    let name = created.metadata.name.unwrap_or_default();
    tracing::info!(csr = %name, user, "certificate requested; waiting for approval");
    let started = Instant::now();
    loop {
        let now = api
            .get(&name)
            .await
            .with_context(|| format!("reading CSR {name}"))?;
        let status = now.status.unwrap_or_default();
        for c in status.conditions.iter().flatten() {
            if (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True" {
                bail!(
                    "CSR {name} was {}: {}",
                    c.type_.to_lowercase(),
                    c.message.clone().unwrap_or_default()
                );
            }
        }
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            let cert = String::from_utf8(cert.0).context("the issued certificate is not PEM")?;
            return Ok((cert, key_pem));
        }
        if started.elapsed() > ISSUE_TIMEOUT {
            bail!("CSR {name} was not issued within {ISSUE_TIMEOUT:?} (is the csrapproving controller running?)");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> anyhow::Result<()> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "capstan", "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": "node", "user": {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}}],
        "contexts": [{"name": "node", "context": {"cluster": "capstan", "user": "node"}}],
        "current-context": "node",
    });
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_saphyr::to_string(&doc).context("writing the kubeconfig")?;
    capstan_apiserver::serving::pki::write_private(path, &text)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
