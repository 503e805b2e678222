//! A small HTTP/1.1 server on 127.0.0.1 for unit tests: reads a request, writes a response, runs an accept loop.
//!
//! The test modules that talk to a local endpoint (container, IMDS, STS, the chain replay) build their own reply
//! policies on these pieces.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// A request as a test server received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `GET`, `PUT`, `POST`.
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// `HTTP/1.1`.
    pub version: String,
    /// Lowercase names, values trimmed, in the order sent.
    pub headers: Vec<(String, String)>,
    /// The body (`content-length` bytes), invalid UTF-8 replaced.
    pub body: String,
}

impl Seen {
    /// The first value of a header; `name` in lowercase.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Reads one request: request line, headers, and a body of `content-length` bytes. `None` when the stream ends
/// early or the request is malformed.
pub fn read_request(stream: &TcpStream) -> Option<Seen> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path, version) = (parts.next()?.to_owned(), parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut seen = Seen { method, path, version, headers, body: String::new() };
    let length: usize = seen.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    seen.body = String::from_utf8_lossy(&body).into_owned();
    Some(seen)
}

/// Writes a response with `headers` (any `content-length`, `connection` or `transfer-encoding` among them is
/// dropped), then `content-length` and `connection: close`, then `body`.
pub fn write_response<N: AsRef<str>, V: AsRef<str>>(
    mut stream: impl Write,
    status: u16,
    headers: &[(N, V)],
    body: &str,
) -> std::io::Result<()> {
    let mut response = format!("HTTP/1.1 {status} Test\r\n");
    for (name, value) in headers {
        let (name, value) = (name.as_ref(), value.as_ref());
        if !["content-length", "connection", "transfer-encoding"].iter().any(|n| name.eq_ignore_ascii_case(n)) {
            response.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    response.push_str(&format!("content-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()));
    stream.write_all(response.as_bytes())
}

/// An accept loop on 127.0.0.1 that hands each connection to a function; stopped and joined by [`Server::stop`]
/// or on drop.
pub struct Server {
    /// The bound address.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds a free port and calls `connection` with each accepted stream, one at a time, until stopped.
    pub fn start(mut connection: impl FnMut(TcpStream) + Send + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port for the test server");
        let addr = listener.local_addr().expect("a bound listener has an address");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        connection(stream);
                    }
                }
            })
        };
        Server { addr, stop, thread: Some(thread) }
    }

    /// `http://127.0.0.1:PORT`
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the accept loop and waits for it; the connection function (and what it holds) is dropped.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A raw request in, the parsed request and a raw response out, through a real socket.
    #[test]
    fn request_is_read_and_response_written() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut server = {
            let seen = Arc::clone(&seen);
            Server::start(move |stream| {
                let request = read_request(&stream).expect("a well-formed request");
                seen.lock().expect("no panics while holding the lock").push(request);
                let headers = [("X-Kind", "test"), ("Content-Length", "999"), ("connection", "keep-alive")];
                write_response(&stream, 201, &headers, "done").expect("write the response");
            })
        };
        let mut client = TcpStream::connect(server.addr).expect("connect to the test server");
        client
            .write_all(b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")
            .expect("send the request");
        let mut answer = String::new();
        client.read_to_string(&mut answer).expect("read until the server closes");
        assert_eq!(answer, "HTTP/1.1 201 Test\r\nX-Kind: test\r\ncontent-length: 4\r\nconnection: close\r\n\r\ndone");
        server.stop();
        let seen = seen.lock().expect("the server thread has ended");
        assert_eq!(seen.len(), 1);
        let request = &seen[0];
        assert_eq!(
            (request.method.as_str(), request.path.as_str(), request.version.as_str(), request.body.as_str()),
            ("POST", "/a?b=1", "HTTP/1.1", "hello")
        );
        assert_eq!(request.header("content-type"), Some("text/plain"));
        assert_eq!(request.header("host"), Some("x"));
        assert_eq!(request.header("Host"), None, "names are stored in lowercase");
    }

    #[test]
    fn malformed_requests_are_none() {
        for raw in
            ["GET\r\n\r\n", "GET / HTTP/1.1\r\nno colon\r\n\r\n", "POST / HTTP/1.1\r\ncontent-length: 9\r\n\r\nshort"]
        {
            let results = Arc::new(Mutex::new(Vec::new()));
            let mut server = {
                let results = Arc::clone(&results);
                Server::start(move |stream| {
                    let got = read_request(&stream).map(|s| s.method);
                    results.lock().expect("no panics while holding the lock").push(got);
                    write_response(&stream, 400, &[] as &[(&str, &str)], "").expect("write the response");
                })
            };
            let mut client = TcpStream::connect(server.addr).expect("connect to the test server");
            client.write_all(raw.as_bytes()).expect("send the request");
            client.shutdown(std::net::Shutdown::Write).expect("end the request");
            client.read_to_string(&mut String::new()).expect("wait until the server has answered");
            server.stop();
            assert_eq!(*results.lock().expect("the server thread has ended"), [None], "{raw:?}");
        }
    }
}
