//! Who a request is: the authenticated user (name, uid, groups, extra) that authentication
//! puts into the request's extensions for handlers (reviews now, authorization later).

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use serde_json::{json, Value};

/// Upstream's `user.Info`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// The `authentication.k8s.io` `UserInfo` object (empty fields omitted, as upstream).
    pub fn to_json(&self) -> Value {
        let mut v = json!({"username": self.username});
        if !self.uid.is_empty() {
            v["uid"] = json!(self.uid);
        }
        if !self.groups.is_empty() {
            v["groups"] = json!(self.groups);
        }
        if !self.extra.is_empty() {
            v["extra"] = json!(self.extra);
        }
        v
    }
}

/// The request extension: shared, so the admin's identity is one pointer copy per request.
#[derive(Debug, Clone)]
pub struct User(pub Arc<UserInfo>);

/// k3s's admin: the holder of the admin token.
static ADMIN: LazyLock<User> = LazyLock::new(|| {
    User(Arc::new(UserInfo {
        username: "system:admin".into(),
        uid: String::new(),
        groups: vec!["system:masters".into(), "system:authenticated".into()],
        extra: BTreeMap::new(),
    }))
});

/// Upstream's anonymous user: what a request without credentials is, where it is let in.
static ANONYMOUS: LazyLock<User> = LazyLock::new(|| {
    User(Arc::new(UserInfo {
        username: "system:anonymous".into(),
        uid: String::new(),
        groups: vec!["system:unauthenticated".into()],
        extra: BTreeMap::new(),
    }))
});

impl User {
    pub fn admin() -> User {
        ADMIN.clone()
    }

    pub fn anonymous() -> User {
        ANONYMOUS.clone()
    }
}
