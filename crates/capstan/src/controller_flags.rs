//! The controllers' flags, shared by `capstan server` and `capstan controller-manager`
//! (upstream kube-controller-manager's names where it has one).

use std::collections::HashSet;
use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub struct ControllerFlags {
    /// Controllers to run: `*` for all, `-name` to leave one out (upstream's
    /// `--controllers`), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub controllers: Vec<String>,
    /// Seconds a controller-manager Lease is held without renewal before another process
    /// may take it.
    #[arg(long, default_value_t = 15)]
    pub leader_elect_lease_duration_seconds: u64,
    /// Objects the garbage collector works on at once.
    #[arg(long, default_value_t = 20)]
    pub concurrent_gc_syncs: usize,
    /// First retry delay, in milliseconds, of the statefulset, daemonset and disruption
    /// loops after a failed sync (doubling up to 5 minutes).
    #[arg(long, default_value_t = 1000)]
    pub sets_backoff_base_ms: u64,
    /// Job controller: milliseconds before the first replacement of a failed pod, doubled
    /// per further failure up to 6 minutes (upstream's fixed 10 s; shorter for tests).
    #[arg(long, default_value_t = 10_000)]
    pub job_pod_failure_backoff_ms: u64,
    /// CronJob controller, for tests: shift its clock by this many seconds.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub cronjob_clock_offset_seconds: i64,
    /// CronJob controller, for tests: run its clock this many times as fast as real time
    /// (60: one scheduled minute per second).
    #[arg(long, default_value_t = 1.0)]
    pub cronjob_clock_speed: f64,
    /// How long a node's Lease may go unrenewed before the node is Ready=Unknown and
    /// tainted unreachable (`50s`, `500ms`, `2m`).
    #[arg(long, default_value = "50s", value_parser = parse_duration)]
    pub node_monitor_grace_period: Duration,
    /// Nodes a second, per zone, that may get the NoExecute taints evicting their pods
    /// once they stop (0: none).
    #[arg(long, default_value_t = 0.1)]
    pub node_eviction_rate: f64,
    /// That rate in a zone of more than `--large-cluster-size-threshold` nodes where at
    /// least `--unhealthy-zone-threshold` of them (and more than 2) are not Ready; smaller
    /// zones stop tainting then.
    #[arg(long, default_value_t = 0.01)]
    pub secondary_node_eviction_rate: f64,
    /// The share of a zone's nodes not Ready that makes it unhealthy.
    #[arg(long, default_value_t = 0.55)]
    pub unhealthy_zone_threshold: f64,
    /// Zones larger than this keep tainting, slower, when unhealthy.
    #[arg(long, default_value_t = 50)]
    pub large_cluster_size_threshold: usize,
    /// Terminated pods kept before the oldest are deleted (0: keep them all).
    #[arg(long, default_value_t = 12500)]
    pub terminated_pod_gc_threshold: usize,
    /// Endpoints per EndpointSlice.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub max_endpoints_per_slice: u16,
    /// The cluster CA (PEM) published as `kube-root-ca.crt` in every namespace (`capstan
    /// server` publishes its own CA without it, `capstan controller-manager` the CA its
    /// kubeconfig trusts).
    #[arg(long)]
    pub root_ca_file: Option<std::path::PathBuf>,
    /// The CA certificate (PEM) CertificateSigningRequests are signed with (`capstan server`
    /// uses its own CA without it).
    #[arg(long, requires = "cluster_signing_key_file")]
    pub cluster_signing_cert_file: Option<std::path::PathBuf>,
    /// The key (PEM) of `--cluster-signing-cert-file`.
    #[arg(long, requires = "cluster_signing_cert_file")]
    pub cluster_signing_key_file: Option<std::path::PathBuf>,
    /// The longest certificate the CSR signer issues (`8760h`: a year).
    #[arg(long, default_value = "8760h", value_parser = parse_duration)]
    pub cluster_signing_duration: Duration,
    /// How long an Event is kept after it was last written (`1h`, `90s`, or plain seconds;
    /// `--event-ttl-seconds` is the older name).
    #[arg(long, alias = "event-ttl-seconds", default_value = "1h", value_parser = parse_duration)]
    pub event_ttl: Duration,
    /// Give every Node without one a `spec.podCIDR` from `--cluster-cidr` (the node-ipam
    /// loop; k3s's default, upstream's flag defaults to false).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub allocate_node_cidrs: bool,
    /// The pods' network across all nodes (IPv4), cut into one block per node.
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    /// The prefix length of each node's block of `--cluster-cidr`.
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size: u8,
}

/// `50s`, `500ms`, `2m`, `1h`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 50s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

impl ControllerFlags {
    /// The options the controllers run with.
    pub fn options(&self) -> anyhow::Result<capstan_controllers::Options> {
        let mut disabled = HashSet::new();
        for c in &self.controllers {
            match c.trim() {
                "*" | "" => {}
                s if s.starts_with('-') => {
                    disabled.insert(s[1..].to_string());
                }
                s => anyhow::bail!(
                    "--controllers: {s:?}: name every controller with `*` and leave some out with `-name`"
                ),
            }
        }
        let root_ca_pem = match &self.root_ca_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("--root-ca-file {}: {e}", p.display()))?,
            ),
            None => None,
        };
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
        };
        let cluster_signing_ca = match (
            &self.cluster_signing_cert_file,
            &self.cluster_signing_key_file,
        ) {
            (Some(cert), Some(key)) => Some(crate::cluster_signer::ca(&read(cert)?, &read(key)?)?),
            _ => None,
        };
        let node_cidrs = if self.allocate_node_cidrs {
            let cluster = capstan_controllers::nodeipam::Block::parse(&self.cluster_cidr)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--cluster-cidr {:?}: want an IPv4 a.b.c.d/n, n from 8 to 30",
                        self.cluster_cidr
                    )
                })?;
            Some(
                capstan_controllers::nodeipam::Allocator::new(cluster, self.node_cidr_mask_size)
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "--node-cidr-mask-size {}: must be from {} (the cluster CIDR's) to 30",
                            self.node_cidr_mask_size,
                            cluster.prefix
                        )
                    })?,
            )
        } else {
            None
        };
        Ok(capstan_controllers::Options {
            node_cidrs,
            lease_duration: Duration::from_secs(self.leader_elect_lease_duration_seconds.max(2)),
            disabled,
            concurrent_gc_syncs: self.concurrent_gc_syncs.max(1),
            sets_backoff_base: Duration::from_millis(self.sets_backoff_base_ms.max(1)),
            job_pod_failure_backoff: Duration::from_millis(self.job_pod_failure_backoff_ms),
            cronjob_clock_offset_seconds: self.cronjob_clock_offset_seconds,
            cronjob_clock_speed: if self.cronjob_clock_speed > 0.0 {
                self.cronjob_clock_speed
            } else {
                anyhow::bail!("--cronjob-clock-speed: must be greater than 0")
            },
            root_ca_pem,
            node_monitor_grace_period: self.node_monitor_grace_period,
            node_eviction: capstan_controllers::node_lifecycle::EvictionLimits {
                rate: non_negative("--node-eviction-rate", self.node_eviction_rate)?,
                secondary_rate: non_negative(
                    "--secondary-node-eviction-rate",
                    self.secondary_node_eviction_rate,
                )?,
                unhealthy_threshold: match self.unhealthy_zone_threshold {
                    t if (0.0..=1.0).contains(&t) => t,
                    t => anyhow::bail!("--unhealthy-zone-threshold {t}: must be from 0 to 1"),
                },
                large_cluster: self.large_cluster_size_threshold,
            },
            terminated_pod_gc_threshold: self.terminated_pod_gc_threshold,
            max_endpoints_per_slice: usize::from(self.max_endpoints_per_slice),
            cluster_signing_ca,
            cluster_signing_duration: self.cluster_signing_duration,
            event_ttl: self.event_ttl,
            ..capstan_controllers::Options::default()
        })
    }
}

/// A rate flag's value, refused when negative or not a number.
fn non_negative(flag: &str, v: f64) -> anyhow::Result<f64> {
    if v >= 0.0 && v.is_finite() {
        Ok(v)
    } else {
        anyhow::bail!("{flag} {v}: must be a number from 0 up")
    }
}
