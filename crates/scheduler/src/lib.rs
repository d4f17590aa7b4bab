//! capstan's scheduler: upstream kube-scheduler's queue, filters, scores, preemption and
//! binding, as an ordinary API client over any `kube::Client` (in-process or a kubeconfig).

pub mod cache;
pub mod diagnosis;
pub mod framework;
mod informers;
pub mod plugins;
pub mod preemption;
pub mod quantity;
pub mod queue;
pub mod resources;
pub mod scheduler;
pub mod selectors;
mod state;
mod volumes;
pub mod writes;

use std::sync::Arc;

use kube::Client;

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Binding requests in flight at once.
    pub max_concurrent_binds: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_concurrent_binds: 64,
        }
    }
}

/// Run the scheduler until the task is dropped: four watches feed the cache and queue, one
/// loop decides, binds run concurrently.
pub async fn run(client: Client, opts: Options) {
    let shared = Arc::new(state::Shared::default());
    // Ended with the scheduler, also when its task is aborted (leadership lost).
    let _watches = AbortOnDrop(informers::spawn(&client, &shared));
    tracing::info!(binds = opts.max_concurrent_binds, "scheduler started");
    scheduler::Loop::new(client, shared, opts.max_concurrent_binds)
        .run()
        .await;
}

struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for w in &self.0 {
            w.abort();
        }
    }
}
