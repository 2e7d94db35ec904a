//! SNMPv3's User-based Security Model (RFC 3414, RFC 3826, RFC 7860): password to key, keys
//! localized per engine id, HMAC authentication (MD5, SHA-1, SHA-2), DES-CBC and AES-CFB
//! privacy. Pure functions on bytes; the SNMP transport decides when to call them.

use aes::cipher::{AsyncStreamCipher, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Digest;
use subtle::ConstantTimeEq;

/// An authentication protocol (`auth:` of a v3 user).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthProtocol {
    Md5,
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

/// A privacy protocol (`priv:` of a v3 user). AES-192/256 keys longer than the digest are
/// extended as net-snmp does (draft-blumenthal-aes-usm: `Kul || H(Kul) …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivProtocol {
    Des,
    Aes128,
    Aes192,
    Aes256,
}

/// Why a v3 message's security could not be processed (each is counted by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UsmError {
    #[error("bad_auth")]
    BadAuth,
    #[error("undecryptable")]
    Undecryptable,
}

impl AuthProtocol {
    pub const NAMES: &[&str] = &["md5", "sha", "sha224", "sha256", "sha384", "sha512"];

    pub fn parse(name: &str) -> Option<AuthProtocol> {
        Some(match name.to_ascii_lowercase().replace('-', "").as_str() {
            "md5" => AuthProtocol::Md5,
            "sha" | "sha1" => AuthProtocol::Sha1,
            "sha224" => AuthProtocol::Sha224,
            "sha256" => AuthProtocol::Sha256,
            "sha384" => AuthProtocol::Sha384,
            "sha512" => AuthProtocol::Sha512,
            _ => return None,
        })
    }

    /// Length of msgAuthenticationParameters: the HMAC truncated (RFC 3414 §6–7, RFC 7860).
    pub fn mac_len(self) -> usize {
        match self {
            AuthProtocol::Md5 | AuthProtocol::Sha1 => 12,
            AuthProtocol::Sha224 => 16,
            AuthProtocol::Sha256 => 24,
            AuthProtocol::Sha384 => 32,
            AuthProtocol::Sha512 => 48,
        }
    }

    fn hash(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut d = D::new();
            for p in parts {
                d.update(p);
            }
            d.finalize().to_vec()
        }
        match self {
            AuthProtocol::Md5 => run::<md5::Md5>(parts),
            AuthProtocol::Sha1 => run::<sha1::Sha1>(parts),
            AuthProtocol::Sha224 => run::<sha2::Sha224>(parts),
            AuthProtocol::Sha256 => run::<sha2::Sha256>(parts),
            AuthProtocol::Sha384 => run::<sha2::Sha384>(parts),
            AuthProtocol::Sha512 => run::<sha2::Sha512>(parts),
        }
    }

    /// The password key Ku (RFC 3414 A.2): the digest of 1 MiB of the password repeated.
    /// Costly by design; computed once when the rulebook is loaded.
    pub fn password_key(self, password: &[u8]) -> Vec<u8> {
        fn run<D: Digest>(password: &[u8]) -> Vec<u8> {
            let mut d = D::new();
            let mut chunk = [0u8; 64];
            let mut at = 0usize;
            for _ in 0..(1_048_576 / 64) {
                for b in chunk.iter_mut() {
                    *b = password[at % password.len()];
                    at += 1;
                }
                d.update(chunk);
            }
            d.finalize().to_vec()
        }
        if password.is_empty() {
            return Vec::new();
        }
        match self {
            AuthProtocol::Md5 => run::<md5::Md5>(password),
            AuthProtocol::Sha1 => run::<sha1::Sha1>(password),
            AuthProtocol::Sha224 => run::<sha2::Sha224>(password),
            AuthProtocol::Sha256 => run::<sha2::Sha256>(password),
            AuthProtocol::Sha384 => run::<sha2::Sha384>(password),
            AuthProtocol::Sha512 => run::<sha2::Sha512>(password),
        }
    }

    /// Kul = H(Ku || engineID || Ku) (RFC 3414 A.2.2).
    pub fn localize(self, ku: &[u8], engine_id: &[u8]) -> Vec<u8> {
        self.hash(&[ku, engine_id, ku])
    }

    /// The truncated HMAC of `message` under the localized key.
    pub fn mac(self, key: &[u8], message: &[u8]) -> Vec<u8> {
        fn run<M: Mac + KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
            match <M as KeyInit>::new_from_slice(key) {
                Ok(mut m) => {
                    m.update(message);
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            }
        }
        let mut full = match self {
            AuthProtocol::Md5 => run::<Hmac<md5::Md5>>(key, message),
            AuthProtocol::Sha1 => run::<Hmac<sha1::Sha1>>(key, message),
            AuthProtocol::Sha224 => run::<Hmac<sha2::Sha224>>(key, message),
            AuthProtocol::Sha256 => run::<Hmac<sha2::Sha256>>(key, message),
            AuthProtocol::Sha384 => run::<Hmac<sha2::Sha384>>(key, message),
            AuthProtocol::Sha512 => run::<Hmac<sha2::Sha512>>(key, message),
        };
        full.truncate(self.mac_len());
        full
    }

    /// Checks `given` against the HMAC of `message` (whose authentication parameters are
    /// zeroed), in constant time.
    pub fn verify(self, key: &[u8], message: &[u8], given: &[u8]) -> Result<(), UsmError> {
        let expected = self.mac(key, message);
        if expected.len() == self.mac_len() && bool::from(expected.as_slice().ct_eq(given)) {
            Ok(())
        } else {
            Err(UsmError::BadAuth)
        }
    }
}

impl PrivProtocol {
    pub const NAMES: &[&str] = &["des", "aes", "aes192", "aes256"];

    pub fn parse(name: &str) -> Option<PrivProtocol> {
        Some(match name.to_ascii_lowercase().replace('-', "").as_str() {
            "des" => PrivProtocol::Des,
            "aes" | "aes128" => PrivProtocol::Aes128,
            "aes192" => PrivProtocol::Aes192,
            "aes256" => PrivProtocol::Aes256,
            _ => return None,
        })
    }

    fn key_len(self) -> usize {
        match self {
            PrivProtocol::Des | PrivProtocol::Aes128 => 16,
            PrivProtocol::Aes192 => 24,
            PrivProtocol::Aes256 => 32,
        }
    }

    /// The localized privacy key, extended when the digest is shorter than the cipher needs.
    pub fn localize(self, auth: AuthProtocol, ku: &[u8], engine_id: &[u8]) -> Vec<u8> {
        let mut key = auth.localize(ku, engine_id);
        while key.len() < self.key_len() {
            let more = auth.hash(&[&key]);
            key.extend(more);
        }
        key.truncate(self.key_len());
        key
    }

    /// Decrypts an encrypted scoped PDU. `salt` is msgPrivacyParameters; `boots`/`time` the
    /// authoritative engine's, as the message carries them.
    pub fn decrypt(
        self,
        key: &[u8],
        salt: &[u8],
        boots: u32,
        time: u32,
        data: &[u8],
    ) -> Result<Vec<u8>, UsmError> {
        let mut buf = data.to_vec();
        if salt.len() != 8 {
            return Err(UsmError::Undecryptable);
        }
        match self {
            PrivProtocol::Des => {
                if buf.is_empty() || !buf.len().is_multiple_of(8) || key.len() < 16 {
                    return Err(UsmError::Undecryptable);
                }
                let iv: Vec<u8> = key[8..16].iter().zip(salt).map(|(a, b)| a ^ b).collect();
                let dec = cbc::Decryptor::<des::Des>::new_from_slices(&key[..8], &iv)
                    .map_err(|_| UsmError::Undecryptable)?;
                dec.decrypt_padded_mut::<aes::cipher::block_padding::NoPadding>(&mut buf)
                    .map_err(|_| UsmError::Undecryptable)?;
            }
            _ => {
                let iv = aes_iv(boots, time, salt);
                aes_cfb(self, key, &iv, &mut buf, false)?;
            }
        }
        Ok(buf)
    }

    /// Encrypts a scoped PDU for a reply; returns (ciphertext, msgPrivacyParameters).
    pub fn encrypt(
        self,
        key: &[u8],
        boots: u32,
        time: u32,
        plain: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), UsmError> {
        let salt: [u8; 8] = rand::random();
        let mut buf = plain.to_vec();
        match self {
            PrivProtocol::Des => {
                if key.len() < 16 {
                    return Err(UsmError::Undecryptable);
                }
                let len = buf.len();
                buf.resize(len.div_ceil(8) * 8, 0);
                let iv: Vec<u8> = key[8..16].iter().zip(&salt).map(|(a, b)| a ^ b).collect();
                let enc = cbc::Encryptor::<des::Des>::new_from_slices(&key[..8], &iv)
                    .map_err(|_| UsmError::Undecryptable)?;
                let n = buf.len();
                enc.encrypt_padded_mut::<aes::cipher::block_padding::NoPadding>(&mut buf, n)
                    .map_err(|_| UsmError::Undecryptable)?;
            }
            _ => {
                let iv = aes_iv(boots, time, &salt);
                aes_cfb(self, key, &iv, &mut buf, true)?;
            }
        }
        Ok((buf, salt.to_vec()))
    }
}

fn aes_iv(boots: u32, time: u32, salt: &[u8]) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..4].copy_from_slice(&boots.to_be_bytes());
    iv[4..8].copy_from_slice(&time.to_be_bytes());
    iv[8..].copy_from_slice(&salt[..8]);
    iv
}

fn aes_cfb(
    p: PrivProtocol,
    key: &[u8],
    iv: &[u8],
    buf: &mut [u8],
    encrypt: bool,
) -> Result<(), UsmError> {
    fn run<C>(key: &[u8], iv: &[u8], buf: &mut [u8], encrypt: bool) -> Result<(), UsmError>
    where
        C: aes::cipher::BlockEncryptMut + aes::cipher::BlockCipher + aes::cipher::KeyInit,
    {
        if encrypt {
            cfb_mode::Encryptor::<C>::new_from_slices(key, iv)
                .map_err(|_| UsmError::Undecryptable)?
                .encrypt(buf);
        } else {
            cfb_mode::Decryptor::<C>::new_from_slices(key, iv)
                .map_err(|_| UsmError::Undecryptable)?
                .decrypt(buf);
        }
        Ok(())
    }
    match p {
        PrivProtocol::Aes128 => run::<aes::Aes128>(&key[..16.min(key.len())], iv, buf, encrypt),
        PrivProtocol::Aes192 => run::<aes::Aes192>(&key[..24.min(key.len())], iv, buf, encrypt),
        PrivProtocol::Aes256 => run::<aes::Aes256>(&key[..32.min(key.len())], iv, buf, encrypt),
        PrivProtocol::Des => Err(UsmError::Undecryptable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3414_a3_key_localization_vectors() {
        // RFC 3414 A.3.1 (MD5) and A.3.2 (SHA-1): password "maplesyrup", engine id
        // 00 00 00 00 00 00 00 00 00 00 00 02.
        let engine = hex::decode("000000000000000000000002").unwrap();
        let ku = AuthProtocol::Md5.password_key(b"maplesyrup");
        assert_eq!(hex::encode(&ku), "9faf3283884e92834ebc9847d8edd963");
        assert_eq!(
            hex::encode(AuthProtocol::Md5.localize(&ku, &engine)),
            "526f5eed9fcce26f8964c2930787d82b"
        );
        let ku = AuthProtocol::Sha1.password_key(b"maplesyrup");
        assert_eq!(hex::encode(&ku), "9fb5cc0381497b3793528939ff788d5d79145211");
        assert_eq!(
            hex::encode(AuthProtocol::Sha1.localize(&ku, &engine)),
            "6695febc9288e36282235fc7151f128497b38f3f"
        );
    }

    #[test]
    fn mac_lengths_and_constant_time_check() {
        for p in [
            AuthProtocol::Md5,
            AuthProtocol::Sha256,
            AuthProtocol::Sha512,
        ] {
            let m = p.mac(b"key", b"message");
            assert_eq!(m.len(), p.mac_len());
            assert!(p.verify(b"key", b"message", &m).is_ok());
            assert_eq!(p.verify(b"key", b"messagE", &m), Err(UsmError::BadAuth));
            assert_eq!(
                p.verify(b"key", b"message", &m[1..]),
                Err(UsmError::BadAuth)
            );
        }
    }

    #[test]
    fn privacy_round_trips_and_keys_are_extended() {
        let ku = AuthProtocol::Sha1.password_key(b"privpassword");
        for p in [
            PrivProtocol::Des,
            PrivProtocol::Aes128,
            PrivProtocol::Aes192,
            PrivProtocol::Aes256,
        ] {
            let key = p.localize(AuthProtocol::Sha1, &ku, b"engine-1");
            assert_eq!(key.len(), p.key_len());
            let (c, salt) = p.encrypt(&key, 3, 77, b"scoped pdu bytes").unwrap();
            assert_ne!(&c[..16], b"scoped pdu bytes");
            let back = p.decrypt(&key, &salt, 3, 77, &c).unwrap();
            assert_eq!(&back[..16], b"scoped pdu bytes");
        }
        assert_eq!(
            PrivProtocol::Des.decrypt(&[0; 16], &[0; 8], 0, 0, &[1, 2, 3]),
            Err(UsmError::Undecryptable)
        );
    }
}
