//! The one HTTP client of a run: a keep-alive `ureq` agent with timeouts, and bodies read whatever the status.
//!
//! Tests can point every request at a local server with [`Http::redirect_to`], which keeps the path and query
//! and replaces scheme, host and port (used to replay recorded exchanges with AWS hosts on 127.0.0.1).

use std::time::Duration;

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

    /// A short excerpt of the body for error messages: one line, at most 200 characters.
    pub fn excerpt(&self) -> String {
        let flat: String = self.body.split_whitespace().collect::<Vec<_>>().join(" ");
        match flat.char_indices().nth(200) {
            Some((cut, _)) => format!("{}...", &flat[..cut]),
            None => flat,
        }
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

/// The HTTP client.
#[derive(Debug, Clone)]
pub struct Http {
    agent: ureq::Agent,
    redirect: Option<String>,
}

/// Connect timeout for every request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

impl Default for Http {
    fn default() -> Self {
        Http::new()
    }
}

impl Http {
    /// A client with keep-alive, a connect timeout, and no status-as-error conversion.
    pub fn new() -> Http {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .max_redirects(0)
            .user_agent(concat!("lock-exec/", env!("CARGO_PKG_VERSION")))
            .build();
        Http { agent: config.into(), redirect: None }
    }

    /// Sends every request to `base` (`http://127.0.0.1:PORT`) instead of the URL's own scheme and host.
    pub fn redirect_to(mut self, base: impl Into<String>) -> Http {
        self.redirect = Some(base.into());
        self
    }

    /// Sends a request and reads the whole response, whatever its status.
    pub fn send(&self, request: &Request<'_>) -> Result<Response, Error> {
        let url = match &self.redirect {
            Some(base) => format!("{}{}", base.trim_end_matches('/'), path_and_query(request.url)),
            None => request.url.to_owned(),
        };
        let transport = |source: ureq::Error| Error::Transport {
            target: format!("{} at {}", request.target, request.url),
            source: Box::new(source),
        };
        let mut builder = http_request(request.method, &url)
            .map_err(|e| Error::Config(format!("invalid URL for {}: {:?}: {e}", request.target, request.url)))?;
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let built = if request.body.is_empty() {
            builder.body(()).map(|r| self.agent.run(configure(&self.agent, r, request.timeout)))
        } else {
            builder.body(request.body.to_vec()).map(|r| self.agent.run(configure(&self.agent, r, request.timeout)))
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
        let bytes = response.body_mut().with_config().limit(1024 * 1024).read_to_vec().map_err(transport)?;
        Ok(Response { status, headers, body: String::from_utf8_lossy(&bytes).into_owned() })
    }
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
        let r = Response { status: 500, headers: vec![], body: format!("<html>\n  {}\n</html>", "x".repeat(500)) };
        let e = r.excerpt();
        assert!(e.len() <= 203 && e.ends_with("...") && !e.contains('\n'), "{e}");
    }
}
