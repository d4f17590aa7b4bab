//! The container process's last step before exec: libcontainer's default executor, with the
//! signal dispositions the shim (a Rust program: SIGPIPE ignored) would otherwise pass on.

use libcontainer::oci_spec::runtime::Spec;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};

#[derive(Clone, Default)]
pub struct ResetSignalsExecutor;

impl Executor for ResetSignalsExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        // An ignored signal stays ignored across execve: `yes | head` in the container would
        // spin instead of dying of SIGPIPE.
        // SAFETY: signal(2) with a constant signal number and SIG_DFL, in the single-threaded
        // container init.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}
