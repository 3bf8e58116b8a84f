//! Who is on the other end: the client address, and whether the connection is local (docs/protocol.md §3).

use std::net::IpAddr;

use axum::http::HeaderMap;

/// The resolved client of one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientAddr {
    pub ip: IpAddr,
    /// A loopback peer that forwards nothing.
    pub local: bool,
    /// A browser: it sent `Origin`, or `Sec-Fetch-Site`/`Sec-Fetch-Mode` (a same-origin GET sends those without
    /// `Origin`). A browser on loopback runs whatever web page is open, so it never gets local trust: it is never
    /// approved silently, gets no scopes without a device identity, and is not exempt from the failed-auth lockout.
    pub browser: bool,
    /// The `Origin` it sent, trimmed and lowercased, at most 128 bytes: a browser on loopback is locked out per
    /// origin, so that one page cannot lock out another.
    pub origin: Option<String>,
}

/// Headers only a browser sends on its own.
const BROWSER_HEADERS: [&str; 3] = ["origin", "sec-fetch-site", "sec-fetch-mode"];
const MAX_ORIGIN_BYTES: usize = 128;

fn origin(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("origin")?;
    let text = String::from_utf8_lossy(value.as_bytes()).trim().to_ascii_lowercase();
    Some(crate::domain::prefix_within(&text, MAX_ORIGIN_BYTES).to_owned())
}

/// Why an upgrade is refused before anything else (HTTP 403).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardingRefused {
    /// Forwarding headers from a peer that is not a trusted proxy.
    Untrusted,
    /// A trusted proxy's forwarding headers do not name one client that is not loopback: a header nobody can
    /// read, headers naming different clients, or a client on loopback (OpenClaw: `proxy_attribution_required`).
    Unattributable,
}

impl ForwardingRefused {
    /// The body of the 403.
    pub fn message(self) -> &'static str {
        match self {
            ForwardingRefused::Untrusted => "forwarding headers from an untrusted proxy",
            ForwardingRefused::Unattributable => "forwarding headers that do not name one non-loopback client",
        }
    }
}

const FORWARDING_HEADERS: [&str; 3] = ["forwarded", "x-forwarded-for", "x-real-ip"];

fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<std::net::SocketAddr>().ok().map(|addr| addr.ip()))
        .or_else(|| text.strip_prefix('[').and_then(|rest| rest.split(']').next()).and_then(|ip| ip.parse().ok()))
        .map(canonical)
}

/// Splits on `separator` outside double quotes (RFC 7239 values may be quoted strings).
fn split_unquoted(text: &str, separator: char) -> Vec<&str> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// The `for=` nodes of `Forwarded` values (RFC 7239), in order. `None` when a node is not an address
/// (`unknown`, an obfuscated `_name`, garbage), an element has two, or no element has one.
fn forwarded_hops(values: &[&str]) -> Option<Vec<IpAddr>> {
    let mut hops = Vec::new();
    for element in values.iter().flat_map(|value| split_unquoted(value, ',')) {
        let nodes: Vec<&str> = split_unquoted(element, ';')
            .into_iter()
            .filter_map(|pair| pair.split_once('='))
            .filter(|(name, _)| name.trim().eq_ignore_ascii_case("for"))
            .map(|(_, node)| node.trim())
            .collect();
        match nodes[..] {
            [] => continue,
            [node] => hops.push(parse_ip(&node.trim_matches('"').replace("\\", ""))?),
            _ => return None,
        }
    }
    (!hops.is_empty()).then_some(hops)
}

/// The addresses of `X-Forwarded-For` values, in order (`ip`, `ip:port` or `[ipv6]:port`); `None` if any is
/// unreadable.
fn list_hops(values: &[&str]) -> Option<Vec<IpAddr>> {
    values.iter().flat_map(|value| value.split(',')).map(parse_ip).collect()
}

/// Resolves the client address of a connection from its TCP peer and headers.
///
/// Without forwarding headers the peer is the client, local when it is loopback. With them, the peer must
/// be a trusted proxy, and every forwarding header it sent is evidence: each must name a client (the
/// right-most address that is not a trusted proxy, the left-most if all are; everything to its left was
/// written by the client and proves nothing), all must name the same one, and it must not be loopback. Such
/// a client is never local: local trust is for a loopback peer that forwards nothing.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted_proxies: &[IpAddr]) -> Result<ClientAddr, ForwardingRefused> {
    let peer = canonical(peer);
    let browser = BROWSER_HEADERS.iter().any(|name| headers.contains_key(*name));
    let origin = origin(headers);
    let forwarded = FORWARDING_HEADERS.iter().any(|name| headers.contains_key(*name));
    if !forwarded {
        return Ok(ClientAddr { ip: peer, local: peer.is_loopback(), browser, origin });
    }
    let is_trusted = |ip: &IpAddr| trusted_proxies.iter().any(|proxy| canonical(*proxy) == *ip);
    if !is_trusted(&peer) {
        return Err(ForwardingRefused::Untrusted);
    }
    let client = named_client(headers, &is_trusted).ok_or(ForwardingRefused::Unattributable)?;
    if client.is_loopback() {
        return Err(ForwardingRefused::Unattributable);
    }
    Ok(ClientAddr { ip: client, local: false, browser, origin })
}

/// The one client every forwarding header present names; `None` if one is unreadable or two disagree.
fn named_client(headers: &HeaderMap, is_trusted: &dyn Fn(&IpAddr) -> bool) -> Option<IpAddr> {
    let mut named: Option<IpAddr> = None;
    for name in FORWARDING_HEADERS {
        if !headers.contains_key(name) {
            continue;
        }
        let values = headers.get_all(name).iter().map(|value| value.to_str().ok()).collect::<Option<Vec<_>>>()?;
        let client = match name {
            "forwarded" => chain_client(&forwarded_hops(&values)?, is_trusted)?,
            "x-forwarded-for" => chain_client(&list_hops(&values)?, is_trusted)?,
            // One address, set by the proxy; repeated, every copy must agree.
            _ => {
                let ips = values.iter().map(|value| parse_ip(value)).collect::<Option<Vec<_>>>()?;
                ips.windows(2).all(|pair| pair[0] == pair[1]).then(|| ips.first().copied()).flatten()?
            }
        };
        if named.is_some_and(|other| other != client) {
            return None;
        }
        named = Some(client);
    }
    named
}

/// The client a hop list names: the right-most hop that is not a trusted proxy, the left-most if all are.
fn chain_client(hops: &[IpAddr], is_trusted: &dyn Fn(&IpAddr) -> bool) -> Option<IpAddr> {
    hops.iter().rev().find(|hop| !is_trusted(hop)).or(hops.first()).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// (peer, headers, trusted proxies, expected (client ip, local, browser) or refusal)
    type Row<'a> =
        (&'a str, Vec<(&'static str, &'a str)>, &'a [IpAddr], Result<(&'a str, bool, bool), ForwardingRefused>);

    #[test]
    fn locality_table() {
        use ForwardingRefused::{Unattributable, Untrusted};
        let proxy = [ip("127.0.0.1")];
        let two = [ip("127.0.0.1"), ip("10.0.0.2")];
        let remote_proxy = [ip("10.0.0.2")];
        let rows: Vec<Row<'_>> = vec![
            ("127.0.0.1", vec![], &[], Ok(("127.0.0.1", true, false))),
            ("::1", vec![], &[], Ok(("::1", true, false))),
            ("::ffff:127.0.0.1", vec![], &[], Ok(("127.0.0.1", true, false))),
            ("203.0.113.9", vec![], &[], Ok(("203.0.113.9", false, false))),
            ("127.0.0.1", vec![("origin", "http://x")], &[], Ok(("127.0.0.1", true, true))),
            // A same-origin GET sends Sec-Fetch-* without Origin: still a browser (it was not).
            ("127.0.0.1", vec![("sec-fetch-site", "same-origin")], &[], Ok(("127.0.0.1", true, true))),
            ("127.0.0.1", vec![("sec-fetch-mode", "websocket")], &[], Ok(("127.0.0.1", true, true))),
            ("::1", vec![("sec-fetch-site", "cross-site"), ("sec-fetch-mode", "cors")], &[], Ok(("::1", true, true))),
            (
                "127.0.0.1",
                vec![("x-forwarded-for", "203.0.113.5"), ("origin", "http://x")],
                &proxy,
                Ok(("203.0.113.5", false, true)),
            ),
            ("127.0.0.1", vec![("x-forwarded-for", "203.0.113.5")], &[], Err(Untrusted)),
            ("127.0.0.1", vec![("x-real-ip", "203.0.113.5")], &[], Err(Untrusted)),
            ("127.0.0.1", vec![("forwarded", "for=203.0.113.5")], &[], Err(Untrusted)),
            ("127.0.0.1", vec![("x-forwarded-for", "203.0.113.5")], &proxy, Ok(("203.0.113.5", false, false))),
            // The left-most entry is client-written; the right-most untrusted one counts.
            (
                "127.0.0.1",
                vec![("x-forwarded-for", "127.0.0.1, 198.51.100.7")],
                &proxy,
                Ok(("198.51.100.7", false, false)),
            ),
            ("127.0.0.1", vec![("x-real-ip", "198.51.100.8")], &proxy, Ok(("198.51.100.8", false, false))),
            ("127.0.0.1", vec![], &proxy, Ok(("127.0.0.1", true, false))),
            ("10.0.0.2", vec![], &remote_proxy, Ok(("10.0.0.2", false, false))),
            // Changed: forwarding evidence naming loopback is never local trust (it was local), and evidence
            // nobody can read names no client (it was the peer, not local): both refused, as OpenClaw does.
            ("127.0.0.1", vec![("x-forwarded-for", "127.0.0.1")], &proxy, Err(Unattributable)),
            ("127.0.0.1", vec![("x-forwarded-for", "garbage")], &proxy, Err(Unattributable)),
            // `Forwarded` alone names the client (it was ignored: the loopback proxy made the client local).
            ("127.0.0.1", vec![("forwarded", "for=203.0.113.9")], &proxy, Ok(("203.0.113.9", false, false))),
            (
                "127.0.0.1",
                vec![("forwarded", "For=\"203.0.113.9:443\";proto=https")],
                &proxy,
                Ok(("203.0.113.9", false, false)),
            ),
            ("127.0.0.1", vec![("forwarded", "for=\"[2001:db8::9]:4711\"")], &proxy, Ok(("2001:db8::9", false, false))),
            (
                "127.0.0.1",
                vec![("forwarded", "for=198.51.100.1;by=10.0.0.2, proto=https;for=10.0.0.2")],
                &two,
                Ok(("198.51.100.1", false, false)),
            ),
            (
                "127.0.0.1",
                vec![("forwarded", "for=198.51.100.1"), ("forwarded", "for=127.0.0.1")],
                &proxy,
                Ok(("198.51.100.1", false, false)),
            ),
            (
                "10.0.0.2",
                vec![("forwarded", "for=198.51.100.1"), ("forwarded", "for=127.0.0.1")],
                &remote_proxy,
                Err(Unattributable),
            ),
            ("127.0.0.1", vec![("forwarded", "for=\"[::1]:4711\"")], &proxy, Err(Unattributable)),
            ("127.0.0.1", vec![("forwarded", "for=unknown")], &proxy, Err(Unattributable)),
            ("127.0.0.1", vec![("forwarded", "for=_hidden")], &proxy, Err(Unattributable)),
            ("127.0.0.1", vec![("forwarded", "proto=https;host=example.com")], &proxy, Err(Unattributable)),
            ("127.0.0.1", vec![("forwarded", "for=198.51.100.1;for=198.51.100.2")], &proxy, Err(Unattributable)),
            // Several headers must name the same client.
            (
                "127.0.0.1",
                vec![
                    ("forwarded", "for=203.0.113.9"),
                    ("x-forwarded-for", "203.0.113.9"),
                    ("x-real-ip", "203.0.113.9"),
                ],
                &proxy,
                Ok(("203.0.113.9", false, false)),
            ),
            // The proxy sets X-Real-IP and passes the client's own X-Forwarded-For through: it was local.
            ("127.0.0.1", vec![("x-real-ip", "203.0.113.9"), ("x-forwarded-for", "::1")], &proxy, Err(Unattributable)),
            (
                "127.0.0.1",
                vec![("x-real-ip", "203.0.113.9"), ("x-forwarded-for", "198.51.100.1")],
                &proxy,
                Err(Unattributable),
            ),
            (
                "127.0.0.1",
                vec![("forwarded", "for=203.0.113.9"), ("x-forwarded-for", "198.51.100.1")],
                &proxy,
                Err(Unattributable),
            ),
            (
                "127.0.0.1",
                vec![("x-real-ip", "203.0.113.9"), ("x-real-ip", "198.51.100.1")],
                &proxy,
                Err(Unattributable),
            ),
            ("127.0.0.1", vec![("x-real-ip", "203.0.113.9, 198.51.100.1")], &proxy, Err(Unattributable)),
            ("127.0.0.1", vec![("x-real-ip", "::ffff:127.0.0.1")], &proxy, Err(Unattributable)),
            // Every hop a trusted proxy: the left-most is the client, here loopback.
            ("10.0.0.2", vec![("x-forwarded-for", "127.0.0.1, 10.0.0.2")], &two, Err(Unattributable)),
            (
                "10.0.0.2",
                vec![("x-forwarded-for", "[2001:db8::7]:80")],
                &remote_proxy,
                Ok(("2001:db8::7", false, false)),
            ),
        ];
        for (peer, pairs, trusted, expected) in rows {
            let got = resolve(ip(peer), &headers(&pairs), trusted);
            let expected =
                expected.map(|(client, local, browser)| ClientAddr { ip: ip(client), local, browser, origin: None });
            let got = got.map(|client| ClientAddr { origin: None, ..client });
            assert_eq!(got, expected, "peer {peer} headers {pairs:?} trusted {trusted:?}");
        }
    }

    #[test]
    fn the_origin_is_kept_trimmed_lowercased_and_bounded() {
        let client = |pairs: &[(&'static str, &str)]| resolve(ip("127.0.0.1"), &headers(pairs), &[]).unwrap();
        assert_eq!(client(&[("origin", " HTTP://Evil.Example ")]).origin.as_deref(), Some("http://evil.example"));
        assert_eq!(client(&[("sec-fetch-site", "same-origin")]).origin, None);
        let long = format!("http://{}.example", "a".repeat(500));
        assert_eq!(client(&[("origin", &long)]).origin.unwrap().len(), MAX_ORIGIN_BYTES);
    }
}
