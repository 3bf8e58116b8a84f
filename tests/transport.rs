//! The transport under the protocol: connections that send nothing, too many connections, and sockets
//! whose client stopped reading. Nothing a client does (or fails to do) holds the server.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use pairgate::server::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection; panics if it is still open after `FRAME_WAIT`.
async fn assert_closed_by_server(stream: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(FRAME_WAIT, stream.read(&mut buf)).await.expect("closed by the server") {
            Ok(0) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

/// One `GET /healthz`; `None` when the connection was closed without an answer.
async fn healthz(addr: SocketAddr) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    tokio::time::timeout(FRAME_WAIT, stream.read_to_string(&mut response)).await.expect("an answer or a close").ok()?;
    response.split(' ').nth(1)?.parse().ok()
}

#[tokio::test]
async fn a_connection_without_a_whole_request_head_is_closed_after_the_header_timeout() {
    let config = Config { header_read_timeout: Duration::from_millis(300), ..Config::default() };
    let server = Server::start_with(config).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut trickling = TcpStream::connect(server.addr).await.unwrap();
    trickling.write_all(b"GET /healthz HTTP/1.1\r\nHost: pairgate\r\n").await.unwrap();
    let started = Instant::now();
    assert_closed_by_server(&mut silent).await;
    assert_closed_by_server(&mut trickling).await;
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(healthz(server.addr).await, Some(200), "honest requests are still served");
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once() {
    let config = Config { max_connections: 2, header_read_timeout: Duration::from_secs(60), ..Config::default() };
    let server = Server::start_with(config).await;
    // An upgraded WebSocket counts, and so does a connection that has sent nothing yet.
    let (_, ws) = connect(&server, &Connect::cli()).await.hello();
    let silent = TcpStream::connect(server.addr).await.unwrap();
    let mut over = TcpStream::connect(server.addr).await.unwrap();
    assert_closed_by_server(&mut over).await;
    assert_eq!(healthz(server.addr).await, None, "the cap is still reached");

    // Once one leaves, a new connection is served.
    drop(silent);
    let deadline = Instant::now() + FRAME_WAIT;
    while healthz(server.addr).await != Some(200) {
        assert!(Instant::now() < deadline, "a connection left, but none is served");
    }
    // The WebSocket's place is given back when it closes.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    drop(ws);
    let deadline = Instant::now() + FRAME_WAIT;
    while healthz(server.addr).await != Some(200) {
        assert!(Instant::now() < deadline, "the WebSocket closed, but no connection is served");
    }
    silent.shutdown().await.unwrap();
}

/// A device whose client stopped reading (the server is blocked writing to it) is still closed within a
/// second of its removal over REST, before the removal is answered.
#[tokio::test]
async fn a_stalled_reader_is_closed_within_a_second_of_its_removal() {
    let server = Server::start().await;
    let device = Device::new(40);
    let (hello, _) = connect(&server, &Connect::cli().device(&device)).await.hello();
    let token = hello["auth"]["deviceToken"].as_str().unwrap().to_owned();
    let (ws, nonce) = open_small_window(&server.url()).await;
    let attempt = Connect::cli().device(&device).token(None).device_token(&token);
    let (_, mut stalled) = connect_on(ws, &nonce, &attempt, server.now()).await.hello();
    stall_on_a_huge_reply(&mut stalled).await;

    let started = Instant::now();
    let response = reqwest::Client::new()
        .delete(format!("http://{}/api/v1/devices/{}", server.addr, device.id()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(1), "answered after {:?}", started.elapsed());
    assert!(!server.app.live.is_connected(&device.id()), "the stalled socket is closed before the reply");
    drop(stalled);
}
