//! Upstream's slowStartBatch: many creates go out in batches of 1, 2, 4 … and stop after
//! the first batch with an error, so a refusal (quota, validation) costs a few requests,
//! not hundreds.

use std::future::Future;

/// Run `create` for `items` in doubling batches (each batch concurrently); the results in
/// order, ending with the first batch that had an error (later items are not tried).
pub async fn batches<'a, T, R, E, F, Fut>(items: &'a [T], mut create: F) -> Vec<Result<R, E>>
where
    F: FnMut(&'a T) -> Fut,
    Fut: Future<Output = Result<R, E>>,
{
    let mut out = Vec::with_capacity(items.len());
    let mut batch = 1;
    let mut rest = items;
    while !rest.is_empty() {
        let (now, later) = rest.split_at(batch.min(rest.len()));
        rest = later;
        let results = futures::future::join_all(now.iter().map(&mut create)).await;
        let failed = results.iter().any(Result::is_err);
        out.extend(results);
        if failed {
            break;
        }
        batch *= 2;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn doubles_and_stops_after_the_first_failing_batch() {
        let seen = Mutex::new(Vec::new());
        let items: Vec<u32> = (0..20).collect();
        // Item 5 fails: batches [0] [1,2] [3..7) — the third holds it, so 7.. are never tried.
        let results = batches(&items, |&i| {
            seen.lock().unwrap().push(i);
            async move {
                if i == 5 {
                    Err(i)
                } else {
                    Ok(i)
                }
            }
        })
        .await;
        assert_eq!(results.len(), 7);
        assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
        assert_eq!(*seen.lock().unwrap(), (0..7).collect::<Vec<_>>());
        // All succeed: every item, in batches 1 2 4 8 5.
        let all = batches(&items, |&i| async move { Ok::<_, ()>(i) }).await;
        assert_eq!(all.len(), 20);
        let none = batches(&[] as &[u32], |&i| async move { Ok::<_, ()>(i) }).await;
        assert!(none.is_empty());
    }
}
