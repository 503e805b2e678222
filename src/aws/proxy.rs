//! Which proxy a request goes through, decided as the AWS SDKs do and read through [`Env`].
//!
//! Variables, in order: `HTTPS_PROXY`, `https_proxy` (for `https://` URLs); `HTTP_PROXY`, `http_proxy` (for
//! `http://` URLs); `NO_PROXY`, `no_proxy` (hosts reached directly). `ALL_PROXY` is not read.
//!
//! A proxy URL is `http://` or `https://` (no scheme means `http://`), `[user:password@]host[:port]`; any path,
//! query or fragment is dropped. lock-exec speaks HTTP `CONNECT` to it, like the AWS SDKs; a SOCKS or other URL is
//! refused by [`Proxies::check`], which every command calls before its first request. Messages show a proxy as
//! `scheme://host:port` only.
//!
//! `NO_PROXY` is a comma-separated list; each entry is trimmed and is one of: `*` (no proxy at all), a host name
//! or suffix (`example.com`, `.example.com` and `*.example.com` all match `example.com` and every name below it),
//! an IP address (IPv6 with or without brackets), or a CIDR range (`10.0.0.0/8`, `fd00::/8`, `[fd00::]/8`); any
//! entry may end in `:port` (IPv6 then in brackets), and then matches only that port. Entries that are none of
//! these are skipped.
//!
//! Whatever the variables say, these are always reached directly: loopback and this host (`localhost` and names
//! below it, `127.0.0.0/8`, `0.0.0.0`, `::1`, `::`, IPv4 in every form the system resolver accepts: `127.1`,
//! `2130706433`, `0x7f.1`, `0177.0.0.1`, and IPv4-mapped IPv6), the instance metadata service
//! (`169.254.169.254`, `fd00:ec2::254`) and the container credential endpoints (`169.254.170.2`,
//! `169.254.170.23`, `fd00:ec2::23`). Credentials and their tokens never pass a proxy there.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::env::Env;
use crate::error::Error;

/// The proxy settings of a run.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Proxies {
    /// The proxy for `https://` requests.
    https: Option<Setting>,
    /// The proxy for `http://` requests.
    http: Option<Setting>,
    /// The `NO_PROXY` entries.
    no_proxy: Vec<NoProxy>,
}

impl std::fmt::Debug for Proxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Proxy URLs may carry a password: only scheme, host and port are shown.
        f.debug_struct("Proxies")
            .field("https", &self.https.as_ref().map(|s| s.shown.as_str()))
            .field("http", &self.http.as_ref().map(|s| s.shown.as_str()))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// One proxy variable's value, as lock-exec uses it.
#[derive(Clone, PartialEq, Eq)]
struct Setting {
    /// `scheme://[userinfo@]host:port`, the port explicit, no path: what the HTTP client is given. Empty when the
    /// value is unusable (`problem`), so that a request that came before [`Proxies::check`] fails (the client
    /// refuses an empty proxy URL) instead of going direct or through a SOCKS proxy.
    url: String,
    /// `scheme://host[:port]` as given: what messages show.
    shown: String,
    /// Why the value cannot be used, naming its variable.
    problem: Option<String>,
}

/// One `NO_PROXY` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NoProxy {
    /// `*`: nothing goes through a proxy.
    All,
    /// A host name and every name below it, lowercase, without leading dots.
    Domain(String, Option<u16>),
    /// An IP range as IPv6 (IPv4 as IPv4-mapped, its prefix length + 96) and its prefix length.
    Range(Ipv6Addr, u8, Option<u16>),
}

impl Proxies {
    /// No proxy at all.
    pub fn none() -> Proxies {
        Proxies::default()
    }

    /// The settings in `env`.
    pub fn from_env(env: &Env) -> Proxies {
        let first = |names: [&'static str; 2]| names.into_iter().find_map(|name| Some((name, env.var(name)?)));
        let no_proxy = first(["NO_PROXY", "no_proxy"]).map(|(_, list)| parse_no_proxy(&list)).unwrap_or_default();
        Proxies {
            https: first(["HTTPS_PROXY", "https_proxy"]).map(|(name, value)| parse_setting(name, &value)),
            http: first(["HTTP_PROXY", "http_proxy"]).map(|(name, value)| parse_setting(name, &value)),
            no_proxy,
        }
    }

    /// Refuses a proxy URL lock-exec cannot use (SOCKS or another scheme, no host, a bad port), naming its
    /// variable and showing the URL as `scheme://host:port` only (exit 78). Called before any request.
    pub fn check(&self) -> Result<(), Error> {
        match [&self.https, &self.http].into_iter().flatten().find_map(|s| s.problem.clone()) {
            Some(problem) => Err(Error::Config(problem)),
            None => Ok(()),
        }
    }

    /// The proxy URL a request to `url` goes through, `None` for a direct connection.
    pub fn for_url(&self, url: &str) -> Option<&str> {
        let (scheme, rest) = url.split_once("://")?;
        let setting = match scheme.to_ascii_lowercase().as_str() {
            "https" => self.https.as_ref()?,
            "http" => self.http.as_ref()?,
            _ => return None,
        };
        let default_port = if scheme.eq_ignore_ascii_case("https") { 443 } else { 80 };
        let (host, port) = host_and_port(rest, default_port)?;
        if always_direct(&host) || self.no_proxy.iter().any(|entry| entry.matches(&host, port)) {
            return None;
        }
        Some(&setting.url)
    }
}

/// Reads one proxy variable: `[scheme://][user:password@]host[:port][/path...]`.
fn parse_setting(variable: &str, value: &str) -> Setting {
    let (scheme, rest) = match value.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => ("http".to_owned(), value),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if !authority.contains('@') && rest.contains('@') {
        // Most likely a password with an unencoded `/`, `?` or `#`: nothing of the value can be shown safely.
        return Setting {
            url: String::new(),
            shown: format!("{scheme}://"),
            problem: Some(format!(
                "{variable}: the proxy URL has an '@' after a '/', '?' or '#' (not shown); percent-encode the user \
                 name and password"
            )),
        };
    }
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((userinfo, host_port)) => (Some(userinfo), host_port),
        None => (None, authority),
    };
    let shown = format!("{scheme}://{host_port}");
    let refuse = |why: String| Setting {
        url: String::new(),
        shown: shown.clone(),
        problem: Some(format!("{variable}={shown:?}: {why}")),
    };
    if scheme != "http" && scheme != "https" {
        let kind = if scheme.starts_with("socks") { "SOCKS proxies are" } else { "this scheme is" };
        return refuse(format!(
            "{kind} not supported; lock-exec, like the AWS SDKs, uses an HTTP proxy (CONNECT): give an http:// or \
             https:// proxy URL"
        ));
    }
    let default_port = if scheme == "https" { 443 } else { 80 };
    let Some((host, port)) = split_host_port(host_port) else {
        return refuse("not a proxy URL: expected http://host[:port] or https://host[:port]".into());
    };
    let port = match port {
        None => default_port,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return refuse(format!("invalid port {port:?}")),
        },
    };
    let host = if host.contains(':') { format!("[{host}]") } else { host.to_owned() };
    let userinfo = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
    Setting { url: format!("{scheme}://{userinfo}{host}:{port}"), shown, problem: None }
}

/// `host[:port]` or `[v6][:port]` -> host (without brackets) and the port text; `None` without a host.
fn split_host_port(host_port: &str) -> Option<(&str, Option<&str>)> {
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let (inner, tail) = bracketed.split_once(']')?;
        match tail {
            "" => (inner, None),
            _ => (inner, Some(tail.strip_prefix(':')?)),
        }
    } else {
        match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    (!host.is_empty()).then_some((host, port.filter(|p| !p.is_empty())))
}

impl NoProxy {
    fn matches(&self, host: &str, port: u16) -> bool {
        match self {
            NoProxy::All => true,
            NoProxy::Domain(domain, wanted) => {
                // A name suffix never matches an address by its digits (`0.1` is not a suffix of `10.0.0.1`).
                wanted.is_none_or(|p| p == port)
                    && parse_ip(host).is_none()
                    && (host == domain || host.strip_suffix(domain.as_str()).is_some_and(|head| head.ends_with('.')))
            }
            NoProxy::Range(network, prefix, wanted) => {
                wanted.is_none_or(|p| p == port)
                    && parse_ip(host).is_some_and(|ip| in_range(as_v6(ip), *network, *prefix))
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
    let (address, port) = split_port(entry)?;
    let address = address.as_ref();
    if let Some((network, bits)) = address.split_once('/') {
        let network = parse_ip(network)?;
        let bits: u8 = bits.parse().ok()?;
        let (network, bits) = match network {
            IpAddr::V4(v4) => (v4.to_ipv6_mapped(), bits.checked_add(96).filter(|b| *b <= 128)?),
            IpAddr::V6(v6) => (v6, bits),
        };
        return (bits <= 128).then_some(NoProxy::Range(network, bits, port));
    }
    if let Some(ip) = parse_ip(address) {
        return Some(NoProxy::Range(as_v6(ip), 128, port));
    }
    if address.contains(['[', ']', '/']) {
        return None;
    }
    let domain = address.trim_start_matches("*.").trim_start_matches('.').trim_end_matches('.').to_ascii_lowercase();
    (!domain.is_empty()).then_some(NoProxy::Domain(domain, port))
}

/// An entry's address part and port: `[::1]:80` -> (`::1`, 80); `[fd00::]/8` -> (`fd00::/8`, none);
/// `[fd00::]/8:80` -> (`fd00::/8`, 80); `::1` and `fd00::/8` -> as is (more than one colon without brackets is
/// IPv6, no port); `host:80` -> (`host`, 80); `10.0.0.0/8:80` -> (`10.0.0.0/8`, 80). `None` when malformed (an
/// unclosed bracket, text after it, a port that is not a number).
fn split_port(entry: &str) -> Option<(std::borrow::Cow<'_, str>, Option<u16>)> {
    use std::borrow::Cow;
    if let Some(rest) = entry.strip_prefix('[') {
        let (inner, tail) = rest.split_once(']')?;
        let (bits, port) = match tail.split_once(':') {
            Some((bits, port)) => (bits, Some(port.parse().ok()?)),
            None => (tail, None),
        };
        return match bits {
            "" => Some((Cow::Borrowed(inner), port)),
            _ => Some((Cow::Owned(format!("{inner}{}", bits.strip_prefix('/').map(|b| format!("/{b}"))?)), port)),
        };
    }
    match entry.rsplit_once(':') {
        Some((head, _)) if head.contains(':') => Some((Cow::Borrowed(entry), None)),
        Some((head, port)) => Some((Cow::Borrowed(head), Some(port.parse().ok()?))),
        None => Some((Cow::Borrowed(entry), None)),
    }
}

/// An IP address as the system resolver reads it: IPv6 with or without brackets, IPv4 in every form
/// `inet_aton` accepts (see [`parse_ipv4_like_inet_aton`]).
fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(text);
    if text.contains(':') {
        return text.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    parse_ipv4_like_inet_aton(text).map(IpAddr::V4)
}

/// IPv4 as `inet_aton(3)` (glibc and musl, which `getaddrinfo` uses for names that look numeric) reads it: one
/// to four parts separated by dots, each decimal, octal (leading `0`) or hex (`0x`); the last part fills the
/// remaining bytes. `127.1`, `2130706433`, `0x7f.1` and `0177.0.0.1` are all 127.0.0.1.
fn parse_ipv4_like_inet_aton(text: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for part in &parts {
        let (digits, radix) = if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (hex, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (*part, 10)
        };
        if digits.is_empty() && radix != 16 || !digits.chars().all(|c| c.is_digit(radix)) {
            return None;
        }
        // `0x` alone is 0 for inet_aton.
        let value = if digits.is_empty() { 0 } else { u64::from_str_radix(digits, radix).ok()? };
        values.push(value);
    }
    let (last, leading) = values.split_last()?;
    if leading.iter().any(|v| *v > 255) || *last >= 1u64 << (8 * (4 - leading.len())) {
        return None;
    }
    let address = leading.iter().enumerate().fold(*last, |acc, (i, v)| acc | (v << (8 * (3 - i))));
    u32::try_from(address).ok().map(Ipv4Addr::from)
}

/// IPv4 as its IPv4-mapped IPv6 address, so that one comparison covers both families.
fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn in_range(ip: Ipv6Addr, network: Ipv6Addr, prefix: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    u128::from(ip) & mask == u128::from(network) & mask
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

/// This host: `localhost` and names below it, loopback addresses (`127.0.0.0/8`, `::1`) and the unspecified
/// addresses (`0.0.0.0`, `::`: connecting to them reaches this host on Linux), in every spelling the system
/// resolver accepts (`127.1`, `2130706433`, IPv4-mapped IPv6). `host` lowercase, without brackets.
pub fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || parse_ip(host).map(unmap).is_some_and(|ip| ip.is_loopback() || ip.is_unspecified())
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

/// True when the URL may hold `user[:password]@`: an `@` anywhere after the scheme. An `@` after a `/`, `?` or
/// `#` counts too: it is most likely a password holding that character unencoded (`http://u:pa/ss@host/`),
/// which a parser stopping at the first `/` takes for a host `u` with port `pa`. For endpoint URLs, which have
/// no use for an `@` elsewhere.
pub fn has_userinfo(url: &str) -> bool {
    url.split_once("://").map_or(url, |(_, rest)| rest).contains('@')
}

/// An endpoint URL for messages: without anything between its scheme and its last `@` (see [`has_userinfo`]), so
/// no part of a user name or password shows, whichever characters the password holds.
pub fn endpoint_for_messages(url: &str) -> String {
    let Some((_, after)) = url.rsplit_once('@') else { return url.to_owned() };
    match url.split_once(':') {
        Some((scheme, _)) if !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphabetic()) => {
            format!("{scheme}://{after}")
        }
        _ => after.to_owned(),
    }
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
    fn every_spelling_of_a_local_address_is_direct() {
        // The forms the system resolver (inet_aton) accepts for 127.0.0.1 and friends, the unspecified address
        // (connecting to it reaches this host on Linux), and names under `localhost`.
        for url in [
            "http://127.1:8000/",
            "http://127.0.1/",
            "http://127.0.0.2/",
            "http://2130706433:8000/",
            "http://0x7f000001/",
            "http://0X7F.1/",
            "http://0177.0.0.1/",
            "http://127.0.0.01/",
            "http://0.0.0.0:8000/",
            "http://0/",
            "http://[::]/",
            "http://[::1]/",
            "http://[0:0:0:0:0:0:0:1]:1/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:2]/",
            "http://[::ffff:0.0.0.0]/",
            "http://localhost/",
            "http://foo.localhost:8000/",
            "http://FOO.LOCALHOST./",
            "http://169.254.43518/",
            "http://0xa9.0xfe.0xa9.0xfe/",
            "http://user:pw@127.1:1/",
        ] {
            check("", url, None);
        }
        for url in [
            "http://128.1/",
            "http://127.0.0.08/",
            "http://1.2.3.4/",
            "http://localhost.example.com/",
            "http://notlocalhost/",
            "http://127.0.0.1.example.com/",
            "http://[::2]/",
            "http://4294967296/",
            "http://127.1@example.com/",
        ] {
            check("", url, HTTP);
        }
    }

    #[test]
    fn loopback_is_every_spelling() {
        for host in ["127.1", "2130706433", "0.0.0.0", "::", "::1", "::ffff:127.0.0.1", "localhost", "a.localhost"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["128.1", "example.com", "localhostx", "::2", "169.254.169.254", ""] {
            assert!(!is_loopback(host), "{host}");
        }
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
            // IPv6 ranges and addresses, bracketed or not, with or without a port.
            ("[fd00::]/8", "http://[fd12::1]/", None),
            ("[fd00::]/8", "http://[fe80::1]/", HTTP),
            ("[fd00::]/8:8080", "http://[fd12::1]:8080/", None),
            ("[fd00::]/8:8080", "http://[fd12::1]/", HTTP),
            ("[2001:db8::1]/128", "http://[2001:db8::1]/", None),
            ("[2001:db8::1]/128", "http://[2001:db8::2]/", HTTP),
            ("fd00::/8", "http://[FD12::1]:8000/", None),
            ("::ffff:10.0.0.0/104", "http://10.1.2.3/", None),
            // IPv4 ranges with a port; hosts in any form the resolver accepts.
            ("10.0.0.0/8:8000", "http://10.1.1.1:8000/", None),
            ("10.0.0.0/8:8000", "http://10.1.1.1/", HTTP),
            ("10.0.0.0/8", "http://10.1/", None),
            ("10.0.0.0/8", "http://167772161/", None),
            // Trimmed entries, a final dot, `*` anywhere in the list.
            ("\t example.com \n", "https://db.example.com/", None),
            ("example.com.", "https://db.example.com./", None),
            (" other.org , * ", "https://anything.test/", None),
            (" other.org ,", "https://anything.test/", HTTPS),
            // A domain entry never matches an IP address by its digits.
            ("0.1", "http://10.0.0.1/", HTTP),
            ("2.3.4", "http://1.2.3.4/", HTTP),
            // Not entries at all.
            ("[fd00::", "http://[fd00::1]/", HTTP),
            ("[fd00::]x", "http://[fd00::]/", HTTP),
            ("example.com:notaport", "https://example.com/", HTTPS),
        ];
        for (no_proxy, url, expected) in table {
            check(no_proxy, url, *expected);
        }
    }

    #[test]
    fn proxy_urls_lose_their_path_and_gain_a_port() {
        fn check(value: &str, expected: &str) {
            let proxies = Proxies::from_env(&Env::from_pairs(&[("HTTPS_PROXY", value)]));
            assert!(proxies.check().is_ok(), "{value}");
            assert_eq!(proxies.for_url("https://example.com/"), Some(expected), "{value}");
        }
        check("http://proxy:3128", "http://proxy:3128");
        check("proxy:3128", "http://proxy:3128");
        check("http://proxy", "http://proxy:80");
        check("HTTPS://Proxy", "https://Proxy:443");
        check("http://u:p%40ss@proxy:3128/path?token=x#f", "http://u:p%40ss@proxy:3128");
        check("http://[fd00::1]:3128/", "http://[fd00::1]:3128");
        check("http://10.0.0.1?x", "http://10.0.0.1:80");
    }

    #[test]
    fn unusable_proxy_urls_are_refused_naming_the_variable() {
        fn check(variable: &str, value: &str, expected: &str) {
            let proxies = Proxies::from_env(&Env::from_pairs(&[(variable, value)]));
            let message = proxies.check().expect_err(value).to_string();
            assert!(message.starts_with(expected), "{value}: {message}");
            for hidden in ["SECRET", "user:", "/path", "query"] {
                assert!(!message.contains(hidden), "{value}: {message}");
            }
            // Never handed to the HTTP client as a usable proxy, and never direct either.
            assert_eq!(proxies.for_url("https://example.com/").or(proxies.for_url("http://example.com/")), Some(""));
            assert!(!format!("{proxies:?}").contains("pw-SECRET"));
        }
        check(
            "HTTPS_PROXY",
            "socks5://user:pw-SECRET@127.0.0.1:1080/path?query",
            "HTTPS_PROXY=\"socks5://127.0.0.1:1080\": SOCKS",
        );
        check("https_proxy", "socks5h://127.0.0.1", "https_proxy=\"socks5h://127.0.0.1\": SOCKS");
        check("HTTP_PROXY", "socks://127.0.0.1:1080", "HTTP_PROXY=\"socks://127.0.0.1:1080\": SOCKS");
        check("http_proxy", "ftp://user:pw-SECRET@h:21/path", "http_proxy=\"ftp://h:21\": this scheme");
        check("HTTP_PROXY", "http://user:pw-SECRET@/path", "HTTP_PROXY=\"http://\": not a proxy URL");
        check("HTTP_PROXY", "http://h:99999/path", "HTTP_PROXY=\"http://h:99999\": invalid port");
        check("HTTP_PROXY", "http://h:0", "HTTP_PROXY=\"http://h:0\": invalid port");
        check("HTTP_PROXY", "http://[::1", "HTTP_PROXY=\"http://[::1\": not a proxy URL");
        check("HTTPS_PROXY", "http://user:pw/SECRET@proxy:3128", "HTTPS_PROXY: the proxy URL has an '@' after");
        check("HTTPS_PROXY", "http://user:pw?SECRET@proxy:3128", "HTTPS_PROXY: the proxy URL has an '@' after");
        let e = Proxies::from_env(&Env::from_pairs(&[("HTTPS_PROXY", "socks5://h:1")])).check().expect_err("refused");
        assert_eq!(e.exit(), crate::exit::Exit::Config);
        // Only the variable in use is read: a lower-case value behind an upper-case one is ignored.
        let env = Env::from_pairs(&[("HTTPS_PROXY", "http://p:1"), ("https_proxy", "socks5://h:1")]);
        assert!(Proxies::from_env(&env).check().is_ok());
    }

    #[test]
    fn no_proxy_entries_parse() {
        fn check(entry: &str, expected: Option<NoProxy>) {
            assert_eq!(parse_entry(entry), expected, "{entry:?}");
        }
        let v6 = |text: &str| text.parse::<Ipv6Addr>().expect("a test address");
        let v4 = |text: &str| text.parse::<Ipv4Addr>().expect("a test address").to_ipv6_mapped();
        check("[::1]:8000", Some(NoProxy::Range(v6("::1"), 128, Some(8000))));
        check("[::1]", Some(NoProxy::Range(v6("::1"), 128, None)));
        check("::1", Some(NoProxy::Range(v6("::1"), 128, None)));
        check("[fd00::]/8", Some(NoProxy::Range(v6("fd00::"), 8, None)));
        check("[fd00::]/8:443", Some(NoProxy::Range(v6("fd00::"), 8, Some(443))));
        check("fd00::/8", Some(NoProxy::Range(v6("fd00::"), 8, None)));
        check("10.0.0.0/8", Some(NoProxy::Range(v4("10.0.0.0"), 104, None)));
        check("10.0.0.0/8:80", Some(NoProxy::Range(v4("10.0.0.0"), 104, Some(80))));
        check("10.1.2.3", Some(NoProxy::Range(v4("10.1.2.3"), 128, None)));
        check("example.com:8443", Some(NoProxy::Domain("example.com".into(), Some(8443))));
        check("*.Example.com.", Some(NoProxy::Domain("example.com".into(), None)));
        check("*", Some(NoProxy::All));
        for bad in ["", "[fd00::", "[fd00::]x", "[fd00::]/x", "[::1]:x", "host:x", "10.0.0.0/33", "fd00::/129", "a/b"] {
            check(bad, None);
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
        // An `@` after a `/`, `?` or `#` is most likely a password holding that character unencoded: such a URL
        // counts as holding userinfo, and is shown without anything before its last `@`.
        for url in
            ["https://h/a@b", "http://user:pa/ss@127.0.0.1:9/", "http://u:p?w@h", "http://u:p#w@h", "http:/u:pw@h"]
        {
            assert!(has_userinfo(url), "{url}");
            let shown = endpoint_for_messages(url);
            assert!(
                !shown.contains("pa/ss") && !shown.contains("p?w") && !shown.contains("p#w") && !shown.contains("pw"),
                "{shown}"
            );
        }
        assert_eq!(endpoint_for_messages("http://user:pa/ss@127.0.0.1:9/"), "http://127.0.0.1:9/");
        assert_eq!(endpoint_for_messages("http:/u:pw@h:1"), "http://h:1");
        assert_eq!(endpoint_for_messages("http://h:1/x"), "http://h:1/x");
        let debug = format!("{:?}", Proxies::from_env(&Env::from_pairs(&[("HTTPS_PROXY", "http://u:pw@p:1")])));
        assert!(!debug.contains("pw") && debug.contains("http://p:1"), "{debug}");
    }
}
