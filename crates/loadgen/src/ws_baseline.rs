//! The bare-WebSocket baseline of `scripts/bench frontdoor`: accepts a WebSocket, echoes one frame and
//! closes, nothing else. Built on the same WebSocket library as pairgate (tokio-tungstenite) and without a
//! web framework, so it is the ceiling of what any WebSocket handshake on this machine can do; pairgate's
//! signed-handshake rate is reported as a share of its echo rate.
//!
//!   pairgate-ws-baseline 127.0.0.1:18962

use futures_util::{SinkExt, StreamExt};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18962".to_owned());
    let listener = tokio::net::TcpListener::bind(&address).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
            if let Some(Ok(message)) = ws.next().await {
                let _ = ws.send(message).await;
            }
            let _ = ws.close(None).await;
        });
    }
}
