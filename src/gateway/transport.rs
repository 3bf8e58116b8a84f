//! The WebSocket under the protocol: the upgrade (done here, so that the socket's byte stream is ours),
//! and the message-size limits, enforced on each frame's header before its payload is read
//! (docs/protocol.md §1).
//!
//! tungstenite can only be given one message limit for a socket's whole life, and it checks a message
//! against it; pairgate needs a small limit until `connect` succeeds and the configured one after. So
//! the bytes pass through [`LimitedFrames`] first, which follows the frame headers of the client's byte
//! stream and refuses a message as soon as a header announces more than its limit: the payload is never
//! read, let alone buffered or parsed.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;

/// A gateway socket: the upgraded connection, its frames checked against their limits.
pub type Socket = WebSocketStream<LimitedFrames<TokioIo<Upgraded>>>;

/// A message refused from its frame header. The read that found it fails with an `InvalidData` I/O
/// error that carries this value (see [`MessageTooBig::of`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MessageTooBig {
    #[error("message too big: the limit before connect is {limit} bytes")]
    BeforeConnect { limit: u64 },
    #[error("message too big: the limit is {limit} bytes")]
    Connected { limit: u64 },
}

impl MessageTooBig {
    /// The refusal an I/O error carries, if it is one.
    pub fn of(error: &io::Error) -> Option<MessageTooBig> {
        error.get_ref()?.downcast_ref::<MessageTooBig>().copied()
    }
}

/// The largest message a client may send: `first` for its first message (which must be `connect`;
/// nothing else is read before hello-ok), `later` for every one after it.
#[derive(Clone, Copy, Debug)]
pub struct FrameLimits {
    pub first: u64,
    pub later: u64,
}

/// A byte stream from a WebSocket client that refuses any message larger than its limit, from the
/// header of the frame that makes it too large. It never reads ahead of its caller: it only looks at
/// the bytes its caller asked for.
#[derive(Debug)]
pub struct LimitedFrames<S> {
    inner: S,
    limits: FrameLimits,
    /// The first data message ended (its final frame's header was seen).
    first_done: bool,
    /// The header being read, and how much of it has arrived.
    header: [u8; 14],
    header_len: usize,
    /// Payload bytes of the current frame still to pass.
    payload_left: u64,
    /// Payload bytes of the data message in progress (fragments add up).
    message_len: u64,
    /// Once refused, every later read fails the same way.
    refused: Option<MessageTooBig>,
}

impl<S> LimitedFrames<S> {
    pub fn new(inner: S, limits: FrameLimits) -> Self {
        LimitedFrames {
            inner,
            limits,
            first_done: false,
            header: [0; 14],
            header_len: 0,
            payload_left: 0,
            message_len: 0,
            refused: None,
        }
    }

    /// The header's length once its first two bytes are known.
    fn header_size(&self) -> Option<usize> {
        if self.header_len < 2 {
            return None;
        }
        let second = self.header[1];
        let extended = match second & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if second & 0x80 != 0 { 4 } else { 0 };
        Some(2 + extended + mask)
    }

    /// Checks a complete header; `Err` when its message is too big.
    fn on_header(&mut self) -> Result<(), MessageTooBig> {
        let first = self.header[0];
        let (fin, opcode) = (first & 0x80 != 0, first & 0x0F);
        let len = match self.header[1] & 0x7F {
            126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            127 => u64::from_be_bytes(self.header[2..10].try_into().expect("8 bytes")),
            len => u64::from(len),
        };
        let (limit, too_big) = if self.first_done {
            (self.limits.later, MessageTooBig::Connected { limit: self.limits.later })
        } else {
            (self.limits.first, MessageTooBig::BeforeConnect { limit: self.limits.first })
        };
        if opcode >= 8 {
            // A control frame: no part of a message (and at most 125 bytes; tungstenite checks that).
            if len > limit {
                return Err(too_big);
            }
        } else {
            let total = if opcode == 0 { self.message_len.saturating_add(len) } else { len };
            if total > limit {
                return Err(too_big);
            }
            self.message_len = total;
            if fin {
                self.message_len = 0;
                self.first_done = true;
            }
        }
        self.payload_left = len;
        Ok(())
    }

    /// Follows the frames through newly read bytes. `Err((keep, refusal))`: only the first `keep`
    /// bytes (those before the refused frame's header) may be passed on.
    fn scan(&mut self, bytes: &[u8]) -> Result<(), (usize, MessageTooBig)> {
        let mut at = 0;
        let mut header_start = None;
        while at < bytes.len() {
            if self.payload_left > 0 {
                let skip = self.payload_left.min((bytes.len() - at) as u64);
                self.payload_left -= skip;
                at += skip as usize;
                continue;
            }
            if self.header_len == 0 {
                header_start = Some(at);
            }
            self.header[self.header_len] = bytes[at];
            self.header_len += 1;
            at += 1;
            if self.header_size() == Some(self.header_len) {
                self.header_len = 0;
                if let Err(too_big) = self.on_header() {
                    return Err((header_start.unwrap_or(0), too_big));
                }
            }
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for LimitedFrames<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(too_big) = this.refused {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, too_big)));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Err((keep, too_big)) = this.scan(&buf.filled()[before..]) {
            this.refused = Some(too_big);
            if keep == 0 {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, too_big)));
            }
            // The frames before it go on; the next read fails.
            buf.set_filled(before + keep);
        }
        Poll::Ready(Ok(()))
    }
}

/// Writes go straight to the wrapped stream (its `inner` field): both wrappers here only look at reads.
macro_rules! writes_pass_through {
    ($wrapper:ident) => {
        impl<S: AsyncWrite + Unpin> AsyncWrite for $wrapper<S> {
            fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.get_mut().inner).poll_write(cx, bytes)
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Pin::new(&mut self.get_mut().inner).poll_flush(cx)
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }
        }
    };
}

writes_pass_through!(LimitedFrames);

/// The largest frame a long message is sent in (see [`fragments`]).
pub const FRAGMENT_BYTES: usize = 4096;

/// A text message as frames of at most [`FRAGMENT_BYTES`] (RFC 6455 §5.4): tungstenite writes each
/// frame whole into a buffer that keeps its size for the socket's life, so a 20 KB hello-ok sent in one
/// frame would leave every idle socket holding 20 KB. Receivers (browsers, Node's `ws`) join the
/// fragments; the message may be cut inside a UTF-8 character, since only the whole message must be
/// valid. A short message is one frame.
pub fn fragments(text: String) -> impl Iterator<Item = tokio_tungstenite::tungstenite::Message> {
    use tokio_tungstenite::tungstenite::protocol::frame::{
        Frame,
        coding::{Data, OpCode},
    };
    let bytes = tokio_tungstenite::tungstenite::Bytes::from(text);
    let count = bytes.len().div_ceil(FRAGMENT_BYTES).max(1);
    (0..count).map(move |index| {
        let piece = bytes.slice(index * FRAGMENT_BYTES..((index + 1) * FRAGMENT_BYTES).min(bytes.len()));
        let opcode = if index == 0 { Data::Text } else { Data::Continue };
        tokio_tungstenite::tungstenite::Message::Frame(Frame::message(piece, OpCode::Data(opcode), index + 1 == count))
    })
}

/// A byte stream that can keep a copy of what it read, until [`Recording::stop`]. The upstream handshake
/// reads through one, so that its socket can be made again without the buffer the gateway's 20 KB hello-ok
/// grew (see [`unread_after`]).
pub struct Recording<S> {
    inner: S,
    recorded: Option<Vec<u8>>,
}

/// What it recorded (a hello-ok holds the gateway's device token for pairgate's identity) is never shown.
impl<S> std::fmt::Debug for Recording<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording").field("recording", &self.recorded.is_some()).finish_non_exhaustive()
    }
}

impl<S> Recording<S> {
    /// A stream that records from its first byte.
    pub fn new(inner: S) -> Recording<S> {
        Recording { inner, recorded: Some(Vec::new()) }
    }

    /// Stops recording; returns what was read, if it was recording.
    pub fn stop(&mut self) -> Option<Vec<u8>> {
        self.recorded.take()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Recording<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Some(recorded) = this.recorded.as_mut() {
            recorded.extend_from_slice(&buf.filled()[before..]);
        }
        Poll::Ready(Ok(()))
    }
}

writes_pass_through!(Recording);

/// What a client socket had read but not yet handed out, given everything it read (the HTTP 101
/// response, then frames) and how many messages it handed out: the bytes after the 101 and after
/// `messages` frames. `None` unless each of those was a whole unmasked text message in one frame (a
/// fragmented message, a ping or anything unexpected: the socket is kept as it is).
pub fn unread_after(recorded: &[u8], messages: usize) -> Option<&[u8]> {
    use tokio_tungstenite::tungstenite::protocol::frame::{
        FrameHeader,
        coding::{Data, OpCode},
    };
    let end_of_response = recorded.windows(4).position(|window| window == b"\r\n\r\n")? + 4;
    let mut rest = &recorded[end_of_response..];
    for _ in 0..messages {
        let mut cursor = io::Cursor::new(rest);
        let (header, length) = FrameHeader::parse(&mut cursor).ok()??;
        let whole_text = header.is_final && header.opcode == OpCode::Data(Data::Text) && header.mask.is_none();
        if !whole_text || header.rsv1 || header.rsv2 || header.rsv3 {
            return None;
        }
        let end = usize::try_from(cursor.position()).ok()?.checked_add(usize::try_from(length).ok()?)?;
        rest = rest.get(end..)?;
    }
    Some(rest)
}

/// A valid WebSocket upgrade request (HTTP/1.1, RFC 6455 §4.2.1), ready to be accepted.
pub struct WsUpgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// Why a request to "/" is not a WebSocket upgrade.
#[derive(Debug)]
pub struct NotAnUpgrade(StatusCode, &'static str);

impl IntoResponse for NotAnUpgrade {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

fn header_is(headers: &HeaderMap, name: header::HeaderName, value: &str) -> bool {
    headers.get(name).is_some_and(|found| found.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value.to_str().is_ok_and(|text| text.split(',').any(|part| part.trim().eq_ignore_ascii_case(token)))
    })
}

impl<S: Send + Sync> FromRequestParts<S> for WsUpgrade {
    type Rejection = NotAnUpgrade;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let bad = |why| Err(NotAnUpgrade(StatusCode::BAD_REQUEST, why));
        if !header_has_token(&parts.headers, header::CONNECTION, "upgrade") {
            return bad("Connection header did not include 'upgrade'");
        }
        if !header_is(&parts.headers, header::UPGRADE, "websocket") {
            return bad("`Upgrade` header did not include 'websocket'");
        }
        if !header_is(&parts.headers, header::SEC_WEBSOCKET_VERSION, "13") {
            return bad("`Sec-WebSocket-Version` header did not include '13'");
        }
        let Some(key) = parts.headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
            return bad("`Sec-WebSocket-Key` header missing");
        };
        let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
            return Err(NotAnUpgrade(StatusCode::UPGRADE_REQUIRED, "this connection cannot be upgraded"));
        };
        Ok(WsUpgrade { key, on_upgrade })
    }
}

impl WsUpgrade {
    /// The 101 response, and the upgraded connection once that response is sent (`None` if the
    /// connection failed first).
    pub fn accept(self) -> (Response, impl Future<Output = Option<TokioIo<Upgraded>>> + Send + 'static) {
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(self.key.as_bytes());
        let on_upgrade = self.on_upgrade;
        let upgraded = async move {
            match on_upgrade.await {
                Ok(upgraded) => Some(TokioIo::new(upgraded)),
                Err(error) => {
                    tracing::debug!(%error, "WebSocket upgrade failed");
                    None
                }
            }
        };
        let response = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, accept)
            .body(axum::body::Body::empty())
            .expect("a valid response");
        (response, upgraded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(opcode: u8, fin: bool, len: u64) -> Vec<u8> {
        let mut bytes = vec![if fin { 0x80 } else { 0 } | opcode];
        if len < 126 {
            bytes.push(0x80 | len as u8);
        } else if len <= 0xFFFF {
            bytes.push(0x80 | 126);
            bytes.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            bytes.push(0x80 | 127);
            bytes.extend_from_slice(&len.to_be_bytes());
        }
        bytes.extend_from_slice(&[1, 2, 3, 4]);
        bytes
    }

    fn frame(opcode: u8, fin: bool, len: usize) -> Vec<u8> {
        let mut bytes = header(opcode, fin, len as u64);
        bytes.resize(bytes.len() + len, b'x');
        bytes
    }

    fn limited() -> LimitedFrames<()> {
        LimitedFrames::new((), FrameLimits { first: 100, later: 1000 })
    }

    /// Feeds `bytes` in pieces of `step`; what was passed on, and the refusal if any.
    fn feed(frames: &mut LimitedFrames<()>, bytes: &[u8], step: usize) -> (usize, Option<MessageTooBig>) {
        let mut passed = 0;
        for piece in bytes.chunks(step) {
            match frames.scan(piece) {
                Ok(()) => passed += piece.len(),
                Err((keep, too_big)) => return (passed + keep, Some(too_big)),
            }
        }
        (passed, None)
    }

    #[test]
    fn the_first_message_has_the_small_limit_and_later_ones_the_large() {
        for step in [1, 3, 7, 64, 10_000] {
            let mut frames = limited();
            let mut bytes = frame(1, true, 100);
            bytes.extend(frame(1, true, 1000));
            bytes.extend(frame(9, true, 4)); // a ping
            assert_eq!(feed(&mut frames, &bytes, step), (bytes.len(), None), "step {step}");

            let mut frames = limited();
            let ok = frame(9, true, 4);
            let mut bytes = ok.clone();
            bytes.extend(frame(1, true, 101));
            let refused = Some(MessageTooBig::BeforeConnect { limit: 100 });
            let (passed, too_big) = feed(&mut frames, &bytes, step);
            assert_eq!(too_big, refused, "step {step}");
            assert!(passed <= ok.len() + 13, "the refused frame's payload is never passed on (step {step})");
        }
    }

    #[test]
    fn fragments_add_up_and_control_frames_between_them_do_not() {
        let mut frames = limited();
        let mut bytes = frame(1, false, 60);
        bytes.extend(frame(9, true, 50));
        bytes.extend(frame(0, true, 40));
        assert_eq!(feed(&mut frames, &bytes, 5), (bytes.len(), None));

        let mut frames = limited();
        let mut bytes = frame(1, true, 10);
        bytes.extend(frame(1, false, 600));
        let kept = bytes.len();
        bytes.extend(frame(0, true, 401));
        let (passed, too_big) = feed(&mut frames, &bytes, 10_000);
        assert_eq!((passed, too_big), (kept, Some(MessageTooBig::Connected { limit: 1000 })));
    }

    #[test]
    fn a_64_bit_length_is_refused_from_the_header_alone() {
        let mut frames = limited();
        let bytes = header(2, true, u64::MAX);
        // Fed byte by byte, the header's first 13 bytes pass (they say nothing yet); its last one is refused.
        assert_eq!(feed(&mut frames, &bytes, 1), (13, Some(MessageTooBig::BeforeConnect { limit: 100 })));
        let mut frames = limited();
        assert_eq!(feed(&mut frames, &bytes, 14), (0, Some(MessageTooBig::BeforeConnect { limit: 100 })));
    }

    #[test]
    fn the_refusal_travels_in_an_io_error() {
        let too_big = MessageTooBig::BeforeConnect { limit: 65536 };
        let error = io::Error::new(io::ErrorKind::InvalidData, too_big);
        assert_eq!(MessageTooBig::of(&error), Some(too_big));
        assert_eq!(MessageTooBig::of(&io::Error::other("x")), None);
        assert_eq!(too_big.to_string(), "message too big: the limit before connect is 65536 bytes");
    }

    /// A frame as a server sends it (unmasked), whole.
    fn server_frame(
        opcode: tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode,
        payload: &[u8],
    ) -> Vec<u8> {
        use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
        let header = FrameHeader { is_final: true, opcode, ..FrameHeader::default() };
        let mut bytes = Vec::new();
        Frame::from_payload(header, payload.to_vec().into()).format(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn the_unread_bytes_are_those_after_the_101_and_the_messages_handed_out() {
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
        let text = OpCode::Data(Data::Text);
        let mut recorded = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
        recorded.extend(server_frame(text, b"{\"challenge\":1}"));
        recorded.extend(server_frame(text, &[b'x'; 20_000]));
        let behind = server_frame(text, b"{\"event\":\"tick\"}");
        recorded.extend(&behind[..7]); // an event read in part
        assert_eq!(unread_after(&recorded, 2), Some(&behind[..7]));
        assert_eq!(unread_after(&recorded[..recorded.len() - 7], 2), Some(&[][..]));
        assert_eq!(unread_after(&recorded, 3), None, "a message handed out is never cut short");
        let after_101 = recorded.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(unread_after(&recorded, 0), Some(&recorded[after_101..]));

        // A ping among them, or no end of the HTTP answer: the socket is kept as it is.
        let mut with_ping = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
        with_ping.extend(server_frame(OpCode::Control(Control::Ping), b""));
        with_ping.extend(server_frame(text, b"{}"));
        assert_eq!(unread_after(&with_ping, 2), None);
        assert_eq!(unread_after(b"HTTP/1.1 101 Switching Protocols\r\n", 0), None);
        // A masked frame is a client's, never a gateway's.
        let mut masked = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
        masked.extend(frame(1, true, 3));
        assert_eq!(unread_after(&masked, 1), None);
    }

    #[tokio::test]
    async fn a_long_message_goes_in_small_fragments_that_the_receiver_joins() {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::{Message, protocol::Role};
        // Multi-byte characters, so that some fragments end inside one.
        let long: String = "é€🦀x".repeat(2_000);
        let frames: Vec<Message> = fragments(long.clone()).collect();
        assert_eq!(frames.len(), long.len().div_ceil(FRAGMENT_BYTES));
        assert!(frames.iter().all(|frame| frame.clone().into_data().len() <= FRAGMENT_BYTES));
        assert_eq!(fragments("short".into()).count(), 1);

        let (near, far) = tokio::io::duplex(1 << 20);
        let mut server = WebSocketStream::from_raw_socket(near, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(far, Role::Client, None).await;
        for frame in fragments(long.clone()).chain(fragments("after".into())) {
            server.send(frame).await.unwrap();
        }
        assert_eq!(client.next().await.unwrap().unwrap(), Message::Text(long.into()));
        assert_eq!(client.next().await.unwrap().unwrap(), Message::Text("after".into()));
    }
}
