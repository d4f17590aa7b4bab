//! Container probes and lifecycle-hook actions: exec (in the container, through the
//! runtime), httpGet, tcpSocket and grpc (connected from inside the pod's network namespace, so
//! they work before — and without — a pod network), with upstream's timings and thresholds.
//! A probe loop runs per (container run, probe kind) and reports each change of result.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{GRPCAction, HTTPGetAction, Probe, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::mpsc;

use crate::runtime::Runtime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }
}

/// An attempt failed, or the verdict (after the thresholds) changed.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub container_id: String,
    pub kind: ProbeKind,
    /// The verdict after this attempt (None until a threshold is first met).
    pub state: Option<bool>,
    /// Why this attempt failed (the `Unhealthy` event's text), if it did.
    pub failure: Option<String>,
}

/// Where the pod's network is, for httpGet/tcpSocket probes and hooks.
#[derive(Debug, Clone)]
pub struct Target {
    /// The pod's network namespace (None: host network).
    pub net_ns: Option<PathBuf>,
    pub host_ip: IpAddr,
    /// Named ports of the container (`name` → number).
    pub ports: Vec<(String, u16)>,
}

/// The actions probes and hooks share.
#[derive(Debug, Clone)]
pub enum Action {
    Exec(Vec<String>),
    Http(HTTPGetAction),
    Tcp(TCPSocketAction),
    Grpc(GRPCAction),
    Sleep(Duration),
    Unsupported(&'static str),
}

impl Action {
    pub fn of_probe(p: &Probe) -> Action {
        if let Some(e) = &p.exec {
            Action::Exec(e.command.clone().unwrap_or_default())
        } else if let Some(h) = &p.http_get {
            Action::Http(h.clone())
        } else if let Some(t) = &p.tcp_socket {
            Action::Tcp(t.clone())
        } else if let Some(g) = &p.grpc {
            Action::Grpc(g.clone())
        } else {
            Action::Unsupported("the probe names no action")
        }
    }
}

/// Runs an action once: Ok, or the failure's message.
pub async fn run_action(
    runtime: &Runtime,
    container_id: &str,
    action: &Action,
    target: &Target,
    timeout: Duration,
) -> Result<(), String> {
    match action {
        Action::Exec(argv) => match runtime.exec(container_id, argv, timeout).await {
            Ok(out) if out.timed_out => Err(format!("command {argv:?} timed out")),
            Ok(out) if out.exit_code == 0 => Ok(()),
            Ok(out) => {
                let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&out.stderr));
                Err(if text.trim().is_empty() {
                    format!("command {argv:?} exited with {}", out.exit_code)
                } else {
                    text.trim_end().to_string()
                })
            }
            Err(e) => Err(e.to_string()),
        },
        Action::Http(h) => {
            let port = resolve_port(&h.port, &target.ports)?;
            let (ip, host_header) = match h.host.as_deref().filter(|s| !s.is_empty()) {
                Some(host) => (
                    host.parse::<IpAddr>()
                        .map_err(|_| format!("host {host:?} is not an IP address"))?,
                    host.to_string(),
                ),
                None => (default_ip(target), default_ip(target).to_string()),
            };
            let path = h
                .path
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "/".into());
            let mut headers = String::new();
            let mut has_host = false;
            for hd in h.http_headers.iter().flatten() {
                if hd.name.eq_ignore_ascii_case("host") {
                    has_host = true;
                }
                headers.push_str(&format!("{}: {}\r\n", hd.name, hd.value));
            }
            if !has_host {
                headers.push_str(&format!("Host: {host_header}:{port}\r\n"));
            }
            let request = format!(
                "GET {path} HTTP/1.1\r\n{headers}User-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n\r\n"
            );
            let ns = target.net_ns.clone();
            let addr = SocketAddr::new(ip, port);
            let url = format!("http://{host_header}:{port}{path}");
            blocking(move || {
                let mut stream = connect_in(ns.as_ref(), addr, timeout)?;
                stream
                    .set_read_timeout(Some(timeout))
                    .map_err(|e| e.to_string())?;
                stream
                    .set_write_timeout(Some(timeout))
                    .map_err(|e| e.to_string())?;
                stream
                    .write_all(request.as_bytes())
                    .map_err(|e| format!("Get \"{url}\": {e}"))?;
                let mut head = [0u8; 64];
                let n = stream
                    .read(&mut head)
                    .map_err(|e| format!("Get \"{url}\": {e}"))?;
                let line = String::from_utf8_lossy(&head[..n]);
                let code: u16 = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| format!("Get \"{url}\": malformed HTTP response"))?;
                if (200..400).contains(&code) {
                    Ok(())
                } else {
                    Err(format!("HTTP probe failed with statuscode: {code}"))
                }
            })
            .await
        }
        Action::Tcp(t) => {
            let port = resolve_port(&t.port, &target.ports)?;
            let ip = match t.host.as_deref().filter(|s| !s.is_empty()) {
                Some(h) => h
                    .parse::<IpAddr>()
                    .map_err(|_| format!("host {h:?} is not an IP address"))?,
                None => default_ip(target),
            };
            let ns = target.net_ns.clone();
            let addr = SocketAddr::new(ip, port);
            blocking(move || connect_in(ns.as_ref(), addr, timeout).map(|_| ())).await
        }
        Action::Grpc(g) => {
            let port = u16::try_from(g.port).map_err(|_| format!("invalid port {}", g.port))?;
            let addr = SocketAddr::new(default_ip(target), port);
            let ns = target.net_ns.clone();
            let stream = blocking(move || {
                connect_in(ns.as_ref(), addr, timeout).map_err(|e| {
                    format!("timeout: failed to connect service \"{addr}\" within {timeout:?}: {e}")
                })
            })
            .await?;
            let service = g.service.clone().unwrap_or_default();
            super::grpc_probe::check(stream, &addr.to_string(), &service, timeout).await
        }
        Action::Sleep(d) => {
            tokio::time::sleep(*d).await;
            Ok(())
        }
        Action::Unsupported(why) => Err((*why).to_string()),
    }
}

/// Inside the pod's own network namespace its loopback reaches every container.
fn default_ip(target: &Target) -> IpAddr {
    if target.net_ns.is_some() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        target.host_ip
    }
}

fn resolve_port(port: &IntOrString, named: &[(String, u16)]) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(s) => match s.parse::<u16>() {
            Ok(n) => Ok(n),
            Err(_) => named
                .iter()
                .find(|(n, _)| n == s)
                .map(|(_, p)| *p)
                .ok_or_else(|| format!("unknown port name {s:?}")),
        },
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("probe task: {e}"))?
}

/// Connects from inside `ns` (a socket keeps the namespace it was made in). The thread that
/// enters the namespace is a fresh one that ends right after, so no pool thread is left in a
/// pod's namespace.
fn connect_in(
    ns: Option<&PathBuf>,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, String> {
    let Some(ns) = ns.cloned() else {
        return TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| format!("dial tcp {addr}: {e}"));
    };
    std::thread::spawn(move || {
        let file =
            std::fs::File::open(&ns).map_err(|e| format!("opening {}: {e}", ns.display()))?;
        // SAFETY: setns on a valid namespace fd affects only this (short-lived) thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(format!(
                "entering the pod network: {}",
                std::io::Error::last_os_error()
            ));
        }
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("dial tcp {addr}: {e}"))
    })
    .join()
    .map_err(|_| "probe thread panicked".to_string())?
}

/// Runs one probe until aborted, sending each change of verdict.
pub async fn probe_loop(
    runtime: Arc<Runtime>,
    container_id: String,
    kind: ProbeKind,
    probe: Probe,
    target: Target,
    tx: mpsc::UnboundedSender<Verdict>,
) {
    let action = Action::of_probe(&probe);
    let secs = |v: Option<i32>, d: u64| {
        v.and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0)
            .unwrap_or(d)
    };
    let initial = Duration::from_secs(
        probe
            .initial_delay_seconds
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(0),
    );
    let period = Duration::from_secs(secs(probe.period_seconds, 10));
    let timeout = Duration::from_secs(secs(probe.timeout_seconds, 1));
    let success_threshold = secs(probe.success_threshold, 1) as u32;
    let failure_threshold = secs(probe.failure_threshold, 3) as u32;
    tokio::time::sleep(initial).await;
    let mut verdict: Option<bool> = None;
    let (mut successes, mut failures) = (0u32, 0u32);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let result = run_action(&runtime, &container_id, &action, &target, timeout).await;
        match &result {
            Ok(()) => {
                successes += 1;
                failures = 0;
            }
            Err(_) => {
                failures += 1;
                successes = 0;
            }
        }
        let next = if successes >= success_threshold {
            Some(true)
        } else if failures >= failure_threshold {
            Some(false)
        } else {
            verdict
        };
        let failure = result.err();
        if next != verdict || failure.is_some() {
            let sent = tx.send(Verdict {
                container_id: container_id.clone(),
                kind,
                state: next,
                failure,
            });
            if sent.is_err() {
                return;
            }
        }
        verdict = next;
        // A startup probe stops once it succeeded; liveness restarts end this loop by abort.
        if kind == ProbeKind::Startup && verdict == Some(true) {
            return;
        }
    }
}
