//! The server's audit and encryption-at-rest flags (`--audit-*`, upstream's names and
//! meanings), read at start: a bad policy or encryption file stops the server with its error.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use capstan_apiserver::audit::{policy::Policy, writer::LogOptions};
use capstan_apiserver::storage::encryption::{EncryptingStore, Rules};
use capstan_apiserver::AppState;
use capstan_store::Store;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct SecurityFlags {
    /// An audit.k8s.io/v1 Policy: which requests the audit log records, at what level.
    #[arg(long)]
    pub audit_policy_file: Option<PathBuf>,
    /// Where audit events go, one JSON line each (needs --audit-policy-file).
    #[arg(long)]
    pub audit_log_path: Option<PathBuf>,
    /// Rotate the audit log when it reaches this many megabytes (0: never).
    #[arg(long, default_value_t = 0)]
    pub audit_log_maxsize: u64,
    /// Rotated audit logs kept (0: all).
    #[arg(long, default_value_t = 0)]
    pub audit_log_maxbackup: usize,
    /// An apiserver.config.k8s.io/v1 EncryptionConfiguration: which resources are encrypted
    /// at rest, and with what (aescbc, aesgcm, secretbox, identity).
    #[arg(long)]
    pub encryption_provider_config: Option<PathBuf>,
}

impl SecurityFlags {
    /// The store the API sees: encrypting what the configuration lists, if there is one.
    pub fn wrap_store(&self, store: Arc<dyn Store>) -> anyhow::Result<Arc<dyn Store>> {
        let Some(path) = &self.encryption_provider_config else {
            return Ok(store);
        };
        let rules = Rules::load(&path.to_string_lossy())?;
        tracing::info!(config = %path.display(), scopes = rules.rules.len(), "encryption at rest on");
        Ok(Arc::new(EncryptingStore::new(store, rules)))
    }

    /// Auditing, when both the policy and the log are given.
    pub fn apply(&self, state: AppState) -> anyhow::Result<AppState> {
        let (Some(policy), Some(log)) = (&self.audit_policy_file, &self.audit_log_path) else {
            return Ok(state);
        };
        let policy = Policy::load(&policy.to_string_lossy())?;
        let state = state
            .with_audit(
                policy,
                LogOptions {
                    path: log.clone(),
                    max_bytes: self.audit_log_maxsize.saturating_mul(1024 * 1024),
                    max_backups: self.audit_log_maxbackup,
                },
            )
            .context("starting the audit log")?;
        tracing::info!(log = %log.display(), "audit log on");
        Ok(state)
    }
}
