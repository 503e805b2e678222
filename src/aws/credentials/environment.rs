//! Credentials from environment variables.
//!
//! Reads, in order: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` (optional),
//! `AWS_ACCOUNT_ID` (optional). Blank values count as unset.

use aws_credential_types::Credentials;

use crate::env::Env;

/// The source's name in logs.
pub const NAME: &str = "environment";

/// Static credentials from the environment, or `None` when the access key or secret is unset.
pub fn load(env: &Env) -> Option<Credentials> {
    let access_key_id = env.var("AWS_ACCESS_KEY_ID")?;
    let secret_access_key = env.var("AWS_SECRET_ACCESS_KEY")?;
    let mut builder =
        Credentials::builder().access_key_id(access_key_id).secret_access_key(secret_access_key).provider_name(NAME);
    builder.set_session_token(env.var("AWS_SESSION_TOKEN"));
    builder.set_account_id(env.var("AWS_ACCOUNT_ID").map(Into::into));
    Some(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_both_keys() {
        assert!(load(&Env::from_pairs(&[("AWS_ACCESS_KEY_ID", "a")])).is_none());
        assert!(load(&Env::from_pairs(&[("AWS_ACCESS_KEY_ID", " "), ("AWS_SECRET_ACCESS_KEY", " ")])).is_none());
        let c = load(&Env::from_pairs(&[
            ("AWS_ACCESS_KEY_ID", "a"),
            ("AWS_SECRET_ACCESS_KEY", "b"),
            ("AWS_SESSION_TOKEN", "t"),
        ]))
        .expect("both keys set");
        assert_eq!((c.access_key_id(), c.secret_access_key(), c.session_token()), ("a", "b", Some("t")));
    }
}
