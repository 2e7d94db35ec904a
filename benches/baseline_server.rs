//! The load-test baseline: the least a webhook receiver can do — verify the same HMAC-SHA256 as
//! IP Fabric, parse the JSON, check one field — and store nothing. rulehook is measured against
//! it in the same run (see benches/load.sh).
//!
//! `cargo bench --bench baseline_server -- 127.0.0.1:18090 SECRET`

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let addr = args
        .first()
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:18090".into());
    let secret: &'static str = Box::leak(
        args.get(1)
            .cloned()
            .unwrap_or_else(|| "bench-secret".into())
            .into_boxed_str(),
    );
    let app = axum::Router::new().route(
        "/hooks/ipfabric",
        post(move |headers: HeaderMap, body: Bytes| async move {
            let Some(sig) = headers
                .get("x-ipf-signature")
                .and_then(|v| v.to_str().ok())
                .and_then(|s| hex::decode(s).ok())
            else {
                return StatusCode::UNAUTHORIZED;
            };
            // Keyed per request, as a receiver written without care for it does (rulehook keeps
            // its keyed states; the baseline stays what every earlier figure was measured on).
            let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()) else {
                return StatusCode::INTERNAL_SERVER_ERROR;
            };
            mac.update(&body);
            if mac.verify_slice(&sig).is_err() {
                return StatusCode::UNAUTHORIZED;
            }
            match serde_json::from_slice::<serde_json::Value>(&body) {
                Ok(v) if v["status"] == "completed" => StatusCode::ACCEPTED,
                Ok(_) => StatusCode::OK,
                Err(_) => StatusCode::BAD_REQUEST,
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
