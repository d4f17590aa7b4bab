//! The key service-account tokens are signed with: an ECDSA P-256 key (ES256) generated once
//! into the data dir beside the other PKI material, and the `kid` its tokens carry.

use std::path::Path;

use base64::Engine;
use jsonwebtoken::{DecodingKey, EncodingKey};
use rcgen::{KeyPair, PublicKeyData};

use crate::serving::pki::{write_private, PkiError};

/// The file under the PKI dir (upstream's `--service-account-key-file` / `-signing-key-file`).
const KEY_FILE: &str = "service-account.key";

/// A signing key and what verification needs of it.
pub struct SigningKey {
    pub(crate) encoding: EncodingKey,
    pub(crate) decoding: DecodingKey,
    /// Upstream's key id: base64url (no padding) of the SHA-256 of the PKIX public key.
    pub kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.kid)
    }
}

impl SigningKey {
    /// A fresh key that lives as long as the process (tests, servers without a data dir).
    pub fn generate() -> Result<Self, PkiError> {
        Self::from_key_pair(&KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?)
    }

    /// The key in `dir`, generated on first use; tokens issued before a restart stay valid.
    pub fn load_or_create(dir: &Path) -> Result<Self, PkiError> {
        let path = dir.join(KEY_FILE);
        let pem = match std::fs::read_to_string(&path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
                let pem = pair.serialize_pem();
                write_private(&path, &pem)?;
                pem
            }
            Err(source) => return Err(PkiError::Io { path, source }),
        };
        let pair = KeyPair::from_pem(&pem)?;
        if pair.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            // ES256 is what the tokens say; another key type would sign what no one verifies.
            return Err(PkiError::BadPem(path));
        }
        Self::from_key_pair(&pair)
    }

    fn from_key_pair(pair: &KeyPair) -> Result<Self, PkiError> {
        let digest = ring::digest::digest(&ring::digest::SHA256, &pair.subject_public_key_info());
        Ok(SigningKey {
            encoding: EncodingKey::from_ec_der(&pair.serialize_der()),
            // ring verifies ECDSA against the uncompressed point.
            decoding: DecodingKey::from_ec_der(pair.public_key_raw()),
            kid: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_generated_once_and_loaded_after() {
        let dir = tempfile::tempdir().unwrap();
        let first = SigningKey::load_or_create(dir.path()).unwrap();
        let again = SigningKey::load_or_create(dir.path()).unwrap();
        assert_eq!(first.kid, again.kid);
        assert_eq!(first.kid.len(), 43, "{}", first.kid);
    }

    #[test]
    fn a_file_that_is_no_key_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE), "not a key").unwrap();
        assert!(SigningKey::load_or_create(dir.path()).is_err());
    }
}
