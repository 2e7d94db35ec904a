//! Keyed digests and constant-time comparisons shared by the verifiers.

use std::cell::RefCell;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

/// The digest a generic `hmac` source (and the fixed kinds) sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn parse(name: &str) -> Option<Algorithm> {
        match name.to_ascii_lowercase().as_str() {
            "sha1" => Some(Algorithm::Sha1),
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }
}

/// An HMAC whose key is already absorbed: the inner and outer digest states after the padded
/// key block. Setting a key up costs two compressions (more for a key longer than a block);
/// cloning the keyed state costs a copy, so each secret is set up once per thread
/// ([`KEYED`]) instead of once per request.
#[derive(Clone)]
enum Keyed {
    Sha1(Hmac<sha1::Sha1>),
    Sha256(Hmac<Sha256>),
    Sha512(Hmac<Sha512>),
}

impl Keyed {
    fn new(alg: Algorithm, key: &[u8]) -> Option<Keyed> {
        // HMAC takes keys of any length, so these cannot fail.
        Some(match alg {
            Algorithm::Sha1 => Keyed::Sha1(KeyInit::new_from_slice(key).ok()?),
            Algorithm::Sha256 => Keyed::Sha256(KeyInit::new_from_slice(key).ok()?),
            Algorithm::Sha512 => Keyed::Sha512(KeyInit::new_from_slice(key).ok()?),
        })
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Keyed::Sha1(m) => m.update(data),
            Keyed::Sha256(m) => m.update(data),
            Keyed::Sha512(m) => m.update(data),
        }
    }

    fn finalize(self) -> Vec<u8> {
        match self {
            Keyed::Sha1(m) => m.finalize().into_bytes().to_vec(),
            Keyed::Sha256(m) => m.finalize().into_bytes().to_vec(),
            Keyed::Sha512(m) => m.finalize().into_bytes().to_vec(),
        }
    }

    /// Constant-time comparison with `given` (false when the lengths differ).
    fn verify(self, given: &[u8]) -> bool {
        match self {
            Keyed::Sha1(m) => m.verify_slice(given).is_ok(),
            Keyed::Sha256(m) => m.verify_slice(given).is_ok(),
            Keyed::Sha512(m) => m.verify_slice(given).is_ok(),
        }
    }
}

/// How many keyed states a thread keeps (sources × secrets in rotation that one process checks;
/// past it the least recently used is set up again when next needed).
const KEYED_PER_THREAD: usize = 16;

/// One thread's keyed HMAC states: (algorithm, key, state), most recently used last.
type KeyedCache = Vec<(Algorithm, Box<[u8]>, Keyed)>;

thread_local! {
    /// Keyed HMAC states by (algorithm, key), most recently used last. Per thread, so the accept
    /// path takes no lock; a rotated secret is a new key and the old one ages out.
    static KEYED: RefCell<KeyedCache> = const { RefCell::new(Vec::new()) };
}

#[cfg(test)]
thread_local! {
    /// Bytes this thread has fed to HMACs (tests bound the work a request costs by it).
    pub static HASHED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Counts `parts` into `HASHED` (tests only).
fn count(_parts: &[&[u8]]) {
    #[cfg(test)]
    HASHED.with(|h| h.set(h.get() + _parts.iter().map(|p| p.len()).sum::<usize>()));
}

/// A fresh HMAC under `key`, cloned from this thread's keyed state for it (set up on first use).
fn keyed(alg: Algorithm, key: &[u8]) -> Option<Keyed> {
    KEYED.with(|cell| {
        let mut cache = cell.borrow_mut();
        // Comparing a configured key with configured keys: no outside input is timed here.
        if let Some(i) = cache.iter().rposition(|(a, k, _)| *a == alg && **k == *key) {
            let hit = cache.remove(i);
            let mac = hit.2.clone();
            cache.push(hit);
            return Some(mac);
        }
        let mac = Keyed::new(alg, key)?;
        if cache.len() >= KEYED_PER_THREAD {
            cache.remove(0);
        }
        cache.push((alg, key.into(), mac.clone()));
        Some(mac)
    })
}

/// HMAC of `parts` (concatenated) under `key`.
pub fn sign(alg: Algorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    count(parts);
    let Some(mut mac) = keyed(alg, key) else {
        return Vec::new();
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize()
}

/// True when `given` is the HMAC of `parts` under `key`, compared in constant time.
pub fn verify(alg: Algorithm, key: &[u8], parts: &[&[u8]], given: &[u8]) -> bool {
    count(parts);
    let Some(mut mac) = keyed(alg, key) else {
        return false;
    };
    for p in parts {
        mac.update(p);
    }
    mac.verify(given)
}

/// Compares two secrets in constant time, whatever their lengths (both are hashed first, so
/// neither the length nor a prefix leaks).
pub fn secret_eq(a: &[u8], b: &[u8]) -> bool {
    let (ha, hb) = (Sha256::digest(a), Sha256::digest(b));
    bool::from(ha.as_slice().ct_eq(hb.as_slice()))
}

/// Lowercase hex BLAKE3 (256 bits) of the body, the delivery id of senders that give none.
///
/// A plain digest of what the sender sent, nothing derived from a secret (a viewer of the
/// history sees it). BLAKE3 rather than SHA-256: as collision-resistant, and a fraction of the
/// instructions where the CPU has no SHA extensions (docs/decisions.md, "The rest of the path").
pub fn body_hash(body: &[u8]) -> String {
    hex_lower(blake3::hash(body).as_bytes())
}

/// Lowercase hex of `bytes`, a byte at a time from a table (the `hex` crate's `encode` collects
/// an iterator of `char`s, ~70 instructions a byte).
pub fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = vec![0u8; bytes.len() * 2];
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
    // Only ASCII digits and letters were written.
    String::from_utf8(out).unwrap_or_default()
}

/// The value of each byte as a hex digit (either case); `0xff` for a byte that is not one.
const HEX_VALUE: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// The bytes of a hex string (either case), or `None` when it is not one (odd length, or a
/// character that is not a hex digit).
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    let t = text.as_bytes();
    if !t.len().is_multiple_of(2) {
        return None;
    }
    let mut out = vec![0u8; t.len() / 2];
    for (o, p) in out.iter_mut().zip(t.chunks_exact(2)) {
        let (hi, lo) = (HEX_VALUE[usize::from(p[0])], HEX_VALUE[usize::from(p[1])]);
        if (hi | lo) == 0xff {
            return None;
        }
        *o = (hi << 4) | lo;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_known_vector() {
        // RFC 4231 test case 2.
        let mac = sign(
            Algorithm::Sha256,
            b"Jefe",
            &[b"what do ya want ", b"for nothing?"],
        );
        assert_eq!(
            hex::encode(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify(
            Algorithm::Sha256,
            b"Jefe",
            &[b"what do ya want for nothing?"],
            &mac
        ));
        assert!(!verify(
            Algorithm::Sha256,
            b"jefe",
            &[b"what do ya want for nothing?"],
            &mac
        ));
    }

    #[test]
    fn keyed_states_are_reused_and_never_mixed_up() {
        // More keys than a thread keeps, each used twice in a row and again after the others:
        // every answer is the one a fresh HMAC gives (RFC 4231 case 2 for "Jefe").
        let fresh = |key: &[u8], msg: &[u8]| {
            let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
            m.update(msg);
            m.finalize().into_bytes().to_vec()
        };
        let keys: Vec<Vec<u8>> = (0..KEYED_PER_THREAD + 3)
            .map(|i| format!("key-{i}").into_bytes())
            .chain([vec![b'k'; 200]]) // longer than a block: hashed first
            .collect();
        for round in 0..2 {
            for k in &keys {
                let msg = format!("body {round}");
                let want = fresh(k, msg.as_bytes());
                assert_eq!(sign(Algorithm::Sha256, k, &[msg.as_bytes()]), want);
                assert!(verify(Algorithm::Sha256, k, &[msg.as_bytes()], &want));
                assert!(!verify(Algorithm::Sha256, k, &[b"other"], &want));
                assert!(!verify(
                    Algorithm::Sha256,
                    k,
                    &[msg.as_bytes()],
                    &want[..31]
                ));
            }
        }
        // The same key under another digest is another state.
        assert_eq!(
            hex::encode(sign(
                Algorithm::Sha1,
                b"key",
                &[b"The quick brown fox jumps over the lazy dog"]
            )),
            "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9"
        );
        assert_eq!(
            sign(
                Algorithm::Sha512,
                b"Jefe",
                &[b"what do ya want for nothing?"]
            )
            .len(),
            64
        );
        assert_eq!(
            hex::encode(sign(
                Algorithm::Sha512,
                b"Jefe",
                &[b"what do ya want ", b"for nothing?"]
            ))[..16],
            *"164b7a7bfcf819e2"
        );
    }

    #[test]
    fn hex_both_ways() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(hex_lower(&bytes), hex::encode(&bytes));
        assert_eq!(unhex(&hex::encode(&bytes)).unwrap(), bytes);
        assert_eq!(unhex(&hex::encode_upper(&bytes)).unwrap(), bytes);
        assert_eq!(unhex(""), Some(vec![]));
        for bad in ["a", "abc", "zz", "0g", " 0", "é0"] {
            assert_eq!(unhex(bad), None, "{bad}");
        }
    }

    #[test]
    fn body_hash_is_blake3_hex() {
        // The BLAKE3 reference value for the empty input.
        assert_eq!(
            body_hash(b""),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert_eq!(body_hash(b"{}").len(), 64);
        assert_ne!(body_hash(b"{\"a\":1}"), body_hash(b"{\"a\":2}"));
    }

    #[test]
    fn secret_eq_handles_lengths() {
        assert!(secret_eq(b"abc", b"abc"));
        assert!(!secret_eq(b"abc", b"abcd"));
        assert!(!secret_eq(b"", b"a"));
    }
}
