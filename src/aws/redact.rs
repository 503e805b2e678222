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

/// The shortest secret [`redact`] removes, in characters (after trimming). A shorter "secret" cannot be protected
/// by substitution: its text turns up by chance in ordinary messages (a one-letter secret is in most words), so
/// replacing every occurrence garbles the message and still tells a reader what the secret was. Real secrets are
/// far longer (secret keys 40 characters, session and web identity tokens hundreds).
pub const MIN_SECRET_CHARS: usize = 8;

/// What replaces a secret.
const REPLACEMENT: &str = "<redacted>";

/// `text` with every secret of at least [`MIN_SECRET_CHARS`] characters replaced by `<redacted>`, in each form a
/// server might echo it: as sent, with surrounding white space trimmed (a token file's final newline),
/// percent-encoded (form bodies, canonical requests), and with `/` escaped as `\/` (JSON).
///
/// One pass from left to right over the text: at each position the longest form that starts there is replaced,
/// and the scan goes on after it. Replacement text is never scanned again, so a secret that occurs inside
/// `<redacted>` itself cannot make the text grow or change what was already written.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut forms: Vec<String> = Vec::new();
    for secret in secrets {
        let trimmed = secret.trim();
        if trimmed.chars().count() < MIN_SECRET_CHARS {
            continue;
        }
        for form in [
            percent_encode(secret),
            (*secret).to_owned(),
            percent_encode(trimmed),
            trimmed.to_owned(),
            trimmed.replace('/', "\\/"),
        ] {
            if !forms.contains(&form) {
                forms.push(form);
            }
        }
    }
    if forms.is_empty() {
        return text.to_owned();
    }
    // Longest first: where two forms start at the same position, the longer one is replaced whole.
    forms.sort_unstable_by_key(|form| std::cmp::Reverse(form.len()));
    // The next occurrence of each form at or after `cursor` (`None`: no more), searched again only once the
    // cursor has passed it, so the whole pass stays linear in the text for each form.
    let mut next: Vec<Option<usize>> = forms.iter().map(|form| text.find(form.as_str())).collect();
    let mut out = String::with_capacity(text.len());
    let mut cursor = 0;
    loop {
        let mut best: Option<(usize, usize)> = None;
        for (i, form) in forms.iter().enumerate() {
            if next[i].is_some_and(|at| at < cursor) {
                next[i] = text[cursor..].find(form.as_str()).map(|at| at + cursor);
            }
            if let Some(at) = next[i]
                && best.is_none_or(|(best_at, _)| at < best_at)
            {
                best = Some((at, form.len()));
            }
        }
        let Some((at, len)) = best else { break };
        out.push_str(&text[cursor..at]);
        out.push_str(REPLACEMENT);
        cursor = at + len;
    }
    out.push_str(&text[cursor..]);
    out
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
        check("a tok/en-123 b tok%2Fen-123", &["tok/en-123", ""], "a <redacted> b <redacted>");
        check("a tok\\/en-123 b", &["tok/en-123"], "a <redacted> b");
        check("Token WEBID-JWT is not a valid JWT", &["WEBID-JWT\n"], "Token <redacted> is not a valid JWT");
        check("x-amz-security-token:SESSION-1\nhost", &["SESSION-1"], "x-amz-security-token:<redacted>\nhost");
        check("WebIdentityToken=WEBID-JWT%0A&x", &["WEBID-JWT\n"], "WebIdentityToken=<redacted>&x");
        check("nothing here", &["secret-value", "  "], "nothing here");
    }

    #[test]
    fn replacement_text_is_never_rescanned() {
        // Secrets inside the replacement text `<redacted>`: each occurrence is replaced once, nothing grows.
        check("a redacted b", &["redacted"], "a <redacted> b");
        check("<redacted> x", &["<redacted>"], "<redacted> x");
        check("redactedredacted", &["redacted", "redacted\n"], "<redacted><redacted>");
        check("a <redacted> b", &["edacted>"], "a <r<redacted> b");
        // Two secrets where one holds the other: the longer wins where both start, nothing is left behind.
        check("k=ABCDEFGH12345678 v=ABCDEFGH", &["ABCDEFGH", "ABCDEFGH12345678"], "k=<redacted> v=<redacted>");
        // Overlapping occurrences: the leftmost is replaced, the scan goes on after it.
        check("xxAAAAAAAAAAyy", &["AAAAAAAAA"], "xx<redacted>Ayy");
    }

    #[test]
    fn secrets_too_short_to_protect_are_left_alone() {
        // One to seven characters: every occurrence in ordinary text would be replaced (garbling the message)
        // while the secret itself stays guessable, so substitution protects nothing.
        check("a red d b", &["d", "red", "a", "<", "1234567"], "a red d b");
        check("x 1234567 12345678 y", &["1234567", "12345678"], "x 1234567 <redacted> y");
        // Length counts the trimmed secret, in characters.
        check("tok short", &["  short \n"], "tok short");
        check("éééééééé!", &["éééééééé"], "<redacted>!");
    }

    #[test]
    fn many_occurrences_are_linear() {
        let secret = "S3CRET-TOKEN-0123";
        let text = format!("{secret} ").repeat(50_000) + &"x".repeat(500_000);
        let started = std::time::Instant::now();
        let redacted = redact(&text, &[secret, "unused-secret-aaaa", "unused-secret-bbbb"]);
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
        assert_eq!(redacted.matches("<redacted>").count(), 50_000);
        assert!(!redacted.contains("S3CRET"));
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
