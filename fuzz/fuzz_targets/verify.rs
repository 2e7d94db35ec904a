//! Request verification, every kind: arbitrary headers and body, sometimes correctly signed (so
//! the JSON parsing after a good signature is reached too). Must never panic.
//!
//! Input: byte 0 picks the kind, byte 1 bit 0 asks for a correct signature; then header lines
//! `name: value` up to an empty line; the rest is the body.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use rulehook::secrets::Secret;
use rulehook::verify::{
    Algorithm, Encoding, Verifier, basic, bearer, generic_hmac, github, gitlab, ipfabric, netbox,
    sign_like, standard,
};

const SECRET: &str = "fuzz-secret";
const WHSEC: &str = "whsec_ZnV6ei1zZWNyZXQta2V5LTMyLWJ5dGVzLWxvbmchIQ==";

fn s(v: &str) -> Secret {
    Secret::new(v.to_string())
}

fn verifiers() -> Vec<(&'static str, &'static str, Verifier)> {
    vec![
        ("ipfabric", SECRET, Verifier::IpFabric(ipfabric::IpFabric { secrets: vec![s(SECRET)] })),
        ("netbox", SECRET, Verifier::NetBox(netbox::NetBox { secrets: vec![s(SECRET)] })),
        ("github", SECRET, Verifier::GitHub(github::GitHub { secrets: vec![s(SECRET)] })),
        ("gitlab", SECRET, Verifier::GitLab(gitlab::GitLab { secrets: vec![s(SECRET)] })),
        (
            "standard-webhooks",
            WHSEC,
            Verifier::StandardWebhooks(standard::StandardWebhooks {
                keys: vec![s(WHSEC)],
                tolerance: Duration::from_secs(300),
                infrahub: false,
            }),
        ),
        (
            "infrahub",
            SECRET,
            Verifier::StandardWebhooks(standard::StandardWebhooks {
                keys: vec![s(SECRET)],
                tolerance: Duration::from_secs(300),
                infrahub: true,
            }),
        ),
        (
            "basic",
            "user:fuzz-secret",
            Verifier::Basic(basic::Basic {
                username: s("user"),
                passwords: vec![s(SECRET)],
            }),
        ),
        ("bearer", SECRET, Verifier::Bearer(bearer::Bearer { secrets: vec![s(SECRET)] })),
        (
            "hmac",
            SECRET,
            Verifier::Hmac(generic_hmac::GenericHmac {
                header: "x-signature".into(),
                algorithm: Algorithm::Sha256,
                encoding: Encoding::Hex,
                prefix: String::new(),
                id_header: Some("x-request-id".into()),
                secrets: vec![s(SECRET)],
            }),
        ),
        (
            "hmac-b64",
            SECRET,
            Verifier::Hmac(generic_hmac::GenericHmac {
                header: "x-sig".into(),
                algorithm: Algorithm::Sha1,
                encoding: Encoding::Base64,
                prefix: "sha1=".into(),
                id_header: None,
                secrets: vec![s(SECRET)],
            }),
        ),
        ("none", "", Verifier::None),
        ("internal", "", Verifier::Internal),
    ]
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let all = verifiers();
    let (kind, secret, verifier) = &all[data[0] as usize % all.len()];
    let sign = data[1] & 1 == 1;
    let rest = &data[2..];
    let (head, body) = match rest.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&rest[..i], &rest[i + 2..]),
        None => (&rest[..0], rest),
    };
    let mut headers = http::HeaderMap::new();
    for line in head.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(&line[..colon]),
            http::HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let now = SystemTime::now();
    if sign {
        let signer = match *kind {
            "hmac" | "hmac-b64" => "none",
            k => k,
        };
        if let Some(signed) = sign_like(signer, secret, body, now) {
            for (k, v) in signed {
                if let (Ok(n), Ok(v)) = (
                    http::HeaderName::from_bytes(k.as_bytes()),
                    http::HeaderValue::from_str(&v),
                ) {
                    headers.insert(n, v);
                }
            }
        }
    }
    let body = bytes::Bytes::copy_from_slice(body);
    let request = rulehook::verify::Request {
        source: "fuzz",
        headers: &headers,
        body: &body,
        format: rulehook::body::BodyFormat::Auto,
        dedup_window: None,
        now,
    };
    if let Ok(event) = verifier.verify(request, None) {
        let _ = event.accept();
    }
});
