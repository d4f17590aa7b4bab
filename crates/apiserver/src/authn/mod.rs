//! The authentication.k8s.io endpoints: `serviceaccounts/token` (TokenRequest), TokenReview
//! and SelfSubjectReview. The authenticator they share lives in `serving`.

pub mod reviews;
pub mod token_request;
