//! Service-account JWTs as kube-apiserver issues them: the claims (`iss`, `sub`, `aud`,
//! time bounds, `jti`, `kubernetes.io` bindings), signing, and the checks a token alone allows.

use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::serving::service_account_key::SigningKey;

/// The issuer (and the default API audience), as k3s and kubeadm clusters name it.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Clock skew forgiven on `exp` and `nbf` (go-jose's default leeway, which upstream uses).
pub const LEEWAY_SECONDS: i64 = 60;

/// A bound object as the claims name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

/// The private `kubernetes.io` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    pub namespace: String,
    pub serviceaccount: ObjectRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
}

/// Why a token is not accepted (the words upstream's authenticator uses, for TokenReview's
/// `status.error`; every one of them is a 401 on a request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("invalid bearer token: not a service account token this server issued")]
    Malformed,
    #[error("invalid bearer token: the signature does not verify")]
    Signature,
    #[error("service account token has expired")]
    Expired,
    #[error("service account token is not valid yet")]
    NotYetValid,
    #[error("token audiences {token:?} is invalid for the target audiences {wanted:?}")]
    Audience {
        token: Vec<String>,
        wanted: Vec<String>,
    },
    #[error("service account token has been invalidated")]
    Invalidated,
    #[error("signing the token: {0}")]
    Sign(String),
}

/// What a TokenRequest asks for, checked by its handler.
pub struct Request<'a> {
    pub namespace: &'a str,
    pub service_account: ObjectRef,
    pub audiences: Vec<String>,
    pub expiration_seconds: i64,
    pub pod: Option<ObjectRef>,
    pub secret: Option<ObjectRef>,
    pub node: Option<ObjectRef>,
}

/// `system:serviceaccount:NS:NAME`.
pub fn username(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// Sign a token for `req`, valid from `now` (unix seconds).
pub fn issue(key: &SigningKey, req: Request<'_>, now: i64) -> Result<(String, Claims), TokenError> {
    let claims = Claims {
        iss: ISSUER.to_string(),
        sub: username(req.namespace, &req.service_account.name),
        aud: req.audiences,
        exp: now.saturating_add(req.expiration_seconds),
        iat: now,
        nbf: now,
        jti: uuid::Uuid::new_v4().to_string(),
        kubernetes: KubernetesClaims {
            namespace: req.namespace.to_string(),
            serviceaccount: req.service_account,
            pod: req.pod,
            secret: req.secret,
            node: req.node,
        },
    };
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key.kid.clone());
    let token = jsonwebtoken::encode(&header, &claims, &key.encoding)
        .map_err(|e| TokenError::Sign(e.to_string()))?;
    Ok((token, claims))
}

/// Whether a bearer token is worth verifying as a JWT at all: three base64url parts whose
/// header is JSON (`eyJ`), as upstream's `hasCorrectIssuer` pre-check.
pub fn looks_like_jwt(token: &[u8]) -> bool {
    token.starts_with(b"eyJ") && token.iter().filter(|b| **b == b'.').count() == 2
}

/// Signature, issuer, time bounds at `now` and the claims' own consistency; what needs the
/// store (the bound objects still exist) is the authenticator's.
pub fn verify(key: &SigningKey, token: &str, now: i64) -> Result<Claims, TokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
    if header.alg != Algorithm::ES256 || header.kid.as_deref().is_some_and(|k| k != key.kid) {
        return Err(TokenError::Malformed);
    }
    let mut validation = Validation::new(Algorithm::ES256);
    // Times are checked below against the caller's clock; audiences by the authenticator.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation.set_issuer(&[ISSUER]);
    let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::InvalidSignature | ErrorKind::Crypto(_) => TokenError::Signature,
            _ => TokenError::Malformed,
        }
    })?;
    let claims = data.claims;
    if claims.exp.saturating_add(LEEWAY_SECONDS) < now {
        return Err(TokenError::Expired);
    }
    if claims.nbf.saturating_sub(LEEWAY_SECONDS) > now {
        return Err(TokenError::NotYetValid);
    }
    let k = &claims.kubernetes;
    if claims.sub != username(&k.namespace, &k.serviceaccount.name) {
        return Err(TokenError::Malformed);
    }
    Ok(claims)
}

/// The token's audiences that are also `wanted` (upstream: at least one must be).
pub fn accepted_audiences(claims: &Claims, wanted: &[String]) -> Result<Vec<String>, TokenError> {
    let both: Vec<String> = wanted
        .iter()
        .filter(|w| claims.aud.contains(w))
        .cloned()
        .collect();
    if both.is_empty() {
        return Err(TokenError::Audience {
            token: claims.aud.clone(),
            wanted: wanted.to_vec(),
        });
    }
    Ok(both)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa() -> ObjectRef {
        ObjectRef {
            name: "default".into(),
            uid: "sa-uid".into(),
        }
    }

    fn request(expiration_seconds: i64) -> Request<'static> {
        Request {
            namespace: "ns1",
            service_account: sa(),
            audiences: vec![ISSUER.into()],
            expiration_seconds,
            pod: Some(ObjectRef {
                name: "p".into(),
                uid: "pod-uid".into(),
            }),
            secret: None,
            node: None,
        }
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn an_issued_token_verifies_with_upstreams_claims() {
        let key = SigningKey::generate().unwrap();
        let (token, issued) = issue(&key, request(3600), NOW).unwrap();
        assert!(looks_like_jwt(token.as_bytes()));
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(key.kid.as_str()));
        let claims = verify(&key, &token, NOW + 10).unwrap();
        assert_eq!(claims, issued);
        assert_eq!(claims.sub, "system:serviceaccount:ns1:default");
        assert_eq!((claims.iat, claims.nbf, claims.exp), (NOW, NOW, NOW + 3600));
        assert_eq!(claims.kubernetes.pod.as_ref().unwrap().uid, "pod-uid");
        // The wire form names the private claim as upstream does.
        let payload = token.split('.').nth(1).unwrap();
        use base64::Engine;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(v["kubernetes.io"]["serviceaccount"]["name"], "default");
        assert!(v["kubernetes.io"].get("secret").is_none());
    }

    #[test]
    fn time_bounds_forgive_the_leeway_and_no_more() {
        let key = SigningKey::generate().unwrap();
        let (token, _) = issue(&key, request(600), NOW).unwrap();
        assert!(verify(&key, &token, NOW + 600 + LEEWAY_SECONDS).is_ok());
        assert_eq!(
            verify(&key, &token, NOW + 600 + LEEWAY_SECONDS + 1),
            Err(TokenError::Expired)
        );
        assert!(verify(&key, &token, NOW - LEEWAY_SECONDS).is_ok());
        assert_eq!(
            verify(&key, &token, NOW - LEEWAY_SECONDS - 1),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn another_key_a_tampered_payload_or_garbage_is_refused() {
        let key = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let (token, _) = issue(&key, request(3600), NOW).unwrap();
        // Another key: its kid differs, and with the kid removed the signature fails.
        assert_eq!(verify(&other, &token, NOW), Err(TokenError::Malformed));
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        let mut header = jsonwebtoken::decode_header(&token).unwrap();
        header.kid = None;
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        parts[0] = b64.encode(serde_json::to_vec(&header).unwrap());
        assert_eq!(
            verify(&key, &parts.join("."), NOW),
            Err(TokenError::Signature)
        );
        // A payload naming another account under the original signature.
        let (token, mut claims) = issue(&key, request(3600), NOW).unwrap();
        claims.kubernetes.serviceaccount.name = "admin".into();
        claims.sub = username("ns1", "admin");
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        parts[1] = b64.encode(serde_json::to_vec(&claims).unwrap());
        assert_eq!(
            verify(&key, &parts.join("."), NOW),
            Err(TokenError::Signature)
        );
        assert_eq!(verify(&key, "eyJ.a.b", NOW), Err(TokenError::Malformed));
        assert!(!looks_like_jwt(b"plain-admin-token"));
    }

    #[test]
    fn a_subject_that_disagrees_with_the_private_claim_is_refused() {
        let key = SigningKey::generate().unwrap();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        let (_, mut claims) = issue(&key, request(3600), NOW).unwrap();
        claims.sub = username("kube-system", "default");
        let token = jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap();
        assert_eq!(verify(&key, &token, NOW), Err(TokenError::Malformed));
        claims.sub = username("ns1", "default");
        claims.iss = "https://evil.example".into();
        let token = jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap();
        assert_eq!(verify(&key, &token, NOW), Err(TokenError::Malformed));
    }

    #[test]
    fn audiences_must_intersect() {
        let key = SigningKey::generate().unwrap();
        let mut req = request(3600);
        req.audiences = vec!["vault".into(), "api".into()];
        let (_, claims) = issue(&key, req, NOW).unwrap();
        assert_eq!(
            accepted_audiences(&claims, &["api".into(), "other".into()]),
            Ok(vec!["api".to_string()])
        );
        assert!(matches!(
            accepted_audiences(&claims, &[ISSUER.into()]),
            Err(TokenError::Audience { .. })
        ));
    }
}
