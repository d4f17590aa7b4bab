//! Encryption at rest: a `Store` wrapper that encrypts the values of the resources the
//! EncryptionConfiguration lists on every write and decrypts them on every read and watch,
//! so everything above the store (lists spliced from bytes included) sees plain objects.

pub mod config;
pub mod providers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use capstan_store::{
    KeyRange, KeyValue, RangeRequest, RangeResponse, Revision, Store, StoreError, Txn, TxnResponse,
    WatchEvent, WatchStream,
};
use futures::StreamExt;

pub use config::{ConfigError, Rules};

pub struct EncryptingStore {
    inner: Arc<dyn Store>,
    rules: Arc<Rules>,
    /// Keys last read at this revision with a provider or key other than the first: an
    /// update must write them again even when the object did not change.
    stale: Arc<Mutex<HashMap<Bytes, Revision>>>,
}

impl EncryptingStore {
    pub fn new(inner: Arc<dyn Store>, rules: Rules) -> EncryptingStore {
        EncryptingStore {
            inner,
            rules: Arc::new(rules),
            stale: Arc::default(),
        }
    }

    fn decrypt(&self, kv: &mut KeyValue) -> Result<(), StoreError> {
        if decrypt_kv(&self.rules, kv)? {
            self.stale
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(kv.key.clone(), kv.mod_revision);
        }
        Ok(())
    }
}

/// upstream's wording for a value it cannot read: the key and why.
fn transform_error(key: &[u8], e: providers::CryptError) -> StoreError {
    StoreError::Backend(format!(
        "unable to transform key {:?}: {e}",
        String::from_utf8_lossy(key)
    ))
}

/// Decrypt in place; true when the value was stored other than as the first provider
/// would store it now (stale).
fn decrypt_kv(rules: &Rules, kv: &mut KeyValue) -> Result<bool, StoreError> {
    // A delete event's value is empty: nothing to read.
    if kv.value.is_empty() {
        return Ok(false);
    }
    let Some(providers) = rules.for_key(&kv.key) else {
        return Ok(false);
    };
    let stale = !providers::written_by_first(providers, &kv.value);
    let plain = providers::decrypt(providers, &kv.value, &kv.key)
        .map_err(|e| transform_error(&kv.key, e))?;
    kv.value = Bytes::from(plain);
    Ok(stale)
}

#[async_trait]
impl Store for EncryptingStore {
    async fn range(&self, req: RangeRequest) -> capstan_store::Result<RangeResponse> {
        let keys_only = req.keys_only;
        let mut resp = self.inner.range(req).await?;
        if !keys_only {
            for kv in &mut resp.kvs {
                self.decrypt(kv)?;
            }
        }
        Ok(resp)
    }

    async fn txn(&self, mut txn: Txn) -> capstan_store::Result<TxnResponse> {
        for op in &mut txn.ops {
            self.stale
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(op.key());
            if let capstan_store::Op::Put { key, value } = op {
                if let Some(providers) = self.rules.for_key(key) {
                    let sealed = providers::encrypt(providers, value, key)
                        .map_err(|e| transform_error(key, e))?;
                    *value = Bytes::from(sealed);
                }
            }
        }
        let mut resp = self.inner.txn(txn).await?;
        let kvs = match &mut resp {
            TxnResponse::Succeeded { prev_kvs, .. } => prev_kvs,
            TxnResponse::Failed { current, .. } => current,
        };
        for kv in kvs.iter_mut().flatten() {
            self.decrypt(kv)?;
        }
        Ok(resp)
    }

    async fn watch(
        &self,
        range: KeyRange,
        start_revision: Revision,
    ) -> capstan_store::Result<WatchStream> {
        let inner = self.inner.watch(range, start_revision).await?;
        let progress = inner.progress();
        let rules = self.rules.clone();
        let stream = inner.map(move |item| {
            let ev = item?;
            let touched = rules.for_key(&ev.kv.key).is_some();
            if !touched {
                return Ok(ev);
            }
            let mut ev: WatchEvent = (*ev).clone();
            decrypt_kv(&rules, &mut ev.kv)?;
            if let Some(prev) = ev.prev_kv.as_mut() {
                decrypt_kv(&rules, prev)?;
            }
            Ok(Arc::new(ev))
        });
        Ok(WatchStream::new(Box::pin(stream), progress))
    }

    async fn compact(&self, revision: Revision) -> capstan_store::Result<()> {
        self.inner.compact(revision).await
    }

    async fn current_revision(&self) -> capstan_store::Result<Revision> {
        self.inner.current_revision().await
    }

    async fn compacted_revision(&self) -> capstan_store::Result<Revision> {
        self.inner.compacted_revision().await
    }

    fn write_health(&self) -> capstan_store::Result<()> {
        self.inner.write_health()
    }

    fn needs_rewrite(&self, key: &[u8], mod_revision: Revision) -> bool {
        self.stale
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .is_some_and(|r| *r == mod_revision)
    }
}
