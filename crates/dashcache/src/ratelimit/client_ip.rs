//! The client address of a request: the socket's peer, or — only when that peer is a proxy you
//! trust — the address the proxies forwarded.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::http::HeaderMap;

use crate::error::{Error, Result};

/// The proxies (addresses or CIDR networks) whose forwarding header is believed, and which
/// header that is: `X-Forwarded-For` by default, `Forwarded` with
/// [`with_header`](Self::with_header) — exactly one, since a proxy that appends to one passes a
/// client's own copy of the other through untouched. No proxy by default: then the headers are
/// ignored, and a client cannot choose the address it is rate limited as.
///
/// ```
/// use dashcache::ratelimit::TrustedProxies;
///
/// let proxies = TrustedProxies::parse(["10.0.0.0/8", "::1"])?;
/// assert!(proxies.contains("10.1.2.3".parse().unwrap()));
/// assert!(!proxies.contains("11.0.0.1".parse().unwrap()));
/// # Ok::<(), dashcache::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    networks: Vec<(IpAddr, u8)>,
    header: ForwardedHeader,
}

/// The header the trusted proxies write the client address into.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, …` (nginx, most load balancers). The default.
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1, …` (RFC 7239).
    Forwarded,
}

impl TrustedProxies {
    /// No trusted proxy: the socket's peer is the client.
    pub fn none() -> Self {
        Self::default()
    }

    /// Parses addresses and CIDR networks (`10.0.0.0/8`, `2001:db8::/32`, `127.0.0.1`).
    ///
    /// # Errors
    /// `InvalidArgument` naming the entry that is not an address or network.
    pub fn parse<I, S>(entries: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut networks = Vec::new();
        for entry in entries {
            let entry = entry.as_ref().trim();
            let bad =
                || Error::invalid_argument(format!("{entry:?} is not an address or CIDR network"));
            let (addr, len) = match entry.split_once('/') {
                Some((a, l)) => (a, Some(l.parse::<u8>().map_err(|_| bad())?)),
                None => (entry, None),
            };
            let addr = canonical(IpAddr::from_str(addr).map_err(|_| bad())?);
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let len = len.unwrap_or(max);
            if len > max {
                return Err(bad());
            }
            networks.push((addr, len));
        }
        Ok(Self {
            networks,
            header: ForwardedHeader::default(),
        })
    }

    /// Reads the client address from `header` (and never from the other one).
    #[must_use]
    pub fn with_header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    /// The header read.
    pub fn header(&self) -> ForwardedHeader {
        self.header
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.networks
            .iter()
            .any(|(net, len)| in_network(ip, *net, *len))
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }
}

/// An IPv4 address written as IPv6 (`::ffff:1.2.3.4`) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn in_network(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// The client address of a request from `peer` with `headers`.
///
/// When `peer` is a trusted proxy, the forwarded chain of the configured header (every line of
/// it, in order) is walked from the right: the right-most address that is not a trusted proxy
/// is the client, because everything to its left was written by the client or proxies nobody
/// vouches for. An entry that does not parse stops the walk at the last address vouched for.
/// Otherwise the peer itself is the client.
pub fn client_ip(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted: &TrustedProxies,
) -> Option<IpAddr> {
    let mut client = canonical(peer?);
    if !trusted.contains(client) {
        return Some(client);
    }
    for hop in forwarded_chain(headers, trusted.header).iter().rev() {
        match hop {
            Some(ip) => {
                client = canonical(*ip);
                if !trusted.contains(client) {
                    break;
                }
            }
            None => break,
        }
    }
    Some(client)
}

/// The forwarded addresses, left (client) to right (nearest proxy); `None` for an entry that
/// is not an address (`unknown`, an obfuscated identifier, garbage).
fn forwarded_chain(headers: &HeaderMap, header: ForwardedHeader) -> Vec<Option<IpAddr>> {
    if header == ForwardedHeader::Forwarded {
        return headers
            .get_all("forwarded")
            .iter()
            .flat_map(|v| {
                v.to_str()
                    .unwrap_or("\u{0}")
                    .split(',')
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .map(|element| {
                element
                    .split(';')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                    .and_then(|(_, v)| parse_node(v.trim().trim_matches('"')))
            })
            .collect();
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| {
            v.to_str()
                .unwrap_or("\u{0}")
                .split(',')
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|entry| parse_node(entry.trim()))
        .collect()
}

/// An address with an optional port: `1.2.3.4`, `1.2.3.4:80`, `[2001:db8::1]:80`, `2001:db8::1`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = IpAddr::from_str(node) {
        return Some(ip);
    }
    if let Ok(addr) = SocketAddr::from_str(node) {
        return Some(addr.ip());
    }
    node.strip_prefix('[')
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(ip, _)| IpAddr::from_str(ip).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn headers(name: &'static str, values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_send() {
        let trusted = TrustedProxies::parse(["10.0.0.0/8"]).unwrap_or_default();
        let spoof = headers("x-forwarded-for", &["1.2.3.4"]);
        assert_eq!(
            client_ip(Some(ip("203.0.113.9")), &spoof, &trusted),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            client_ip(Some(ip("203.0.113.9")), &spoof, &TrustedProxies::none()),
            Some(ip("203.0.113.9"))
        );
    }

    #[test]
    fn the_rightmost_untrusted_address_wins() {
        let trusted = TrustedProxies::parse(["10.0.0.0/8"]).unwrap_or_default();
        // The client wrote "6.6.6.6" itself; 198.51.100.1 is who reached our first proxy.
        let h = headers("x-forwarded-for", &["6.6.6.6, 198.51.100.1", "10.0.0.2"]);
        assert_eq!(
            client_ip(Some(ip("10.0.0.1")), &h, &trusted),
            Some(ip("198.51.100.1"))
        );
        let all_trusted = headers("x-forwarded-for", &["10.0.0.3"]);
        assert_eq!(
            client_ip(Some(ip("10.0.0.1")), &all_trusted, &trusted),
            Some(ip("10.0.0.3"))
        );
        let none = HeaderMap::new();
        assert_eq!(
            client_ip(Some(ip("10.0.0.1")), &none, &trusted),
            Some(ip("10.0.0.1"))
        );
        let garbage = headers("x-forwarded-for", &["198.51.100.1, nonsense"]);
        assert_eq!(
            client_ip(Some(ip("10.0.0.1")), &garbage, &trusted),
            Some(ip("10.0.0.1"))
        );
    }

    /// Regression: a `Forwarded` header was believed before `X-Forwarded-For` whenever one was
    /// present, and proxies that append to `X-Forwarded-For` pass a client's own `Forwarded`
    /// through: a client could pick its own bucket.
    #[test]
    fn a_client_s_own_forwarded_header_changes_nothing() {
        let trusted = TrustedProxies::parse(["10.0.0.0/8"]).unwrap_or_default();
        let mut h = headers("x-forwarded-for", &["198.51.100.1"]);
        h.append("forwarded", HeaderValue::from_static("for=6.6.6.6"));
        assert_eq!(
            client_ip(Some(ip("10.0.0.1")), &h, &trusted),
            Some(ip("198.51.100.1"))
        );
        // And the other way round, when the proxies write `Forwarded`.
        let trusted = trusted.with_header(ForwardedHeader::Forwarded);
        let mut h = headers("forwarded", &["for=198.51.100.1"]);
        h.append("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        assert_eq!(
            client_ip(Some(ip("10.0.0.1")), &h, &trusted),
            Some(ip("198.51.100.1"))
        );
    }

    #[test]
    fn forwarded_is_understood_with_ports_brackets_and_quotes() {
        let trusted = TrustedProxies::parse(["2001:db8::/32", "10.0.0.1"])
            .unwrap_or_default()
            .with_header(ForwardedHeader::Forwarded);
        let h = headers(
            "forwarded",
            &["for=192.0.2.60;proto=http, For=\"[2001:db8:cafe::17]:4711\";by=x"],
        );
        assert_eq!(
            client_ip(Some(ip("10.0.0.1")), &h, &trusted),
            Some(ip("192.0.2.60"))
        );
        let mapped = TrustedProxies::parse(["10.0.0.0/8"]).unwrap_or_default();
        assert!(
            mapped.contains(ip("::ffff:10.1.2.3")),
            "IPv4-mapped IPv6 is IPv4"
        );
        assert!(TrustedProxies::parse(["10.0.0.0/33"]).is_err());
        assert!(TrustedProxies::parse(["proxy.example"]).is_err());
    }
}
