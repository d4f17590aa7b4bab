//! The store conformance suite: behaviour every backend must show, written once against
//! the `Store` trait. A backend's test file instantiates it with `store_conformance_tests!`.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use crate::error::StoreError;
use crate::store::{Store, StoreExt, WatchStream};
use crate::types::*;

/// A fresh, empty store plus whatever keeps it alive (a temp dir, a server process).
pub struct Harness {
    pub store: Arc<dyn Store>,
    pub guard: Box<dyn Any + Send>,
}

/// Expands to one `#[tokio::test]` per conformance case, each given a fresh store from
/// `$factory` (an `async fn() -> Harness`).
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:path) => {
        $crate::store_conformance_tests!(@cases $factory;
            conformance_ordering_and_versions,
            conformance_cas_semantics,
            conformance_multi_op_txn,
            conformance_range_at_revision_with_limits,
            conformance_watch_replay_then_live,
            conformance_watch_from_now_and_prefix_filter,
            conformance_watch_compacted,
            conformance_delete_events_carry_prev,
            conformance_concurrent_writers_no_lost_update,
        );
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let h = $factory().await;
                $crate::conformance::$case(h.store.clone()).await;
                drop(h);
            }
        )*
    };
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn next_event(w: &mut WatchStream) -> Arc<WatchEvent> {
    match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Ok(e))) => e,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within 10s"),
    }
}

async fn assert_quiet(w: &mut WatchStream) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(200), w.next()).await {
        panic!("unexpected watch item: {item:?}");
    }
}

fn keys(r: &RangeResponse) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

pub async fn conformance_ordering_and_versions(s: Arc<dyn Store>) {
    let start = s.current_revision().await.unwrap();
    let mut last = start;
    for k in ["p/c", "p/a", "p/b", "p/aa", "p/", "q/x", "o/z"] {
        let rev = s.put(k.as_bytes(), b(k)).await.unwrap();
        assert!(
            rev > last,
            "revision must advance on every write: {rev} after {last}"
        );
        last = rev;
    }
    assert_eq!(s.current_revision().await.unwrap(), last);
    let r = s
        .range(RangeRequest::new(KeyRange::prefix(b("p/"))))
        .await
        .unwrap();
    assert_eq!(keys(&r), ["p/", "p/a", "p/aa", "p/b", "p/c"]);
    assert_eq!(r.revision, last);
    assert!(!r.more);
    let r = s
        .range(RangeRequest::new(KeyRange::between(b("p/a"), b("p/b"))))
        .await
        .unwrap();
    assert_eq!(keys(&r), ["p/a", "p/aa"]);

    // create_revision stays, mod_revision and version move; a re-create starts over.
    let created = s.get(b"p/a").await.unwrap().unwrap();
    assert_eq!(created.version, 1);
    assert_eq!(created.create_revision, created.mod_revision);
    let r2 = s.put(b"p/a", b("v2")).await.unwrap();
    let kv = s.get(b"p/a").await.unwrap().unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (created.create_revision, r2, 2)
    );
    assert_eq!(kv.value, b("v2"));
    s.delete_if(b"p/a", r2).await.unwrap();
    assert!(s.get(b"p/a").await.unwrap().is_none());
    let r3 = s.put(b"p/a", b("v3")).await.unwrap();
    let kv = s.get(b"p/a").await.unwrap().unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r3, r3, 1)
    );
    // Binary keys sort bytewise.
    s.put(&[b'p', b'/', 0xff], b("hi")).await.unwrap();
    s.put(&[b'p', b'/', 0x00], b("lo")).await.unwrap();
    let r = s
        .range(RangeRequest::new(KeyRange::prefix(b("p/"))))
        .await
        .unwrap();
    assert_eq!(r.kvs.first().unwrap().key[..], [b'p', b'/']);
    assert_eq!(r.kvs[1].key[..], [b'p', b'/', 0]);
    assert_eq!(r.kvs.last().unwrap().key[..], [b'p', b'/', 0xff]);
}

pub async fn conformance_cas_semantics(s: Arc<dyn Store>) {
    let r1 = s.create(b"k", b("one")).await.unwrap();
    // create-if-absent fails on an existing key and reports the current value.
    let before = s.current_revision().await.unwrap();
    let resp = s
        .txn(Txn::new().when(b("k"), 0).put(b("k"), b("two")))
        .await
        .unwrap();
    match resp {
        TxnResponse::Failed { current, .. } => {
            let kv = current[0]
                .clone()
                .expect("current value reported on failed compare");
            assert_eq!((kv.value, kv.mod_revision), (b("one"), r1));
        }
        other => panic!("expected failed compare, got {other:?}"),
    }
    assert_eq!(
        s.current_revision().await.unwrap(),
        before,
        "a failed compare must not advance the revision"
    );
    assert_eq!(s.create(b"k", b("x")).await, Err(StoreError::CompareFailed));
    // update-if-unchanged.
    let r2 = s.update(b"k", b("two"), r1).await.unwrap();
    assert!(r2 > r1);
    assert_eq!(
        s.update(b"k", b("stale"), r1).await,
        Err(StoreError::CompareFailed)
    );
    assert_eq!(s.get(b"k").await.unwrap().unwrap().value, b("two"));
    // update of a missing key with a non-zero revision fails and reports None.
    match s
        .txn(Txn::new().when(b("nope"), r1).put(b("nope"), b("x")))
        .await
        .unwrap()
    {
        TxnResponse::Failed { current, .. } => assert_eq!(current, vec![None]),
        other => panic!("expected failure, got {other:?}"),
    }
    assert!(s.get(b"nope").await.unwrap().is_none());
    // delete-if-unchanged.
    assert_eq!(
        s.delete_if(b"k", r1).await.map(|_| ()),
        Err(StoreError::CompareFailed)
    );
    let (r3, prev) = s.delete_if(b"k", r2).await.unwrap();
    assert!(r3 > r2);
    assert_eq!(prev.value, b("two"));
    assert!(s.get(b"k").await.unwrap().is_none());
    // Deleting a missing key changes nothing.
    let resp = s.txn(Txn::new().delete(b("k"))).await.unwrap();
    assert_eq!(
        resp,
        TxnResponse::Succeeded {
            revision: r3,
            prev_kvs: vec![None]
        }
    );
    assert_eq!(s.current_revision().await.unwrap(), r3);
    // The same key twice in one transaction is refused.
    assert!(matches!(
        s.txn(Txn::new().put(b("d"), b("1")).put(b("d"), b("2")))
            .await,
        Err(StoreError::InvalidRequest(_))
    ));
}

pub async fn conformance_multi_op_txn(s: Arc<dyn Store>) {
    s.put(b"m/a", b("a0")).await.unwrap();
    let rb = s.put(b"m/b", b("b0")).await.unwrap();
    let mut w = s.watch(KeyRange::prefix(b("m/")), 0).await.unwrap();
    let resp = s
        .txn(
            Txn::new()
                .when(b("m/b"), rb)
                .when(b("m/c"), 0)
                .put(b("m/a"), b("a1"))
                .delete(b("m/b"))
                .put(b("m/c"), b("c1")),
        )
        .await
        .unwrap();
    let TxnResponse::Succeeded { revision, prev_kvs } = resp else {
        panic!("txn should succeed")
    };
    assert_eq!(prev_kvs.len(), 3);
    assert_eq!(prev_kvs[0].as_ref().unwrap().value, b("a0"));
    assert_eq!(prev_kvs[1].as_ref().unwrap().value, b("b0"));
    assert!(prev_kvs[2].is_none());
    // All ops share one revision, and the watcher sees all three.
    for (key, kind) in [
        ("m/a", EventKind::Put),
        ("m/b", EventKind::Delete),
        ("m/c", EventKind::Put),
    ] {
        let e = next_event(&mut w).await;
        assert_eq!(
            (e.kv.key.clone(), e.kind, e.revision()),
            (b(key), kind, revision)
        );
    }
    let r = s
        .range(RangeRequest::new(KeyRange::prefix(b("m/"))))
        .await
        .unwrap();
    assert_eq!(keys(&r), ["m/a", "m/c"]);
    assert!(r.kvs.iter().all(|kv| kv.mod_revision == revision));
    // A failed compare applies none of the ops.
    let resp = s
        .txn(
            Txn::new()
                .when(b("m/a"), rb)
                .put(b("m/x"), b("x"))
                .delete(b("m/a")),
        )
        .await
        .unwrap();
    assert!(!resp.succeeded());
    assert_eq!(
        keys(
            &s.range(RangeRequest::new(KeyRange::prefix(b("m/"))))
                .await
                .unwrap()
        ),
        ["m/a", "m/c"]
    );
}

pub async fn conformance_range_at_revision_with_limits(s: Arc<dyn Store>) {
    let mut revs = Vec::new();
    for i in 0..10 {
        revs.push(
            s.put(format!("r/{i:02}").as_bytes(), b(&format!("v{i}")))
                .await
                .unwrap(),
        );
    }
    let r5 = revs[4];
    s.put(b"r/00", b("changed")).await.unwrap();
    s.txn(Txn::new().delete(b("r/01"))).await.unwrap();
    s.put(b"r0", b("outside the prefix")).await.unwrap();
    // At a past revision: the five keys that existed then, with their values then.
    let past = s
        .range(RangeRequest::new(KeyRange::prefix(b("r/"))).at(r5))
        .await
        .unwrap();
    assert_eq!(past.revision, r5);
    assert_eq!(keys(&past), ["r/00", "r/01", "r/02", "r/03", "r/04"]);
    assert_eq!(past.kvs[0].value, b("v0"));
    assert_eq!(past.kvs[0].mod_revision, revs[0]);
    // Latest: nine keys (r/01 deleted), r/00 changed, r0 excluded.
    let now = s
        .range(RangeRequest::new(KeyRange::prefix(b("r/"))))
        .await
        .unwrap();
    assert_eq!(now.kvs.len(), 9);
    assert_eq!(now.kvs[0].value, b("changed"));
    // Limits and paging at one revision, while writes continue.
    let at = now.revision;
    let page1 = s
        .range(RangeRequest::new(KeyRange::prefix(b("r/"))).limit(4))
        .await
        .unwrap();
    assert_eq!(keys(&page1), ["r/00", "r/02", "r/03", "r/04"]);
    assert!(page1.more);
    s.put(b"r/05", b("after the first page")).await.unwrap();
    s.put(b"r/99", b("new key")).await.unwrap();
    let last_key = page1.kvs.last().unwrap().key.clone();
    let page2 = s
        .range(
            RangeRequest::new(KeyRange::prefix(b("r/")).after(&last_key))
                .at(at)
                .limit(4),
        )
        .await
        .unwrap();
    assert_eq!(keys(&page2), ["r/05", "r/06", "r/07", "r/08"]);
    assert_eq!(
        page2.kvs[0].value,
        b("v5"),
        "paging at a revision must not see later writes"
    );
    assert!(page2.more);
    let page3 = s
        .range(
            RangeRequest::new(KeyRange::prefix(b("r/")).after(&page2.kvs[3].key))
                .at(at)
                .limit(4),
        )
        .await
        .unwrap();
    assert_eq!(keys(&page3), ["r/09"]);
    assert!(!page3.more);
    // An exact limit reports no more.
    let exact = s
        .range(RangeRequest::new(KeyRange::prefix(b("r/"))).at(at).limit(9))
        .await
        .unwrap();
    assert_eq!((exact.kvs.len(), exact.more), (9, false));
    // A huge limit is no limit.
    let all = s
        .range(
            RangeRequest::new(KeyRange::prefix(b("r/")))
                .at(at)
                .limit(usize::MAX),
        )
        .await
        .unwrap();
    assert_eq!((all.kvs.len(), all.more), (9, false));
    // Keys only.
    let mut ko = RangeRequest::new(KeyRange::prefix(b("r/")));
    ko.keys_only = true;
    let ko = s.range(ko).await.unwrap();
    assert!(ko
        .kvs
        .iter()
        .all(|kv| kv.value.is_empty() && kv.mod_revision > 0));
    // A future revision is refused.
    let cur = s.current_revision().await.unwrap();
    assert!(matches!(
        s.range(RangeRequest::new(KeyRange::prefix(b("r/"))).at(cur + 10))
            .await,
        Err(StoreError::FutureRevision { .. })
    ));
}

pub async fn conformance_watch_replay_then_live(s: Arc<dyn Store>) {
    let mut revs = Vec::new();
    for i in 0..20 {
        revs.push(
            s.put(format!("w/{}", i % 5).as_bytes(), b(&format!("v{i}")))
                .await
                .unwrap(),
        );
    }
    let from = revs[10];
    let mut w = s.watch(KeyRange::prefix(b("w/")), from).await.unwrap();
    for (i, rev) in revs.iter().enumerate().skip(10) {
        let e = next_event(&mut w).await;
        assert_eq!(e.kind, EventKind::Put);
        assert_eq!(e.revision(), *rev);
        assert_eq!(e.kv.value, b(&format!("v{i}")));
        let prev = e.prev_kv.as_ref().expect("prev value on an overwrite");
        assert_eq!(prev.value, b(&format!("v{}", i - 5)));
    }
    // Then live, in order, with nothing duplicated or skipped.
    let mut live = Vec::new();
    for i in 0..50 {
        live.push(
            s.put(format!("w/live{i}").as_bytes(), b("x"))
                .await
                .unwrap(),
        );
    }
    for rev in live {
        assert_eq!(next_event(&mut w).await.revision(), rev);
    }
    assert_quiet(&mut w).await;
}

pub async fn conformance_watch_from_now_and_prefix_filter(s: Arc<dyn Store>) {
    s.put(b"f/old", b("before the watch")).await.unwrap();
    let mut wf = s.watch(KeyRange::prefix(b("f/")), 0).await.unwrap();
    let mut wg = s.watch(KeyRange::prefix(b("g/")), 0).await.unwrap();
    let mut wkey = s.watch(KeyRange::key(b("f/one")), 0).await.unwrap();
    let r1 = s.put(b"g/1", b("g")).await.unwrap();
    let r2 = s.put(b"f/one", b("f")).await.unwrap();
    let r3 = s.put(b"f/two", b("f")).await.unwrap();
    s.put(b"f", b("not under f/")).await.unwrap();
    assert_eq!(next_event(&mut wg).await.revision(), r1);
    assert_eq!(next_event(&mut wf).await.revision(), r2);
    assert_eq!(next_event(&mut wf).await.revision(), r3);
    assert_eq!(next_event(&mut wkey).await.revision(), r2);
    assert_quiet(&mut wf).await;
    assert_quiet(&mut wg).await;
    assert_quiet(&mut wkey).await;
}

pub async fn conformance_watch_compacted(s: Arc<dyn Store>) {
    let mut revs = Vec::new();
    for i in 0..10 {
        revs.push(
            s.put(format!("c/{}", i % 3).as_bytes(), b(&format!("v{i}")))
                .await
                .unwrap(),
        );
    }
    s.txn(Txn::new().delete(b("c/2"))).await.unwrap();
    let compact_at = revs[6];
    s.compact(compact_at).await.unwrap();
    assert_eq!(s.compacted_revision().await.unwrap(), compact_at);
    // Watching from a compacted revision fails and names the oldest one still available.
    match s.watch(KeyRange::prefix(b("c/")), revs[2]).await {
        Err(StoreError::Compacted {
            requested,
            oldest_available,
        }) => {
            assert_eq!(requested, revs[2]);
            assert_eq!(oldest_available, compact_at + 1);
        }
        Err(e) => panic!("expected Compacted, got {e}"),
        Ok(_) => panic!("expected Compacted, got a watch"),
    }
    // Reading before the compaction revision fails too; at it, the state is intact.
    assert!(matches!(
        s.range(RangeRequest::new(KeyRange::prefix(b("c/"))).at(revs[3]))
            .await,
        Err(StoreError::Compacted { .. })
    ));
    let at = s
        .range(RangeRequest::new(KeyRange::prefix(b("c/"))).at(compact_at))
        .await
        .unwrap();
    let vals: Vec<_> = at.kvs.iter().map(|kv| kv.value.clone()).collect();
    assert_eq!(vals, [b("v6"), b("v4"), b("v5")]);
    // Watching from just after it replays what followed.
    let mut w = s
        .watch(KeyRange::prefix(b("c/")), compact_at + 1)
        .await
        .unwrap();
    for rev in &revs[7..] {
        let e = next_event(&mut w).await;
        assert_eq!(e.revision(), *rev);
        assert!(
            e.prev_kv.is_some(),
            "prev value survives compaction of older history"
        );
    }
    assert_eq!(next_event(&mut w).await.kind, EventKind::Delete);
    // Compacting again to an older revision is refused.
    assert!(matches!(
        s.compact(revs[1]).await,
        Err(StoreError::Compacted { .. })
    ));
    // Writes continue after compaction.
    let r = s.put(b"c/new", b("n")).await.unwrap();
    assert_eq!(next_event(&mut w).await.revision(), r);
}

pub async fn conformance_delete_events_carry_prev(s: Arc<dyn Store>) {
    let r1 = s.put(b"d/x", b("payload")).await.unwrap();
    let mut w = s.watch(KeyRange::prefix(b("d/")), r1).await.unwrap();
    let (rd, _) = s.delete_if(b"d/x", r1).await.unwrap();
    let put = next_event(&mut w).await;
    assert_eq!((put.kind, put.revision()), (EventKind::Put, r1));
    let del = next_event(&mut w).await;
    assert_eq!(del.kind, EventKind::Delete);
    assert_eq!(del.revision(), rd);
    assert_eq!(del.kv.key, b("d/x"));
    let prev = del
        .prev_kv
        .as_ref()
        .expect("a delete event carries the deleted value");
    assert_eq!((prev.value.clone(), prev.mod_revision), (b("payload"), r1));
    // Replayed from history, the delete still carries it.
    let mut again = s.watch(KeyRange::prefix(b("d/")), rd).await.unwrap();
    let replayed = next_event(&mut again).await;
    assert_eq!(replayed.kind, EventKind::Delete);
    assert_eq!(replayed.prev_kv.as_ref().unwrap().value, b("payload"));
}

pub async fn conformance_concurrent_writers_no_lost_update(s: Arc<dyn Store>) {
    const WRITERS: usize = 16;
    const INCREMENTS: usize = 25;
    s.create(b"counter", b("0")).await.unwrap();
    let start = s.current_revision().await.unwrap();
    let mut w = s
        .watch(KeyRange::key(b("counter")), start + 1)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            let mut conflicts = 0usize;
            while revs.len() < INCREMENTS {
                let kv = s.get(b"counter").await.unwrap().unwrap();
                let n: u64 = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
                match s
                    .update(b"counter", b(&(n + 1).to_string()), kv.mod_revision)
                    .await
                {
                    Ok(rev) => revs.push(rev),
                    Err(StoreError::CompareFailed) => conflicts += 1,
                    Err(e) => panic!("update failed: {e}"),
                }
            }
            (revs, conflicts)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let (revs, _) = t.await.unwrap();
        assert!(
            revs.windows(2).all(|p| p[0] < p[1]),
            "one writer's revisions must increase"
        );
        all.extend(revs);
    }
    let total = WRITERS * INCREMENTS;
    let kv = s.get(b"counter").await.unwrap().unwrap();
    assert_eq!(kv.value, b(&total.to_string()), "no increment may be lost");
    assert_eq!(kv.version as usize, total + 1);
    all.sort();
    all.dedup();
    assert_eq!(
        all.len(),
        total,
        "every successful write has its own revision"
    );
    // The watcher saw every increment, in order, each building on the previous one.
    for i in 1..=total {
        let e = next_event(&mut w).await;
        assert_eq!(e.kv.value, b(&i.to_string()));
        assert_eq!(e.prev_kv.as_ref().unwrap().value, b(&(i - 1).to_string()));
    }
}
