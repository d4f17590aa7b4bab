//! `status.images`: the images in the node's store, largest first and at most 50, as the
//! kubelet reports them (the scheduler's ImageLocality scores with it).

use serde_json::{json, Value};

use crate::images::ImageStore;

/// The kubelet's `nodeStatusMaxImages`.
const MAX_IMAGES: usize = 50;

/// Off until the image store lists images (its `list` is still being written): flip this
/// once `ImageStore::list` works; until then the Node reports no images.
pub const REPORT_IMAGES: bool = false;

/// The list to post, or None to leave `status.images` as it is.
pub fn images_status(store: &ImageStore) -> Option<Value> {
    if !REPORT_IMAGES {
        return None;
    }
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
