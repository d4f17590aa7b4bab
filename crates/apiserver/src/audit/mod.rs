//! The request's record: notes handlers leave (warnings, audit annotations), and the audit
//! log — the policy file that says what to record and the writer that records it off the
//! request path.

pub mod event;
pub mod layer;
pub mod notes;
pub mod policy;
pub mod writer;

/// What `--audit-policy-file` and `--audit-log-path` set up.
pub struct Auditor {
    pub policy: policy::Policy,
    pub writer: writer::Writer,
}
