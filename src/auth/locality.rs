//! Who is on the other end: the client address, and whether the connection is local (docs/protocol.md §3).

use std::net::IpAddr;

use axum::http::HeaderMap;

/// The resolved client of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr {
    pub ip: IpAddr,
    /// Loopback, directly or through a trusted proxy, with no forwarding from anyone untrusted.
    pub local: bool,
    /// An `Origin` header was sent: a browser. Never local trust by itself.
    pub browser_origin: bool,
}

/// Forwarding headers from a peer that is not a trusted proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UntrustedForwarding;

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

/// Resolves the client address of a connection from its TCP peer and headers.
pub fn resolve(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted_proxies: &[IpAddr],
) -> Result<ClientAddr, UntrustedForwarding> {
    let peer = canonical(peer);
    let browser_origin = headers.contains_key("origin");
    let forwarded = FORWARDING_HEADERS.iter().any(|name| headers.contains_key(*name));
    let is_trusted = |ip: &IpAddr| trusted_proxies.iter().any(|proxy| canonical(*proxy) == *ip);

    if !is_trusted(&peer) {
        if forwarded {
            return Err(UntrustedForwarding);
        }
        return Ok(ClientAddr { ip: peer, local: peer.is_loopback(), browser_origin });
    }

    // Through a trusted proxy: the client is the right-most address in X-Forwarded-For that is not a
    // trusted proxy itself (everything to its left was written by the client and proves nothing).
    let hops: Option<Vec<IpAddr>> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|value| value.to_str().ok())
        .collect::<Option<Vec<_>>>()
        .and_then(|values| values.iter().flat_map(|value| value.split(',')).map(parse_ip).collect());
    let Some(hops) = hops else {
        // A forwarding header nobody can read: we do not know who the client is, so it is not local.
        return Ok(ClientAddr { ip: peer, local: false, browser_origin });
    };
    let client = hops
        .iter()
        .rev()
        .find(|hop| !is_trusted(hop))
        .or(hops.first())
        .copied()
        .or_else(|| headers.get("x-real-ip").and_then(|v| v.to_str().ok()).and_then(parse_ip))
        .unwrap_or(peer);
    Ok(ClientAddr { ip: client, local: client.is_loopback(), browser_origin })
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
        (&'a str, Vec<(&'static str, &'a str)>, &'a [IpAddr], Result<(&'a str, bool, bool), UntrustedForwarding>);

    #[test]
    fn locality_table() {
        let proxy = [ip("127.0.0.1")];
        let rows: Vec<Row<'_>> = vec![
            ("127.0.0.1", vec![], &[], Ok(("127.0.0.1", true, false))),
            ("::1", vec![], &[], Ok(("::1", true, false))),
            ("::ffff:127.0.0.1", vec![], &[], Ok(("127.0.0.1", true, false))),
            ("203.0.113.9", vec![], &[], Ok(("203.0.113.9", false, false))),
            ("127.0.0.1", vec![("origin", "http://x")], &[], Ok(("127.0.0.1", true, true))),
            ("127.0.0.1", vec![("x-forwarded-for", "203.0.113.5")], &[], Err(UntrustedForwarding)),
            ("127.0.0.1", vec![("x-real-ip", "203.0.113.5")], &[], Err(UntrustedForwarding)),
            ("127.0.0.1", vec![("forwarded", "for=203.0.113.5")], &[], Err(UntrustedForwarding)),
            ("127.0.0.1", vec![("x-forwarded-for", "203.0.113.5")], &proxy, Ok(("203.0.113.5", false, false))),
            ("127.0.0.1", vec![("x-forwarded-for", "127.0.0.1")], &proxy, Ok(("127.0.0.1", true, false))),
            // The left-most entry is client-written; the right-most untrusted one counts.
            (
                "127.0.0.1",
                vec![("x-forwarded-for", "127.0.0.1, 198.51.100.7")],
                &proxy,
                Ok(("198.51.100.7", false, false)),
            ),
            ("127.0.0.1", vec![("x-real-ip", "198.51.100.8")], &proxy, Ok(("198.51.100.8", false, false))),
            ("127.0.0.1", vec![], &proxy, Ok(("127.0.0.1", true, false))),
            ("127.0.0.1", vec![("x-forwarded-for", "garbage")], &proxy, Ok(("127.0.0.1", false, false))),
        ];
        for (peer, pairs, trusted, expected) in rows {
            let got = resolve(ip(peer), &headers(&pairs), trusted);
            let expected =
                expected.map(|(client, local, browser)| ClientAddr { ip: ip(client), local, browser_origin: browser });
            assert_eq!(got, expected, "peer {peer} headers {pairs:?} trusted {trusted:?}");
        }
    }
}
