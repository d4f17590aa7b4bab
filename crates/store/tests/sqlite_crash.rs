//! Crash safety of the SQLite backend: a child process writes with many concurrent
//! writers and is SIGKILLed at a random moment; every write it saw acknowledged must
//! be present after reopening, with revisions in order.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use capstan_store::{KeyRange, RangeRequest, SqliteConfig, SqliteStore, Store, StoreExt};
use futures::StreamExt;
use rand::RngExt;

const CYCLES: u32 = 20;
const WRITERS: u32 = 32;

#[derive(Default)]
struct Acks {
    puts: HashMap<String, i64>,
    /// counter value -> revision at which it was written
    counter: BTreeMap<u64, i64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_kill9_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let mut acks = Acks::default();
    let mut rng = rand::rng();
    for cycle in 0..CYCLES {
        let mut child = Command::new(env!("CARGO_BIN_EXE_store-crash-writer"))
            .arg(&db)
            .arg(cycle.to_string())
            .arg(WRITERS.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn writer");
        let stdout = child.stdout.take().unwrap();
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines.is_empty() {
                    let _ = first_tx.send(());
                }
                lines.push(line);
            }
            lines
        });
        // Let the load get going, then kill at a random moment.
        first_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("writer acknowledged nothing");
        let delay = rng.random_range(20..400);
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        let before = acks.puts.len();
        for line in lines {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                ["put", key, rev] => {
                    acks.puts.insert(key.to_string(), rev.parse().unwrap());
                }
                ["counter", n, rev] => {
                    acks.counter
                        .insert(n.parse().unwrap(), rev.parse().unwrap());
                }
                _ => {} // a line torn by the kill
            }
        }
        let started = Instant::now();
        let store = SqliteStore::open(SqliteConfig::new(&db)).expect("reopen after SIGKILL");
        verify(&store, &acks).await;
        store.close();
        eprintln!(
            "cycle {cycle}: killed after {delay} ms, {} new acknowledged writes, {} in total, reopen+verify {:?}",
            acks.puts.len() - before,
            acks.puts.len(),
            started.elapsed()
        );
    }
    assert!(
        acks.puts.len() > 1000,
        "the writer should have been acknowledged many writes"
    );
}

async fn verify(store: &SqliteStore, acks: &Acks) {
    // Every acknowledged write is there, at the revision it was acknowledged with.
    let all = store
        .range(RangeRequest::new(KeyRange::prefix(&b"crash/c"[..])))
        .await
        .unwrap();
    let present: HashMap<String, (i64, bytes::Bytes)> = all
        .kvs
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                (kv.mod_revision, kv.value.clone()),
            )
        })
        .collect();
    for (key, rev) in &acks.puts {
        let (got_rev, value) = present
            .get(key)
            .unwrap_or_else(|| panic!("acknowledged write {key} lost"));
        assert_eq!(got_rev, rev, "{key} has the wrong revision");
        assert!(
            value.starts_with(key.as_bytes()),
            "{key} has a corrupt value"
        );
    }
    // The counter is at least the highest acknowledged value (no acknowledged increment lost).
    if let Some((&max, _)) = acks.counter.iter().next_back() {
        let kv = store
            .get(b"crash/counter")
            .await
            .unwrap()
            .expect("counter lost");
        let n: u64 = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
        assert!(n >= max, "counter is {n}, but {max} was acknowledged");
        assert_eq!(kv.version as u64, n, "every increment is one version");
    }
    // Revision order: acknowledged counter values increase with their revisions.
    let revs: Vec<i64> = acks.counter.values().copied().collect();
    assert!(
        revs.windows(2).all(|w| w[0] < w[1]),
        "counter revisions out of order"
    );
    // The history replays in strictly increasing revision order and contains each
    // acknowledged write exactly once.
    let current = store.current_revision().await.unwrap();
    let mut w = store
        .watch(KeyRange::prefix(&b"crash/"[..]), 1)
        .await
        .unwrap();
    let mut last = 0;
    let mut seen = 0usize;
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("replay stalled")
            .expect("watch ended")
            .expect("replay failed");
        assert!(
            e.revision() > last,
            "history out of order: {} after {last}",
            e.revision()
        );
        last = e.revision();
        let key = String::from_utf8_lossy(&e.kv.key);
        if let Some(rev) = acks.puts.get(key.as_ref()) {
            assert_eq!(*rev, e.revision());
            seen += 1;
        }
        if last >= current {
            break;
        }
    }
    assert_eq!(seen, acks.puts.len());
}
