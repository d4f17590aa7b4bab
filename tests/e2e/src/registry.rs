//! A real image registry for tests: Debian's `docker-registry` on a free loopback port
//! (anonymous, or with htpasswd basic auth), fed by `skopeo`; killed when dropped.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The user and password of a registry started with auth.
pub const USER: &str = "capstan";
pub const PASSWORD: &str = "capstan-secret";
/// `capstan:capstan-secret`, bcrypt as docker-registry's htpasswd wants (made once with
/// Python's crypt; a hash is a constant, so the test needs no tool to make it).
const HTPASSWD: &str = "capstan:$2b$10$JR8UuIVUR.LFD3Dj/Bzux.a6xGWv4YaHiEuu8aXVXikyoqQ3voacy\n";

pub struct Registry {
    child: Child,
    pub port: u16,
    with_auth: bool,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_with_auth(false)
    }

    pub fn start_with_auth(htpasswd: bool) -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let auth = if htpasswd {
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, HTPASSWD).expect("htpasswd");
            format!(
                "auth:\n  htpasswd:\n    realm: capstan-test\n    path: {}\n",
                path.display()
            )
        } else {
            String::new()
        };
        // The port is probed free then handed over: another process may take it in between,
        // so a registry that does not come up is retried on a new one.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
                    dir.path().join("data").display()
                ),
            )
            .expect("registry config");
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("docker-registry (apt-get install docker-registry; scripts/test does)");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if answers(port) {
                    return Registry {
                        child,
                        port,
                        with_auth: htpasswd,
                        _dir: dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("docker-registry did not come up");
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Copies an archive (`docker-archive:` or `oci-archive:` prefix included in `source`)
    /// into the registry as `name` (`repo:tag`), with the credentials when it wants them.
    pub fn push(&self, source: &str, name: &str) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--insecure-policy", "--dest-tls-verify=false"]);
        if self.with_auth {
            cmd.args(["--dest-creds", &format!("{USER}:{PASSWORD}")]);
        }
        let out = cmd
            .arg(source)
            .arg(format!("docker://{}/{name}", self.host()))
            .output()
            .expect("skopeo (apt-get install skopeo; scripts/test does)");
        assert!(
            out.status.success(),
            "skopeo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `docker-archive:<path>` for `push`.
    pub fn docker_archive(path: &Path) -> String {
        format!("docker-archive:{}", path.display())
    }
}

fn answers(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    // 401 is an answer too: a registry with htpasswd asks for credentials.
    s.read_exact(&mut head).is_ok()
        && head.starts_with(b"HTTP/1.")
        && (&head[9..12] == b"200" || &head[9..12] == b"401")
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
