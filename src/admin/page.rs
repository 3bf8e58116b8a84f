//! The admin page (`/admin`): static HTML, CSS and JS built into the binary, nothing loaded from another
//! origin. It signs in with the gateway token, kept in the tab's `sessionStorage` and sent only as the
//! bearer of the REST API (never a cookie, never a URL), so there is nothing for another site to forge.
//! Everything it shows comes from `/api/v1`; pending requests arrive over `/api/v1/events`.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const INDEX_HTML: &str = include_str!("page/index.html");
const ADMIN_JS: &str = include_str!("page/admin.js");
const ADMIN_CSS: &str = include_str!("page/admin.css");

/// What every response of the HTTP API carries (the page's and the REST API's alike): scripts and styles
/// from pairgate itself only, no inline script, no framing, nothing sniffed, no referrer sent anywhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Adds the security headers to every HTTP response of pairgate's own routes.
pub async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    // `no-cache`: a new binary's page is picked up at once; the assets are small.
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// The admin page.
#[utoipa::path(get, path = "/admin", responses((status = 200, body = String, content_type = "text/html")))]
pub(super) async fn admin_page() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// The admin page's script.
#[utoipa::path(get, path = "/admin/admin.js", responses((status = 200, body = String, content_type = "text/javascript")))]
pub(super) async fn admin_js() -> Response {
    asset("text/javascript; charset=utf-8", ADMIN_JS)
}

/// The admin page's style sheet.
#[utoipa::path(get, path = "/admin/admin.css", responses((status = 200, body = String, content_type = "text/css")))]
pub(super) async fn admin_css() -> Response {
    asset("text/css; charset=utf-8", ADMIN_CSS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No markup from data, no inline script or handler, nothing from another origin: what the CSP
    /// promises, the files keep (a change that breaks it shows here, not as a blank page).
    #[test]
    fn the_page_keeps_its_content_security_policy() {
        assert!(!ADMIN_JS.contains("innerHTML") && !ADMIN_JS.contains("outerHTML"), "text only, never markup");
        assert!(!ADMIN_JS.contains("insertAdjacentHTML") && !ADMIN_JS.contains("document.write"));
        assert!(!ADMIN_JS.contains("eval(") && !ADMIN_JS.contains("new Function"));
        assert!(!ADMIN_JS.contains("localStorage") && !ADMIN_JS.contains("document.cookie"));
        for file in [INDEX_HTML, ADMIN_CSS] {
            assert!(!file.contains("http://") && !file.contains("https://") && !file.contains("//cdn"));
        }
        assert!(
            !INDEX_HTML.contains(" onclick=") && !INDEX_HTML.contains(" onload=") && !INDEX_HTML.contains(" style=")
        );
        let scripts: Vec<&str> = INDEX_HTML.match_indices("<script").map(|(at, _)| &INDEX_HTML[at..]).collect();
        assert_eq!(scripts.len(), 1);
        assert!(scripts[0].starts_with(r#"<script src="/admin/admin.js" defer></script>"#), "no inline script");
    }
}
