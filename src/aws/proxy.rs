//! Which proxy a request goes through, decided as the AWS SDKs do and read through [`Env`].
//!
//! Variables, in order: `HTTPS_PROXY`, `https_proxy` (for `https://` URLs); `HTTP_PROXY`, `http_proxy` (for
//! `http://` URLs); `NO_PROXY`, `no_proxy` (hosts reached directly). `ALL_PROXY` is not read.
//!
//! `NO_PROXY` is a comma-separated list; each entry is trimmed and is one of: `*` (no proxy at all), a host name
//! or suffix (`example.com` and `.example.com` both match `example.com` and every name below it), an IP address
//! (IPv6 with or without brackets), or a CIDR range (`10.0.0.0/8`, `fd00::/8`); any entry may end in `:port`
//! (IPv6 then in brackets), and then matches only that port.
//!
//! Whatever the variables say, these are always reached directly: loopback (`localhost`, `127.0.0.0/8`, `::1`),
//! the instance metadata service (`169.254.169.254`, `fd00:ec2::254`) and the container credential endpoints
//! (`169.254.170.2`, `169.254.170.23`, `fd00:ec2::23`). Credentials and their tokens never pass a proxy there.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::env::Env;

/// The proxy settings of a run.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Proxies {
    /// The proxy URL for `https://` requests.
    https: Option<String>,
    /// The proxy URL for `http://` requests.
    http: Option<String>,
    /// The `NO_PROXY` entries.
    no_proxy: Vec<NoProxy>,
}

impl std::fmt::Debug for Proxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Proxy URLs may carry a password.
        f.debug_struct("Proxies")
            .field("https", &self.https.as_deref().map(without_userinfo))
            .field("http", &self.http.as_deref().map(without_userinfo))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// One `NO_PROXY` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NoProxy {
    /// `*`: nothing goes through a proxy.
    All,
    /// A host name and every name below it, lowercase, without leading dots.
    Domain(String, Option<u16>),
    /// An IP range (a single address is a full-length prefix).
    Range(IpAddr, u8, Option<u16>),
}

impl Proxies {
    /// No proxy at all.
    pub fn none() -> Proxies {
        Proxies::default()
    }

    /// The settings in `env`.
    pub fn from_env(env: &Env) -> Proxies {
        let first = |names: [&str; 2]| names.iter().find_map(|name| env.var(name));
        let no_proxy = first(["NO_PROXY", "no_proxy"]).map(|list| parse_no_proxy(&list)).unwrap_or_default();
        Proxies { https: first(["HTTPS_PROXY", "https_proxy"]), http: first(["HTTP_PROXY", "http_proxy"]), no_proxy }
    }

    /// The proxy URL a request to `url` goes through, `None` for a direct connection.
    pub fn for_url(&self, url: &str) -> Option<&str> {
        let (scheme, rest) = url.split_once("://")?;
        let proxy = match scheme.to_ascii_lowercase().as_str() {
            "https" => self.https.as_deref()?,
            "http" => self.http.as_deref()?,
            _ => return None,
        };
        let default_port = if scheme.eq_ignore_ascii_case("https") { 443 } else { 80 };
        let (host, port) = host_and_port(rest, default_port)?;
        if always_direct(&host) || self.no_proxy.iter().any(|entry| entry.matches(&host, port)) {
            return None;
        }
        Some(proxy)
    }
}

impl NoProxy {
    fn matches(&self, host: &str, port: u16) -> bool {
        match self {
            NoProxy::All => true,
            NoProxy::Domain(domain, wanted) => {
                wanted.is_none_or(|p| p == port)
                    && (host == domain || host.strip_suffix(domain.as_str()).is_some_and(|head| head.ends_with('.')))
            }
            NoProxy::Range(network, prefix, wanted) => {
                wanted.is_none_or(|p| p == port) && parse_ip(host).is_some_and(|ip| in_range(ip, *network, *prefix))
            }
        }
    }
}

/// Parses a `NO_PROXY` list; entries that make no sense are skipped.
fn parse_no_proxy(list: &str) -> Vec<NoProxy> {
    list.split(',').filter_map(|entry| parse_entry(entry.trim())).collect()
}

fn parse_entry(entry: &str) -> Option<NoProxy> {
    if entry.is_empty() {
        return None;
    }
    if entry == "*" {
        return Some(NoProxy::All);
    }
    let (address, port) = split_port(entry);
    if let Some((network, bits)) = address.split_once('/') {
        let network = parse_ip(network)?;
        let bits: u8 = bits.parse().ok()?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        return (bits <= max).then_some(NoProxy::Range(network, bits, port));
    }
    if let Some(ip) = parse_ip(address) {
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        return Some(NoProxy::Range(ip, bits, port));
    }
    let domain = address.trim_start_matches("*.").trim_start_matches('.').trim_end_matches('.').to_ascii_lowercase();
    (!domain.is_empty()).then_some(NoProxy::Domain(domain, port))
}

/// `[::1]:80` -> (`::1`, 80); `::1` -> (`::1`, none); `host:80` -> (`host`, 80); `10.0.0.0/8` -> as is.
fn split_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((inner, tail)) => (inner, tail.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (entry, None),
        };
    }
    match entry.rsplit_once(':') {
        // More than one colon without brackets: an IPv6 address (or range), no port.
        Some((head, _)) if head.contains(':') => (entry, None),
        Some((head, port)) => match port.parse() {
            Ok(port) => (head, Some(port)),
            Err(_) => (entry, None),
        },
        None => (entry, None),
    }
}

/// An IP address, IPv6 with or without brackets.
fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(text);
    text.parse().ok()
}

fn in_range(ip: IpAddr, network: IpAddr, prefix: u8) -> bool {
    match (unmap(ip), unmap(network)) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// `::ffff:a.b.c.d` as the IPv4 address it stands for.
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The instance metadata and container credential endpoints.
const CREDENTIAL_ENDPOINTS: [IpAddr; 5] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 23)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23)),
];

/// Loopback and the credential endpoints are never proxied (`host` lowercase, without brackets).
pub fn always_direct(host: &str) -> bool {
    is_loopback(host) || parse_ip(host).map(unmap).is_some_and(|ip| CREDENTIAL_ENDPOINTS.contains(&ip))
}

/// Loopback only: `localhost` (and names below it), `127.0.0.0/8`, `::1` (`host` lowercase, without brackets).
pub fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.ends_with(".localhost") || parse_ip(host).map(unmap).is_some_and(|ip| ip.is_loopback())
}

/// The host (lowercase, without brackets or a final dot) and port of what follows `scheme://`.
pub fn host_and_port(rest: &str, default_port: u16) -> Option<(String, u16)> {
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (inner, tail) = bracketed.split_once(']')?;
        (inner, tail.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(port) if !port.is_empty() => port.parse().ok()?,
        _ => default_port,
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some((host, port))
}

/// A URL with any `user:password@` removed from its authority, for messages.
pub fn without_userinfo(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    match scheme {
        Some(scheme) => format!("{scheme}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    }
}

/// True when the URL's authority holds `user[:password]@`.
pub fn has_userinfo(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    rest[..end].contains('@')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With `HTTPS_PROXY=https-proxy`, `HTTP_PROXY=http-proxy` and `NO_PROXY=no_proxy`, `url` goes `expected`.
    fn check(no_proxy: &str, url: &str, expected: Option<&str>) {
        let env = Env::from_pairs(&[
            ("HTTPS_PROXY", "http://https-proxy:3128"),
            ("HTTP_PROXY", "http://http-proxy:3128"),
            ("NO_PROXY", no_proxy),
        ]);
        let proxies = Proxies::from_env(&env);
        assert_eq!(proxies.for_url(url), expected, "NO_PROXY={no_proxy:?} url {url}");
    }

    const HTTPS: Option<&str> = Some("http://https-proxy:3128");
    const HTTP: Option<&str> = Some("http://http-proxy:3128");

    #[test]
    fn each_scheme_has_its_own_proxy() {
        check("", "https://dynamodb.eu-west-1.amazonaws.com/", HTTPS);
        check("", "http://dynamodb.example/", HTTP);
        let only_https = Proxies::from_env(&Env::from_pairs(&[("https_proxy", "http://p:1"), ("ALL_PROXY", "x:1")]));
        assert_eq!(only_https.for_url("http://example.com/"), None);
        assert_eq!(only_https.for_url("https://example.com/"), Some("http://p:1"));
        let both =
            Proxies::from_env(&Env::from_pairs(&[("HTTP_PROXY", "http://upper:1"), ("http_proxy", "http://l:1")]));
        assert_eq!(both.for_url("http://example.com/"), Some("http://upper:1"));
        assert_eq!(Proxies::none().for_url("https://example.com/"), None);
    }

    #[test]
    fn loopback_and_credential_endpoints_never_go_through_a_proxy() {
        for url in [
            "http://127.0.0.1:8000/",
            "https://127.1.2.3/",
            "http://localhost:1/",
            "http://LOCALHOST./",
            "http://[::1]:8000/",
            "http://[::ffff:127.0.0.1]/",
            "http://169.254.169.254/latest/api/token",
            "http://[fd00:ec2::254]/latest/api/token",
            "http://169.254.170.2/v2/credentials/x",
            "http://169.254.170.23/v1/credentials",
            "http://[fd00:ec2::23]/v1/credentials",
            "http://[FD00:EC2:0::23]/v1/credentials",
        ] {
            check("", url, None);
        }
        check("", "http://169.254.169.253/", HTTP);
        check("", "http://128.0.0.1/", HTTP);
    }

    #[test]
    fn no_proxy_forms() {
        let table: &[(&str, &str, Option<&str>)] = &[
            ("example.com", "https://example.com/", None),
            ("example.com", "https://db.example.com/", None),
            ("example.com", "https://notexample.com/", HTTPS),
            (".example.com", "https://example.com/", None),
            (".example.com", "https://a.b.example.com/", None),
            ("*.example.com", "https://a.example.com/", None),
            (" other.org , example.com ", "https://x.example.com/", None),
            ("EXAMPLE.com", "https://Db.Example.COM/", None),
            ("*", "https://anything.test/", None),
            ("example.com:8443", "https://example.com:8443/", None),
            ("example.com:8443", "https://example.com/", HTTPS),
            ("example.com:443", "https://example.com/", None),
            ("10.0.0.0/8", "http://10.1.2.3/", None),
            ("10.0.0.0/8", "http://11.1.2.3/", HTTP),
            ("10.1.2.3", "http://10.1.2.3:8000/", None),
            ("10.1.2.3:8000", "http://10.1.2.3:8000/", None),
            ("10.1.2.3:8000", "http://10.1.2.3:9000/", HTTP),
            ("192.168.0.0/16", "http://[::ffff:192.168.1.1]/", None),
            ("fd00::/8", "http://[fd12::1]/", None),
            ("fd00::/8", "http://[fe80::1]/", HTTP),
            ("2001:db8::1", "http://[2001:db8::1]/", None),
            ("[2001:db8::1]", "http://[2001:db8::1]/", None),
            ("[2001:db8::1]:8080", "http://[2001:db8::1]:8080/", None),
            ("[2001:db8::1]:8080", "http://[2001:db8::1]/", HTTP),
            ("2001:db8::/32", "https://[2001:db8:1::5]:443/", None),
            ("0.0.0.0/0", "http://8.8.8.8/", None),
            ("", "http://example.com/", HTTP),
            (",,", "http://example.com/", HTTP),
            ("10.0.0.0/33", "http://10.0.0.1/", HTTP),
        ];
        for (no_proxy, url, expected) in table {
            check(no_proxy, url, *expected);
        }
    }

    #[test]
    fn lower_case_no_proxy_is_read() {
        let env = Env::from_pairs(&[("HTTPS_PROXY", "http://p:1"), ("no_proxy", "example.com")]);
        assert_eq!(Proxies::from_env(&env).for_url("https://example.com/"), None);
    }

    #[test]
    fn userinfo_is_found_and_removed() {
        assert_eq!(without_userinfo("http://u:p@host:1/path?q=a@b"), "http://host:1/path?q=a@b");
        assert_eq!(without_userinfo("http://host/"), "http://host/");
        assert_eq!(without_userinfo("u:p@proxy:3128"), "proxy:3128");
        assert!(has_userinfo("http://u:p@127.0.0.1:1/"));
        assert!(has_userinfo("https://u@h"));
        assert!(!has_userinfo("https://h/a@b"));
        let debug = format!("{:?}", Proxies::from_env(&Env::from_pairs(&[("HTTPS_PROXY", "http://u:pw@p:1")])));
        assert!(!debug.contains("pw") && debug.contains("http://p:1"), "{debug}");
    }
}
