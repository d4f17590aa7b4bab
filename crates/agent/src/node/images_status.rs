//! `status.images`: the images in the node's store, largest first and at most 50, as the
//! kubelet reports them (the scheduler's ImageLocality scores with it).

use serde_json::{json, Value};

use crate::images::ImageStore;

/// The kubelet's `nodeStatusMaxImages`.
const MAX_IMAGES: usize = 50;

/// The list to post, or None (the store could not be read) to leave `status.images` as it is.
pub fn images_status(store: &ImageStore) -> Option<Value> {
    let mut images = match store.list() {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "could not list images for the node status");
            return None;
        }
    };
    images.sort_by_key(|i| std::cmp::Reverse(i.size));
    Some(Value::Array(
        images
            .iter()
            .take(MAX_IMAGES)
            .map(|i| {
                let mut names = i.repo_digests.clone();
                names.extend(i.names.iter().cloned());
                json!({"names": names, "sizeBytes": i.size})
            })
            .collect(),
    ))
}
