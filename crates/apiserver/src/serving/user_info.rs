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
    /// The node's name when this is a node identity (`system:node:<name>` in
    /// `system:nodes`, upstream's NodeIdentifier).
    pub fn node_name(&self) -> Option<&str> {
        let name = self.username.strip_prefix("system:node:")?;
        (!name.is_empty() && self.groups.iter().any(|g| g == "system:nodes")).then_some(name)
    }

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

    /// Upstream's loopback identity: the API server's own requests to itself (`system:apiserver`
    /// in `system:masters`), here the loops upstream runs inside kube-apiserver.
    pub fn loopback() -> User {
        User::named("system:apiserver", "", &["system:masters"])
    }

    /// A user with `system:authenticated` added to `groups`, as every authenticator does.
    pub fn named(username: &str, uid: &str, groups: &[&str]) -> User {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        groups.push("system:authenticated".into());
        User(Arc::new(UserInfo {
            username: username.into(),
            uid: uid.into(),
            groups,
            extra: BTreeMap::new(),
        }))
    }

    /// A service account's user as its token would authenticate it (without a token's extra).
    pub fn service_account(namespace: &str, name: &str, uid: &str) -> User {
        User::named(
            &format!("system:serviceaccount:{namespace}:{name}"),
            uid,
            &[
                "system:serviceaccounts",
                &format!("system:serviceaccounts:{namespace}"),
            ],
        )
    }

    /// A node's user (`system:node:<name>` in `system:nodes`), as its client certificate is.
    pub fn node(name: &str) -> User {
        User::named(&format!("system:node:{name}"), "", &["system:nodes"])
    }
}
