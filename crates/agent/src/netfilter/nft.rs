//! Runs the `nft` tool: a transaction as a script on its stdin (`nft -f -`, applied
//! atomically or not at all) and JSON listings (`nft -j list ...`).

use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::NetfilterError;

/// Applies `script` as one transaction.
pub async fn apply(script: &str) -> Result<(), NetfilterError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_error)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|source| NetfilterError::Io {
                context: "writing to nft".into(),
                source,
            })?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|source| NetfilterError::Io {
            context: "waiting for nft".into(),
            source,
        })?;
    if out.status.success() {
        tracing::debug!(lines = script.lines().count(), "nft transaction applied");
        Ok(())
    } else {
        Err(NetfilterError::Rejected {
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            script: script.to_string(),
        })
    }
}

/// `nft -j list <what>` parsed; None when the object does not exist.
pub async fn list(what: &[&str]) -> Result<Option<serde_json::Value>, NetfilterError> {
    let out = Command::new("nft")
        .arg("-j")
        .arg("list")
        .args(what)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(spawn_error)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("No such file or directory") {
            return Ok(None);
        }
        return Err(NetfilterError::Rejected {
            stderr: stderr.trim().to_string(),
            script: format!("list {}", what.join(" ")),
        });
    }
    serde_json::from_slice(&out.stdout)
        .map(Some)
        .map_err(|e| NetfilterError::Listing(e.to_string()))
}

fn spawn_error(source: std::io::Error) -> NetfilterError {
    if source.kind() == std::io::ErrorKind::NotFound {
        NetfilterError::NftMissing
    } else {
        NetfilterError::Io {
            context: "running nft".into(),
            source,
        }
    }
}
