//! The node agent's flags (shared by `capstan server` and `capstan agent`) and the
//! `capstan images` commands over the agent's image store.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

#[derive(clap::Args, Clone, Debug)]
pub struct AgentFlags {
    /// The Node's name (default: this machine's host name, lower-cased).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Image archives (`docker save`, OCI) in this folder are imported at start
    /// (default: `<data-dir>/agent/images`).
    #[arg(long)]
    pub images_dir: Option<PathBuf>,
    /// Where the kubelet endpoint (container logs) listens; port 0 picks a free one. All
    /// addresses by default, as the kubelet: the API server reaches it at the Node's
    /// InternalIP, and it takes only clients with a certificate from the cluster CA.
    #[arg(long, default_value = "0.0.0.0:0")]
    pub kubelet_listen: std::net::SocketAddr,
    /// The node Lease's duration in seconds: the `--node-lease-duration-seconds` flag is
    /// the simulator's (one flag for both kinds of node; clap refuses two of one name), and
    /// the command copies it here.
    #[arg(skip = 40)]
    pub node_lease_duration_seconds: i32,
    /// Pods this node takes (the Node's `pods` capacity).
    #[arg(long, default_value_t = 110)]
    pub max_pods: u32,
    /// A container log file is rotated past this many bytes.
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    pub container_log_max_size: u64,
    /// Rotated log files kept per container.
    #[arg(long, default_value_t = 5)]
    pub container_log_max_files: u32,
}

impl AgentFlags {
    pub fn options(&self, data_dir: &Path) -> anyhow::Result<capstan_agent::AgentOptions> {
        let node_name = match &self.node_name {
            Some(n) => n.clone(),
            None => host_name()?.to_lowercase(),
        };
        let root = data_dir.join("agent");
        let mut opts =
            capstan_agent::AgentOptions::new(node_name, root.clone(), instance(data_dir));
        opts.images_dir = Some(
            self.images_dir
                .clone()
                .unwrap_or_else(|| root.join("images")),
        );
        opts.kubelet_listen = self.kubelet_listen;
        opts.lease_duration_seconds = self.node_lease_duration_seconds;
        opts.status_report_interval = Duration::from_secs(300);
        opts.max_pods = self.max_pods;
        opts.container_log_max_size = self.container_log_max_size;
        opts.container_log_max_files = self.container_log_max_files;
        Ok(opts)
    }
}

/// The image store lives in `<data-dir>/agent/image-store`.
pub fn image_store_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("agent").join("image-store")
}

/// A short, stable name for this data dir's host resources (cgroups, /run state), so agents
/// of two servers on one machine never share them.
fn instance(data_dir: &Path) -> String {
    let abs = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    // FNV-1a: stable across builds (std's hasher is not).
    let mut h: u64 = 0xcbf29ce484222325;
    for b in abs.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{:08x}", h as u32)
}

fn host_name() -> anyhow::Result<String> {
    let name =
        std::fs::read_to_string("/proc/sys/kernel/hostname").context("reading the host name")?;
    Ok(name.trim().to_string())
}

#[derive(clap::Subcommand, Clone, Debug)]
pub enum ImagesCommand {
    /// Import `docker save` or OCI archives (tar or tar.gz).
    Import {
        files: Vec<PathBuf>,
        #[arg(long, env = "CAPSTAN_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// List the images in the store.
    Ls {
        #[arg(long, env = "CAPSTAN_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Remove images by reference.
    Rm {
        references: Vec<String>,
        #[arg(long, env = "CAPSTAN_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
}

pub fn images(command: ImagesCommand, default_data_dir: PathBuf) -> anyhow::Result<()> {
    let _ = (command, default_data_dir);
    anyhow::bail!("capstan images: not built yet (images helper)")
}
