//! The GC's work queues (client-go's workqueue semantics): an item queued while waiting is
//! queued once; one being processed is not handed to a second worker but processed again after.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

pub struct Queue<T> {
    inner: Mutex<Inner<T>>,
    notify: Notify,
}

struct Inner<T> {
    queue: VecDeque<T>,
    /// Waiting to be processed (in `queue`, or re-queued after it is done).
    dirty: HashSet<T>,
    /// Handed to a worker and not done yet.
    processing: HashSet<T>,
}

impl<T: Hash + Eq + Clone + Send + Sync + 'static> Queue<T> {
    pub fn new() -> Self {
        Queue {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
            }),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add(&self, t: T) {
        let mut i = self.lock();
        if !i.dirty.insert(t.clone()) || i.processing.contains(&t) {
            return;
        }
        i.queue.push_back(t);
        drop(i);
        self.notify.notify_one();
    }

    /// Queue `t` again after `delay` (a failed item's back-off).
    pub fn add_after(self: &Arc<Self>, t: T, delay: Duration) {
        let q = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            // The queue is gone with its leadership term: nothing to retry.
            if let Some(q) = q.upgrade() {
                q.add(t);
            }
        });
    }

    /// The next item; call [`Queue::done`] when it has been processed.
    pub async fn get(&self) -> T {
        loop {
            let notified = self.notify.notified();
            {
                let mut i = self.lock();
                if let Some(t) = i.queue.pop_front() {
                    i.dirty.remove(&t);
                    i.processing.insert(t.clone());
                    let more = !i.queue.is_empty();
                    drop(i);
                    if more {
                        // Notify keeps one permit: wake the next idle worker for the rest.
                        self.notify.notify_one();
                    }
                    return t;
                }
            }
            notified.await;
        }
    }

    pub fn done(&self, t: &T) {
        let mut i = self.lock();
        i.processing.remove(t);
        if i.dirty.contains(t) {
            i.queue.push_back(t.clone());
            drop(i);
            self.notify.notify_one();
        }
    }

    /// Items waiting (for tests and logs).
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: Hash + Eq + Clone + Send + Sync + 'static> Default for Queue<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dedups_and_requeues_items_added_while_processing() {
        let q = Queue::new();
        q.add(1);
        q.add(1);
        q.add(2);
        assert_eq!(q.len(), 2);
        let a = q.get().await;
        assert_eq!(a, 1);
        q.add(1); // while processing: not handed out twice
        assert_eq!(q.get().await, 2);
        assert!(q.is_empty());
        q.done(&1); // dirty: back in the queue
        assert_eq!(q.get().await, 1);
        q.done(&1);
        q.done(&2);
        assert!(q.is_empty());
    }
}
