//! The authentication.k8s.io API group's review kinds (TokenReview, SelfSubjectReview):
//! created and answered at once, never stored; `authn::reviews` answers them.

use crate::types::strategy::Strategy;

/// The strategy of every review kind: nothing to default or validate in storage terms,
/// only the one verb.
pub struct Review;

impl Strategy for Review {
    fn not_stored(&self) -> bool {
        true
    }
}
