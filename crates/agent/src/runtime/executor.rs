//! The container process's last step before exec: libcontainer's default executor, with the
//! signal dispositions the shim (a Rust program: SIGPIPE ignored) would otherwise pass on, and
//! the RuntimeDefault seccomp filter when the spec's annotation asks for it.

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
        // An exec with a tty gets the pty's slave as stdio: make it the controlling terminal
        // of the new session libcontainer started, so shells get job control and ^C.
        // SAFETY: isatty/ioctl on fd 0 with no pointers.
        unsafe {
            if libc::isatty(0) == 1 {
                libc::ioctl(0, libc::TIOCSCTTY, 0);
            }
        }
        if wants_runtime_default(spec) {
            // The last thing before exec, so the filter binds the workload, not the runtime.
            let caps: Vec<String> = spec
                .process()
                .as_ref()
                .and_then(|p| p.capabilities().as_ref())
                .and_then(|c| c.effective().as_ref())
                .map(|set| set.iter().map(|c| c.to_string()).collect())
                .unwrap_or_default();
            super::seccomp::programs(&caps)
                .and_then(|p| super::seccomp::install(&p))
                .map_err(|e| ExecutorError::Other(e.to_string()))?;
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

fn wants_runtime_default(spec: &Spec) -> bool {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(super::seccomp::ANNOTATION))
        .is_some_and(|v| v == super::seccomp::RUNTIME_DEFAULT)
}
