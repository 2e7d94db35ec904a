//! The console's templates and assets, compiled into the binary, and the headers every console
//! answer carries (a strict Content-Security-Policy: only the console's own script and style).

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use minijinja::Environment;
use serde::Serialize;

/// Only this origin's script, style and images; nothing inline, no frames, forms post here.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = include_str!("static/console.css");
const JS: &str = include_str!("static/console.js");

/// The templates: names ending in `.html` are HTML-escaped on output (minijinja's default).
static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    let files: [(&str, &str); 12] = [
        ("base.html", include_str!("templates/base.html")),
        ("events.html", include_str!("templates/events.html")),
        ("event.html", include_str!("templates/event.html")),
        (
            "dead_letters.html",
            include_str!("templates/dead_letters.html"),
        ),
        ("rules.html", include_str!("templates/rules.html")),
        ("try.html", include_str!("templates/try.html")),
        ("overview.html", include_str!("templates/overview.html")),
        ("login.html", include_str!("templates/login.html")),
        ("message.html", include_str!("templates/message.html")),
        ("approvals.html", include_str!("templates/approvals.html")),
        ("windows.html", include_str!("templates/windows.html")),
        ("audit.html", include_str!("templates/audit.html")),
    ];
    for (name, text) in files {
        if let Err(e) = env.add_template(name, text) {
            // Templates are part of the binary: the unit test below renders every one.
            tracing::error!("console template {name}: {e}");
        }
    }
    env
});

/// Adds the console's security headers to an answer.
pub fn secured(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: with it, browsers send `Origin: null` on the console's own forms.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// Renders template `name` with `ctx` as a page with `status`.
pub fn page_with(status: StatusCode, name: &str, ctx: impl Serialize) -> Response {
    let text = TEMPLATES
        .get_template(name)
        .and_then(|t| t.render(minijinja::value::Serde(ctx)));
    match text {
        Ok(html) => secured((status, Html(html)).into_response()),
        Err(e) => {
            tracing::error!("console page {name}: {e:#}");
            secured(
                crate::app::ApiError::Internal(
                    "this page could not be rendered; the log says why".into(),
                )
                .into_response(),
            )
        }
    }
}

pub fn page(name: &str, ctx: impl Serialize) -> Response {
    page_with(StatusCode::OK, name, ctx)
}

/// `GET /console/static/{name}`: the stylesheet and the script.
pub async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "console.css" => (CSS, "text/css; charset=utf-8"),
        "console.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return secured(crate::app::ApiError::NoSuchAsset.into_response()),
    };
    secured(
        (
            [
                (header::CONTENT_TYPE, kind),
                (header::CACHE_CONTROL, "max-age=300"),
            ],
            body,
        )
            .into_response(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        for name in [
            "base.html",
            "events.html",
            "event.html",
            "dead_letters.html",
            "rules.html",
            "try.html",
            "overview.html",
            "login.html",
            "message.html",
            "approvals.html",
            "windows.html",
            "audit.html",
        ] {
            assert!(TEMPLATES.get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn values_are_escaped() {
        let page = TEMPLATES
            .get_template("message.html")
            .unwrap()
            .render(minijinja::context! {
                title => "t", message => "\"><img src=x onerror=alert(1)>",
                frame => minijinja::context! { nav => "", form_token => "", session => false },
            })
            .unwrap();
        assert!(!page.contains("<img src=x"), "{page}");
        assert!(page.contains("&lt;img src=x"), "{page}");
    }
}
