//! The etcd v3 backend: every `Store` operation as etcd requests under a key prefix (so
//! several clusters can share one etcd), with per-request deadlines and etcd's words mapped
//! to `StoreError`s. Watches are `watch.rs`'s; `testing.rs` starts Debian etcd clusters.

mod errors;
pub mod testing;
mod watch;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, KvClient,
    TlsOptions, TxnOp, TxnOpResponse,
};

use crate::compactor::{CompactionConfig, Compactor};
use crate::error::{Result, StoreError};
use crate::store::{Store, WatchStream};
use crate::types::{
    prefix_end, KeyRange, KeyValue, Op, RangeRequest, RangeResponse, Revision, Txn, TxnResponse,
};
use errors::{from_etcd, never_sent, Context};

/// Client certificate, key and CA for an etcd that requires TLS (PEM).
#[derive(Debug, Clone)]
pub struct EtcdTls {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Option<Vec<u8>>,
    pub key_pem: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// `host:port` or `http(s)://host:port`, one per member.
    pub endpoints: Vec<String>,
    /// Prepended to every key, so clusters sharing an etcd never see each other's keys.
    pub prefix: Bytes,
    pub tls: Option<EtcdTls>,
    /// How long one request may take before it fails as `Unavailable` (never a hang).
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Automatic compaction (coordinated between servers through the compaction key).
    pub compaction: Option<CompactionConfig>,
}

impl EtcdConfig {
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig {
            endpoints,
            prefix: Bytes::new(),
            tls: None,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            compaction: Some(CompactionConfig::default()),
        }
    }

    /// Parse `etcd://host:port[,host:port…]` (also `http://`/`https://` per member).
    pub fn parse_endpoints(spec: &str) -> std::result::Result<Vec<String>, String> {
        let rest = spec.strip_prefix("etcd://").ok_or_else(|| {
            format!("{spec:?}: an etcd datastore is etcd://host:port[,host:port…]")
        })?;
        let endpoints: Vec<String> = rest
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect();
        if endpoints.is_empty() {
            return Err(format!("{spec:?} names no etcd endpoint"));
        }
        for e in &endpoints {
            let hostport = e
                .strip_prefix("https://")
                .or_else(|| e.strip_prefix("http://"))
                .unwrap_or(e);
            if hostport
                .rsplit_once(':')
                .is_none_or(|(_, p)| p.parse::<u16>().is_err())
            {
                return Err(format!("etcd endpoint {e:?} is not host:port"));
            }
        }
        Ok(endpoints)
    }
}

/// The key (under the prefix) recording the revision this cluster last compacted to: the
/// servers sharing the cluster compare-and-swap it, so one of them compacts each round.
const COMPACT_KEY: &[u8] = b"/capstan/compacted-revision";

pub struct EtcdStore {
    client: Client,
    prefix: Bytes,
    timeout: Duration,
    /// The newest compacted revision this server knows of (ours, the compaction key's, or
    /// what etcd said when it refused a revision).
    compacted: Arc<AtomicI64>,
    compactor: Compactor,
}

impl EtcdStore {
    /// Connect and check that the cluster answers (a clear error at start, not on the
    /// first request). Must be called inside a tokio runtime.
    pub async fn connect(config: EtcdConfig) -> Result<Arc<Self>> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true)
            // A watch on a member cut off from the leader is told so instead of going quiet.
            .with_require_leader(true);
        if let Some(tls) = &config.tls {
            let mut t = TlsOptions::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
            if let (Some(cert), Some(key)) = (&tls.cert_pem, &tls.key_pem) {
                t = t.identity(Identity::from_pem(cert, key));
            }
            options = options.with_tls(t);
        }
        let endpoints = &config.endpoints;
        let client = tokio::time::timeout(
            config.connect_timeout,
            Client::connect(endpoints, Some(options)),
        )
        .await
        .map_err(|_| unreachable_at_start(endpoints, "no answer"))?
        .map_err(|e| unreachable_at_start(endpoints, &e.to_string()))?;
        let store = Arc::new(EtcdStore {
            client,
            prefix: config.prefix.clone(),
            timeout: config.request_timeout,
            compacted: Arc::new(AtomicI64::new(0)),
            compactor: Compactor::default(),
        });
        // The first request proves a quorum answers, and loads the compacted revision.
        store.compacted_revision().await.map_err(|e| match e {
            StoreError::Unavailable(why) => unreachable_at_start(endpoints, &why),
            other => unreachable_at_start(endpoints, &other.to_string()),
        })?;
        if let Some(cc) = config.compaction {
            store
                .compactor
                .start(&(store.clone() as Arc<dyn Store>), cc);
        }
        Ok(store)
    }

    /// Stop the compactor; requests in flight finish, watches end when dropped.
    pub fn close(&self) {
        self.compactor.stop();
    }

    fn kv(&self) -> KvClient {
        // Lists of large objects exceed gRPC's 4 MiB default.
        self.client
            .kv_client()
            .max_decoding_message_size(1 << 30)
            .max_encoding_message_size(1 << 30)
    }

    fn full_key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(key);
        k
    }

    /// The etcd `[key, range_end)` of a range under the prefix.
    fn etcd_range(&self, range: &KeyRange) -> (Vec<u8>, Vec<u8>) {
        let mut start = self.full_key(&range.start);
        if start.is_empty() {
            // etcd refuses an empty key; "\0" is the smallest it takes.
            start.push(0);
        }
        let end = match &range.end {
            Some(e) => self.full_key(e),
            // Unbounded: to the end of the prefix, or of the keyspace ("\0" is etcd's
            // from-key) when there is no prefix.
            None => prefix_end(&self.prefix).map_or(vec![0], |e| e.to_vec()),
        };
        (start, end)
    }

    fn strip(&self, kv: &etcd_client::KeyValue) -> KeyValue {
        convert_kv(kv, self.prefix.len())
    }

    async fn deadline<T>(
        &self,
        what: Context,
        f: impl std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.learn(from_etcd(e, what))),
            Err(_) => Err(StoreError::Unavailable(format!(
                "etcd did not answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// Remember a compacted revision an error revealed (etcd says "compacted" without
    /// saying to where: the requested revision is a lower bound), and name the oldest
    /// revision still available as far as this server knows.
    fn learn(&self, e: StoreError) -> StoreError {
        if let StoreError::Compacted {
            requested,
            oldest_available,
        } = e
        {
            let at_least = oldest_available - 1;
            let known = self
                .compacted
                .fetch_max(at_least, Ordering::AcqRel)
                .max(at_least);
            return StoreError::Compacted {
                requested,
                oldest_available: known + 1,
            };
        }
        e
    }

    /// A transaction, sent again only when it never reached etcd (the balanced channel
    /// picked a member that is down): anything else may have been applied, and is the
    /// caller's error.
    async fn send_txn(&self, request: etcd_client::Txn) -> Result<etcd_client::TxnResponse> {
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            let mut kv = self.kv();
            let left = self.timeout.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, kv.txn(request.clone())).await {
                Ok(Ok(resp)) => return Ok(resp),
                Ok(Err(e)) if never_sent(&e) && started.elapsed() + pause < self.timeout => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Ok(Err(e)) => return Err(self.learn(from_etcd(e, Context::Write))),
                Err(_) => {
                    return Err(StoreError::Unavailable(format!(
                        "etcd did not answer within {:?}",
                        self.timeout
                    )))
                }
            }
        }
    }

    /// A read, retried on a transport failure (a member that just went away) while the
    /// deadline allows: reads are safe to repeat, writes are not.
    async fn get(
        &self,
        key: Vec<u8>,
        options: GetOptions,
        what: Context,
    ) -> Result<etcd_client::GetResponse> {
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            let mut kv = self.kv();
            match self
                .deadline(what, kv.get(key.clone(), Some(options.clone())))
                .await
            {
                Err(StoreError::Unavailable(why)) => {
                    if started.elapsed() + pause >= self.timeout {
                        return Err(StoreError::Unavailable(why));
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }
}

fn unreachable_at_start(endpoints: &[String], why: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "no etcd cluster answered at {}: {why}",
        endpoints.join(",")
    ))
}

pub(crate) fn convert_kv(kv: &etcd_client::KeyValue, prefix_len: usize) -> KeyValue {
    let key = kv.key();
    KeyValue {
        key: Bytes::copy_from_slice(key.get(prefix_len..).unwrap_or_default()),
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
    }
}

fn header_revision(h: Option<&etcd_client::ResponseHeader>) -> Result<Revision> {
    h.map(|h| h.revision())
        .ok_or_else(|| StoreError::Backend("etcd answered without a header".into()))
}

#[async_trait]
impl Store for EtcdStore {
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        let (start, end) = self.etcd_range(&req.range);
        let mut options = GetOptions::new().with_range(end);
        if let Some(rev) = req.revision {
            options = options.with_revision(rev);
        }
        // etcd's 0 is "no limit"; a limit past i64 is none either.
        match req.limit.map(i64::try_from) {
            Some(Ok(0)) => {
                let resp = self
                    .get(
                        start,
                        options.with_count_only(),
                        Context::Range(req.revision),
                    )
                    .await?;
                let current = header_revision(resp.header())?;
                return Ok(RangeResponse {
                    kvs: Vec::new(),
                    revision: req.revision.unwrap_or(current),
                    more: resp.count() > 0,
                });
            }
            Some(Ok(n)) => options = options.with_limit(n),
            _ => {}
        }
        if req.keys_only {
            options = options.with_keys_only();
        }
        let resp = match self.get(start, options, Context::Range(req.revision)).await {
            Err(StoreError::FutureRevision { requested, .. }) => {
                return Err(StoreError::FutureRevision {
                    requested,
                    current: self.current_revision().await?,
                })
            }
            other => other?,
        };
        let current = header_revision(resp.header())?;
        let kvs: Vec<KeyValue> = resp.kvs().iter().map(|kv| self.strip(kv)).collect();
        Ok(RangeResponse {
            more: resp.more(),
            kvs,
            revision: req.revision.unwrap_or(current),
        })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        // etcd refuses a key written twice too, but in its own words; say it as SQLite does.
        let mut seen = std::collections::HashSet::new();
        for op in &txn.ops {
            if !seen.insert(op.key()) {
                return Err(StoreError::InvalidRequest(format!(
                    "key {:?} appears twice in one transaction",
                    String::from_utf8_lossy(op.key())
                )));
            }
        }
        let compares: Vec<Compare> = txn
            .compares
            .iter()
            .map(|c| Compare::mod_revision(self.full_key(&c.key), CompareOp::Equal, c.mod_revision))
            .collect();
        let ops: Vec<TxnOp> = txn
            .ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value } => TxnOp::put(
                    self.full_key(key),
                    value.to_vec(),
                    Some(etcd_client::PutOptions::new().with_prev_key()),
                ),
                Op::Delete { key } => TxnOp::delete(
                    self.full_key(key),
                    Some(etcd_client::DeleteOptions::new().with_prev_key()),
                ),
            })
            .collect();
        // On a failed compare, read each compared key, as the caller is told what is there.
        let reads: Vec<TxnOp> = txn
            .compares
            .iter()
            .map(|c| TxnOp::get(self.full_key(&c.key), None))
            .collect();
        let request = etcd_client::Txn::new()
            .when(compares)
            .and_then(ops)
            .or_else(reads);
        let resp = self.send_txn(request).await?;
        let revision = header_revision(resp.header())?;
        let prefix_len = self.prefix.len();
        let answers = resp.op_responses();
        if resp.succeeded() {
            let prev_kvs = answers
                .iter()
                .map(|r| match r {
                    TxnOpResponse::Put(p) => p.prev_key().map(|kv| convert_kv(kv, prefix_len)),
                    TxnOpResponse::Delete(d) => {
                        d.prev_kvs().first().map(|kv| convert_kv(kv, prefix_len))
                    }
                    _ => None,
                })
                .collect();
            Ok(TxnResponse::Succeeded { revision, prev_kvs })
        } else {
            let current = answers
                .iter()
                .map(|r| match r {
                    TxnOpResponse::Get(g) => g.kvs().first().map(|kv| convert_kv(kv, prefix_len)),
                    _ => None,
                })
                .collect();
            Ok(TxnResponse::Failed { revision, current })
        }
    }

    async fn watch(&self, range: KeyRange, start_revision: Revision) -> Result<WatchStream> {
        // "From now" is from after a linearizable read's revision: an etcd watch opened
        // with revision 0 starts at the revision of the member it reaches, and a follower
        // that has not applied a write this store already acknowledged would replay it.
        let start_revision = if start_revision == 0 {
            self.current_revision().await? + 1
        } else {
            start_revision
        };
        if start_revision > 0 {
            let compacted = self.compacted.load(Ordering::Acquire);
            if start_revision <= compacted {
                return Err(StoreError::Compacted {
                    requested: start_revision,
                    oldest_available: compacted + 1,
                });
            }
        }
        let (key, end) = self.etcd_range(&range);
        watch::open(
            watch::Target {
                client: self.client.watch_client(),
                key,
                end,
                prefix_len: self.prefix.len(),
                timeout: self.timeout,
                compacted: self.compacted.clone(),
            },
            start_revision,
        )
        .await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let key = self.full_key(COMPACT_KEY);
        let resp = self
            .get(key.clone(), GetOptions::new(), Context::Read)
            .await?;
        let (recorded, mod_revision) = resp
            .kvs()
            .first()
            .map(|kv| (parse_revision(kv.value()), kv.mod_revision()))
            .unwrap_or((0, 0));
        let known = recorded.max(self.compacted.load(Ordering::Acquire));
        if revision <= known {
            return Err(StoreError::Compacted {
                requested: revision,
                oldest_available: known + 1,
            });
        }
        let current = header_revision(resp.header())?;
        if revision > current {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current,
            });
        }
        // Claim this round: of several servers compacting, the one whose swap lands does it.
        let claim = etcd_client::Txn::new()
            .when(vec![Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                mod_revision,
            )])
            .and_then(vec![TxnOp::put(key, revision.to_string(), None)]);
        let claimed = self.send_txn(claim).await?;
        if !claimed.succeeded() {
            return Ok(());
        }
        let mut kv = self.kv();
        match self
            .deadline(Context::Compact(revision), kv.compact(revision, None))
            .await
        {
            Ok(_) => {}
            // Another cluster sharing this etcd compacted past it already.
            Err(StoreError::Compacted { .. }) => {}
            Err(e) => return Err(e),
        }
        self.compacted.fetch_max(revision, Ordering::AcqRel);
        Ok(())
    }

    async fn current_revision(&self) -> Result<Revision> {
        let resp = self
            .get(
                self.full_key(COMPACT_KEY),
                GetOptions::new().with_count_only(),
                Context::Read,
            )
            .await?;
        header_revision(resp.header())
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        let resp = self
            .get(self.full_key(COMPACT_KEY), GetOptions::new(), Context::Read)
            .await?;
        let recorded = resp
            .kvs()
            .first()
            .map(|kv| parse_revision(kv.value()))
            .unwrap_or(0);
        Ok(self
            .compacted
            .fetch_max(recorded, Ordering::AcqRel)
            .max(recorded))
    }
}

fn parse_revision(v: &[u8]) -> Revision {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            EtcdConfig::parse_endpoints("etcd://127.0.0.1:2379, 127.0.0.1:2381").unwrap(),
            ["127.0.0.1:2379", "127.0.0.1:2381"]
        );
        assert_eq!(
            EtcdConfig::parse_endpoints("etcd://https://e1:2379").unwrap(),
            ["https://e1:2379"]
        );
        assert!(EtcdConfig::parse_endpoints("sqlite://x").is_err());
        assert!(EtcdConfig::parse_endpoints("etcd://").is_err());
        assert!(EtcdConfig::parse_endpoints("etcd://host").is_err());
    }
}
