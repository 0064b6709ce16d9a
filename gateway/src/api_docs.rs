//! The OpenAPI viewers every Flotilla HTTP server offers next to its
//! document: Swagger UI at `GET /docs` and ReDoc at `GET /redoc`, both
//! reading `GET /openapi.json`, as FastAPI serves them.
//!
//! The viewers' scripts and styles are vendored under `gateway/assets/`
//! (see its `README.md`), embedded in the binary and served by the server
//! itself under `/docs/`, so the pages work offline and load nothing from
//! a CDN. The inference worker ([`crate::inference_openapi`]) and the
//! gateway ([`crate::openapi`]) each add their own `/openapi.json` and
//! these routes with [`configure_viewers`]. They hold no data: every server
//! leaves them open ([`is_docs_route`]).

use actix_web::http::Method;
use actix_web::{web, HttpResponse};

/// Swagger UI 5.32.6's bundle (Apache-2.0), from `fastapi-offline` 1.7.7.
const SWAGGER_UI_JS: &[u8] = include_bytes!("../assets/swagger-ui-bundle.js");
/// Swagger UI 5.32.6's stylesheet (Apache-2.0).
const SWAGGER_UI_CSS: &[u8] = include_bytes!("../assets/swagger-ui.css");
/// ReDoc 2.5.3's standalone bundle (MIT).
const REDOC_JS: &[u8] = include_bytes!("../assets/redoc.standalone.js");

/// Where a server serves its OpenAPI document.
pub const DOCUMENT_PATH: &str = "/openapi.json";

/// The routes [`configure_viewers`] adds, each answering `GET` only.
pub const VIEWER_ROUTES: [&str; 5] = [
    "/docs",
    "/redoc",
    "/docs/swagger-ui-bundle.js",
    "/docs/swagger-ui.css",
    "/docs/redoc.standalone.js",
];

/// Makes a route answering `GET` and 405 with `Allow` to other methods, in
/// the server's own error shape.
pub type Endpoint = fn(&str, &'static str, actix_web::Route) -> actix_web::Resource;

/// Whether a request for `path` is one for the document or its viewers,
/// open like the probes (an unknown `/docs/...` path with another method
/// than `GET` is not, so it answers as any unknown route does).
pub fn is_docs_route(method: &Method, path: &str) -> bool {
    matches!(path, DOCUMENT_PATH | "/docs" | "/redoc")
        || (path.starts_with("/docs/") && *method == Method::GET)
}

/// Adds `/docs`, `/redoc` and the viewers' assets, each through `endpoint`;
/// the pages are titled `title` (the document's `info.title`).
pub fn configure_viewers(cfg: &mut web::ServiceConfig, title: &'static str, endpoint: Endpoint) {
    cfg.service(endpoint(
        "/docs",
        "GET",
        web::get().to(move || swagger_page(title)),
    ))
    .service(endpoint(
        "/redoc",
        "GET",
        web::get().to(move || redoc_page(title)),
    ))
    .service(endpoint(
        "/docs/swagger-ui-bundle.js",
        "GET",
        web::get().to(|| asset("text/javascript; charset=utf-8", SWAGGER_UI_JS)),
    ))
    .service(endpoint(
        "/docs/swagger-ui.css",
        "GET",
        web::get().to(|| asset("text/css; charset=utf-8", SWAGGER_UI_CSS)),
    ))
    .service(endpoint(
        "/docs/redoc.standalone.js",
        "GET",
        web::get().to(|| asset("text/javascript; charset=utf-8", REDOC_JS)),
    ));
}

async fn asset(content_type: &'static str, bytes: &'static [u8]) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("Cache-Control", "public, max-age=86400"))
        .body(bytes)
}

fn html(page: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(page)
}

async fn swagger_page(title: &'static str) -> HttpResponse {
    html(format!(
        r#"<!DOCTYPE html>
<html>
<head>
<title>{title} - Swagger UI</title>
<link type="text/css" rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script>
const ui = SwaggerUIBundle({{url: '{DOCUMENT_PATH}', dom_id: '#swagger-ui', layout: 'BaseLayout', deepLinking: true, showExtensions: true, showCommonExtensions: true, presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset]}})
</script>
</body>
</html>
"#
    ))
}

async fn redoc_page(title: &'static str) -> HttpResponse {
    html(format!(
        r#"<!DOCTYPE html>
<html>
<head>
<title>{title} - ReDoc</title>
<meta charset="utf-8"/>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body {{ margin: 0; padding: 0; }}</style>
</head>
<body>
<noscript>ReDoc requires Javascript to function. Please enable it to browse the documentation.</noscript>
<redoc spec-url="{DOCUMENT_PATH}"></redoc>
<script src="/docs/redoc.standalone.js"></script>
</body>
</html>
"#
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_and_viewers_are_open_and_nothing_else() {
        for path in VIEWER_ROUTES.iter().chain([&DOCUMENT_PATH]) {
            assert!(is_docs_route(&Method::GET, path), "{path}");
        }
        assert!(is_docs_route(&Method::POST, "/openapi.json"));
        assert!(!is_docs_route(&Method::POST, "/docs/x"));
        assert!(!is_docs_route(&Method::GET, "/v1/events"));
        assert!(!is_docs_route(&Method::GET, "/docsx"));
    }
}
