//! The process's allocators: jemalloc for Rust's heap, with a background thread returning
//! freed pages; glibc's malloc (SQLite's page cache, C libraries) tuned and trimmed.

use std::time::Duration;

/// jemalloc instead of glibc's malloc: the server allocates many small, short-lived objects
/// on many threads. With 1,000 simulated nodes, 12,000 pods scheduled took 62 s of server
/// CPU instead of 99 s (297 instead of 180 pods/s), and deleting 30,000 pods peaked at
/// 2.4 GB RSS instead of 3.1 GB (issue 15's notes).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts (a C string it looks up by this name). Freed
/// pages go back to the system after ~2 s unused rather than the default ~10 s: a burst
/// (a large list, CRDs deleted, a watcher cut off) is returned while the server idles, for
/// little CPU. No background thread here: the container shim must start none.
#[cfg(not(target_env = "msvc"))]
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8; 20] = b"dirty_decay_ms:2000\0";

/// Allocations this large or larger get their own mapping and are unmapped when freed
/// (glibc otherwise raises this threshold as large blocks are freed, after which they stay
/// in the heap).
const MMAP_THRESHOLD: libc::c_int = 256 * 1024;

/// Free memory at the top of the heap kept for reuse between periodic trims.
const TRIM_THRESHOLD: libc::c_int = 64 << 20;

/// How often free pages inside glibc's arenas are returned.
const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Set allocator parameters. Called by the long-running commands only: the container shim
/// must stay single-threaded, and jemalloc's purging thread is a thread.
pub fn tune() {
    // Without its background thread jemalloc purges freed pages only when the thread that
    // freed them allocates again, so memory a burst released (a watcher cut off, a large
    // list) could stay resident while the server idles.
    #[cfg(not(target_env = "msvc"))]
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(error = %e, "jemalloc: background purging not enabled");
    }
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

/// Return glibc's free heap pages periodically (cheap: a walk of the free lists).
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

#[cfg(all(test, not(target_env = "msvc")))]
mod tests {
    #[test]
    fn jemalloc_reads_our_options() {
        // SAFETY: the name is a NUL-terminated jemalloc option of type ssize_t.
        let decay = unsafe { tikv_jemalloc_ctl::raw::read::<isize>(b"opt.dirty_decay_ms\0") };
        assert_eq!(decay.expect("opt.dirty_decay_ms"), 2000);
    }
}
