//! The value transformers: identity, aescbc, aesgcm and secretbox, each writing upstream's
//! `k8s:enc:<provider>:v1:<key name>:` prefix before its ciphertext, so data written by one
//! server (or kube-apiserver) is read by the other.

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use crypto_secretbox::aead::{Aead, KeyInit};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    AesCbc,
    AesGcm,
    Secretbox,
}

impl Cipher {
    pub fn name(self) -> &'static str {
        match self {
            Cipher::AesCbc => "aescbc",
            Cipher::AesGcm => "aesgcm",
            Cipher::Secretbox => "secretbox",
        }
    }

    /// ring has AES-GCM with 128- and 256-bit keys (not 192).
    pub fn key_sizes(self) -> &'static [usize] {
        match self {
            Cipher::AesCbc => &[16, 24, 32],
            Cipher::AesGcm => &[16, 32],
            Cipher::Secretbox => &[32],
        }
    }
}

pub struct Key {
    pub name: String,
    pub secret: Vec<u8>,
}

pub enum Provider {
    Identity,
    Keyed { cipher: Cipher, keys: Vec<Key> },
}

#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    #[error("no matching prefix found (the value is encrypted by a provider or key the configuration does not list)")]
    NoMatchingPrefix,
    #[error("{0} key {1:?}: decryption failed (wrong key or corrupt data)")]
    Decrypt(&'static str, String),
    #[error("{0}: encryption failed")]
    Encrypt(&'static str),
    #[error("no random numbers for a nonce")]
    Random,
}

const ENCRYPTED: &[u8] = b"k8s:enc:";

fn prefix(cipher: Cipher, key: &Key) -> Vec<u8> {
    format!("k8s:enc:{}:v1:{}:", cipher.name(), key.name).into_bytes()
}

fn random<const N: usize>() -> Result<[u8; N], CryptError> {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| CryptError::Random)?;
    Ok(b)
}

fn seal(cipher: Cipher, key: &Key, plain: &[u8], context: &[u8]) -> Result<Vec<u8>, CryptError> {
    let fail = || CryptError::Encrypt(cipher.name());
    let mut out = prefix(cipher, key);
    match cipher {
        Cipher::AesCbc => {
            let iv: [u8; 16] = random()?;
            let sealed = match key.secret.len() {
                16 => cbc::Encryptor::<aes::Aes128>::new_from_slices(&key.secret, &iv)
                    .map_err(|_| fail())?
                    .encrypt_padded_vec_mut::<Pkcs7>(plain),
                24 => cbc::Encryptor::<aes::Aes192>::new_from_slices(&key.secret, &iv)
                    .map_err(|_| fail())?
                    .encrypt_padded_vec_mut::<Pkcs7>(plain),
                _ => cbc::Encryptor::<aes::Aes256>::new_from_slices(&key.secret, &iv)
                    .map_err(|_| fail())?
                    .encrypt_padded_vec_mut::<Pkcs7>(plain),
            };
            out.extend_from_slice(&iv);
            out.extend_from_slice(&sealed);
        }
        Cipher::AesGcm => {
            let nonce: [u8; 12] = random()?;
            let k = gcm_key(&key.secret).ok_or_else(fail)?;
            let mut data = plain.to_vec();
            // The storage key is the authenticated data, as upstream binds a value to it.
            k.seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context),
                &mut data,
            )
            .map_err(|_| fail())?;
            out.extend_from_slice(&nonce);
            out.extend_from_slice(&data);
        }
        Cipher::Secretbox => {
            let nonce: [u8; 24] = random()?;
            let b = crypto_secretbox::XSalsa20Poly1305::new_from_slice(&key.secret)
                .map_err(|_| fail())?;
            let sealed = b.encrypt(&nonce.into(), plain).map_err(|_| fail())?;
            out.extend_from_slice(&nonce);
            out.extend_from_slice(&sealed);
        }
    }
    Ok(out)
}

fn gcm_key(secret: &[u8]) -> Option<LessSafeKey> {
    let alg = match secret.len() {
        16 => &ring::aead::AES_128_GCM,
        32 => &ring::aead::AES_256_GCM,
        _ => return None,
    };
    UnboundKey::new(alg, secret).ok().map(LessSafeKey::new)
}

fn open(cipher: Cipher, key: &Key, data: &[u8], context: &[u8]) -> Result<Vec<u8>, CryptError> {
    let fail = || CryptError::Decrypt(cipher.name(), key.name.clone());
    match cipher {
        Cipher::AesCbc => {
            if data.len() < 16 {
                return Err(fail());
            }
            let (iv, body) = data.split_at(16);
            match key.secret.len() {
                16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(&key.secret, iv)
                    .map_err(|_| fail())?
                    .decrypt_padded_vec_mut::<Pkcs7>(body),
                24 => cbc::Decryptor::<aes::Aes192>::new_from_slices(&key.secret, iv)
                    .map_err(|_| fail())?
                    .decrypt_padded_vec_mut::<Pkcs7>(body),
                _ => cbc::Decryptor::<aes::Aes256>::new_from_slices(&key.secret, iv)
                    .map_err(|_| fail())?
                    .decrypt_padded_vec_mut::<Pkcs7>(body),
            }
            .map_err(|_| fail())
        }
        Cipher::AesGcm => {
            if data.len() < 12 {
                return Err(fail());
            }
            let (nonce, body) = data.split_at(12);
            let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail())?;
            let k = gcm_key(&key.secret).ok_or_else(fail)?;
            let mut buf = body.to_vec();
            let plain = k
                .open_in_place(nonce, Aad::from(context), &mut buf)
                .map_err(|_| fail())?;
            Ok(plain.to_vec())
        }
        Cipher::Secretbox => {
            if data.len() < 24 {
                return Err(fail());
            }
            let (nonce, body) = data.split_at(24);
            let b = crypto_secretbox::XSalsa20Poly1305::new_from_slice(&key.secret)
                .map_err(|_| fail())?;
            let nonce = crypto_secretbox::Nonce::from_slice(nonce);
            b.decrypt(nonce, body).map_err(|_| fail())
        }
    }
}

/// The stored bytes for `plain` under the first provider (identity stores it as it is).
pub fn encrypt(
    providers: &[Provider],
    plain: &[u8],
    context: &[u8],
) -> Result<Vec<u8>, CryptError> {
    match providers.first() {
        Some(Provider::Keyed { cipher, keys }) => match keys.first() {
            Some(k) => seal(*cipher, k, plain, context),
            None => Ok(plain.to_vec()),
        },
        _ => Ok(plain.to_vec()),
    }
}

/// Whether `stored` is what the first provider writes: its prefix (first key), or plain
/// data when identity is first.
pub fn written_by_first(providers: &[Provider], stored: &[u8]) -> bool {
    match providers.first() {
        Some(Provider::Keyed { cipher, keys }) => keys
            .first()
            .is_some_and(|k| stored.starts_with(&prefix(*cipher, k))),
        _ => !stored.starts_with(ENCRYPTED),
    }
}

/// The plain bytes of a stored value: the provider and key its prefix names, or — for data
/// without an encryption prefix — as it is when identity is listed.
pub fn decrypt(
    providers: &[Provider],
    stored: &[u8],
    context: &[u8],
) -> Result<Vec<u8>, CryptError> {
    if !stored.starts_with(ENCRYPTED) {
        return if providers.iter().any(|p| matches!(p, Provider::Identity)) {
            Ok(stored.to_vec())
        } else {
            Err(CryptError::NoMatchingPrefix)
        };
    }
    for p in providers {
        let Provider::Keyed { cipher, keys } = p else {
            continue;
        };
        for k in keys {
            let pre = prefix(*cipher, k);
            if let Some(data) = stored.strip_prefix(pre.as_slice()) {
                return open(*cipher, k, data, context);
            }
        }
    }
    Err(CryptError::NoMatchingPrefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(cipher: Cipher, name: &str, byte: u8) -> Provider {
        Provider::Keyed {
            cipher,
            keys: vec![Key {
                name: name.into(),
                secret: vec![byte; 32],
            }],
        }
    }

    #[test]
    fn each_cipher_round_trips_and_names_its_key() {
        for c in [Cipher::AesCbc, Cipher::AesGcm, Cipher::Secretbox] {
            let ps = [provider(c, "k1", 7)];
            let sealed = encrypt(&ps, b"hunter2", b"/registry/secrets/a/b").unwrap();
            let want = format!("k8s:enc:{}:v1:k1:", c.name());
            assert!(sealed.starts_with(want.as_bytes()));
            assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
            assert_eq!(
                decrypt(&ps, &sealed, b"/registry/secrets/a/b").unwrap(),
                b"hunter2"
            );
            let wrong = [provider(c, "k1", 8)];
            assert!(matches!(
                decrypt(&wrong, &sealed, b"/registry/secrets/a/b"),
                Err(CryptError::Decrypt(..))
            ));
        }
    }

    #[test]
    fn identity_reads_plain_data_and_unknown_prefixes_fail() {
        let ps = [provider(Cipher::AesCbc, "k1", 7), Provider::Identity];
        assert_eq!(decrypt(&ps, b"{}", b"k").unwrap(), b"{}");
        let only = [provider(Cipher::AesCbc, "k1", 7)];
        assert!(matches!(
            decrypt(&only, b"{}", b"k"),
            Err(CryptError::NoMatchingPrefix)
        ));
        let other = [provider(Cipher::AesCbc, "k2", 7), Provider::Identity];
        let sealed = encrypt(&only, b"x", b"k").unwrap();
        assert!(matches!(
            decrypt(&other, &sealed, b"k"),
            Err(CryptError::NoMatchingPrefix)
        ));
        // Identity first: new writes are plain.
        let plain_first = [Provider::Identity, provider(Cipher::AesCbc, "k1", 7)];
        assert_eq!(encrypt(&plain_first, b"x", b"k").unwrap(), b"x");
        assert_eq!(decrypt(&plain_first, &sealed, b"k").unwrap(), b"x");
    }
}
