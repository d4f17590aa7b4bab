//! Figure printer (not a timed test): how fast `capstan server` starts serving on an empty
//! data dir, and its resident memory when idle.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let runs: usize = std::env::var("STARTUP_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let bin = capstan_e2e::capstan_bin();
    let mut times = Vec::new();
    let mut rss = Vec::new();
    for i in 0..runs {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let started = Instant::now();
        let mut child = Command::new(&bin)
            .args(["server", "--data-dir"])
            .arg(dir.path())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("CAPSTAN_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn capstan");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // Serving: the listener is bound, the store open, system namespaces written.
        let ready = started.elapsed();
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("listening");
        times.push(ready);
        if i == 0 || i == runs - 1 {
            std::thread::sleep(Duration::from_secs(1));
            rss.push(rss_kib(child.id()));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "startup    runs={runs:<3} empty data dir -> serving: min {:.1} ms  p50 {:.1} ms  max {:.1} ms",
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    );
    println!(
        "idle RSS   {} KiB (first run), {} KiB (last run), 1 s after start",
        rss[0],
        rss[rss.len() - 1]
    );
}
