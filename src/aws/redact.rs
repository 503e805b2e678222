//! Keeping secrets out of messages: every text that quotes a remote answer passes through [`redact`] with the
//! secrets of the request (secret key, session token, web identity token, authorization tokens), and
//! [`quote`] is the one path from a remote text to a message: redact first, then flatten and cut, so no part of a
//! secret can survive the cut.

/// The longest remote text quoted in a message, in characters (an ellipsis marks a cut).
pub const MESSAGE_LIMIT: usize = 512;

/// A remote text (an error message, a body) ready for an error message: `secrets` redacted in every form
/// ([`redact`]), then white space runs flattened to one space, then cut to [`MESSAGE_LIMIT`] characters.
pub fn quote(text: &str, secrets: &[&str]) -> String {
    let redacted = redact(text, secrets);
    let flat = redacted.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(MESSAGE_LIMIT) {
        Some((cut, _)) => format!("{}...", &flat[..cut]),
        None => flat,
    }
}

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
        // JSON may escape `/` as `\/` (base64 tokens hold slashes).
        let mut forms = vec![
            percent_encode(secret),
            secret.to_string(),
            percent_encode(trimmed),
            trimmed.to_owned(),
            trimmed.replace('/', "\\/"),
        ];
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
    fn secrets_are_redacted_before_the_cut() {
        let token = "IQoJb3JpZ2luX2VjEXAMPLEtoken/with+slashes==";
        for offset in 480..530 {
            let text = format!("{} token={token} and {}", "x".repeat(offset), token.replace('/', "\\/"));
            let quoted = quote(&text, &[token]);
            assert!(quoted.chars().count() <= MESSAGE_LIMIT + 3, "{quoted}");
            let chars: Vec<char> = token.chars().collect();
            for piece in chars.windows(8).map(|w| w.iter().collect::<String>()) {
                assert!(!quoted.contains(&piece), "offset {offset}: {piece:?} survives in {quoted:?}");
            }
        }
        assert_eq!(quote("  a\n\t b  ", &[]), "a b");
    }

    #[test]
    fn encoding_keeps_unreserved_characters() {
        assert_eq!(percent_encode("a-Z_0.~ /+=\n"), "a-Z_0.~%20%2F%2B%3D%0A");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }
}
