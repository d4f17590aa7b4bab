//! What a request's handlers leave for the layers around them: warnings for the response's
//! `Warning` headers and annotations for its audit event, plus the caller for admission.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::serving::user_info::User;

/// One request's notes, shared by the layer that set them up and the code it runs.
#[derive(Default)]
pub struct Notes {
    pub user: Option<User>,
    warnings: Mutex<Vec<String>>,
    annotations: Mutex<BTreeMap<String, String>>,
}

tokio::task_local! {
    static NOTES: Arc<Notes>;
}

impl Notes {
    pub fn new(user: Option<User>) -> Arc<Notes> {
        Arc::new(Notes {
            user,
            ..Notes::default()
        })
    }

    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn annotations(&self) -> BTreeMap<String, String> {
        self.annotations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Run `f` with `notes` as the request's notes.
pub async fn scope<F: std::future::Future>(notes: Arc<Notes>, f: F) -> F::Output {
    NOTES.scope(notes, f).await
}

/// Add a warning to the response (nothing outside a request).
pub fn warn(message: String) {
    let _ = NOTES.try_with(|n| {
        n.warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(message)
    });
}

/// Add an annotation to the request's audit event; the first value of a key stays, as
/// upstream's `AddAnnotation` keeps it.
pub fn annotate(key: String, value: String) {
    let _ = NOTES.try_with(|n| {
        n.annotations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_insert(value);
    });
}

/// Who sent the request being handled, when a request is.
pub fn user() -> Option<User> {
    NOTES.try_with(|n| n.user.clone()).ok().flatten()
}
