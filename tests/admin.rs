//! The admin API's access rule, in process: loopback clients, or the admin token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use rulehook::engine::Engine;
use rulehook::rules::{Dirs, load};
use rulehook::server::{AppState, app};
use rulehook::store::Store;
use tower::ServiceExt;

fn state(dir: &std::path::Path) -> AppState {
    for d in ["rulebooks", "scripts", "templates"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let rules = load(&Dirs {
        rulebooks: dir.join("rulebooks"),
        scripts: dir.join("scripts"),
        templates: dir.join("templates"),
    })
    .unwrap();
    let store = Store::embedded(&dir.join("data")).unwrap();
    let settings = rulehook::engine::Settings {
        concurrency: 2,
        ..Default::default()
    };
    AppState {
        engine: Engine::new(store, Arc::new(rules), settings),
        admin_token: Some("admin-secret".into()),
        reloader: None,
        metrics: None,
        body_timeout: Duration::from_secs(5),
        console: Default::default(),
        guard: Default::default(),
    }
}

async fn status(app: &axum::Router, from: &str, token: Option<&str>) -> u16 {
    let mut req = Request::get("/api/events").body(Body::empty()).unwrap();
    let peer: SocketAddr = from.parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(peer));
    if let Some(t) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    app.clone().oneshot(req).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn loopback_or_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(state(dir.path()));
    assert_eq!(status(&app, "127.0.0.1:5000", None).await, 200);
    assert_eq!(status(&app, "[::1]:5000", None).await, 200);
    assert_eq!(status(&app, "10.1.2.3:5000", None).await, 401);
    assert_eq!(status(&app, "10.1.2.3:5000", Some("wrong")).await, 401);
    assert_eq!(
        status(&app, "10.1.2.3:5000", Some("admin-secret")).await,
        200
    );
    assert_eq!(status(&app, "[::ffff:127.0.0.1]:5000", None).await, 200);
}
