//! The REST admin API over a real server: every endpoint, auth failures, pagination, the approval race,
//! expired requests, and the OpenAPI description.

mod common;

use common::*;
use pairgate::domain::RequestStatus;
use pairgate::server::Config;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn with_proxy() -> Config {
    Config { trusted_proxies: vec!["127.0.0.1".parse().unwrap()], ..Config::default() }
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(server: &Server) -> Api {
        Api { base: format!("http://{}/api/v1", server.addr), http: reqwest::Client::new() }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, Some(TOKEN), None).await
    }

    async fn post(&self, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, Some(TOKEN), body).await
    }
}

async fn remote_ask(server: &Server, seed: u8, scopes: &[&str]) -> String {
    let device = Device::new(seed);
    let (error, _) =
        connect(server, &Connect::cli().device(&device).scopes(scopes).via_proxy_for("203.0.113.40")).await.refused();
    error["details"]["requestId"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_endpoint_requires_the_bearer_token() {
    let server = Server::start().await;
    let api = Api::new(&server);
    let paths = [
        (reqwest::Method::GET, "/devices"),
        (reqwest::Method::GET, "/devices/abc"),
        (reqwest::Method::DELETE, "/devices/abc"),
        (reqwest::Method::GET, "/requests"),
        (reqwest::Method::POST, "/requests/x/approve"),
        (reqwest::Method::POST, "/requests/x/reject"),
        (reqwest::Method::POST, "/devices/abc/tokens/operator/rotate"),
        (reqwest::Method::POST, "/devices/abc/tokens/operator/revoke"),
        (reqwest::Method::GET, "/audit"),
    ];
    for (method, path) in paths {
        let (status, body) = api.send(method.clone(), path, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(body, json!({"code": "unauthorized", "message": "bearer token required", "details": {}}));
        let (status, body) = api.send(method.clone(), path, Some("wrong"), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(body["message"], "bearer token mismatch");
    }
    assert_eq!(server.store.audit_page(None, 10).await.unwrap().len(), 0, "nothing was written");
}

#[tokio::test]
async fn remote_auth_failures_are_rate_limited() {
    let server = Server::start_with(with_proxy()).await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/api/v1/devices", server.addr);
    for _ in 0..10 {
        let response =
            http.get(&url).bearer_auth("wrong").header("x-forwarded-for", "198.51.100.60").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let response = http.get(&url).bearer_auth(TOKEN).header("x-forwarded-for", "198.51.100.60").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["details"]["retryAfterMs"], 300_000);
    let response = http.get(&url).bearer_auth(TOKEN).header("x-forwarded-for", "198.51.100.61").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn requests_are_listed_approved_and_rejected() {
    let server = Server::start_with(with_proxy()).await;
    let api = Api::new(&server);
    let first = remote_ask(&server, 40, &["operator.read", "operator.write"]).await;
    let second = remote_ask(&server, 41, &["operator.read"]).await;

    let (status, body) = api.get("/requests?status=pending").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = body["items"].as_array().unwrap().iter().map(|r| r["requestId"].as_str().unwrap()).collect();
    assert_eq!(ids, [second.as_str(), first.as_str()], "newest first");

    // Approve with a narrower scope list than was asked.
    let (status, body) =
        api.post(&format!("/requests/{first}/approve"), Some(json!({"scopes": ["operator.read"]}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["requestId"], first);
    assert_eq!(body["device"]["scopes"], json!(["operator.read"]));
    let (status, body) = api.post(&format!("/requests/{first}/approve"), None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["code"], "conflict");
    assert_eq!(body["message"], format!("pairing request {first} is already approved"));

    let (status, body) =
        api.post(&format!("/requests/{second}/approve"), Some(json!({"scopes": ["operator.admin"]}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) =
        api.post(&format!("/requests/{second}/approve"), Some(json!({"scopes": ["operator.root"]}))).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("unknown scope: operator.root"))
    );
    let (status, _) = api.send(reqwest::Method::POST, &format!("/requests/{second}/approve"), Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::OK);

    let third = remote_ask(&server, 42, &["operator.read"]).await;
    let (status, body) = api.post(&format!("/requests/{third}/reject"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["requestId"], third);
    let (status, _) = api.post(&format!("/requests/{third}/reject"), None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, body) = api.post("/requests/no-such-request/reject", None).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));

    let (status, body) = api.get("/requests?status=bogus").await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_request")));
    let audit = server.store.audit_page(None, 1).await.unwrap();
    assert_eq!((audit[0].action.as_str(), audit[0].actor.as_str()), ("pairing.reject", "rest:gateway"));
}

#[tokio::test]
async fn an_expired_request_cannot_be_approved() {
    let server = Server::start_with(with_proxy()).await;
    let api = Api::new(&server);
    let id = remote_ask(&server, 43, &["operator.read"]).await;
    server.clock.advance_ms(5 * 60 * 1000);
    let (status, body) = api.post(&format!("/requests/{id}/approve"), None).await;
    assert_eq!(status, StatusCode::GONE);
    assert_eq!(body["code"], "gone");
    assert!(body["message"].as_str().unwrap().contains("expired"), "{body}");
    assert_eq!(server.store.pairing_request(&id).await.unwrap().unwrap().status, RequestStatus::Expired);
}

#[tokio::test]
async fn concurrent_approvals_have_exactly_one_winner() {
    let server = Server::start_with(with_proxy()).await;
    let id = remote_ask(&server, 44, &["operator.read"]).await;
    let api = std::sync::Arc::new(Api::new(&server));
    let attempts: Vec<_> = (0..16)
        .map(|_| {
            let (api, id) = (api.clone(), id.clone());
            tokio::spawn(async move { api.post(&format!("/requests/{id}/approve"), None).await.0 })
        })
        .collect();
    let mut statuses = Vec::new();
    for attempt in attempts {
        statuses.push(attempt.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CONFLICT).count(), 15, "{statuses:?}");
    let approvals =
        server.store.audit_page(None, 100).await.unwrap().iter().filter(|r| r.action == "pairing.approve").count();
    assert_eq!(approvals, 1);
}

#[tokio::test]
async fn devices_are_listed_with_pagination_and_managed() {
    let server = Server::start().await;
    let api = Api::new(&server);
    let mut ids = Vec::new();
    for seed in 50..55 {
        let device = Device::new(seed);
        connect(&server, &Connect::cli().device(&device)).await.hello();
        ids.push(device.id().to_string());
    }
    ids.sort();
    let (status, page) = api.get("/devices?limit=2").await;
    assert_eq!(status, StatusCode::OK);
    let mut seen: Vec<String> =
        page["items"].as_array().unwrap().iter().map(|d| d["deviceId"].as_str().unwrap().to_owned()).collect();
    let mut cursor = page["nextCursor"].as_str().map(str::to_owned);
    while let Some(next) = cursor {
        let (_, page) = api.get(&format!("/devices?limit=2&cursor={next}")).await;
        seen.extend(page["items"].as_array().unwrap().iter().map(|d| d["deviceId"].as_str().unwrap().to_owned()));
        cursor = page["nextCursor"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, ids);
    assert!(!page.to_string().contains("deviceToken"));

    let (status, body) = api.get(&format!("/devices/{}", ids[0])).await;
    assert_eq!((status, body["deviceId"].as_str()), (StatusCode::OK, Some(ids[0].as_str())));
    let (status, _) = api.get(&format!("/devices/{}", "0".repeat(64))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = api.post(&format!("/devices/{}/tokens/operator/rotate", ids[0]), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tokenDelivery"], "withheld-cross-device");
    let (status, body) = api.post(&format!("/devices/{}/tokens/operator/revoke", ids[1]), None).await;
    assert_eq!((status, body["role"].as_str()), (StatusCode::OK, Some("operator")));
    let (status, _) = api.post(&format!("/devices/{}/tokens/operator/revoke", ids[1]), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no live token left to revoke");
    let (status, body) = api.post(&format!("/devices/{}/tokens/root/revoke", ids[1]), None).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_request")));

    let (status, _) = api.send(reqwest::Method::DELETE, &format!("/devices/{}", ids[2]), Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api.send(reqwest::Method::DELETE, &format!("/devices/{}", ids[2]), Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, removed) = api.get("/devices?status=removed").await;
    assert_eq!(removed["items"][0]["deviceId"], ids[2].as_str());
    let (_, paired) = api.get("/devices").await;
    assert_eq!(paired["items"].as_array().unwrap().len(), 4);
    let (status, _) = api.get("/devices?limit=0").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let (_, audit) = api.get("/audit?limit=3").await;
    let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["device.remove", "token.revoke", "token.rotate"]);
    let (_, older) = api.get(&format!("/audit?limit=3&cursor={}", audit["nextCursor"].as_str().unwrap())).await;
    assert_eq!(older["items"][0]["action"], "device.approve.silent");
}

/// The OpenAPI document and the router come from one list of handlers (`admin::documented`). Every
/// operation the document lists is answered by a handler, never by the router's bare 404 or 405; and every
/// endpoint the router serves is in the document (the probe below, and `tests/architecture.rs`, which allows
/// no route in `src/admin` outside that list).
#[tokio::test]
async fn every_operation_in_the_openapi_document_is_routed() {
    let server = Server::start().await;
    let base = format!("http://{}", server.addr);
    let response = reqwest::get(format!("{base}/api/v1/openapi.json")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let doc: Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for schema in ["DeviceView", "RequestView", "Approved", "Rejected", "TokenRotated", "TokenRevoked", "RunsKilled"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "schema {schema} missing");
    }

    let client = reqwest::Client::new();
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let url = path.replace("{id}", "no-such-id").replace("{role}", "operator").replace("{key}", "agent:x:main");
            let request =
                client.request(method.to_uppercase().parse().unwrap(), format!("{base}{url}")).bearer_auth(TOKEN);
            let response = request.send().await.unwrap();
            let status = response.status();
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path} is not routed");
            operations.push(format!("{} {path}", method.to_uppercase()));
            if path == "/api/v1/events" {
                // A stream that stays open: its headers say it is routed.
                assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
                continue;
            }
            let body = response.text().await.unwrap();
            if path == "/j/{code}" {
                // Join URLs answer as OpenClaw's do (its client reads them), not in the API's error shape.
                assert_eq!(body, r#"{"error":"not_found"}"#, "{method} {path}");
                continue;
            }
            if status == StatusCode::NOT_FOUND {
                let error: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(error["code"], "not_found", "{method} {path}: {body}");
                assert_ne!(error["message"], "not found", "{method} {path}: the router's 404, not a handler's");
            }
        }
    }
    operations.sort();
    assert_eq!(
        operations,
        [
            "DELETE /api/v1/devices/{id}",
            "GET /admin",
            "GET /admin/admin.css",
            "GET /admin/admin.js",
            "GET /api/v1/audit",
            "GET /api/v1/devices",
            "GET /api/v1/devices/{id}",
            "GET /api/v1/events",
            "GET /api/v1/openapi.json",
            "GET /api/v1/requests",
            "GET /api/v1/sessions",
            "GET /api/v1/sessions/{key}",
            "GET /api/v1/setup-codes",
            "GET /healthz",
            "GET /j/{code}",
            "GET /metrics",
            "GET /readyz",
            "POST /api/v1/devices/{id}/tokens/{role}/revoke",
            "POST /api/v1/devices/{id}/tokens/{role}/rotate",
            "POST /api/v1/requests/{id}/approve",
            "POST /api/v1/requests/{id}/reject",
            "POST /api/v1/runs/{id}/kill",
            "POST /api/v1/setup-codes",
            "POST /api/v1/setup-codes/{id}/revoke",
            "PUT /api/v1/devices/{id}/label",
        ]
    );

    // The probe tells the router's 404 apart: a path nobody routes answers "not found", a handler names
    // what it did not find.
    let unrouted = client.get(format!("{base}/api/v1/nothing-here")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(unrouted.status(), StatusCode::NOT_FOUND);
    assert_eq!(unrouted.json::<Value>().await.unwrap()["message"], "not found");
}

/// Every HTTP error has the one shape, also those the framework makes; the bearer scheme is
/// case-insensitive (RFC 9110).
#[tokio::test]
async fn framework_errors_have_the_one_shape_and_the_bearer_scheme_is_case_insensitive() {
    let server = Server::start().await;
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    let cases = [
        (client.get(format!("{base}/api/v1/devices?limit=abc")), StatusCode::BAD_REQUEST),
        (client.put(format!("{base}/api/v1/devices")), StatusCode::METHOD_NOT_ALLOWED),
        (
            client.post(format!("{base}/api/v1/requests/x/approve")).body(vec![b' '; 2 << 20]),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (client.get(format!("{base}/no/such/path")), StatusCode::NOT_FOUND),
        // The WebSocket route, asked without an upgrade.
        (client.get(format!("{base}/")), StatusCode::BAD_REQUEST),
        (client.post(format!("{base}/")), StatusCode::METHOD_NOT_ALLOWED),
    ];
    for (request, expected) in cases {
        let response = request.bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(response.status(), expected);
        let body: Value = response.json().await.unwrap();
        assert!(body["code"].is_string() && body["message"].is_string() && body["details"].is_object(), "{body}");
    }
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let response = client
            .get(format!("{base}/api/v1/devices"))
            .header("authorization", format!("{scheme} {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "scheme {scheme}");
    }
}
/// Failed attempts from IPv6 clients count per /64: one host holds a whole prefix.
#[tokio::test]
async fn ipv6_auth_failures_are_counted_per_64() {
    let server = Server::start_with(with_proxy()).await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/api/v1/devices", server.addr);
    for host in 1..=10 {
        let client = format!("2001:db8:1:2::{host:x}");
        let response = http.get(&url).bearer_auth("guess").header("x-forwarded-for", client).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let send = |client: &'static str| http.get(&url).bearer_auth(TOKEN).header("x-forwarded-for", client).send();
    assert_eq!(send("2001:db8:1:2:ffff:ffff:ffff:ffff").await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(send("2001:db8:1:3::1").await.unwrap().status(), StatusCode::OK, "another /64 is not affected");
}

/// A browser on loopback (`Origin`, or `Sec-Fetch-*` without it) is not exempt from the lockout, and gets
/// nothing from the REST API: it has no device identity.
#[tokio::test]
async fn browsers_on_loopback_are_locked_out_and_get_no_access() {
    let server = Server::start().await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/api/v1/devices", server.addr);
    for _ in 0..10 {
        let response =
            http.get(&url).bearer_auth("guess").header("origin", "http://evil.example").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let response = http.get(&url).bearer_auth(TOKEN).header("origin", "http://evil.example").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    for (name, value) in
        [("origin", "http://127.0.0.1:18789"), ("sec-fetch-site", "same-origin"), ("sec-fetch-mode", "cors")]
    {
        let response = http.get(&url).bearer_auth(TOKEN).header(name, value).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{name}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body,
            json!({"code": "forbidden", "message": "browser requests get no access without a device identity", "details": {}})
        );
    }
    let response = http.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "a local process that is not a browser is still exempt");
}

/// The admin page and its assets are served from the binary, with a strict Content-Security-Policy and
/// the other security headers; the REST API's answers carry them too.
#[tokio::test]
async fn the_admin_page_is_served_with_strict_security_headers() {
    let server = Server::start().await;
    let http = reqwest::Client::new();
    for (path, content_type, marker) in [
        ("/admin", "text/html", "<title>pairgate admin</title>"),
        ("/admin/admin.js", "text/javascript", "sessionStorage"),
        ("/admin/admin.css", "text/css", ":root"),
    ] {
        let response = http.get(format!("http://{}{path}", server.addr)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers().clone();
        assert!(headers["content-type"].to_str().unwrap().starts_with(content_type), "{path}: {headers:?}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        for directive in ["default-src 'none'", "script-src 'self'", "frame-ancestors 'none'", "connect-src 'self'"] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert!(headers.get("set-cookie").is_none());
        assert!(response.text().await.unwrap().contains(marker), "{path}");
    }
    let response = http.get(format!("http://{}/api/v1/devices", server.addr)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert!(response.headers()["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
}

/// The headers a same-origin `fetch()` of the admin page sends.
fn admin_page_headers(server: &Server, operator: &str) -> Vec<(&'static str, String)> {
    vec![
        ("sec-fetch-site", "same-origin".into()),
        ("sec-fetch-mode", "cors".into()),
        ("origin", format!("http://{}", server.addr)),
        ("x-pairgate-operator", operator.into()),
    ]
}

/// A browser gets the REST API only from pairgate's own origin, with an operator named; whoever that is
/// is recorded as the actor of each decision. A page of another site, or one that names nobody, gets 403.
#[tokio::test]
async fn the_admin_page_gets_the_api_from_its_own_origin_and_names_its_operator() {
    let server = Server::start_with(with_proxy()).await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/api/v1/requests", server.addr);
    let send = |headers: Vec<(&'static str, String)>| {
        let mut request = http.get(&url).bearer_auth(TOKEN);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send()
    };
    assert_eq!(send(admin_page_headers(&server, "Ada")).await.unwrap().status(), StatusCode::OK);
    let mut refused = vec![
        admin_page_headers(&server, ""),
        admin_page_headers(&server, "Ada").into_iter().filter(|(name, _)| *name != "sec-fetch-site").collect(),
    ];
    let mut cross_site = admin_page_headers(&server, "Ada");
    cross_site[0].1 = "cross-site".into();
    cross_site[2].1 = "http://evil.example".into();
    refused.push(cross_site);
    let mut other_origin = admin_page_headers(&server, "Ada");
    other_origin[2].1 = "http://evil.example".into();
    refused.push(other_origin);
    for headers in refused {
        let response = send(headers.clone()).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{headers:?}");
    }
    let mut control = admin_page_headers(&server, "Ada%0Aroot");
    control.retain(|(name, _)| *name != "origin");
    let response = send(control).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(response.text().await.unwrap().contains("x-pairgate-operator"));

    // A decision from the page is recorded with the operator's name (percent-encoded UTF-8 on the wire).
    let request = remote_ask(&server, 70, &["operator.read"]).await;
    let mut approve = http.post(format!("http://{}/api/v1/requests/{request}/approve", server.addr)).bearer_auth(TOKEN);
    for (name, value) in admin_page_headers(&server, "Jos%C3%A9") {
        approve = approve.header(name, value);
    }
    assert_eq!(approve.send().await.unwrap().status(), StatusCode::OK);
    let audit = server.store.audit_page(None, 5).await.unwrap();
    let decision = audit.iter().find(|row| row.action == "pairing.approve").unwrap();
    assert_eq!(decision.actor, "rest:gateway/operator:José");
}

/// A wrong token from the admin page counts toward the lockout, as any browser's: ten lock it out.
#[tokio::test]
async fn wrong_tokens_from_the_admin_page_count_toward_the_lockout() {
    let server = Server::start().await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/api/v1/requests", server.addr);
    let send = |token: &'static str| {
        let mut request = http.get(&url).bearer_auth(token);
        for (name, value) in admin_page_headers(&server, "Ada") {
            request = request.header(name, value);
        }
        request.send()
    };
    for _ in 0..10 {
        assert_eq!(send("guess").await.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    let response = send(TOKEN).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = response.json().await.unwrap();
    assert!(body["details"]["retryAfterMs"].as_i64().unwrap() > 0, "{body}");
}

/// `/api/v1/audit` filters by device (the subject) and by action, exactly or by family (`pairing.`).
#[tokio::test]
async fn the_audit_trail_filters_by_device_and_action() {
    let server = Server::start_with(with_proxy()).await;
    let api = Api::new(&server);
    let first = remote_ask(&server, 71, &["operator.read"]).await;
    let (status, _) = api.post(&format!("/requests/{first}/approve"), None).await;
    assert_eq!(status, StatusCode::OK);
    let other = Device::new(72);
    let attempt = Connect::cli().device(&other).via_proxy_for("203.0.113.41");
    let (error, _) = connect(&server, &attempt).await.refused();
    let second = error["details"]["requestId"].as_str().unwrap().to_owned();
    let (status, _) = api.post(&format!("/requests/{second}/reject"), None).await;
    assert_eq!(status, StatusCode::OK);
    let actions = |body: &Value| -> Vec<String> {
        body["items"].as_array().unwrap().iter().map(|row| row["action"].as_str().unwrap().to_owned()).collect()
    };
    let (_, body) = api.get(&format!("/audit?device={}", other.id())).await;
    assert_eq!(actions(&body), ["pairing.reject", "pairing.request"]);
    let (_, body) = api.get("/audit?action=pairing.approve").await;
    assert_eq!(actions(&body), ["pairing.approve"]);
    let (_, body) = api.get("/audit?action=pairing.").await;
    assert_eq!(actions(&body), ["pairing.reject", "pairing.request", "pairing.approve", "pairing.request"]);
    let (_, body) = api.get(&format!("/audit?action=pairing.&device={}&limit=1", Device::new(71).id())).await;
    assert_eq!(actions(&body), ["pairing.approve"]);
    let cursor = body["nextCursor"].as_str().unwrap().to_owned();
    let (_, body) = api.get(&format!("/audit?action=pairing.&device={}&cursor={cursor}", Device::new(71).id())).await;
    assert_eq!(actions(&body), ["pairing.request"], "pages keep the filter");
    let (_, body) = api.get("/audit?action=pairing").await;
    assert_eq!(actions(&body), Vec::<String>::new(), "without its dot, a family name is an exact action");
    let (status, body) = api.get(&format!("/audit?device={}", "x".repeat(129))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

/// `/api/v1/events` streams pairing events to the admin page behind the bearer token.
#[tokio::test]
async fn pairing_events_stream_behind_the_bearer_token() {
    let server = Server::start_with(with_proxy()).await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/api/v1/events", server.addr);
    assert_eq!(http.get(&url).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let mut response = http.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let request = remote_ask(&server, 73, &["operator.read"]).await;
    let api = Api::new(&server);
    let (status, _) = api.post(&format!("/requests/{request}/reject"), None).await;
    assert_eq!(status, StatusCode::OK);
    let mut text = String::new();
    while !text.contains("event: device.pair.resolved") {
        let chunk = tokio::time::timeout(FRAME_WAIT, response.chunk()).await.expect("an event").unwrap().unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let requested = text.split("\n\n").find(|block| block.contains("event: device.pair.requested")).unwrap();
    let data: Value = serde_json::from_str(requested.split("data: ").nth(1).unwrap().trim()).unwrap();
    assert_eq!(data["requestId"], request, "{data}");
    // The stream ends at shutdown, so that stopping does not wait for its reader.
    tokio::time::timeout(FRAME_WAIT, server.stop()).await.expect("a prompt stop");
    let end = tokio::time::timeout(FRAME_WAIT, async { while let Ok(Some(_)) = response.chunk().await {} });
    end.await.expect("the stream ended");
}
