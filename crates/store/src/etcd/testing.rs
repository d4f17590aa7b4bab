//! Real etcd clusters for tests: Debian's `etcd` binary, members on loopback ports, data in
//! a private temporary directory, every member killed (and its data removed) on drop.
//! Members die with the test process too (PR_SET_PDEATHSIG from a thread that never ends).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    child: Option<Child>,
}

pub struct EtcdCluster {
    pub members: Vec<Member>,
    dir: PathBuf,
    initial_cluster: String,
    token: String,
}

const DIR_PREFIX: &str = "capstan-etcd-";

/// A cluster kept in a static for a whole test binary is never dropped: its members die
/// with the process, its directory stays. Remove those of processes that are gone.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next() else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    // Held together so no two are the same; released just before etcd binds them.
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// Spawn `cmd` from a thread that lives as long as the process, so PR_SET_PDEATHSIG (which
/// follows the spawning thread) kills the child only when the process ends.
fn spawn_tied_to_process(mut cmd: Command) -> std::io::Result<Child> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let _ = tx.send(cmd.spawn());
        loop {
            std::thread::park();
        }
    });
    rx.recv()
        .unwrap_or_else(|_| Err(std::io::Error::other("spawner thread ended")))
}

impl EtcdCluster {
    /// Start `n` members and wait until each reports itself healthy (has a leader).
    pub fn start(n: usize) -> std::io::Result<Self> {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        remove_stale_dirs();
        let token = format!(
            "{DIR_PREFIX}{}-{}-{nanos}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(&token);
        std::fs::create_dir_all(&dir)?;
        let ports = free_ports(2 * n)?;
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                data_dir: dir.join(format!("m{i}")),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            members,
            dir,
            initial_cluster,
            token,
        };
        for i in 0..n {
            cluster.spawn(i, "new")?;
        }
        for i in 0..n {
            cluster.wait_healthy(i, Duration::from_secs(60))?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize, state: &str) -> std::io::Result<()> {
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", m.name)))?;
        let mut cmd = Command::new("etcd");
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .arg("--listen-client-urls")
            .arg(format!("http://127.0.0.1:{}", m.client_port))
            .arg("--advertise-client-urls")
            .arg(format!("http://127.0.0.1:{}", m.client_port))
            .arg("--listen-peer-urls")
            .arg(format!("http://127.0.0.1:{}", m.peer_port))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("http://127.0.0.1:{}", m.peer_port))
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--initial-cluster-state")
            .arg(state)
            .arg("--initial-cluster-token")
            .arg(&self.token)
            // Elections on loopback need not wait for WAN round trips.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            // capstan stores objects up to 6 MiB; etcd's default request cap is 1.5 MiB.
            .args(["--max-request-bytes", "10485760"])
            .args(["--experimental-watch-progress-notify-interval", "1s"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = spawn_tied_to_process(cmd)?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// `host:port` of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// `etcd://…` naming every member, as `capstan server --datastore` takes it.
    pub fn datastore(&self) -> String {
        format!("etcd://{}", self.endpoints().join(","))
    }

    /// SIGKILL one member (its data stays, so it can be restarted).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start a killed member again with its data; waits until it is healthy.
    pub fn restart(&mut self, i: usize) -> std::io::Result<()> {
        self.spawn(i, "existing")?;
        self.wait_healthy(i, Duration::from_secs(60))
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    /// Wait until the member answers `/health` with `"health":"true"` (it has a leader).
    pub fn wait_healthy(&self, i: usize, within: Duration) -> std::io::Result<()> {
        let port = self.members[i].client_port;
        let deadline = Instant::now() + within;
        loop {
            if health(port).unwrap_or(false) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "etcd member {} did not become healthy within {within:?}; its log:\n{}",
                    self.members[i].name,
                    self.log_tail(i)
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of a member's log, for a failure message.
    pub fn log_tail(&self, i: usize) -> String {
        let path = self.dir.join(format!("{}.log", self.members[i].name));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// One GET /health over plain HTTP/1.0.
fn health(port: u16) -> std::io::Result<bool> {
    let mut s = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body.contains("\"health\":\"true\""))
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
