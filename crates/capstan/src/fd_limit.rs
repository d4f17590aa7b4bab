//! Lifts the process's soft open-file limit to its hard limit: a server with a thousand
//! watches (or the bench tool holding them) needs a socket each, past the usual 1024.

pub fn raise() {
    // SAFETY: getrlimit/setrlimit only read and write the struct we own.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!(limit = lim.rlim_max, "could not raise the open-file limit");
            }
        }
    }
}
