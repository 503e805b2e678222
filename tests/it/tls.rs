//! A private CA: `AWS_CA_BUNDLE` and the profile's `ca_bundle` make lock-exec trust an endpoint whose
//! certificate the bundled roots do not know (a TLS front with a throwaway CA, forwarding to the emulator).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::support::{Case, endpoint};

/// `scripts/tls_front.py` running: TLS on 127.0.0.1 with a certificate from its own CA, forwarding to the emulator.
struct Front {
    child: Child,
    /// `https://127.0.0.1:PORT`.
    url: String,
}

impl Front {
    /// Starts a front whose CA certificate is written to `case`'s `ca.pem`.
    fn start(case: &Case) -> Front {
        Front::start_with(case, &[])
    }

    /// [`Front::start`] with more arguments for `scripts/tls_front.py` (`--chacha20-only`).
    fn start_with(case: &Case, extra: &[&str]) -> Front {
        let root = env!("CARGO_MANIFEST_DIR");
        let mut child = Command::new(format!("{root}/.tmp/venv/bin/python"))
            .arg(format!("{root}/scripts/tls_front.py"))
            .arg(endpoint())
            .arg(&case.dir.path)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start scripts/tls_front.py with the test virtualenv's python (scripts/test.sh makes it)");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("the front's stdout is piped");
        BufReader::new(stdout).read_line(&mut line).expect("read the front's port");
        let port: u16 = line.trim().parse().unwrap_or_else(|_| panic!("the front printed no port: {line:?}"));
        Front { child, url: format!("https://127.0.0.1:{port}") }
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn aws_ca_bundle_trusts_a_private_ca() {
    let case = Case::new("ca_bundle_env");
    let front = Front::start(&case);
    let script = case.marker_script();
    let out = case.run_with(&["-t", case.table(), "run", "k", "--", "sh", "-c", &script], |env| {
        env.insert("AWS_ENDPOINT_URL", front.url.clone());
        env.insert("AWS_CA_BUNDLE", case.file("ca.pem"));
    });
    out.expect_code(0);
    out.check("the command ran", true, case.exists("marker"));
    out.check("the lock was released", false, case.item("k").is_some_and(|item| item.expire_ns > 0));
}

/// A bundle holding, beside the private CA, a block that is not a usable certificate: that one is left out with a
/// warning naming it (as the TLS library would drop it, and the Go SDK does), and the rest still works.
#[test]
fn an_unusable_certificate_beside_usable_ones_is_left_out_with_a_warning() {
    let case = Case::new("ca_bundle_mixed");
    let front = Front::start(&case);
    let ca = std::fs::read_to_string(case.path("ca.pem")).expect("read the front's CA");
    let fake = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
    std::fs::write(case.path("mixed.pem"), format!("{fake}{ca}")).expect("write the mixed bundle");
    let script = case.marker_script();
    let out = case.run_with(&["-t", case.table(), "run", "k", "--", "sh", "-c", &script], |env| {
        env.insert("AWS_ENDPOINT_URL", front.url.clone());
        env.insert("AWS_CA_BUNDLE", case.file("mixed.pem"));
    });
    out.expect_code(0);
    out.check("the command ran", true, case.exists("marker"));
    let warning = out.log("CA bundle certificate left out: not usable as a root");
    let named = warning["certificate"].as_str().unwrap_or_default();
    out.check(
        &format!("the warning names the certificate and the file: {named}"),
        true,
        named.starts_with("certificate 1 of CA bundle") && named.contains("mixed.pem"),
    );
}

#[test]
fn without_the_bundle_the_private_ca_is_refused() {
    let case = Case::new("ca_bundle_none");
    let front = Front::start(&case);
    let mut env = case.env();
    env.insert("AWS_ENDPOINT_URL", front.url.clone());
    let out = case.run_not_started(&["-t", case.table(), "run", "k"], env);
    out.expect_code(69);
    out.expect_stderr_contains("certificate");
}

/// lock-exec offers the AES-GCM suites only: an endpoint with ChaCha20-Poly1305 alone fails the handshake, in one
/// line that says what lock-exec offers (the server's alert alone does not say why), and is unavailable (69).
#[test]
fn an_endpoint_offering_only_chacha20_fails_in_one_line_naming_the_suites_offered() {
    let case = Case::new("tls_chacha20_only");
    let front = Front::start_with(&case, &["--chacha20-only"]);
    let mut env = case.env();
    env.insert("AWS_ENDPOINT_URL", front.url.clone());
    env.insert("AWS_CA_BUNDLE", case.file("ca.pem"));
    let out = case.run_not_started(&["-t", case.table(), "run", "k"], env);
    out.expect_code(69);
    out.check("one line on stderr", 1, out.stderr.lines().count());
    out.expect_stderr_contains("HandshakeFailure");
    out.expect_stderr_contains("AES-GCM");
}

#[test]
fn profile_ca_bundle_trusts_a_private_ca() {
    let case = Case::new("ca_bundle_profile");
    let front = Front::start(&case);
    let aws = case.home().join(".aws");
    std::fs::create_dir_all(&aws).expect("create ~/.aws");
    std::fs::write(aws.join("config"), format!("[default]\nca_bundle = {}\n", case.file("ca.pem")))
        .expect("write ~/.aws/config");
    let script = case.marker_script();
    let out = case.run_with(&["-t", case.table(), "run", "k", "--", "sh", "-c", &script], |env| {
        env.insert("AWS_ENDPOINT_URL", front.url.clone());
    });
    out.expect_code(0);
    out.check("the command ran", true, case.exists("marker"));
}

#[test]
fn an_unusable_bundle_is_a_configuration_error() {
    let case = Case::new("ca_bundle_bad");
    std::fs::write(case.path("empty.pem"), "not a certificate\n").expect("write a bundle without certificates");
    // A well-formed PEM block whose contents are not a certificate ("hello world" in base64): rustls would drop it
    // silently and every connection would then fail as the server's fault (UnknownIssuer, exit 69).
    let fake = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
    std::fs::write(case.path("fake.pem"), fake).expect("write a bundle with a fake certificate");
    for (bundle, names) in [
        (case.file("missing.pem"), "cannot read CA bundle"),
        (case.file("empty.pem"), "no certificate"),
        (case.file("fake.pem"), "none of its 1 certificates is a usable X.509 certificate"),
    ] {
        let mut env = case.env();
        env.insert("AWS_CA_BUNDLE", bundle.clone());
        let out = case.run_not_started(&["-t", case.table(), "run", "k"], env);
        out.expect_code(78);
        out.expect_stderr_contains(names);
        out.expect_stderr_contains("AWS_CA_BUNDLE");
        out.expect_stderr_contains(&bundle);
    }
}
