//! `kind: hmac`: any sender that signs the body with HMAC in a header it names (`header`,
//! `algorithm`, `encoding`, `prefix`, optional `id_header` for its delivery id).

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::mac::{self, Algorithm};
use super::{Checked, VerifyError, any_secret, check};
use crate::rulebook::compile::Compile;
use crate::rulebook::model::SourceSpec;
use crate::secrets::Secret;

/// How a generic `hmac` source encodes its signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Hex,
    Base64,
}

impl Encoding {
    pub fn parse(name: &str) -> Option<Encoding> {
        match name {
            "hex" => Some(Encoding::Hex),
            "base64" => Some(Encoding::Base64),
            _ => None,
        }
    }

    fn encode(self, mac: &[u8]) -> String {
        match self {
            Encoding::Hex => hex::encode(mac),
            Encoding::Base64 => B64.encode(mac),
        }
    }
}

/// A generic HMAC source's settings and secrets.
#[derive(Debug, Clone)]
pub struct GenericHmac {
    /// Lower-case header name.
    pub header: String,
    pub algorithm: Algorithm,
    pub encoding: Encoding,
    pub prefix: String,
    pub id_header: Option<String>,
    pub secrets: Vec<Secret>,
}

impl GenericHmac {
    /// Without `id_header` nothing tells repeats apart: no de-duplication unless configured.
    pub const BODY_HASH_WINDOW: Option<std::time::Duration> = None;

    pub fn compile(
        cx: &mut Compile,
        spec: &SourceSpec,
        secrets: Vec<Secret>,
    ) -> Option<GenericHmac> {
        let Some(header) = &spec.header else {
            cx.err(
                &spec.kind.referenced,
                format!("source `{}` of kind `hmac` needs `header`", spec.name.value),
            );
            return None;
        };
        let algorithm = match &spec.algorithm {
            None => Algorithm::Sha256,
            Some(a) => match Algorithm::parse(&a.value) {
                Some(x) => x,
                None => {
                    cx.err(&a.referenced, "algorithm must be sha1, sha256 or sha512");
                    return None;
                }
            },
        };
        let encoding = match &spec.encoding {
            None => Encoding::Hex,
            Some(e) => match Encoding::parse(&e.value) {
                Some(x) => x,
                None => {
                    cx.err(&e.referenced, "encoding must be hex or base64");
                    return None;
                }
            },
        };
        Some(GenericHmac {
            header: header.value.to_ascii_lowercase(),
            algorithm,
            encoding,
            prefix: spec
                .prefix
                .as_ref()
                .map(|p| p.value.clone())
                .unwrap_or_default(),
            id_header: spec
                .id_header
                .as_ref()
                .map(|h| h.value.to_ascii_lowercase()),
            secrets,
        })
    }

    pub(crate) fn check(&self, headers: &HeaderMap, body: &[u8]) -> Result<Checked, VerifyError> {
        let value = headers
            .get(self.header.as_str())
            .ok_or(VerifyError::MissingHeader("signature"))?
            .to_str()
            .map_err(|_| VerifyError::Malformed("signature"))?;
        let value = value
            .strip_prefix(self.prefix.as_str())
            .ok_or(VerifyError::Malformed("signature"))?;
        let sig = match self.encoding {
            Encoding::Hex => mac::unhex(value.trim()),
            Encoding::Base64 => B64.decode(value.trim()).ok(),
        }
        .ok_or(VerifyError::Malformed("signature"))?;
        check(any_secret(&self.secrets, |k| {
            mac::verify(self.algorithm, k, &[body], &sig)
        }))?;
        let sender_id = match &self.id_header {
            Some(h) => Some(
                headers
                    .get(h.as_str())
                    .and_then(|v| v.to_str().ok())
                    .ok_or(VerifyError::MissingHeader("id header"))?
                    .to_string(),
            ),
            None => None,
        };
        Ok(Checked {
            sender_id,
            parsed: None,
        })
    }

    /// The signature header as this source expects it (`header`: as configured).
    pub fn sign(&self, secret: &str, body: &[u8]) -> Vec<(String, String)> {
        let mac = mac::sign(self.algorithm, secret.as_bytes(), &[body]);
        vec![(
            self.header.clone(),
            format!("{}{}", self.prefix, self.encoding.encode(&mac)),
        )]
    }
}
