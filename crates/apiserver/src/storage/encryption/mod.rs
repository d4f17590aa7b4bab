//! Encryption at rest: a `Store` wrapper that encrypts the values of the resources the
//! EncryptionConfiguration lists on every write and decrypts them on every read and watch,
//! so everything above the store (lists spliced from bytes included) sees plain objects.

pub mod config;
pub mod providers;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use capstan_store::{
    KeyRange, KeyValue, RangeRequest, RangeResponse, Revision, Store, StoreError, Txn,
    TxnResponse, WatchEvent, WatchStream,
};
use futures::StreamExt;

pub use config::{ConfigError, Rules};

pub struct EncryptingStore {
    inner: Arc<dyn Store>,
    rules: Arc<Rules>,
}

impl EncryptingStore {
    pub fn new(inner: Arc<dyn Store>, rules: Rules) -> EncryptingStore {
        EncryptingStore {
            inner,
            rules: Arc::new(rules),
        }
    }
}

/// upstream's wording for a value it cannot read: the key and why.
fn transform_error(key: &[u8], e: providers::CryptError) -> StoreError {
    StoreError::Backend(format!(
        "unable to transform key {:?}: {e}",
        String::from_utf8_lossy(key)
    ))
}

fn decrypt_kv(rules: &Rules, kv: &mut KeyValue) -> Result<(), StoreError> {
    // A delete event's value is empty: nothing to read.
    if kv.value.is_empty() {
        return Ok(());
    }
    if let Some(providers) = rules.for_key(&kv.key) {
        let plain = providers::decrypt(providers, &kv.value, &kv.key)
            .map_err(|e| transform_error(&kv.key, e))?;
        kv.value = Bytes::from(plain);
    }
    Ok(())
}

#[async_trait]
impl Store for EncryptingStore {
    async fn range(&self, req: RangeRequest) -> capstan_store::Result<RangeResponse> {
        let keys_only = req.keys_only;
        let mut resp = self.inner.range(req).await?;
        if !keys_only {
            for kv in &mut resp.kvs {
                decrypt_kv(&self.rules, kv)?;
            }
        }
        Ok(resp)
    }

    async fn txn(&self, mut txn: Txn) -> capstan_store::Result<TxnResponse> {
        for op in &mut txn.ops {
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
            decrypt_kv(&self.rules, kv)?;
        }
        Ok(resp)
    }

    async fn watch(
        &self,
        range: KeyRange,
        start_revision: Revision,
    ) -> capstan_store::Result<WatchStream> {
        let inner = self.inner.watch(range, start_revision).await?;
        let live = inner.live_flag();
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
        Ok(WatchStream::new(Box::pin(stream), live))
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
}
