//! The load tool's errors: bad configuration, transport failures, and a server answering
//! something a scenario cannot go on from.

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("connecting to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("HTTP: {0}")]
    Http(String),
    #[error("{method} {path}: unexpected {status}: {body}")]
    Unexpected {
        method: String,
        path: String,
        status: u16,
        body: String,
    },
    #[error("{0}")]
    Scenario(String),
}
