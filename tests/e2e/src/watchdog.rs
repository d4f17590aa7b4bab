//! A time limit on each test server's life: past it, the test binary prints the process tree
//! (which kubectl, shim or container is stuck, and on what) and exits, failing at once.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Every live server of this test binary: its pid, data dir and whether an agent runs.
static SERVERS: Mutex<Vec<(u32, PathBuf, bool)>> = Mutex::new(Vec::new());

pub(crate) fn register(pid: u32, data_dir: PathBuf, with_agent: bool) {
    if let Ok(mut s) = SERVERS.lock() {
        s.push((pid, data_dir, with_agent));
    }
}

pub(crate) fn unregister(pid: u32) {
    if let Ok(mut s) = SERVERS.lock() {
        s.retain(|(p, _, _)| *p != pid);
    }
}

/// Kills every server and cleans up after their agents: a server left running would hold
/// the test runner's output pipe (and so `scripts/test`'s tee) open for ever.
fn stop_servers() {
    let servers = SERVERS.lock().map(|s| s.clone()).unwrap_or_default();
    for (pid, data_dir, with_agent) in servers {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
        if with_agent {
            let _ = std::process::Command::new("timeout")
                .arg("60")
                .arg(crate::capstan_bin())
                .args(["cleanup", "--data-dir"])
                .arg(&data_dir)
                .status();
        }
    }
}

/// How long a server may live, unless `CAPSTAN_E2E_LIMIT_SECS` says otherwise. Tests take
/// seconds to a few minutes; a hang would otherwise hold CI until its own limit, silently.
const DEFAULT_LIMIT: Duration = Duration::from_secs(15 * 60);

pub struct Watchdog {
    done: Arc<(Mutex<bool>, Condvar)>,
}

impl Watchdog {
    /// Watches the test that owns the server whose kubeconfig is `kubeconfig`.
    pub fn start(what: String, kubeconfig: std::path::PathBuf) -> Watchdog {
        let limit = std::env::var("CAPSTAN_E2E_LIMIT_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_LIMIT);
        let done = Arc::new((Mutex::new(false), Condvar::new()));
        let watched = done.clone();
        std::thread::spawn(move || {
            let (lock, cvar) = &*watched;
            let Ok(guard) = lock.lock() else { return };
            let Ok((guard, timeout)) = cvar.wait_timeout_while(guard, limit, |d| !*d) else {
                return;
            };
            if !*guard && timeout.timed_out() {
                say(format!(
                    "\n=== e2e watchdog: {what} still running after {}s; the processes:",
                    limit.as_secs()
                ));
                report_processes();
                report_api(&kubeconfig);
                stop_servers();
                std::process::exit(3);
            }
        });
        Watchdog { done }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (lock, cvar) = &*self.done;
        if let Ok(mut d) = lock.lock() {
            *d = true;
        }
        cvar.notify_all();
    }
}

/// Whether the API still answers, and what it says of the pods (bounded: it may not).
fn report_api(kubeconfig: &std::path::Path) {
    for args in [
        &["get", "--raw", "/readyz?verbose"][..],
        &["get", "pods", "-A", "-o", "wide"][..],
    ] {
        let out = std::process::Command::new("timeout")
            .arg("10")
            .arg("kubectl")
            .args(args)
            .arg("--request-timeout=5s")
            .env("KUBECONFIG", kubeconfig)
            .output();
        if let Ok(out) = out {
            say(format!(
                "--- kubectl {}: {:?}\n{}{}",
                args.join(" "),
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
}

/// `ps` as a forest (no kernel threads), then each kubectl/script/shim process's open descriptors and where it
/// waits: enough to tell which client waits on which stream.
fn report_processes() {
    let ps = std::process::Command::new("ps")
        .args(["--ppid", "2", "-p", "2", "--deselect"])
        .args(["-o", "pid,ppid,etimes,stat,wchan:24,args", "--forest"])
        .output();
    if let Ok(out) = ps {
        say(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in procs.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !["kubectl", "container-shim", "script "]
            .iter()
            .any(|k| cmdline.contains(k))
        {
            continue;
        }
        let fds: Vec<String> = std::fs::read_dir(entry.path().join("fd"))
            .map(|d| {
                d.flatten()
                    .map(|f| {
                        let target = std::fs::read_link(f.path())
                            .map(|t| t.display().to_string())
                            .unwrap_or_default();
                        format!("{}->{target}", f.file_name().to_string_lossy())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let stack = std::fs::read_to_string(entry.path().join("stack")).unwrap_or_default();
        say(format!(
            "--- {pid}: {cmdline}\n  fds: {}\n  stack: {}",
            fds.join(" "),
            stack.lines().take(6).collect::<Vec<_>>().join(" | ")
        ));
    }
}

/// Straight to the process's stderr: the test harness captures `eprintln!` of test threads
/// and the threads they spawn, and a capture is lost when the binary exits.
fn say(text: String) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{text}");
}
