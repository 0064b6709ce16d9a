//! The live web dashboard: `GET /` (the page) and `GET /dashboard/{file}`
//! (its scripts and styles), embedded in the binary from
//! `gateway/assets/dashboard/`.
//!
//! The files hold no data, so they are open ([`is_dashboard_path`] tells
//! [`crate::access`]); the page reads everything through the token-checked
//! `/v1/` routes, same-origin, so the Host/Origin guard of [`crate::guard`]
//! holds for it as for any client. Every file goes out with its type, a
//! `Cache-Control` and a Content Security Policy that allows only this
//! origin's scripts, styles and connections (no inline script, no CDN).

use crate::error_response;
use actix_web::http::header;
use actix_web::{web, HttpResponse};
use flotilla_messages::{ErrorCode, Rejection};

/// The policy every dashboard file is served with: this origin only, no
/// inline scripts or styles, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// `Cache-Control` of the files: they change with the binary, so a browser
/// asks again rather than run an old script against a new API.
pub const CACHE_CONTROL: &str = "no-cache";

/// The path prefix of the page's assets.
pub const ASSET_PREFIX: &str = "/dashboard/";

/// An embedded file: its name under [`ASSET_PREFIX`], type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

/// Declares the embedded files of `gateway/assets/dashboard/`.
macro_rules! assets {
    ($($name:literal => $type:expr),* $(,)?) => {
        &[$(Asset {
            name: $name,
            content_type: $type,
            bytes: include_bytes!(concat!("../assets/dashboard/", $name)),
        }),*]
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the dashboard is made of.
const ASSETS: &[Asset] = assets![
    "index.html" => "text/html; charset=utf-8",
    "style.css" => "text/css; charset=utf-8",
    "app.js" => JS,
    "api.js" => JS,
    "charts.js" => JS,
    "dom.js" => JS,
    "studies.js" => JS,
    "queues.js" => JS,
    "pools.js" => JS,
    "inference.js" => JS,
    "events.js" => JS,
];

/// Whether a GET of `path` is the dashboard's (open: it holds no data).
pub fn is_dashboard_path(path: &str) -> bool {
    path == "/" || path.starts_with(ASSET_PREFIX)
}

/// `GET /`: the dashboard's page.
pub async fn index() -> HttpResponse {
    serve("index.html")
}

/// `GET /dashboard/{file}`: one of its embedded files.
pub async fn asset(file: web::Path<String>) -> HttpResponse {
    serve(&file)
}

/// The file `name` with its headers, or 404 `NOT_FOUND`.
fn serve(name: &str) -> HttpResponse {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return error_response(&Rejection::new(
            ErrorCode::NotFound,
            format!("the dashboard has no file {name:?}"),
        ));
    };
    HttpResponse::Ok()
        .content_type(asset.content_type)
        .insert_header((header::CACHE_CONTROL, CACHE_CONTROL))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(asset.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{test as actix_test, App};

    async fn get(path: &str) -> actix_web::dev::ServiceResponse {
        let app = App::new()
            .route("/", web::get().to(index))
            .route("/dashboard/{file}", web::get().to(asset));
        let app = actix_test::init_service(app).await;
        actix_test::call_service(&app, actix_test::TestRequest::get().uri(path).to_request()).await
    }

    fn header_of<'a>(res: &'a actix_web::dev::ServiceResponse, name: &str) -> &'a str {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    #[actix_rt::test]
    async fn every_file_is_served_with_its_type_cache_control_and_csp() {
        for (path, content_type) in [
            ("/", "text/html; charset=utf-8"),
            ("/dashboard/app.js", JS),
            ("/dashboard/events.js", JS),
            ("/dashboard/style.css", "text/css; charset=utf-8"),
        ] {
            let res = get(path).await;
            assert_eq!(res.status(), 200, "{path}");
            assert_eq!(header_of(&res, "content-type"), content_type, "{path}");
            assert_eq!(header_of(&res, "cache-control"), CACHE_CONTROL, "{path}");
            let csp = header_of(&res, "content-security-policy");
            assert!(csp.starts_with("default-src 'self'"), "{path}: {csp}");
            assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
            assert_eq!(header_of(&res, "x-content-type-options"), "nosniff");
        }
    }

    #[actix_rt::test]
    async fn an_unknown_file_is_404_not_found() {
        let res = get("/dashboard/secrets.txt").await;
        assert_eq!(res.status(), 404);
        let body: serde_json::Value = actix_test::read_body_json(res).await;
        assert_eq!(body["error"]["code"], "NOT_FOUND");
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let page = std::str::from_utf8(ASSETS[0].bytes).unwrap();
        assert_eq!(ASSETS[0].name, "index.html");
        assert!(!page.contains("<script>"), "inline script");
        assert!(!page.contains("style="), "inline style");
        assert!(page.contains(r#"<script type="module" src="/dashboard/app.js">"#));
    }

    #[test]
    fn the_page_and_its_assets_are_open_and_nothing_else_is() {
        assert!(is_dashboard_path("/"));
        assert!(is_dashboard_path("/dashboard/app.js"));
        assert!(!is_dashboard_path("/v1/query/solver"));
        assert!(!is_dashboard_path("/dashboardx"));
    }
}
