//! `/metrics`: after a scripted mix of connects and decisions, the Prometheus text parses and its
//! counters equal what the script did.

mod common;

use common::*;
use pairgate::server::Config;

#[tokio::test]
async fn counters_match_a_scripted_mix_of_connects() {
    let config = Config { trusted_proxies: vec!["127.0.0.1".parse().unwrap()], ..Config::default() };
    let server = Server::start_with(config).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(connect(&server, &Connect::cli()).await.hello().1);
    }
    for _ in 0..2 {
        connect(&server, &Connect::cli().token(Some("wrong"))).await.refused();
    }
    let device = Device::new(80);
    open.push(connect(&server, &Connect::cli().device(&device)).await.hello().1);
    let (error, _) =
        connect(&server, &Connect::cli().device(&Device::new(81)).via_proxy_for("203.0.113.80")).await.refused();
    connect(&server, &Connect::cli().device(&Device::new(82)).via_proxy_for("203.0.113.82")).await.refused();
    let request_id = error["details"]["requestId"].as_str().unwrap();

    let http = reqwest::Client::new();
    let base = format!("http://{}", server.addr);
    let approved =
        http.post(format!("{base}/api/v1/requests/{request_id}/approve")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(approved.status(), 200);

    let unauthorized = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(unauthorized.status(), 401, "metrics are behind the token by default");
    let response = http.get(format!("{base}/metrics")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let samples = metric_samples(&text);
    let get = |series: &str| samples.get(series).copied().unwrap_or_else(|| panic!("{series} missing in:\n{text}"));

    assert_eq!(get(r#"pairgate_connects_total{outcome="ok",code="none"}"#), 4.0);
    assert_eq!(get(r#"pairgate_connects_total{outcome="refused",code="AUTH_TOKEN_MISMATCH"}"#), 2.0);
    assert_eq!(get(r#"pairgate_connects_total{outcome="refused",code="PAIRING_REQUIRED"}"#), 2.0);
    assert_eq!(get("pairgate_handshake_seconds_count"), 8.0);
    assert_eq!(get(r#"pairgate_live_sockets{role="operator"}"#), 4.0);
    assert_eq!(get("pairgate_pending_requests"), 1.0, "one request approved, one still pending");
    assert_eq!(get(r#"pairgate_decisions_total{action="silent_approve"}"#), 1.0);
    assert_eq!(get(r#"pairgate_decisions_total{action="approve"}"#), 1.0);
    // Silent approval, two requests, one approval: four write transactions.
    assert_eq!(get("pairgate_store_transaction_seconds_count"), 4.0);
    for secret in [TOKEN, device.id().as_str(), "203.0.113"] {
        assert!(!text.contains(secret), "no secret, device id or address in metrics");
    }
    drop(open);

    let open_config = Config { metrics_open: true, ..Config::default() };
    let scraped = Server::start_with(open_config).await;
    let response = reqwest::get(format!("http://{}/metrics", scraped.addr)).await.unwrap();
    assert_eq!(response.status(), 200, "metrics_open serves without a token");
}
