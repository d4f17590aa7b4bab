//! The `capstan` binary: command line, configuration and wiring of the server's parts.

mod agent_flags;
mod agent_join;
mod backup;
mod cluster_signer;
mod controller_flags;
mod data_dir;
mod datastore;
mod fd_limit;
mod heap;
mod join_token;
mod kubeconfig;
mod node_role;
mod security_flags;
mod simulated_nodes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};

use capstan_apiserver::admission::service_alloc;
use capstan_apiserver::crds::controller as crd_controller;
use capstan_apiserver::housekeeping::bootstrap;
use capstan_apiserver::serving::user_info::User;
use capstan_apiserver::serving::{pki, serve};
use capstan_apiserver::{router, AppState};
use capstan_store::CompactionConfig;

/// The first node block of the default `--cluster-cidr` (k3s's server node gets the same).
const DEFAULT_POD_CIDR: &str = "10.42.0.0/24";

#[derive(Parser)]
#[command(
    name = "capstan",
    version,
    about = "A lightweight Kubernetes-compatible control plane"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a bootstrap token (a Secret in kube-system) and print it: `<id>.<secret>`. A
    /// node agent authenticates with it as `system:bootstrap:<id>` to request its client
    /// certificate.
    Create {
        /// How long the token is valid (`24h`, `1h30m`; `0`: never expires).
        #[arg(long, default_value = "24h", value_parser = join_token::parse_go_duration)]
        ttl: Duration,
        /// Extra groups (`system:bootstrappers:<name>`), comma separated.
        #[arg(long, value_delimiter = ',', default_value = join_token::DEFAULT_GROUP)]
        groups: Vec<String>,
        /// A human-readable description stored with the token.
        #[arg(long, default_value = "")]
        description: String,
        /// Print the `capstan agent --server … --token … --ca-cert-hash …` command a node
        /// joins with, not just the token.
        #[arg(long)]
        print_join_command: bool,
        #[arg(long, env = "CAPSTAN_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
}

// Parsed once at start and matched away at once: boxing the big variants would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run a cluster: API server (on an embedded SQLite store, or on etcd shared with other
    /// servers), scheduler, controllers and this machine as a node.
    Server {
        /// Where the database, certificates, token and kubeconfig live.
        #[arg(long, env = "CAPSTAN_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Address to serve the Kubernetes API on (HTTPS).
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: SocketAddr,
        /// Seconds of history kept for watches to resume from; older history is compacted.
        #[arg(long, default_value_t = 300)]
        history_retention_seconds: u64,
        /// Requests served at once (watches excluded); more get 429 Too Many Requests.
        #[arg(long, default_value_t = capstan_apiserver::DEFAULT_MAX_INFLIGHT)]
        max_requests_inflight: usize,
        /// Watches open at once; more get 429 Too Many Requests.
        #[arg(long, default_value_t = capstan_apiserver::serving::inflight::DEFAULT_MAX_WATCHES)]
        max_watches: usize,
        /// Seconds between bookmarks on watches that ask for them.
        #[arg(long, default_value_t = 60)]
        watch_bookmark_interval_seconds: u64,
        /// Seconds between compaction passes.
        #[arg(long, default_value_t = 30)]
        compaction_interval_seconds: u64,
        /// Where Service ClusterIPs come from (IPv4 CIDR).
        #[arg(long, default_value = "10.96.0.0/12")]
        service_cluster_ip_range: String,
        /// Where Service NodePorts come from.
        #[arg(long, default_value = "30000-32767")]
        service_node_port_range: String,
        /// The address other nodes and pods reach this server at (the `kubernetes` Service's
        /// endpoint, the URL in `kube-public/cluster-info`, a name in the serving
        /// certificate). Default: the --listen address (127.0.0.1 when that is 0.0.0.0).
        #[arg(long)]
        advertise_address: Option<std::net::IpAddr>,
        /// Another name or address clients may reach the server by (repeatable); the
        /// serving certificate is re-issued from the same CA when the set changes.
        #[arg(long = "tls-san", value_name = "NAME")]
        tls_san: Vec<String>,
        /// Run this many simulated nodes inside the server (over the in-process client), for
        /// tests and benchmarks; see `capstan agent --help` for what they do.
        #[arg(long, default_value_t = 0)]
        simulated_nodes: usize,
        #[command(flatten)]
        sim: simulated_nodes::SimFlags,
        /// Do not run the built-in scheduler (pods stay Pending unless another scheduler,
        /// e.g. `capstan scheduler`, binds them).
        #[arg(long)]
        disable_scheduler: bool,
        /// Do not run the built-in controllers (Deployments, Jobs … are stored but nothing
        /// acts on them unless `capstan controller-manager` runs elsewhere).
        #[arg(long)]
        disable_controllers: bool,
        #[command(flatten)]
        controller_flags: controller_flags::ControllerFlags,
        /// Do not run the node agent: this machine is not a node (pods bound to it never run).
        #[arg(long)]
        no_agent: bool,
        #[command(flatten)]
        agent_flags: agent_flags::AgentFlags,
        #[command(flatten)]
        security: security_flags::SecurityFlags,
        #[command(flatten)]
        datastore: datastore::DatastoreFlags,
    },
    /// Manage the node agent's image store (works while the server runs).
    Images {
        #[command(subcommand)]
        command: agent_flags::ImagesCommand,
    },
    /// Stop every container the node agent of this data dir runs and remove what it holds on
    /// the host (sandboxes, mounts, cgroups, the pod bridge and veths), as k3s-killall.sh. Run
    /// it with the server stopped; pods stay in the API and are started again next time.
    Cleanup {
        #[arg(long, env = "CAPSTAN_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Internal: one container's shim (started by the agent, not by hand).
    #[command(hide = true)]
    ContainerShim {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Simulate nodes against any Kubernetes API server: they register, renew Leases, and play
    /// the kubelet for pods bound to them (Running, pod IPs, readiness, exits, graceful
    /// deletion). Pod annotations `sim.capstan.io/exit-after: 5s` and
    /// `sim.capstan.io/exit-code: "1"` end a pod's containers (restartPolicy decides what
    /// follows); a Node annotated `sim.capstan.io/stopped: "true"` stops heartbeating and
    /// updating its pods until the annotation is removed.
    Agent {
        /// Number of simulated nodes of the default shape (32 CPUs, 256Gi, 110 pods); without
        /// it (and without a --node-group) this machine joins as a real node.
        #[arg(long, default_value_t = 0)]
        simulate: usize,
        /// The kubeconfig naming the server and the credentials to use (or join with
        /// --server and --token instead).
        #[arg(long, env = "KUBECONFIG", required_unless_present = "server")]
        kubeconfig: Option<PathBuf>,
        /// Context to use instead of the kubeconfig's current one.
        #[arg(long)]
        context: Option<String>,
        /// Join the cluster at this URL (`https://host:6443`) as a real node: with --token
        /// the first time, later with the credentials kept in the data dir.
        #[arg(long, conflicts_with = "kubeconfig")]
        server: Option<String>,
        /// A bootstrap token (`capstan token create`) to join with.
        #[arg(long, requires = "server")]
        token: Option<String>,
        /// The cluster CA's public key hash (`sha256:<hex>`, as kubeadm's
        /// --discovery-token-ca-cert-hash) that the joining node trusts.
        #[arg(long, requires = "token")]
        ca_cert_hash: Option<String>,
        #[command(flatten)]
        sim: simulated_nodes::SimFlags,
        /// Where the real agent keeps images, containers and pod volumes.
        #[arg(long, env = "CAPSTAN_DATA_DIR")]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        agent_flags: agent_flags::AgentFlags,
    },
    /// Run the scheduler stand-alone against any Kubernetes API server named by a kubeconfig.
    Scheduler {
        /// The kubeconfig naming the server and the credentials to use.
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: PathBuf,
        /// Context to use instead of the kubeconfig's current one.
        #[arg(long)]
        context: Option<String>,
        /// Binding requests in flight at once.
        #[arg(long, default_value_t = capstan_scheduler::Options::default().max_concurrent_binds)]
        max_concurrent_binds: usize,
    },
    /// Run the controllers stand-alone against any Kubernetes API server named by a
    /// kubeconfig; several may run, one leads (the `kube-controller-manager` Lease).
    ControllerManager {
        /// The kubeconfig naming the server and the credentials to use.
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: PathBuf,
        /// Context to use instead of the kubeconfig's current one.
        #[arg(long)]
        context: Option<String>,
        #[command(flatten)]
        controller_flags: controller_flags::ControllerFlags,
    },
    /// Print a kubeconfig for a user with a client certificate (CN = the user, O = each
    /// group) signed by the cluster CA, valid for a year; bind roles to the user to let it in.
    Kubeconfig {
        /// The user's name (the certificate's common name).
        #[arg(long)]
        user: String,
        /// A group the user is in (repeatable; the certificate's organizations).
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        #[arg(long, env = "CAPSTAN_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// The server's URL (default: the one in the data dir's admin kubeconfig).
        #[arg(long)]
        server: Option<String>,
    },
    /// Bootstrap (join) tokens, as `kubeadm token`.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Write a consistent snapshot of the cluster's store (every key at one revision) to
    /// FILE, while the server runs: the data dir's SQLite file, or the etcd datastore.
    Backup {
        file: PathBuf,
        #[arg(long, env = "CAPSTAN_DATA_DIR")]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        datastore: datastore::DatastoreFlags,
    },
    /// Make a new store from a snapshot, every object at its resourceVersion: a new data
    /// dir's SQLite file, or an empty etcd datastore (so a cluster moves between the two).
    /// Copy the old data dir's pki/ and admin-token beside it to keep the same identity.
    Restore {
        file: PathBuf,
        #[arg(long, env = "CAPSTAN_DATA_DIR")]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        datastore: datastore::DatastoreFlags,
    },
    /// Measure a Kubernetes API server (capstan or any other) named by a kubeconfig.
    Bench {
        /// The kubeconfig naming the server and the credentials to use.
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: PathBuf,
        /// Context to use instead of the kubeconfig's current one.
        #[arg(long)]
        context: Option<String>,
        /// Scenario to run (repeatable); without it every scenario but schedule and
        /// deployment (which need nodes, a scheduler and the controllers) runs.
        #[arg(long = "scenario", value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(capstan_bench::SCENARIOS))]
        scenarios: Vec<String>,
        /// Concurrent clients for create and get (default 8; 4 with --quick).
        #[arg(long)]
        clients: Option<usize>,
        /// ConfigMaps created, read and listed (default 2000; 200 with --quick).
        #[arg(long)]
        count: Option<usize>,
        /// Watchers in watch-fanout (default 1000; 50 with --quick).
        #[arg(long)]
        watchers: Option<usize>,
        /// Objects written while they watch (default 200; 50 with --quick).
        #[arg(long)]
        events: Option<usize>,
        /// Clients in update-contention (default 16; 4 with --quick).
        #[arg(long)]
        contention_clients: Option<usize>,
        /// Successful updates in update-contention (default 1000; 200 with --quick).
        #[arg(long)]
        updates: Option<usize>,
        /// Pods the schedule scenario creates (default 30000; 300 with --quick).
        #[arg(long)]
        pods: Option<usize>,
        /// The schedule scenario's pods are all plain (default: a third plain, a third with
        /// topology spread, a third with required anti-affinity).
        #[arg(long)]
        plain_pods: bool,
        /// Replicas of the deployment scenario's Deployment (default 1000; 50 with --quick).
        #[arg(long)]
        deployment_replicas: Option<usize>,
        /// The server's process id, if it runs on this machine: schedule reports its RSS.
        #[arg(long)]
        server_pid: Option<u32>,
        /// Small counts for a run of seconds (the test script uses it).
        #[arg(long)]
        quick: bool,
        /// The capstan binary the startup scenario starts (default: this one).
        #[arg(long)]
        capstan_binary: Option<PathBuf>,
        /// Write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// A previous run's JSON: print each figure before -> after.
        #[arg(long)]
        compare: Option<PathBuf>,
    },
}

fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("capstan");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/capstan"),
        None => PathBuf::from("capstan-data"),
    }
}

fn main() -> anyhow::Result<()> {
    // The shim forks containers: it must stay single-threaded, so it runs before anything
    // else starts a thread.
    if std::env::args().nth(1).as_deref() == Some("container-shim") {
        // libcontainer says why a container's init failed only through tracing: errors go to
        // the shim's stderr (its shim.log). The fmt subscriber starts no thread.
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::ERROR)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
        std::process::exit(capstan_agent::runtime::shim_main(
            std::env::args().skip(2).collect(),
        ));
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAPSTAN_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    // Watches hold a socket each: lift the soft descriptor limit, as Go binaries do.
    fd_limit::raise();
    heap::tune();
    match cli.command {
        Command::Server {
            data_dir,
            listen,
            history_retention_seconds,
            compaction_interval_seconds,
            max_requests_inflight,
            max_watches,
            watch_bookmark_interval_seconds,
            service_cluster_ip_range,
            service_node_port_range,
            advertise_address,
            tls_san,
            simulated_nodes,
            sim,
            disable_scheduler,
            disable_controllers,
            controller_flags,
            no_agent,
            agent_flags,
            security,
            datastore,
        } => {
            let mut agent_flags = agent_flags;
            agent_flags.node_lease_duration_seconds = sim.node_lease_duration_seconds;
            let simulation = if sim.wanted(simulated_nodes) {
                Some(sim.config(simulated_nodes)?)
            } else {
                None
            };
            let ranges =
                service_alloc::Ranges::parse(&service_cluster_ip_range, &service_node_port_range)
                    .map_err(|e| anyhow::anyhow!(e))?;
            let compaction = CompactionConfig {
                retention: Duration::from_secs(history_retention_seconds),
                interval: Duration::from_secs(compaction_interval_seconds.max(1)),
            };
            // Request threads walk objects as deep as the API admits: give them the stack
            // for it (reserved address space; only what is used is committed).
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_stack_size(capstan_apiserver::limits::THREAD_STACK_BYTES)
                .build()?;
            let server = rt.spawn(server(ServerOptions {
                data_dir: data_dir.unwrap_or_else(default_data_dir),
                listen,
                compaction,
                max_inflight: max_requests_inflight,
                max_watches,
                bookmark_every: Duration::from_secs(watch_bookmark_interval_seconds),
                ranges,
                advertise_address,
                tls_san,
                simulation,
                scheduler: !disable_scheduler,
                controllers: if disable_controllers {
                    None
                } else {
                    Some(controller_flags.options()?)
                },
                agent: (!no_agent).then_some(agent_flags),
                security,
                datastore,
            }));
            // The server runs on a worker (big stack), not on this main thread.
            let result = rt.block_on(server);
            // Nothing left running may hold up the exit: the store is closed and its writes
            // durable, so a read still on a blocking thread (waiting on SQLite's lock while
            // the last connection checkpoints) has nobody to answer.
            rt.shutdown_timeout(Duration::from_millis(250));
            result?
        }
        Command::Images { command } => agent_flags::images(command, default_data_dir()),
        Command::Cleanup { data_dir } => {
            agent_flags::cleanup(&data_dir.unwrap_or_else(default_data_dir))
        }
        Command::ContainerShim { .. } => unreachable!("dispatched before parsing"),
        Command::Agent {
            simulate,
            kubeconfig,
            context,
            server,
            token,
            ca_cert_hash,
            sim,
            data_dir,
            agent_flags,
        } => {
            if !sim.wanted(simulate) {
                let data_dir = data_dir.unwrap_or_else(default_data_dir);
                let mut agent_flags = agent_flags;
                agent_flags.node_lease_duration_seconds = sim.node_lease_duration_seconds;
                let opts = agent_flags.options(&data_dir)?;
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()?;
                return rt.block_on(async {
                    let (kubeconfig, context) = match (kubeconfig, server) {
                        (Some(k), _) => (k, context),
                        (None, Some(server)) => {
                            let path = agent_join::credentials(
                                &data_dir,
                                &server,
                                token.as_deref(),
                                ca_cert_hash.as_deref(),
                                &opts.node_name,
                            )
                            .await?;
                            (path, None)
                        }
                        (None, None) => anyhow::bail!("--kubeconfig or --server is needed"),
                    };
                    let client = kubeconfig::client(&kubeconfig, context).await?;
                    tokio::select! {
                        r = capstan_agent::run(client, opts) => r.map_err(anyhow::Error::from),
                        signal = shutdown_signal() => {
                            tracing::info!(signal, "agent stopping (containers keep running)");
                            Ok(())
                        }
                    }
                });
            }
            let config = sim.config(simulate)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let kubeconfig = kubeconfig.context("simulated nodes need --kubeconfig")?;
            rt.block_on(async {
                let client =
                    kubeconfig::client(&kubeconfig, context).await?;
                tokio::select! {
                    r = capstan_agent::simulate::run(client, config) => r.map_err(anyhow::Error::from),
                    signal = shutdown_signal() => {
                        tracing::info!(signal, "simulated nodes stopping");
                        Ok(())
                    }
                }
            })
        }
        Command::Scheduler {
            kubeconfig,
            context,
            max_concurrent_binds,
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let client = kubeconfig::client(&kubeconfig, context).await?;
                let opts = capstan_scheduler::Options {
                    max_concurrent_binds,
                };
                tokio::select! {
                    _ = schedule_while_leading(client, opts, Duration::from_secs(15)) => {}
                    signal = shutdown_signal() => tracing::info!(signal, "scheduler stopping"),
                }
                anyhow::Ok(())
            })
        }
        Command::ControllerManager {
            kubeconfig,
            context,
            controller_flags,
        } => {
            let mut opts = controller_flags.options()?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let (client, ca) = kubeconfig::client_and_ca(&kubeconfig, context).await?;
                // Without --root-ca-file, the CA the kubeconfig trusts (as upstream).
                if opts.root_ca_pem.is_none() {
                    opts.root_ca_pem = ca;
                }
                tokio::select! {
                    // The kubeconfig's one identity for every loop (see README: identities).
                    _ = capstan_controllers::run(client, capstan_controllers::Credentials::Shared, opts) => {}
                    signal = shutdown_signal() => tracing::info!(signal, "controllers stopping"),
                }
                anyhow::Ok(())
            })
        }
        Command::Kubeconfig {
            user,
            groups,
            data_dir,
            server,
        } => {
            let data_dir = data_dir.unwrap_or_else(default_data_dir);
            print!(
                "{}",
                kubeconfig::for_user(&data_dir, &user, &groups, server.as_deref())?
            );
            Ok(())
        }
        Command::Token {
            command:
                TokenCommand::Create {
                    ttl,
                    groups,
                    description,
                    print_join_command,
                    data_dir,
                },
        } => {
            let data_dir = data_dir.unwrap_or_else(default_data_dir);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let token = rt.block_on(join_token::create(
                &data_dir,
                ttl,
                &groups,
                &description,
                print_join_command,
            ))?;
            println!("{token}");
            Ok(())
        }
        Command::Backup {
            file,
            data_dir,
            datastore,
        } => {
            let data_dir = data_dir.unwrap_or_else(default_data_dir);
            runtime()?.block_on(backup::backup(&file, &data_dir, &datastore))
        }
        Command::Restore {
            file,
            data_dir,
            datastore,
        } => {
            let data_dir = data_dir.unwrap_or_else(default_data_dir);
            runtime()?.block_on(backup::restore(&file, &data_dir, &datastore))
        }
        Command::Bench {
            kubeconfig,
            context,
            scenarios,
            clients,
            count,
            watchers,
            events,
            contention_clients,
            updates,
            pods,
            plain_pods,
            deployment_replicas,
            server_pid,
            quick,
            capstan_binary,
            json,
            compare,
        } => {
            let mut opts = capstan_bench::Options::new(kubeconfig);
            if quick {
                opts = opts.quick();
            }
            opts.context = context;
            opts.scenarios = scenarios;
            opts.capstan_binary = capstan_binary;
            opts.clients = clients.unwrap_or(opts.clients);
            opts.count = count.unwrap_or(opts.count);
            opts.watchers = watchers.unwrap_or(opts.watchers);
            opts.events = events.unwrap_or(opts.events);
            opts.contention_clients = contention_clients.unwrap_or(opts.contention_clients);
            opts.updates = updates.unwrap_or(opts.updates);
            opts.pods = pods.unwrap_or(opts.pods);
            opts.plain_pods = plain_pods;
            opts.deployment_replicas = deployment_replicas.unwrap_or(opts.deployment_replicas);
            opts.server_pid = server_pid;
            let before = match &compare {
                Some(p) => Some(
                    serde_json::from_slice::<capstan_bench::Report>(
                        &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
                    )
                    .with_context(|| format!("parsing {}", p.display()))?,
                ),
                None => None,
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let report = match rt.block_on(capstan_bench::run(opts)) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("capstan bench: {e}");
                    std::process::exit(2);
                }
            };
            println!();
            print!("{}", report.table());
            if let Some(before) = before {
                println!();
                print!("{}", report.compare(&before));
            }
            if let Some(p) = json {
                std::fs::write(&p, serde_json::to_vec_pretty(&report)?)
                    .with_context(|| format!("writing {}", p.display()))?;
            }
            if !report.ok {
                eprintln!("capstan bench: a consistency check failed");
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

/// The runtime of a one-shot command (backup, restore).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Run the scheduler only while holding the `kube-scheduler` Lease (upstream's
/// `--leader-elect`), so servers sharing a store schedule each pod once and another server
/// takes over within the lease duration when the holder dies.
async fn schedule_while_leading(
    client: kube::Client,
    opts: capstan_scheduler::Options,
    lease_duration: Duration,
) {
    let run_client = client.clone();
    capstan_controllers::leader::lead(
        client,
        capstan_controllers::leader::Leadership {
            lease: "kube-scheduler",
            identity: capstan_controllers::context::default_identity(),
            duration: lease_duration,
            field_manager: "capstan-scheduler",
            what: "scheduler",
        },
        move || {
            vec![tokio::spawn(capstan_scheduler::run(
                run_client.clone(),
                opts.clone(),
            ))]
        },
    )
    .await
}

/// Everything `capstan server` is configured with.
struct ServerOptions {
    data_dir: PathBuf,
    listen: SocketAddr,
    compaction: CompactionConfig,
    max_inflight: usize,
    max_watches: usize,
    bookmark_every: Duration,
    ranges: service_alloc::Ranges,
    advertise_address: Option<std::net::IpAddr>,
    tls_san: Vec<String>,
    /// Simulated nodes run inside the server, if asked for.
    simulation: Option<capstan_agent::simulate::SimConfig>,
    scheduler: bool,
    /// The built-in controllers' options, unless disabled.
    controllers: Option<capstan_controllers::Options>,
    /// The node agent's flags, unless `--no-agent`.
    agent: Option<agent_flags::AgentFlags>,
    /// Audit log and encryption at rest.
    security: security_flags::SecurityFlags,
    /// SQLite in the data dir, or etcd.
    datastore: datastore::DatastoreFlags,
}

async fn server(opts: ServerOptions) -> anyhow::Result<()> {
    let ServerOptions {
        data_dir,
        listen,
        compaction,
        max_inflight,
        max_watches,
        bookmark_every,
        ranges,
        advertise_address,
        tls_san,
        simulation,
        scheduler,
        controllers,
        agent,
        security,
        datastore,
    } = opts;
    let started = Instant::now();
    data_dir::private_umask();
    // One server per data dir: a second one would corrupt the first's writes.
    let dir = data_dir::open(&data_dir)?;
    let data_dir = dir.path.clone();
    let store = datastore::open(&datastore, &data_dir, compaction).await?;
    // In-cluster clients verify the server by the `kubernetes` Service's ClusterIP and DNS
    // names (KUBERNETES_SERVICE_HOST), as upstream's serving certificate names them.
    let mut hosts = vec![
        listen.ip().to_string(),
        ranges.first().to_string(),
        "kubernetes.default.svc.cluster.local".to_string(),
    ];
    if listen.ip().is_unspecified() {
        hosts.push("127.0.0.1".to_string());
    }
    hosts.extend(advertise_address.map(|a| a.to_string()));
    hosts.extend(tls_san);
    let pki =
        pki::load_or_create(&data_dir.join("pki"), &hosts).context("preparing certificates")?;
    let token = kubeconfig::load_or_create_token(&data_dir.join("admin-token"))?;
    let service_account_key =
        capstan_apiserver::serving::service_account_key::SigningKey::load_or_create(
            &data_dir.join("pki"),
        )
        .context("preparing the service account signing key")?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let local = listener.local_addr()?;
    // Listening on every address, this machine's own clients use loopback (as k3s's
    // kubeconfig does).
    let local_url = if local.ip().is_unspecified() {
        format!("https://127.0.0.1:{}", local.port())
    } else {
        format!("https://{local}")
    };
    let kubeconfig_path = data_dir.join("kubeconfig");
    // Serving matters more than this convenience file: on a full disk the server still
    // starts (the kubeconfig is unchanged when it listens where it did before).
    if let Err(e) = kubeconfig::write(
        &kubeconfig_path,
        &kubeconfig::entry_name(&data_dir),
        &local_url,
        &pki.ca_pem,
        &token,
    ) {
        tracing::error!(error = format!("{e:#}"), path = %kubeconfig_path.display(), "could not write the kubeconfig; it may name an older address");
    }
    let kubelet_client = capstan_apiserver::rest::node_proxy::KubeletClientTls::new(
        &pki.ca_pem,
        &pki.kubelet_client,
    )
    .context("preparing the kubelet client certificate")?;
    let api_store = security.wrap_store(store.store())?;
    let state = security
        .apply(AppState::new(api_store, &token))?
        .with_kubelet_client(kubelet_client)
        .with_service_account_key(service_account_key)
        .with_limits(max_inflight, max_watches)
        .with_bookmark_interval(bookmark_every)
        .with_service_ranges(ranges);
    bootstrap::ensure_system_objects(&state, local.port())
        .await
        .map_err(|e| anyhow::anyhow!("creating the system objects: {}", e.message))?;
    // The default roles exist before the first request is authorized against them.
    capstan_apiserver::authz::bootstrap_policy::ensure_bootstrap_policy(&state)
        .await
        .map_err(|e| anyhow::anyhow!("creating the default RBAC policy: {}", e.message))?;
    capstan_apiserver::authz::spawn(state.clone());
    let advertise = match advertise_address {
        Some(a) => a,
        None if local.ip().is_unspecified() => std::net::IpAddr::from([127, 0, 0, 1]),
        None => local.ip(),
    };
    bootstrap::ensure_api_endpoints(&state, advertise, local.port())
        .await
        .map_err(|e| anyhow::anyhow!("writing the kubernetes endpoints: {}", e.message))?;
    let url = format!("https://{}", SocketAddr::new(advertise, local.port()));
    bootstrap::ensure_cluster_info(&state, &url, &pki.ca_pem)
        .await
        .map_err(|e| anyhow::anyhow!("writing kube-public/cluster-info: {}", e.message))?;
    // Custom resource APIs are served from the first request on.
    crd_controller::sync(&state)
        .await
        .map_err(|e| anyhow::anyhow!("loading CustomResourceDefinitions: {}", e.message))?;
    crd_controller::spawn(state.clone());
    // kube-aggregator's autoregistration: a Local APIService per served group-version.
    capstan_apiserver::housekeeping::apiservices::spawn(state.clone());
    // Simulated nodes are ordinary API clients over the in-process transport.
    let simulator = simulation.map(|config| {
        let client = capstan_apiserver::in_process_client(state.clone());
        tokio::spawn(async move {
            if let Err(e) = capstan_agent::simulate::run(client, config).await {
                tracing::error!(error = format!("{e:#}"), "simulated nodes stopped");
            }
        })
    });
    if scheduler {
        // The scheduler is an ordinary API client over the in-process transport, as
        // upstream's `system:kube-scheduler`.
        let client = capstan_apiserver::in_process_client_as(
            state.clone(),
            User::named("system:kube-scheduler", "", &[]),
        );
        let lease_duration = controllers
            .as_ref()
            .map_or(Duration::from_secs(15), |o| o.lease_duration);
        tokio::spawn(schedule_while_leading(
            client,
            capstan_scheduler::Options::default(),
            lease_duration,
        ));
    }
    // Without the node-ipam loop here, this server's own node takes the cluster's first
    // block itself (the loop would have given it that one).
    let ipam_here = controllers
        .as_ref()
        .is_some_and(|o| o.node_cidrs.is_some() && o.enabled("node-ipam-controller"));
    if let Some(mut opts) = controllers {
        // The root-CA publisher hands out this server's CA unless told another.
        opts.root_ca_pem.get_or_insert_with(|| pki.ca_pem.clone());
        // CSRs are signed by this server's CA unless told another.
        if opts.cluster_signing_ca.is_none() {
            opts.cluster_signing_ca = Some(cluster_signer::ca(&pki.ca_pem, &pki.ca_key_pem)?);
        }
        // The controllers are ordinary API clients over the in-process transport too, as
        // kube-controller-manager with `--use-service-account-credentials`: leader election and
        // shared informers as `system:kube-controller-manager`, each loop as its
        // ServiceAccount in kube-system (event-ttl, the API server's work upstream, as its
        // loopback user).
        let client = capstan_apiserver::in_process_client_as(
            state.clone(),
            User::named("system:kube-controller-manager", "", &[]),
        );
        let per_loop = state.clone();
        let credentials = capstan_controllers::Credentials::PerLoop(Arc::new(
            move |who: capstan_controllers::LoopUser| {
                let user = match who {
                    capstan_controllers::LoopUser::ServiceAccount { name, uid } => {
                        User::service_account(
                            capstan_controllers::context::SERVICE_ACCOUNT_NAMESPACE,
                            &name,
                            &uid,
                        )
                    }
                    capstan_controllers::LoopUser::ApiServer => User::loopback(),
                };
                capstan_apiserver::in_process_client_as(per_loop.clone(), user)
            },
        ));
        tokio::spawn(capstan_controllers::run(client, credentials, opts));
    }
    if let Some(flags) = agent {
        // The node agent is an ordinary API client over the in-process transport; it runs
        // the pods bound to this machine.
        let mut opts = flags.options(&data_dir)?;
        if opts.pod_cidr.is_none() && !ipam_here {
            opts.pod_cidr = Some(DEFAULT_POD_CIDR.into());
        }
        // In-process, the agent's node is this control plane's (the server labels it: a node
        // may not give itself a role), and it issues its kubelet certificate from this
        // server's CA.
        tokio::spawn(node_role::label_control_plane(
            capstan_apiserver::in_process_client_as(state.clone(), User::admin()),
            opts.node_name.clone(),
        ));
        opts.kubelet_tls = Some(capstan_agent::node::KubeletTls {
            ca_cert_pem: pki.ca_pem.clone(),
            ca_key_pem: pki.ca_key_pem.clone(),
        });
        // As its node (`system:node:<name>` in `system:nodes`), with a joined agent's rights.
        let client =
            capstan_apiserver::in_process_client_as(state.clone(), User::node(&opts.node_name));
        tokio::spawn(async move {
            if let Err(e) = capstan_agent::run(client, opts).await {
                tracing::error!(error = %e, "node agent stopped");
            }
        });
    }
    heap::spawn_trimmer();
    tracing::info!(listen = %local, data_dir = %data_dir.display(), elapsed_ms = started.elapsed().as_millis() as u64, "capstan server ready");
    println!("export KUBECONFIG={}", kubeconfig_path.display());
    tokio::select! {
        _ = serve::serve_tls(listener, pki.tls, pki.client_certs, router(state)) => {}
        signal = shutdown_signal() => {
            tracing::info!(signal, "shutting down: finishing queued writes");
        }
    }
    if let Some(task) = simulator {
        task.abort();
    }
    // Queued writes are committed (and acknowledged) before the process ends.
    let closing = Instant::now();
    store.close();
    tracing::info!(
        elapsed_ms = closing.elapsed().as_millis() as u64,
        "capstan server stopped"
    );
    drop(dir);
    Ok(())
}

/// SIGTERM (systemd, kill) or SIGINT (Ctrl-C).
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
