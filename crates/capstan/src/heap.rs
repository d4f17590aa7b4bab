//! glibc heap tuning: memory a burst of large objects or a cut-off watcher held goes back
//! to the system instead of staying in the process's arenas.

use std::time::Duration;

/// Allocations this large or larger get their own mapping and are unmapped when freed
/// (glibc otherwise raises this threshold as large blocks are freed, after which they stay
/// in the heap).
const MMAP_THRESHOLD: libc::c_int = 256 * 1024;

/// Free memory at the top of the heap kept for reuse between periodic trims.
const TRIM_THRESHOLD: libc::c_int = 64 << 20;

/// How often free pages inside the arenas are returned.
const TRIM_EVERY: Duration = Duration::from_secs(5);

pub fn tune() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        // Freeing does not trim the heap top at once (a fixed small threshold made every
        // burst of allocations page-fault its memory back in, ~20% of GET throughput);
        // the periodic trim below returns what stays free.
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Return free heap pages periodically (cheap: a walk of the free lists).
pub fn spawn_trimmer() {
    #[cfg(target_env = "gnu")]
    tokio::spawn(async {
        let mut tick = tokio::time::interval(TRIM_EVERY);
        loop {
            tick.tick().await;
            // SAFETY: malloc_trim is thread-safe and only releases free memory.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    });
}
