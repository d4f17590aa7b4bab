//! etcd's failures in the store's terms: compaction and future revisions by etcd's own
//! words, a missing quorum or member as `Unavailable` (503), a full quota as `NoSpace`.

use tonic::Code;

use crate::error::StoreError;
use crate::types::Revision;

/// What the failed request was, so an error can name the revision it concerned.
#[derive(Debug, Clone, Copy)]
pub enum Context {
    Range(Option<Revision>),
    Compact(Revision),
    Read,
    Write,
}

impl Context {
    fn revision(self) -> Revision {
        match self {
            Context::Range(r) => r.unwrap_or(0),
            Context::Compact(r) => r,
            Context::Read | Context::Write => 0,
        }
    }
}

pub fn from_etcd(e: etcd_client::Error, what: Context) -> StoreError {
    match e {
        etcd_client::Error::GRpcStatus(status) => from_status(&status, what),
        etcd_client::Error::TransportError(t) => {
            StoreError::Unavailable(format!("etcd could not be reached: {t}"))
        }
        etcd_client::Error::IoError(io) => {
            StoreError::Unavailable(format!("etcd could not be reached: {io}"))
        }
        etcd_client::Error::InvalidArgs(m) => StoreError::InvalidRequest(m),
        other => StoreError::Backend(format!("etcd: {other}")),
    }
}

fn from_status(status: &tonic::Status, what: Context) -> StoreError {
    let message = status.message();
    if message.contains("required revision has been compacted") {
        // etcd does not say to which revision; the caller's record fills it in where known.
        return StoreError::Compacted {
            requested: what.revision(),
            oldest_available: what.revision() + 1,
        };
    }
    if message.contains("required revision is a future revision") {
        return StoreError::FutureRevision {
            requested: what.revision(),
            current: 0,
        };
    }
    if message.contains("request is too large") || message.contains("message larger than max") {
        return StoreError::TooLarge(format!("etcd: {message}"));
    }
    if message.contains("database space exceeded") {
        return StoreError::NoSpace(format!("etcd: {message}"));
    }
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted => {
            StoreError::Unavailable(format!("etcd: {message}"))
        }
        Code::Unknown if is_availability(message) => {
            StoreError::Unavailable(format!("etcd: {message}"))
        }
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::ResourceExhausted => StoreError::InvalidRequest(format!("etcd: {message}")),
        _ => StoreError::Backend(format!("etcd: {message}")),
    }
}

/// Whether the request failed before it reached etcd (no connection to the member the
/// channel picked): a write that failed so was not applied and may be sent again.
pub fn never_sent(e: &etcd_client::Error) -> bool {
    let etcd_client::Error::GRpcStatus(status) = e else {
        return matches!(e, etcd_client::Error::TransportError(_));
    };
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if err.is::<tonic::ConnectError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// etcd's words for "no quorum now, try again" that some versions send with code Unknown.
fn is_availability(message: &str) -> bool {
    [
        "no leader",
        "leader changed",
        "request timed out",
        "too many requests",
        "not capable",
        "transport is closing",
        "error reading from server",
        // tonic's word for a connection that broke under a request (a member killed).
        "transport error",
        "connection refused",
    ]
    .iter()
    .any(|w| message.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_words_map_to_store_errors() {
        let compacted = tonic::Status::new(
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        );
        assert!(matches!(
            from_status(&compacted, Context::Range(Some(7))),
            StoreError::Compacted { requested: 7, .. }
        ));
        let future = tonic::Status::new(
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        );
        assert!(matches!(
            from_status(&future, Context::Range(Some(99))),
            StoreError::FutureRevision { requested: 99, .. }
        ));
        let no_leader = tonic::Status::new(Code::Unavailable, "etcdserver: no leader");
        assert!(matches!(
            from_status(&no_leader, Context::Write),
            StoreError::Unavailable(_)
        ));
        let timed_out = tonic::Status::new(Code::Unknown, "etcdserver: request timed out");
        assert!(matches!(
            from_status(&timed_out, Context::Write),
            StoreError::Unavailable(_)
        ));
        let space = tonic::Status::new(
            Code::ResourceExhausted,
            "etcdserver: mvcc: database space exceeded",
        );
        assert!(matches!(
            from_status(&space, Context::Write),
            StoreError::NoSpace(_)
        ));
        let big = tonic::Status::new(Code::InvalidArgument, "etcdserver: request is too large");
        assert!(matches!(
            from_status(&big, Context::Write),
            StoreError::TooLarge(_)
        ));
        let bad = tonic::Status::new(Code::InvalidArgument, "etcdserver: key is not provided");
        assert!(matches!(
            from_status(&bad, Context::Write),
            StoreError::InvalidRequest(_)
        ));
    }
}
