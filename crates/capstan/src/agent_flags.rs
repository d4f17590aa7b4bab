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
    /// The node's pod network (IPv4, /16 to /30): a bridge takes its first address, pods the
    /// others. Default: the block the cluster's node-ipam loop gives the Node.
    #[arg(long)]
    pub pod_cidr: Option<String>,
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
        opts.pod_cidr = self.pod_cidr.clone();
        Ok(opts)
    }
}

/// `capstan cleanup`: stop this data dir's containers and remove the agent's host state.
pub fn cleanup(data_dir: &Path) -> anyhow::Result<()> {
    let opts =
        capstan_agent::AgentOptions::new(String::new(), data_dir.join("agent"), instance(data_dir));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    for what in rt.block_on(capstan_agent::cleanup(&opts))? {
        println!("removed {what}");
    }
    Ok(())
}

/// The image store lives in `<data-dir>/agent/image-store`.
pub fn image_store_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("agent").join("image-store")
}

/// A short, stable name for this data dir's host resources (cgroups, /run state), so agents
/// of two servers on one machine never share them.
fn instance(data_dir: &Path) -> String {
    let abs = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let h = capstan_agent::names::stable_hash(&[abs.as_os_str().as_encoded_bytes()]);
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
    let open = |data_dir: Option<PathBuf>| {
        let dir = image_store_dir(&data_dir.unwrap_or(default_data_dir.clone()));
        capstan_agent::images::ImageStore::open(&dir)
            .with_context(|| format!("opening the image store {}", dir.display()))
    };
    match command {
        ImagesCommand::Import { files, data_dir } => {
            anyhow::ensure!(!files.is_empty(), "capstan images import: no archive given");
            let store = open(data_dir)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting a runtime")?;
            for file in files {
                let names = rt
                    .block_on(store.import_file(&file))
                    .with_context(|| format!("importing {}", file.display()))?;
                for name in names {
                    println!("{name}");
                }
            }
            Ok(())
        }
        ImagesCommand::Ls { data_dir } => {
            let store = open(data_dir)?;
            print!("{}", images_table(&store.list()?));
            Ok(())
        }
        ImagesCommand::Rm {
            references,
            data_dir,
        } => {
            anyhow::ensure!(!references.is_empty(), "capstan images rm: no image given");
            let store = open(data_dir)?;
            for reference in references {
                store
                    .remove(&reference)
                    .with_context(|| format!("removing {reference}"))?;
                println!("Deleted: {reference}");
            }
            Ok(())
        }
    }
}

/// `crictl images`' table: one row per name (an image without tags shows `<none>`).
fn images_table(images: &[capstan_agent::images::Image]) -> String {
    let mut rows = vec![[
        "IMAGE".to_string(),
        "TAG".to_string(),
        "IMAGE ID".to_string(),
        "SIZE".to_string(),
    ]];
    for image in images {
        let short_id: String = image
            .id
            .trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect();
        let size = human_size(image.size);
        let mut tagged = false;
        for name in &image.names {
            let Ok(r) = capstan_agent::images::Reference::parse(name) else {
                continue;
            };
            if let Some(tag) = r.tag.clone() {
                rows.push([r.repository(), tag, short_id.clone(), size.clone()]);
                tagged = true;
            }
        }
        if !tagged {
            for name in &image.names {
                let repo = name.split('@').next().unwrap_or(name).to_string();
                rows.push([repo, "<none>".into(), short_id.clone(), size.clone()]);
            }
        }
    }
    let mut widths = [0usize; 4];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// Decimal units with three significant digits, as crictl (go-units' HumanSize) prints.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{value:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_as_crictl_does() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(2_129_920), "2.13MB");
        assert_eq!(human_size(1_044_480), "1.04MB");
        assert_eq!(human_size(10_000), "10kB");
        assert_eq!(human_size(123_456_789), "123MB");
    }
}
