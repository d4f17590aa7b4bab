//! `GET /containerLogs/{namespace}/{pod}/{container}`: finds the run's log file (the pod's
//! uid from the API, the newest attempt or the one before it) and streams it as text.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use tokio::sync::mpsc;

use crate::logs::reader::{read_log, LogOptions, LogSink};
use crate::logs::{container_log_dir, container_log_path};

pub struct LogsState {
    pub client: kube::Client,
    /// `<agent root>/pods`, where the runtime keeps each pod's logs.
    pub pods_root: PathBuf,
}

fn text(code: StatusCode, message: String) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message,
    )
        .into_response()
}

/// The query as upstream's `PodLogOptions`.
fn parse_options(q: &HashMap<String, String>) -> Result<(LogOptions, bool), String> {
    let flag = |k: &str| q.get(k).is_some_and(|v| v == "true" || v == "1");
    let count = |k: &str| -> Result<Option<u64>, String> {
        q.get(k)
            .map(|v| {
                v.parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .map(|n| n as u64)
                    .ok_or_else(|| format!("{k} must be a non-negative integer, got {v:?}"))
            })
            .transpose()
    };
    let since = match (q.get("sinceSeconds"), q.get("sinceTime")) {
        (Some(_), Some(_)) => return Err("at most one of sinceTime or sinceSeconds".into()),
        (Some(s), None) => {
            let secs: i64 = s
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("sinceSeconds must be a positive integer, got {s:?}"))?;
            Some(jiff::Timestamp::now() - jiff::SignedDuration::from_secs(secs))
        }
        (None, Some(t)) => Some(
            t.parse::<jiff::Timestamp>()
                .map_err(|e| format!("sinceTime {t:?} is not an RFC 3339 time: {e}"))?,
        ),
        (None, None) => None,
    };
    Ok((
        LogOptions {
            tail_lines: count("tailLines")?,
            since,
            timestamps: flag("timestamps"),
            limit_bytes: count("limitBytes")?,
            follow: flag("follow"),
        },
        flag("previous"),
    ))
}

/// The attempts (`<n>.log`) a container has logs for, ascending.
pub fn attempts(dir: &Path) -> Vec<u32> {
    let mut found: Vec<u32> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".log")?
                .parse::<u32>()
                .ok()
        })
        .collect();
    found.sort_unstable();
    found
}

pub async fn container_logs(
    State(state): State<Arc<LogsState>>,
    UrlPath((namespace, pod, container)): UrlPath<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let (opts, previous) = match parse_options(&query) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let api: Api<Pod> = Api::namespaced(state.client.clone(), &namespace);
    let uid = match api.get_opt(&pod).await {
        Ok(Some(p)) => p.metadata.uid.unwrap_or_default(),
        Ok(None) => {
            return text(
                StatusCode::NOT_FOUND,
                format!("pod \"{namespace}/{pod}\" does not exist"),
            )
        }
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("looking up pod {namespace}/{pod}: {e}"),
            )
        }
    };
    let runs = attempts(&container_log_dir(&state.pods_root, &uid, &container));
    let attempt = if previous {
        runs.iter().rev().nth(1)
    } else {
        runs.last()
    };
    let Some(&attempt) = attempt else {
        let message = if previous {
            format!("previous terminated container \"{container}\" in pod \"{pod}\" not found")
        } else {
            format!(
                "container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating"
            )
        };
        return text(StatusCode::BAD_REQUEST, message);
    };
    let path = container_log_path(&state.pods_root, &uid, &container, attempt);
    tracing::debug!(%namespace, %pod, %container, attempt, follow = opts.follow, "serving container logs");
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    tokio::task::spawn_blocking(move || {
        let mut sink = ChannelSink(tx);
        if let Err(e) = read_log(&path, &opts, &mut sink) {
            tracing::warn!(path = %path.display(), error = %e, "reading container logs failed");
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Hands chunks to the response body; the client's leaving closes the channel.
struct ChannelSink(mpsc::Sender<Bytes>);

impl LogSink for ChannelSink {
    fn write(&mut self, bytes: &[u8]) -> bool {
        self.0.blocking_send(Bytes::copy_from_slice(bytes)).is_ok()
    }

    fn closed(&self) -> bool {
        self.0.is_closed()
    }
}
