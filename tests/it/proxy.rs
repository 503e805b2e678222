//! What leaves the machine, and through which proxy: loopback and credential endpoints never go through a proxy,
//! other hosts go through the one of their scheme, transport errors name the proxy (without its password).
//! Also the hygiene of error messages built from remote answers: no prefix of an echoed secret survives, control
//! characters do not reach the terminal, URLs with a user name or password are refused and never printed.
//!
//! Traffic only ever goes to 127.0.0.1: the recording proxy below answers `CONNECT` itself and tunnels only to
//! 127.0.0.1 (the made-up host `dynamodb.test.invalid` is mapped to the emulator by the proxy; lock-exec never
//! resolves it because it asks the proxy).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::json;

use crate::support::{Case, Reply, Server, endpoint, rfc3339_from_now};

type EnvMap = BTreeMap<&'static str, String>;

/// The made-up host name only the recording proxy knows: it tunnels it to the emulator.
const PROXIED_HOST: &str = "dynamodb.test.invalid";

/// A small HTTP `CONNECT` proxy on 127.0.0.1 that records every target it is asked for. It tunnels targets on
/// 127.0.0.1 (and [`PROXIED_HOST`]:80, to the emulator) and refuses anything else without connecting anywhere.
struct RecordingProxy {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RecordingProxy {
    fn start() -> RecordingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port for the proxy");
        let port = listener.local_addr().expect("a bound listener has an address").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let emulator = endpoint().trim_start_matches("http://").trim_end_matches('/').to_owned();
        let thread = {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut tunnels = Vec::new();
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (seen, emulator) = (Arc::clone(&seen), emulator.clone());
                    tunnels.push(std::thread::spawn(move || serve(stream, &seen, &emulator)));
                }
                for tunnel in tunnels {
                    let _ = tunnel.join();
                }
            })
        };
        RecordingProxy { port, seen, stop, thread: Some(thread) }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the proxy and returns the request lines it saw (`CONNECT host:port`, or whatever else came).
    fn stop(mut self) -> Vec<String> {
        self.shut_down();
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn shut_down(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// One proxy connection: reads the request head, records its first line, tunnels or refuses.
fn serve(stream: TcpStream, seen: &Mutex<Vec<String>>, emulator: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() || first.trim().is_empty() {
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line.trim().is_empty() => break,
            Ok(_) => {}
        }
    }
    let first = first.trim().to_owned();
    seen.lock().unwrap_or_else(|p| p.into_inner()).push(first.clone());
    let mut parts = first.split_whitespace();
    let target = match (parts.next(), parts.next()) {
        (Some("CONNECT"), Some(target)) => target.to_owned(),
        _ => return refuse(stream),
    };
    let upstream = if target == format!("{PROXIED_HOST}:80") {
        emulator.to_owned()
    } else if target.starts_with("127.0.0.1:") {
        target
    } else {
        return refuse(stream);
    };
    let Ok(upstream) = TcpStream::connect(&upstream) else { return refuse(stream) };
    let _ = upstream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut client = stream;
    if client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").is_err() {
        return;
    }
    // Bytes the reader buffered past the head belong to the tunnel.
    let buffered = reader.buffer().to_vec();
    let (Ok(mut up_write), Ok(mut client_write)) = (upstream.try_clone(), client.try_clone()) else { return };
    let _ = up_write.write_all(&buffered);
    let upward = std::thread::spawn(move || copy_until_closed(&mut reader, &mut up_write));
    let mut up_read = upstream;
    copy_until_closed(&mut up_read, &mut client_write);
    let _ = client.shutdown(std::net::Shutdown::Both);
    let _ = upward.join();
}

fn copy_until_closed(from: &mut impl Read, to: &mut TcpStream) {
    let mut buffer = [0u8; 8192];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

fn refuse(mut stream: TcpStream) {
    let _ = stream.write_all(b"HTTP/1.1 502 Refused by the test proxy\r\ncontent-length: 0\r\n\r\n");
}

/// Every proxy variable set to `proxy`, in both cases.
fn with_proxy_variables(env: &mut EnvMap, proxy: &str) {
    for name in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"] {
        env.insert(name, proxy.to_owned());
    }
}

const CONTAINER_TOKEN: &str = "it-proxy-container-authorization-SECRET-7d1e";

/// With every proxy variable set and `NO_PROXY` unset, the container endpoint on 127.0.0.1 and the emulator on
/// 127.0.0.1 are reached directly: the proxy sees no request at all.
#[test]
fn proxy_never_sees_loopback_or_container_credential_requests() {
    let case = Case::new("proxy_container");
    let container = Server::start(|request| {
        if request.header("authorization") != Some(CONTAINER_TOKEN) {
            return Reply::new(401, r#"{"Code":"Unauthorized","Message":"wrong or missing authorization"}"#);
        }
        Reply::json(&json!({
            "AccessKeyId": "ASIAPROXYTEST",
            "SecretAccessKey": "it-proxy-container-SECRET-1",
            "Token": "it-proxy-container-session-SECRET-2",
            "Expiration": rfc3339_from_now(Duration::from_secs(3600)),
        }))
    });
    let proxy = RecordingProxy::start();
    let mut env = case.env_without_credentials();
    env.insert("AWS_CONTAINER_CREDENTIALS_FULL_URI", format!("{}/creds", container.url()));
    env.insert("AWS_CONTAINER_AUTHORIZATION_TOKEN", CONTAINER_TOKEN.to_owned());
    with_proxy_variables(&mut env, &proxy.url());
    let out = case.run_env(&["run", "k", "--", "sh", "-c", "echo ran"], env);
    let seen = proxy.stop();
    let fetches = container.stop().len();
    out.check("requests the proxy saw", Vec::<String>::new(), seen);
    out.expect_code(0);
    out.check("the command's stdout", "ran\n", out.stdout.as_str());
    out.check("container fetches", 1, fetches);
}

/// An instance metadata endpoint configured by a name or address other than the standard ones (here the
/// broadcast address, which the kernel refuses to connect to without sending anything) is still reached
/// directly: its answers hold credentials and the IMDSv2 token, in plain http.
#[test]
fn proxy_never_sees_a_configured_instance_metadata_endpoint() {
    let case = Case::new("proxy_imds_endpoint");
    let proxy = RecordingProxy::start();
    let mut env = case.env_without_credentials();
    env.remove("AWS_EC2_METADATA_DISABLED");
    env.insert("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://255.255.255.255:9".to_owned());
    with_proxy_variables(&mut env, &proxy.url());
    let out = case.run_not_started(&["-t", case.table(), "run", "k"], env);
    let seen = proxy.stop();
    out.check("requests the proxy saw", Vec::<String>::new(), seen);
    out.expect_code(78);
    out.expect_stderr_contains("cannot reach the instance metadata service at http://255.255.255.255:9");
}

/// A host that is not exempt goes through `HTTP_PROXY` for an `http://` endpoint (the proxy answers for a name
/// only it knows), and the plain-http endpoint earns a warning.
#[test]
fn proxy_carries_requests_to_other_hosts() {
    let case = Case::new("proxy_used");
    let proxy = RecordingProxy::start();
    let mut env = case.env();
    env.insert("AWS_ENDPOINT_URL", format!("http://{PROXIED_HOST}"));
    env.insert("HTTP_PROXY", proxy.url());
    let out = case.run_env(&["run", "k", "--", "sh", "-c", "echo ran"], env);
    let seen = proxy.stop();
    out.expect_code(0);
    out.check("the command's stdout", "ran\n", out.stdout.as_str());
    out.check("lock released", true, out.has_log("lock released"));
    out.check(
        "every request the proxy saw is a CONNECT to the made-up host",
        true,
        !seen.is_empty() && seen.iter().all(|line| line.starts_with(&format!("CONNECT {PROXIED_HOST}:80 "))),
    );
    let warnings: Vec<String> = out
        .logs()
        .iter()
        .filter(|l| l["level"] == "warn")
        .map(|l| l["msg"].as_str().unwrap_or_default().to_owned())
        .collect();
    out.check(
        "one warning about plain http naming the host",
        vec![true],
        warnings.iter().map(|w| w.contains("plain http") && w.contains(PROXIED_HOST)).collect::<Vec<_>>(),
    );
}

/// A proxy that cannot be reached: the error names it, without the password in its URL.
#[test]
fn proxy_named_in_transport_errors_without_its_password() {
    let case = Case::new("proxy_unreachable");
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
        listener.local_addr().expect("a bound listener has an address").port()
    };
    let mut env = case.env();
    env.insert("AWS_ENDPOINT_URL", format!("http://{PROXIED_HOST}"));
    env.insert("HTTP_PROXY", format!("http://proxyuser:proxy-PASSWORD-9@127.0.0.1:{closed}"));
    env.insert("AWS_MAX_ATTEMPTS", "1".to_owned());
    let out = case.run_not_started(&["-t", case.table(), "run", "k"], env);
    out.expect_code(69);
    out.expect_stderr_contains(&format!("through proxy http://127.0.0.1:{closed}"));
    out.expect_no_secrets(&["proxy-PASSWORD-9", "proxyuser"]);
}

/// A session token long enough to straddle any excerpt limit.
const SESSION_TOKEN: &str = "IQoJb3JpZ2luX2VjEXAMPLEsessionTOKEN0123456789abcdefghijklmnopqrstuvwxyz\
                             ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789andMoreSECRET";

/// Fails when any 8-character piece of `secret` shows in stdout or stderr.
#[track_caller]
fn expect_no_piece_of(out: &crate::support::Outcome, secret: &str) {
    let chars: Vec<char> = secret.chars().collect();
    for window in chars.windows(8) {
        let piece: String = window.iter().collect();
        out.expect_no_secrets(&[piece.as_str()]);
    }
}

/// A DynamoDB stub that echoes the `x-amz-security-token` it got, at every offset around the old 200-character
/// cut, in a non-JSON error body: no 8-character piece of the token may show in any output.
#[test]
fn proxy_module_echoed_session_token_leaves_no_prefix_in_dynamodb_errors() {
    let case = Case::new("proxy_echo_dynamodb");
    let stub = Server::start(|request| {
        let token = request.header("x-amz-security-token").unwrap_or("none").to_owned();
        let mut body = String::from("Bad request. ");
        for filler in 150..260 {
            body.push_str(&format!("{} token={token} ", "x".repeat(filler % 7)));
        }
        Reply::new(400, body)
    });
    let mut env = case.env();
    env.insert("AWS_ENDPOINT_URL", stub.url());
    env.insert("AWS_SESSION_TOKEN", SESSION_TOKEN.to_owned());
    env.insert("AWS_MAX_ATTEMPTS", "1".to_owned());
    let out = case.run_not_started(&["-t", case.table(), "-v", "run", "k"], env);
    stub.stop();
    out.check("exit code is not 0", true, out.code() != Some(0));
    out.expect_stderr_contains("<redacted>");
    expect_no_piece_of(&out, SESSION_TOKEN);
}

/// The container endpoint echoes its authorization token in a non-JSON 401 body, straddling the old cut.
#[test]
fn proxy_module_echoed_container_token_leaves_no_prefix() {
    let case = Case::new("proxy_echo_container");
    // Nothing in it that a path or a table name could contain by chance.
    let token = "Zq7Kx9PodIdentityAuthToken-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".to_owned();
    let stub = Server::start(|request| {
        let sent = request.header("authorization").unwrap_or("none").to_owned();
        Reply::new(401, format!("{}: authorization {sent} is not valid", "refused ".repeat(22)))
    });
    let mut env = case.env_without_credentials();
    env.insert("AWS_CONTAINER_CREDENTIALS_FULL_URI", format!("{}/creds", stub.url()));
    env.insert("AWS_CONTAINER_AUTHORIZATION_TOKEN", token.clone());
    let out = case.run_not_started(&["-t", case.table(), "run", "k"], env);
    stub.stop();
    out.check("exit code is not 0", true, out.code() != Some(0));
    expect_no_piece_of(&out, &token);
}

/// A server message with ESC sequences is escaped in text-format logs: no raw control character reaches stderr.
#[test]
fn proxy_module_control_characters_in_server_messages_are_escaped() {
    let case = Case::new("proxy_escape");
    let stub = Server::start(|_| {
        Reply::new(
            400,
            json!({"__type": "com.amazonaws.dynamodb.v20120810#ValidationException",
                   "message": "bad \u{1b}[2J\u{1b}]0;owned\u{7} title \u{9b}31m"})
            .to_string(),
        )
    });
    let mut env = case.env();
    env.insert("AWS_ENDPOINT_URL", stub.url());
    let out = case.run_not_started(&["-t", case.table(), "--log-format", "text", "run", "k"], env);
    stub.stop();
    out.check("exit code is not 0", true, out.code() != Some(0));
    out.expect_stderr_contains("ValidationException");
    let raw: Vec<char> = out.stderr.chars().filter(|c| c.is_control() && *c != '\n').collect();
    out.check("raw control characters in stderr", Vec::<char>::new(), raw);
    out.expect_stderr_contains("\\x1b[2J");
}

/// A user name or password in an endpoint URL is refused before any request, and never printed back: exit 64
/// from the flag, 78 from the environment.
#[test]
fn proxy_module_userinfo_in_endpoint_urls_is_refused() {
    let case = Case::new("proxy_userinfo");
    let url = "http://someone:url-PASSWORD-3@127.0.0.1:9/";
    let out = case.run_not_started(&["-t", case.table(), "--endpoint-url", url, "run", "k"], case.env());
    out.expect_code(64);
    out.expect_stderr_contains("user name or password");
    out.expect_no_secrets(&["url-PASSWORD-3", "someone"]);

    let mut env = case.env();
    env.insert("AWS_ENDPOINT_URL", url.to_owned());
    let out = case.run_not_started(&["-t", case.table(), "run", "k"], env);
    out.expect_code(78);
    out.expect_stderr_contains("user name or password");
    out.expect_no_secrets(&["url-PASSWORD-3", "someone"]);

    let mut env = case.env();
    env.insert("AWS_ENDPOINT_URL_STS", url.to_owned());
    env.insert("AWS_WEB_IDENTITY_TOKEN_FILE", case.write("token", "not-used"));
    env.insert("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/r".to_owned());
    env.remove("AWS_ACCESS_KEY_ID");
    env.remove("AWS_SECRET_ACCESS_KEY");
    let out = case.run_not_started(&["-t", case.table(), "run", "k"], env);
    out.expect_code(78);
    out.expect_stderr_contains("user name or password");
    out.expect_no_secrets(&["url-PASSWORD-3", "someone"]);
}

/// Other spellings of the loopback address (`127.1`, the decimal `2130706433`, octal and hex forms, `0.0.0.0`,
/// IPv4-mapped IPv6): each is reached directly, whatever the proxy variables say. The recording proxy would
/// refuse them; here it must see nothing at all.
#[test]
fn proxy_never_sees_loopback_aliases() {
    let case = Case::new("proxy_loopback_aliases");
    let port = endpoint().rsplit(':').next().expect("the emulator URL ends in its port").trim_end_matches('/');
    let proxy = RecordingProxy::start();
    for host in ["127.1", "127.0.1", "2130706433", "0x7f000001", "0177.0.0.1", "0.0.0.0", "[::ffff:127.0.0.1]"] {
        let mut env = case.env();
        env.insert("AWS_ENDPOINT_URL", format!("http://{host}:{port}"));
        with_proxy_variables(&mut env, &proxy.url());
        let out = case.run_env(&["status", "k"], env);
        out.check(&format!("state of k through {host}"), json!("never used"), out.stdout_json()["state"].clone());
        out.expect_code(0);
        out.check(
            "warnings (plain http to loopback is not one)",
            0,
            out.logs().iter().filter(|l| l["level"] == "warn").count(),
        );
    }
    out_of_proxy(proxy);
}

/// Fails when the proxy saw any request.
#[track_caller]
fn out_of_proxy(proxy: RecordingProxy) {
    let seen = proxy.stop();
    assert!(seen.is_empty(), "requests the proxy saw: {seen:?}");
}

/// A password holding an unencoded `/`, `?` or `#` hides the `@` from a parser that stops at the first of them:
/// such a URL is still refused before any request (no lookup of the user name as a host), and no part of the
/// password is printed, whether it came from the flag or the environment.
#[test]
fn proxy_module_passwords_with_slashes_in_endpoint_urls_are_refused() {
    let case = Case::new("proxy_userinfo_slash");
    let stub = Server::start(|_| Reply::new(500, "no request should arrive"));
    let port = stub.url().rsplit(':').next().unwrap_or_default().trim_end_matches('/').to_owned();
    for password in ["pass/WORD-5", "pass?WORD-5", "pass#WORD-5"] {
        let url = format!("http://someone:{password}@127.0.0.1:{port}/");
        let out = case.run_not_started(&["-t", case.table(), "--endpoint-url", &url, "run", "k"], case.env());
        out.expect_code(64);
        out.expect_stderr_contains("user name or password");
        out.expect_no_secrets(&["WORD-5", "someone"]);
        for variable in ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS", "AWS_CONTAINER_CREDENTIALS_FULL_URI"] {
            let mut env = case.env();
            env.insert("AWS_ENDPOINT_URL_DYNAMODB", stub.url());
            if variable == "AWS_CONTAINER_CREDENTIALS_FULL_URI" {
                env = case.env_without_credentials();
                env.insert("AWS_ENDPOINT_URL_DYNAMODB", stub.url());
            }
            env.insert(variable, url.clone());
            let out = case.run_not_started(&["-t", case.table(), "run", "k"], env);
            out.expect_code(78);
            out.expect_no_secrets(&["WORD-5", "someone"]);
        }
    }
    out_of_stub(stub);
}

/// A proxy URL lock-exec cannot use the way the AWS SDKs do (SOCKS, another scheme, no host, a bad port) is
/// refused before any request, naming the variable, and its user name, password and path are never printed.
#[test]
fn proxy_urls_other_than_http_connect_are_refused_at_startup() {
    let case = Case::new("proxy_refused");
    let stub = Server::start(|_| Reply::new(500, "no request should arrive"));
    let cases = [
        (
            "HTTPS_PROXY",
            "socks5://sockuser:sock-PASSWORD-1@127.0.0.1:1080/sock-path?q=sock-query",
            "socks5://127.0.0.1:1080",
        ),
        ("https_proxy", "socks5h://127.0.0.1:1080", "socks5h://127.0.0.1:1080"),
        ("HTTP_PROXY", "socks4://u:sock-PASSWORD-1@127.0.0.1", "socks4://127.0.0.1"),
        ("http_proxy", "ftp://127.0.0.1:21/", "ftp://127.0.0.1:21"),
        ("HTTP_PROXY", "http://sockuser:sock-PASSWORD-1@/sock-path", "http://"),
        ("HTTPS_PROXY", "http://127.0.0.1:notaport/sock-path", "http://127.0.0.1:notaport"),
    ];
    for (variable, value, shown) in cases {
        let mut env = case.env();
        env.insert("AWS_ENDPOINT_URL", stub.url());
        env.insert(variable, value.to_owned());
        let out = case.run_not_started(&["-t", case.table(), "run", "k"], env);
        out.expect_code(78);
        out.expect_stderr_contains(variable);
        out.expect_stderr_contains(shown);
        out.expect_no_secrets(&["sock-PASSWORD-1", "sockuser", "sock-path", "sock-query"]);
    }
    out_of_stub(stub);
}

/// Fails when the stub got any request.
#[track_caller]
fn out_of_stub(stub: Server) {
    let exchanges = stub.stop();
    assert!(
        exchanges.is_empty(),
        "requests the stub got: {:?}",
        exchanges.iter().map(|e| &e.request).collect::<Vec<_>>()
    );
}

/// A proxy URL's path and query (which some setups use to carry tokens) are not printed either: errors show
/// `scheme://host:port` only.
#[test]
fn proxy_errors_show_only_scheme_host_and_port() {
    let case = Case::new("proxy_path_hidden");
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
        listener.local_addr().expect("a bound listener has an address").port()
    };
    let mut env = case.env();
    env.insert("AWS_ENDPOINT_URL", format!("http://{PROXIED_HOST}"));
    env.insert(
        "HTTP_PROXY",
        format!("http://proxyuser:proxy-PASSWORD-9@127.0.0.1:{closed}/Hidden-PXPATH?k=Hidden-PXQUERY"),
    );
    env.insert("AWS_MAX_ATTEMPTS", "1".to_owned());
    let out = case.run_not_started(&["-t", case.table(), "-v", "run", "k"], env);
    out.expect_code(69);
    out.expect_stderr_contains(&format!("through proxy http://127.0.0.1:{closed}"));
    out.expect_no_secrets(&["proxy-PASSWORD-9", "proxyuser", "Hidden-PXPATH", "Hidden-PXQUERY"]);
}

/// A user name or password in an STS endpoint URL is refused before any request even when STS would not be
/// called (static keys): from the environment and from the profile's `services` section.
#[test]
fn proxy_module_userinfo_in_unused_sts_endpoints_is_refused() {
    let case = Case::new("proxy_userinfo_sts_unused");
    let stub = Server::start(|_| Reply::new(500, "no request should arrive"));
    let url = "http://someone:sts-PASSWORD-4@127.0.0.1:9/";

    let mut env = case.env();
    env.insert("AWS_ENDPOINT_URL_DYNAMODB", stub.url());
    env.insert("AWS_ENDPOINT_URL_STS", url.to_owned());
    let out = case.run_not_started(&["-t", case.table(), "run", "k"], env);
    out.expect_code(78);
    out.expect_stderr_contains("user name or password");
    out.expect_stderr_contains("AWS_ENDPOINT_URL_STS");
    out.expect_no_secrets(&["sts-PASSWORD-4", "someone"]);

    case.write_aws_file(
        "config",
        &format!("[default]\nservices = local\n\n[services local]\nsts =\n  endpoint_url = {url}\n"),
    );
    let mut env = case.env();
    env.insert("AWS_ENDPOINT_URL_DYNAMODB", stub.url());
    let out = case.run_not_started(&["-t", case.table(), "run", "k"], env);
    out.expect_code(78);
    out.expect_stderr_contains("user name or password");
    out.expect_no_secrets(&["sts-PASSWORD-4", "someone"]);
    out_of_stub(stub);
}
