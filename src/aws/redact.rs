//! Keeping secrets out of messages: every text that quotes a remote answer passes through [`redact`] with the
//! secrets of the request (secret key, session token, web identity token, authorization tokens).

/// `text` with every non-empty secret replaced by `<redacted>`, in each form a server might echo it: as sent,
/// with surrounding white space trimmed (a token file's final newline), and percent-encoded (form bodies,
/// canonical requests).
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_owned();
    for secret in secrets {
        let trimmed = secret.trim();
        if trimmed.is_empty() {
            continue;
        }
        // Longest forms first, so a shorter form does not leave the rest of a longer one behind.
        let mut forms = vec![percent_encode(secret), secret.to_string(), percent_encode(trimmed), trimmed.to_owned()];
        forms.sort_by_key(|form| std::cmp::Reverse(form.len()));
        for form in forms {
            if text.contains(&form) {
                text = text.replace(&form, "<redacted>");
            }
        }
    }
    text
}

/// Percent-encodes everything but the unreserved characters `A-Z a-z 0-9 - _ . ~` (UTF-8 bytes, uppercase hex).
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, secrets: &[&str], expected: &str) {
        assert_eq!(redact(text, secrets), expected, "{text:?} with {secrets:?}");
    }

    #[test]
    fn every_form_is_removed() {
        check("a tok/en b tok%2Fen", &["tok/en", ""], "a <redacted> b <redacted>");
        check("Token WEBID is not a valid JWT", &["WEBID\n"], "Token <redacted> is not a valid JWT");
        check("x-amz-security-token:SESSION\nhost", &["SESSION"], "x-amz-security-token:<redacted>\nhost");
        check("WebIdentityToken=WEBID%0A&x", &["WEBID\n"], "WebIdentityToken=<redacted>&x");
        check("nothing here", &["secret", "  "], "nothing here");
    }

    #[test]
    fn encoding_keeps_unreserved_characters() {
        assert_eq!(percent_encode("a-Z_0.~ /+=\n"), "a-Z_0.~%20%2F%2B%3D%0A");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }
}
