//! The one HTTP client of a run: keep-alive `ureq` agents with timeouts, bodies read whatever the status, proxies
//! chosen by [`Proxies`] (never ureq's own reading of the environment), and names resolved on the calling thread.
//!
//! ureq's agent holds its proxy, so there is one direct agent and one agent per proxy URL actually used, built
//! when first needed; each keeps its connections alive. Names are resolved by [`LocalResolver`]: IP literals are
//! parsed, other names resolved with the standard library on the calling thread; a name that does not resolve is
//! one error naming the host and the files consulted (`/etc/hosts`, `/etc/resolv.conf`, and which are missing). No
//! thread is ever started here (lock-exec starts none after it has started the command).
//!
//! Tests can point every request at a local server with [`Http::redirect_to`], which keeps the path and query
//! and replaces scheme, host and port (used to replay recorded exchanges with AWS hosts on 127.0.0.1).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{Buffers, ConnectionDetails, Connector, DefaultConnector, NextTimeout, Transport};

use crate::aws::proxy::{Proxies, host_and_port, without_userinfo};
use crate::aws::redact;
use crate::env::Env;
use crate::error::Error;

/// One HTTP response, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names (lowercase) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy UTF-8).
    pub body: String,
}

impl Response {
    /// The first value of a header, by lowercase name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The body for an error message: `secrets` redacted first, then flattened to one line and cut to
    /// [`redact::MESSAGE_LIMIT`] characters (see [`redact::quote`]).
    pub fn excerpt(&self, secrets: &[&str]) -> String {
        redact::quote(&self.body, secrets)
    }
}

/// A request to send.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `GET`, `PUT` or `POST`.
    pub method: &'a str,
    /// The full URL.
    pub url: &'a str,
    /// Headers to send (the agent adds `host` and `content-length`).
    pub headers: Vec<(String, String)>,
    /// The body (empty for GET).
    pub body: &'a [u8],
    /// Whole-request timeout.
    pub timeout: Duration,
    /// What we are talking to, for error messages (`dynamodb`, `imds`, ...).
    pub target: &'a str,
}

/// The HTTP client. Clones share agents and their connections.
#[derive(Debug, Clone)]
pub struct Http {
    direct: ureq::Agent,
    /// The roots TLS trusts: `None` for the bundled Mozilla roots, or a CA bundle (`AWS_CA_BUNDLE`).
    roots: Option<Arc<Vec<Certificate<'static>>>>,
    proxies: Arc<Proxies>,
    /// Agents built for proxy URLs so far (a run uses one or two).
    proxied: Arc<Mutex<Vec<(String, ureq::Agent)>>>,
    redirect: Option<String>,
}

/// Each connection's input and output buffer (ureq's default is 128 KiB each, zeroed when the connection opens).
/// A response's status line and headers must fit in the input buffer: ureq's own limit for them (64 KiB) is set
/// just below it, or a larger head would fill the buffer and end as "Peer disconnected".
const BUFFER_SIZE: usize = 16 * 1024;

/// Connect timeout for every request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

impl Default for Http {
    fn default() -> Self {
        Http::new()
    }
}

impl Http {
    /// A client with keep-alive, a connect timeout, no status-as-error conversion, and no proxy.
    pub fn new() -> Http {
        Http::with_proxies(Proxies::none())
    }

    /// A client that uses the proxies `env` names (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`; see
    /// [`crate::aws::proxy`]).
    pub fn from_env(env: &Env) -> Http {
        Http::with_proxies(Proxies::from_env(env))
    }

    /// A client over these proxy settings.
    pub fn with_proxies(proxies: Proxies) -> Http {
        Http {
            direct: agent(None, None),
            roots: None,
            proxies: Arc::new(proxies),
            proxied: Arc::new(Mutex::new(Vec::new())),
            redirect: None,
        }
    }

    /// The same client trusting only the certificates of `bundle` (a CA bundle) instead of the bundled roots, for
    /// every HTTPS connection, to a proxy or through it. Agents built so far are replaced.
    pub fn with_roots(self, bundle: CaBundle) -> Http {
        let roots = Some(Arc::new(bundle.certificates));
        Http {
            direct: agent(None, roots.clone()),
            roots,
            proxies: self.proxies,
            proxied: Arc::new(Mutex::new(Vec::new())),
            redirect: self.redirect,
        }
    }

    /// Sends every request to `base` (`http://127.0.0.1:PORT`) instead of the URL's own scheme and host.
    pub fn redirect_to(mut self, base: impl Into<String>) -> Http {
        self.redirect = Some(base.into());
        self
    }

    /// The same client without any proxy, whatever the variables say: for the instance metadata service, whose
    /// plain-http answers hold credentials, at whatever endpoint it is configured.
    pub fn direct(&self) -> Http {
        Http { proxies: Arc::new(Proxies::none()), proxied: Arc::new(Mutex::new(Vec::new())), ..self.clone() }
    }

    /// The proxy a request to `url` would go through (its URL without user name or password), `None` when direct.
    pub fn proxy_for(&self, url: &str) -> Option<String> {
        self.proxies.for_url(url).map(without_userinfo)
    }

    /// The agent for `url`, and the proxy it goes through (for messages, without userinfo).
    fn agent_for(&self, url: &str, target: &str) -> Result<(ureq::Agent, Option<String>), Error> {
        let Some(proxy_url) = self.proxies.for_url(url) else { return Ok((self.direct.clone(), None)) };
        let shown = without_userinfo(proxy_url);
        let mut proxied = self.proxied.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, agent)) = proxied.iter().find(|(u, _)| u == proxy_url) {
            return Ok((agent.clone(), Some(shown)));
        }
        let proxy = ureq::Proxy::new(proxy_url).map_err(|e| {
            Error::Config(format!("invalid proxy URL {shown:?} (HTTPS_PROXY / HTTP_PROXY) for {target}: {e}"))
        })?;
        let built = agent(Some(proxy), self.roots.clone());
        proxied.push((proxy_url.to_owned(), built.clone()));
        Ok((built, Some(shown)))
    }

    /// Sends a request and reads the whole response, whatever its status, up to [`RESPONSE_LIMIT`] bytes.
    pub fn send(&self, request: &Request<'_>) -> Result<Response, Error> {
        self.send_with_limit(request, RESPONSE_LIMIT)
    }

    /// [`Http::send`] with a response body of up to `limit` bytes (a longer one is a transport error).
    pub fn send_with_limit(&self, request: &Request<'_>, limit: u64) -> Result<Response, Error> {
        let url = match &self.redirect {
            Some(base) => format!("{}{}", base.trim_end_matches('/'), path_and_query(request.url)),
            None => request.url.to_owned(),
        };
        let (agent, proxy) = self.agent_for(&url, request.target)?;
        let shown_url = without_userinfo(request.url);
        let transport = |source: ureq::Error| Error::Transport {
            target: match &proxy {
                Some(proxy) => format!("{} at {shown_url} through proxy {proxy}", request.target),
                None => format!("{} at {shown_url}", request.target),
            },
            sent: may_have_been_sent(&source),
            source: transport_source(source, request.timeout),
        };
        let mut builder = http_request(request.method, &url)
            .map_err(|e| Error::Config(format!("invalid URL for {}: {shown_url:?}: {e}", request.target)))?;
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let built = if request.body.is_empty() {
            builder.body(()).map(|r| agent.run(configure(&agent, r, request.timeout)))
        } else {
            builder.body(request.body.to_vec()).map(|r| agent.run(configure(&agent, r, request.timeout)))
        };
        let mut response = built
            .map_err(|e| Error::Config(format!("invalid request for {}: {e}", request.target)))?
            .map_err(transport)?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_ascii_lowercase(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let bytes = response.body_mut().with_config().limit(limit).read_to_vec().map_err(transport)?;
        Ok(Response { status, headers, body: String::from_utf8_lossy(&bytes).into_owned() })
    }
}

/// The largest response body [`Http::send`] reads.
pub const RESPONSE_LIMIT: u64 = 1024 * 1024;

/// An agent with keep-alive, the connect timeout, no status-as-error conversion, `proxy` or none (ureq's own
/// reading of the proxy variables is off), TLS trusting `roots` (the bundled Mozilla roots when `None`), and the
/// [`LocalResolver`].
fn agent(proxy: Option<ureq::Proxy>, roots: Option<Arc<Vec<Certificate<'static>>>>) -> ureq::Agent {
    let roots = roots.map_or(RootCerts::WebPki, RootCerts::Specific);
    let config = ureq::Agent::config_builder()
        .tls_config(
            TlsConfig::builder()
                .root_certs(roots)
                .unversioned_rustls_crypto_provider(crate::aws::tls::provider())
                .build(),
        )
        .http_status_as_error(false)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .max_redirects(0)
        .input_buffer_size(BUFFER_SIZE)
        .output_buffer_size(BUFFER_SIZE)
        .max_response_header_size(BUFFER_SIZE - 1)
        .proxy(proxy)
        .user_agent(concat!("lock-exec/", env!("CARGO_PKG_VERSION")))
        .build();
    ureq::Agent::with_parts(config, DefaultConnector::default().chain(OneWrite), LocalResolver)
}

/// Wraps every connection (plain or TLS, direct or proxied) in [`OneWriteTransport`].
#[derive(Debug, Clone, Copy)]
struct OneWrite;

impl<In: Transport> Connector<In> for OneWrite {
    type Out = OneWriteTransport<In>;

    fn connect(&self, _: &ConnectionDetails, chained: Option<In>) -> Result<Option<Self::Out>, ureq::Error> {
        Ok(chained.map(|inner| OneWriteTransport { inner, pending: Vec::new() }))
    }
}

/// Sends what ureq writes in one go once it waits for the answer: a request's head and body leave in one write
/// (one TCP segment for a small request) instead of two, as curl and Python's http.client send them. Output is
/// held back until ureq waits for input, or until it fills the connection's output buffer.
#[derive(Debug)]
struct OneWriteTransport<T> {
    inner: T,
    pending: Vec<u8>,
}

impl<T: Transport> OneWriteTransport<T> {
    /// Sends what is held back, an output buffer at a time, and returns what is left of `timeout`: ureq computed
    /// it before the output was sent, and each write and the wait that follows get only what the ones before left.
    fn flush(&mut self, timeout: NextTimeout) -> Result<NextTimeout, ureq::Error> {
        if self.pending.is_empty() {
            return Ok(timeout);
        }
        let started = std::time::Instant::now();
        let mut sent = 0;
        while sent < self.pending.len() {
            let left = remaining(timeout, started.elapsed())?;
            let output = self.inner.buffers().output();
            let n = output.len().min(self.pending.len() - sent);
            output[..n].copy_from_slice(&self.pending[sent..sent + n]);
            self.inner.transmit_output(n, left)?;
            sent += n;
        }
        self.pending.clear();
        remaining(timeout, started.elapsed())
    }
}

/// `timeout` less `elapsed`; a timeout error (with its reason) when nothing is left. A transport given a zero
/// budget would not fail at once: ureq's TLS transport waits a second instead.
fn remaining(mut timeout: NextTimeout, elapsed: Duration) -> Result<NextTimeout, ureq::Error> {
    use ureq::unversioned::transport::time::Duration as Budget;
    if let Budget::Exact(after) = timeout.after {
        let left = after.saturating_sub(elapsed);
        if left.is_zero() {
            return Err(ureq::Error::Timeout(timeout.reason));
        }
        timeout.after = Budget::Exact(left);
    }
    Ok(timeout)
}

impl<T: Transport> Transport for OneWriteTransport<T> {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let output = self.inner.buffers().output();
        let capacity = output.len();
        self.pending.extend_from_slice(&output[..amount]);
        if self.pending.len() >= capacity { self.flush(timeout).map(drop) } else { Ok(()) }
    }

    fn maybe_await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let left = self.flush(timeout)?;
        self.inner.maybe_await_input(left)
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let left = self.flush(timeout)?;
        self.inner.await_input(left)
    }

    fn is_open(&mut self) -> bool {
        self.inner.is_open()
    }

    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}

/// The certificates of a CA bundle file (PEM), which replace the bundled roots (as `AWS_CA_BUNDLE` does for the
/// AWS CLI and the Go SDK).
#[derive(Debug, Clone)]
pub struct CaBundle {
    certificates: Vec<Certificate<'static>>,
    /// The certificates left out as unusable: `certificate N of ORIGIN: REASON`, for a warning.
    pub skipped: Vec<String>,
}

/// The largest CA bundle read (Debian's whole system bundle is about 220 KiB).
pub const CA_BUNDLE_LIMIT: u64 = 4 * 1024 * 1024;

impl CaBundle {
    /// The certificates in PEM `text` (other PEM sections, such as keys, are skipped); `origin` names the file
    /// and the setting that named it, for errors.
    pub fn parse(text: &str, origin: &str) -> Result<CaBundle, Error> {
        let (mut certificates, mut skipped, mut seen) = (Vec::new(), Vec::new(), 0);
        for item in ureq::tls::parse_pem(text.as_bytes()) {
            match item {
                Ok(PemItem::Certificate(certificate)) => {
                    // One that rustls cannot use as a root is left out, as the TLS library would do silently
                    // (and the Go SDK does), but said: a bundle of nothing usable is an error below, not every
                    // connection failing as if the server were at fault.
                    seen += 1;
                    let mut store = rustls::RootCertStore::empty();
                    match store.add(rustls::pki_types::CertificateDer::from(certificate.der())) {
                        Ok(()) => certificates.push(certificate),
                        Err(e) => {
                            let reason = e.to_string();
                            let reason = reason.strip_prefix("invalid peer certificate: ").unwrap_or(&reason);
                            skipped.push(format!("certificate {seen} of CA bundle {origin}: {reason}"));
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(Error::Config(format!("CA bundle {origin}: not valid PEM: {e}"))),
            }
        }
        if seen == 0 {
            return Err(Error::Config(format!(
                "CA bundle {origin}: no certificate in it (expected PEM \"-----BEGIN CERTIFICATE-----\" blocks)"
            )));
        }
        if certificates.is_empty() {
            return Err(Error::Config(format!(
                "CA bundle {origin}: none of its {seen} certificates is a usable X.509 certificate ({})",
                skipped.join("; ")
            )));
        }
        Ok(CaBundle { certificates, skipped })
    }

    /// How many certificates the bundle holds.
    pub fn len(&self) -> usize {
        self.certificates.len()
    }

    /// Whether the bundle holds none (never true for a parsed bundle).
    pub fn is_empty(&self) -> bool {
        self.certificates.is_empty()
    }
}

/// Resolves names without starting a thread: IP literals are parsed, `localhost` is loopback, other names looked up with the standard
/// library on the calling thread (the connect and request timeouts still bound the exchange; a lookup itself is
/// bounded by the system resolver's own timeouts). ureq's default resolver starts a thread per lookup.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalResolver;

impl Resolver for LocalResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let addresses = resolve_uri(uri)?;
        let mut result = self.empty();
        for address in config.ip_family().keep_wanted(addresses.into_iter()).take(16) {
            result.push(address);
        }
        if result.is_empty() {
            Err(Unresolved::error(bare_host(uri.host().unwrap_or_default()), None))
        } else {
            Ok(result)
        }
    }
}

/// A host name the system resolver found no address for. The message names the files the C library consulted,
/// and says which are missing (a `FROM scratch` image often has neither; without `/etc/resolv.conf` the C library
/// asks a name server on 127.0.0.1, which usually ends in its timeout).
#[derive(Debug)]
struct Unresolved {
    host: String,
    /// The resolver's own reason (`Name does not resolve`, `Try again`), when it gave one.
    reason: Option<String>,
    /// Which of `/etc/hosts` and `/etc/resolv.conf` were missing.
    missing: Vec<&'static str>,
    /// Which of them exist but could not be read (permissions, a directory).
    unreadable: Vec<&'static str>,
}

impl Unresolved {
    /// The ureq error carrying it; [`transport_source`] takes it out again so the message has no `io:` prefix.
    fn error(host: &str, reason: Option<String>) -> ureq::Error {
        // The real files, not `Env`'s: they are what the C library read.
        let (mut missing, mut unreadable) = (Vec::new(), Vec::new());
        for path in ["/etc/hosts", "/etc/resolv.conf"] {
            match std::fs::read(path) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing.push(path),
                Err(_) => unreadable.push(path),
            }
        }
        let unresolved = Unresolved { host: host.to_owned(), reason, missing, unreadable };
        ureq::Error::Io(std::io::Error::new(std::io::ErrorKind::NotFound, unresolved))
    }
}

impl std::fmt::Display for Unresolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot resolve host {:?}: no address found in /etc/hosts or by DNS", self.host)?;
        let mut files = Vec::new();
        if !self.missing.is_empty() {
            files.push(format!("{} missing", self.missing.join(" and ")));
        }
        if !self.unreadable.is_empty() {
            files.push(format!("{} not readable", self.unreadable.join(" and ")));
        }
        if !files.is_empty() {
            write!(f, " ({})", files.join("; "))?;
        }
        match &self.reason {
            Some(reason) => write!(f, ": {reason}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for Unresolved {}

/// Whether a request that failed with `error` may have reached the server: not when no connection to it (or to
/// its proxy) was made, so no byte of the request was written.
fn may_have_been_sent(error: &ureq::Error) -> bool {
    use ureq::Timeout::{Connect, Resolve};
    match error {
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed | ureq::Error::ConnectProxyFailed(_) => false,
        ureq::Error::Timeout(Resolve | Connect) => false,
        ureq::Error::Io(io) => {
            io.kind() != std::io::ErrorKind::ConnectionRefused && !io.get_ref().is_some_and(|e| e.is::<Unresolved>())
        }
        _ => true,
    }
}

/// The source of a transport error: an [`Unresolved`] on its own (no `io:` prefix), any other error as it is.
fn transport_source(error: ureq::Error, timeout: Duration) -> Box<dyn std::error::Error + Send + Sync> {
    match error {
        // ureq says `timeout: global`: say what it means.
        ureq::Error::Timeout(_) => Box::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {:.1} s", timeout.as_secs_f64()),
        )),
        // ureq says `response header is too big: 16384 > 16383`.
        ureq::Error::LargeResponseHeader(..) => Box::new(std::io::Error::other(format!(
            "response headers larger than {} KiB (the most lock-exec reads)",
            BUFFER_SIZE / 1024
        ))),
        ureq::Error::Io(io) => match io.downcast::<Unresolved>() {
            Ok(unresolved) => Box::new(unresolved),
            Err(io) => match refused_handshake(&io) {
                Some(alert) => Box::new(std::io::Error::other(format!(
                    "received fatal alert: {alert:?}: the server agreed to none of what lock-exec offers (TLS 1.3 \
                     and 1.2 with AES-GCM cipher suites only, key exchange over X25519, P-256 or P-384)"
                ))),
                None => Box::new(ureq::Error::Io(io)),
            },
        },
        other => Box::new(other),
    }
}

/// The server's alert when it refused the TLS handshake outright: most often it shares no cipher suite or key
/// exchange group with lock-exec's (AES-GCM only, see [`crate::aws::tls`]), which the alert alone does not say.
fn refused_handshake(error: &std::io::Error) -> Option<rustls::AlertDescription> {
    use rustls::AlertDescription::{HandshakeFailure, InsufficientSecurity};
    match error.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(alert @ (HandshakeFailure | InsufficientSecurity)) => Some(*alert),
        _ => None,
    }
}

/// The addresses of a URI's host and port (the scheme's default port when none is given).
fn resolve_uri(uri: &ureq::http::Uri) -> Result<Vec<SocketAddr>, ureq::Error> {
    let default_port = match uri.scheme_str() {
        Some(scheme) if scheme.eq_ignore_ascii_case("https") => 443,
        Some(scheme) if scheme.eq_ignore_ascii_case("http") => 80,
        other => return Err(ureq::Error::BadUri(format!("unsupported scheme {other:?}"))),
    };
    let authority = uri.authority().ok_or_else(|| ureq::Error::BadUri("no host".into()))?;
    let port = authority.port_u16().unwrap_or(default_port);
    let bare = bare_host(authority.host());
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    // RFC 6761 6.3: `localhost` and names below it are the loopback addresses, whatever /etc/hosts or DNS say
    // (as curl and the browsers do): a local emulator works in an image without /etc/hosts, and the proxy
    // rules, which treat these names as loopback, hold for what is actually connected to.
    let lower = bare.trim_end_matches('.').to_ascii_lowercase();
    if lower == "localhost" || lower.ends_with(".localhost") {
        let loopback = [IpAddr::from([127, 0, 0, 1]), IpAddr::from(std::net::Ipv6Addr::LOCALHOST)];
        return Ok(loopback.into_iter().map(|ip| SocketAddr::new(ip, port)).collect());
    }
    match (bare, port).to_socket_addrs() {
        Ok(addresses) => Ok(addresses.collect()),
        Err(e) => {
            // std says "failed to lookup address information: REASON"; the message says the first part already.
            let text = e.to_string();
            let reason = text.strip_prefix("failed to lookup address information: ").unwrap_or(&text);
            Err(Unresolved::error(bare, Some(reason.to_owned())))
        }
    }
}

/// A URI host without the brackets of an IPv6 literal.
fn bare_host(host: &str) -> &str {
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

fn configure<S: ureq::AsSendBody>(
    agent: &ureq::Agent,
    request: ureq::http::Request<S>,
    timeout: Duration,
) -> ureq::http::Request<S> {
    agent.configure_request(request).timeout_global(Some(timeout)).build()
}

fn http_request(method: &str, url: &str) -> Result<ureq::http::request::Builder, String> {
    let uri: ureq::http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    if uri.host().is_none() {
        return Err("no host".into());
    }
    Ok(ureq::http::Request::builder().method(method).uri(uri))
}

/// The path and query of a URL (`/` when it has none).
pub fn path_and_query(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    match rest.find('/') {
        Some(i) => &rest[i..],
        None => "/",
    }
}

/// The host of a URL (lowercase, without brackets), for logs and checks; `None` when it has none.
pub fn host_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let default_port = if scheme.eq_ignore_ascii_case("https") { 443 } else { 80 };
    host_and_port(rest, default_port).map(|(host, _)| host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_query_is_split_off() {
        assert_eq!(path_and_query("https://sts.amazonaws.com/"), "/");
        assert_eq!(path_and_query("http://169.254.169.254/latest/api/token"), "/latest/api/token");
        assert_eq!(path_and_query("http://h:1/a?b=c"), "/a?b=c");
        assert_eq!(path_and_query("http://h:1"), "/");
    }

    #[test]
    fn excerpt_is_one_short_line() {
        let r = Response { status: 500, headers: vec![], body: format!("<html>\n  {}\n</html>", "x".repeat(900)) };
        let e = r.excerpt(&[]);
        assert!(e.chars().count() <= 515 && e.ends_with("...") && !e.contains('\n'), "{e}");
    }

    fn one_second() -> NextTimeout {
        NextTimeout {
            after: ureq::unversioned::transport::time::Duration::from(Duration::from_secs(1)),
            reason: ureq::Timeout::Resolve,
            per_read: None,
            per_write: None,
        }
    }

    fn resolve(url: &str) -> Result<Vec<SocketAddr>, ureq::Error> {
        let uri: ureq::http::Uri = url.parse().expect("a test URL");
        let config = ureq::config::Config::default();
        LocalResolver.resolve(&uri, &config, one_second()).map(|addrs| addrs.iter().copied().collect())
    }

    /// A transport that records each write it is asked for (each taking `write_time`) and the budget of each wait.
    #[derive(Debug)]
    struct Recorder {
        buffers: ureq::unversioned::transport::LazyBuffers,
        writes: Vec<Vec<u8>>,
        write_time: Duration,
        awaited: usize,
        wait_budgets: Vec<Duration>,
    }

    impl Recorder {
        fn new(buffer: usize, write_time: Duration) -> Recorder {
            Recorder {
                buffers: ureq::unversioned::transport::LazyBuffers::new(buffer, buffer),
                writes: Vec::new(),
                write_time,
                awaited: 0,
                wait_budgets: Vec::new(),
            }
        }
    }

    impl Transport for Recorder {
        fn buffers(&mut self) -> &mut dyn Buffers {
            &mut self.buffers
        }
        fn transmit_output(&mut self, amount: usize, _: NextTimeout) -> Result<(), ureq::Error> {
            std::thread::sleep(self.write_time);
            self.writes.push(self.buffers.output()[..amount].to_vec());
            Ok(())
        }
        fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
            self.awaited += 1;
            self.wait_budgets.push(*timeout.after);
            Ok(true)
        }
        fn is_open(&mut self) -> bool {
            true
        }
    }

    /// What ureq does for a request: writes `chunks` one by one through the output buffer, then waits.
    fn send(chunks: &[&[u8]], buffer: usize) -> Recorder {
        let recorder = Recorder::new(buffer, Duration::ZERO);
        let mut transport = OneWriteTransport { inner: recorder, pending: Vec::new() };
        for chunk in chunks {
            transport.buffers().output()[..chunk.len()].copy_from_slice(chunk);
            transport.transmit_output(chunk.len(), one_second()).expect("a recorded write");
        }
        assert!(transport.inner.writes.len() <= chunks.len(), "nothing is sent twice");
        transport.await_input(one_second()).expect("a recorded wait");
        transport.inner
    }

    #[test]
    fn head_and_body_leave_in_one_write_when_the_answer_is_awaited() {
        let sent = send(&[b"POST / HTTP/1.1\r\n\r\n", b"{\"Key\":1}"], 64);
        assert_eq!(sent.writes, [b"POST / HTTP/1.1\r\n\r\n{\"Key\":1}".to_vec()]);
        assert_eq!(sent.awaited, 1);
    }

    #[test]
    fn output_beyond_the_buffer_goes_out_a_buffer_at_a_time() {
        let head = [b'h'; 10];
        let body = [b'b'; 12];
        let sent = send(&[&head, &body], 16);
        let all: Vec<u8> = sent.writes.concat();
        assert_eq!(all, [&head[..], &body[..]].concat(), "every byte, in order");
        assert!(sent.writes.iter().all(|write| write.len() <= 16), "{:?}", sent.writes);
        assert_eq!(sent.awaited, 1);
    }

    /// A wait after held output took time to leave has only what is left of the budget: ureq computed that budget
    /// before the output was sent, and a request must not last longer than its timeout.
    #[test]
    fn the_wait_after_a_slow_write_has_only_the_rest_of_the_budget() {
        let budget = |after: Duration| NextTimeout {
            after: ureq::unversioned::transport::time::Duration::from(after),
            reason: ureq::Timeout::RecvResponse,
            per_read: None,
            per_write: None,
        };
        let slow = |write_time: Duration| {
            let mut transport = OneWriteTransport { inner: Recorder::new(64, write_time), pending: Vec::new() };
            transport.buffers().output()[..4].copy_from_slice(b"POST");
            transport.transmit_output(4, budget(Duration::from_secs(1))).expect("held back");
            transport
        };
        let mut transport = slow(Duration::from_millis(300));
        transport.await_input(budget(Duration::from_millis(1000))).expect("time left to wait");
        let waited = transport.inner.wait_budgets[0];
        assert!(waited <= Duration::from_millis(700), "the wait got {waited:?} of a 1 s budget after a 300 ms write");
        // A write that used the whole budget leaves none: a timeout, not a wait with a fresh budget.
        let mut transport = slow(Duration::from_millis(150));
        let error = transport.maybe_await_input(budget(Duration::from_millis(100))).expect_err("no time left");
        assert!(matches!(error, ureq::Error::Timeout(ureq::Timeout::RecvResponse)), "{error:?}");
        assert_eq!(transport.inner.awaited, 0);
    }

    /// A GET to a local server whose answer carries a header of `size` bytes: the body, or the error chain.
    fn get_with_header_of(size: usize) -> Result<String, String> {
        use crate::aws::test_http::{Server, read_request, write_response};
        let mut server = Server::start(move |stream| {
            let _ = read_request(&stream);
            let _ = write_response(&stream, 200, &[("x-large", "a".repeat(size))], "{}");
        });
        let url = format!("{}/", server.base());
        let request = Request {
            method: "GET",
            url: &url,
            headers: Vec::new(),
            body: b"",
            timeout: Duration::from_secs(5),
            target: "test server",
        };
        let result = Http::new().send(&request).map(|response| response.body).map_err(|e| crate::error_chain(&e));
        server.stop();
        result
    }

    #[test]
    fn response_headers_larger_than_the_input_buffer_are_named_as_such() {
        assert_eq!(get_with_header_of(BUFFER_SIZE / 2), Ok("{}".to_owned()));
        // Between the input buffer and ureq's own header limit (64 KiB) the buffer fills up and ureq saw
        // "Peer disconnected"; beyond it, ureq's "response header is too big".
        for size in [BUFFER_SIZE, 2 * BUFFER_SIZE, 70 * 1024] {
            let error = get_with_header_of(size).expect_err("a header larger than the input buffer");
            assert!(error.contains("response headers larger than 16 KiB"), "{size}: {error}");
            assert!(!error.contains("disconnected"), "{size}: {error}");
        }
    }

    #[test]
    fn a_refused_handshake_names_what_lock_exec_offers() {
        let tls = |error: rustls::Error| {
            let io = std::io::Error::new(std::io::ErrorKind::InvalidData, error);
            transport_source(ureq::Error::Io(io), Duration::from_secs(5)).to_string()
        };
        let refused = tls(rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure));
        assert!(refused.starts_with("received fatal alert: HandshakeFailure: the server agreed to none"), "{refused}");
        assert!(refused.contains("AES-GCM") && refused.contains("X25519") && !refused.contains('\n'), "{refused}");
        // Other TLS errors are left as they are.
        let other = tls(rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate));
        assert_eq!(other, "io: received fatal alert: BadCertificate");
    }

    #[test]
    fn unresolved_host_names_the_files_consulted() {
        let unresolved = |reason: Option<&str>, missing: Vec<&'static str>| {
            let reason = reason.map(str::to_owned);
            Unresolved { host: "db.internal".into(), reason, missing, unreadable: Vec::new() }.to_string()
        };
        let prefix = "cannot resolve host \"db.internal\": no address found in /etc/hosts or by DNS";
        assert_eq!(unresolved(Some("Name does not resolve"), vec![]), format!("{prefix}: Name does not resolve"));
        assert_eq!(unresolved(None, vec!["/etc/resolv.conf"]), format!("{prefix} (/etc/resolv.conf missing)"));
        assert_eq!(
            unresolved(Some("Try again"), vec!["/etc/hosts", "/etc/resolv.conf"]),
            format!("{prefix} (/etc/hosts and /etc/resolv.conf missing): Try again")
        );
        let unreadable = Unresolved {
            host: "db.internal".into(),
            reason: Some("Try again".into()),
            missing: vec!["/etc/resolv.conf"],
            unreadable: vec!["/etc/hosts"],
        };
        assert_eq!(
            unreadable.to_string(),
            format!("{prefix} (/etc/resolv.conf missing; /etc/hosts not readable): Try again")
        );
        // A transport error's source is the message itself, without ureq's `io:` prefix.
        let source = transport_source(Unresolved::error("db.internal", None), Duration::from_secs(5)).to_string();
        assert!(source.starts_with(prefix), "{source}");
        let other =
            transport_source(ureq::Error::Io(std::io::Error::other("reset")), Duration::from_secs(5)).to_string();
        assert_eq!(other, "io: reset");
    }

    #[test]
    fn ip_literals_and_localhost_resolve_on_this_thread() {
        assert_eq!(resolve("http://127.0.0.1:8000/").expect("v4"), vec!["127.0.0.1:8000".parse().expect("addr")]);
        assert_eq!(resolve("https://[::1]/").expect("v6"), vec!["[::1]:443".parse().expect("addr")]);
        assert_eq!(resolve("http://169.254.169.254/").expect("imds"), vec!["169.254.169.254:80".parse().expect("a")]);
        let local = resolve("http://localhost:9/").expect("localhost resolves without the system");
        assert_eq!(local, vec!["127.0.0.1:9".parse().expect("addr"), "[::1]:9".parse().expect("addr")]);
        let below = resolve("http://Dynamo.LocalHost.:9/").expect("names below localhost too");
        assert_eq!(below, local);
        assert!(matches!(resolve("ftp://127.0.0.1/"), Err(ureq::Error::BadUri(_))));
    }
}
