//! Test helper for the crash test: writes to a store from many concurrent writers and
//! prints one line per acknowledged write, until it is killed.
//! Usage: store-crash-writer DB_PATH CYCLE WRITERS

use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use capstan_store::{SqliteConfig, SqliteStore, StoreError, StoreExt};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: store-crash-writer DB_PATH CYCLE WRITERS");
        std::process::exit(2);
    }
    let cycle: u32 = args[2].parse().unwrap_or(0);
    let writers: u32 = args[3].parse().unwrap_or(16);
    let store = match SqliteStore::open(SqliteConfig::new(&args[1])) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("open: {e}");
            std::process::exit(1);
        }
    };
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let out = out.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0u64.. {
                let key = format!("crash/c{cycle:03}/w{w:03}/{i:08}");
                let value = Bytes::from(format!("{key}:{}", "x".repeat(1000)));
                if i % 8 == 7 {
                    // A read-modify-write on the shared counter, retried on conflict.
                    loop {
                        let cur = store.get(b"crash/counter").await.ok().flatten();
                        let (n, rev) = cur
                            .map(|kv| {
                                (
                                    String::from_utf8_lossy(&kv.value)
                                        .parse::<u64>()
                                        .unwrap_or(0),
                                    kv.mod_revision,
                                )
                            })
                            .unwrap_or((0, 0));
                        match store
                            .update(b"crash/counter", Bytes::from((n + 1).to_string()), rev)
                            .await
                        {
                            Ok(r) => {
                                let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
                                let _ = writeln!(o, "counter {} {r}", n + 1);
                                let _ = o.flush();
                                break;
                            }
                            Err(StoreError::CompareFailed) => continue,
                            Err(e) => {
                                eprintln!("counter: {e}");
                                return;
                            }
                        }
                    }
                }
                match store.create(key.as_bytes(), value).await {
                    Ok(rev) => {
                        let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
                        let _ = writeln!(o, "put {key} {rev}");
                        let _ = o.flush();
                    }
                    Err(e) => {
                        eprintln!("put {key}: {e}");
                        return;
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}
