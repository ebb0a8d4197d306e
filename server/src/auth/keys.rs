//! Publish keys: the shared secrets a backend presents to publish over
//! HTTP (`POST /pub…`), as `Authorization: Bearer <key>`.
//!
//! Several keys may be valid at once, so a key is rotated by adding the
//! new one, moving publishers over, then removing the old one (restart
//! with the new list). Keys are compared in constant time, each against
//! every configured key, so the answer's timing tells nothing about how
//! much of a key was right.

use std::path::Path;

use subtle::ConstantTimeEq;

/// The shortest key accepted: a guessable key is no key.
pub const MIN_KEY_LEN: usize = 16;

/// The configured publish keys (none: publishing is open).
#[derive(Clone, Default)]
pub struct PublishKeys {
    keys: Vec<Box<[u8]>>,
}

impl std::fmt::Debug for PublishKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys themselves: settings are logged.
        write!(f, "PublishKeys({} keys)", self.keys.len())
    }
}

/// What a request's credentials amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    /// No keys are configured: anyone may publish.
    Open,
    /// A configured key was presented.
    Valid,
    /// No `Authorization: Bearer …` at all (`401`).
    Missing,
    /// A bearer credential that is no configured key, or another scheme
    /// (`403`).
    Wrong,
}

impl PublishKeys {
    /// Keys from the command line and from files (one key per line; blank
    /// lines and `#` comments skipped). Each must be at least
    /// [`MIN_KEY_LEN`] bytes of visible ASCII.
    pub fn load(flags: &[String], files: &[impl AsRef<Path>]) -> Result<PublishKeys, String> {
        let mut keys = Vec::new();
        for key in flags {
            keys.push(checked(key, "--publish-key")?);
        }
        for file in files {
            let file = file.as_ref();
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read publish keys from {}: {e}", file.display()))?;
            let from = format!("{} line", file.display());
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                keys.push(checked(line, &format!("{from} {}", n + 1))?);
            }
        }
        Ok(PublishKeys { keys })
    }

    /// Whether any key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many keys are configured.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Checks an `Authorization` header value.
    pub fn check(&self, authorization: Option<&[u8]>) -> KeyCheck {
        if self.keys.is_empty() {
            return KeyCheck::Open;
        }
        let Some(value) = authorization else {
            return KeyCheck::Missing;
        };
        let Some(presented) = bearer(value) else {
            return KeyCheck::Wrong;
        };
        // Every key is compared, whatever matched first.
        let mut found = subtle::Choice::from(0);
        for key in &self.keys {
            found |= key.as_ref().ct_eq(presented);
        }
        if bool::from(found) {
            KeyCheck::Valid
        } else {
            KeyCheck::Wrong
        }
    }
}

/// The credential of `Bearer <credential>` (the scheme is
/// case-insensitive, RFC 9110 §11.1).
pub fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    (scheme.eq_ignore_ascii_case(b"bearer ")).then(|| rest.trim_ascii())
}

fn checked(key: &str, from: &str) -> Result<Box<[u8]>, String> {
    if key.len() < MIN_KEY_LEN {
        return Err(format!(
            "{from}: a publish key must be at least {MIN_KEY_LEN} characters (e.g. `openssl rand -hex 24`)"
        ));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{from}: a publish key is visible ASCII without spaces"
        ));
    }
    Ok(key.as_bytes().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef-a";
    const B: &str = "0123456789abcdef-b";

    fn keys(list: &[&str]) -> PublishKeys {
        let flags: Vec<String> = list.iter().map(|k| k.to_string()).collect();
        PublishKeys::load(&flags, &[] as &[&Path]).unwrap()
    }

    #[test]
    fn any_configured_key_is_valid_and_everything_else_is_not() {
        let k = keys(&[A, B]);
        assert_eq!(
            k.check(Some(format!("Bearer {A}").as_bytes())),
            KeyCheck::Valid
        );
        assert_eq!(
            k.check(Some(format!("bearer  {B} ").as_bytes())),
            KeyCheck::Valid
        );
        assert_eq!(k.check(None), KeyCheck::Missing);
        assert_eq!(k.check(Some(b"Bearer 0123456789abcdef-c")), KeyCheck::Wrong);
        assert_eq!(k.check(Some(b"Bearer 0123456789abcdef-")), KeyCheck::Wrong);
        assert_eq!(
            k.check(Some(format!("Basic {A}").as_bytes())),
            KeyCheck::Wrong
        );
        assert_eq!(k.check(Some(b"Bearer")), KeyCheck::Wrong);
        assert_eq!(keys(&[]).check(None), KeyCheck::Open);
    }

    #[test]
    fn short_or_spaced_keys_are_refused_and_files_skip_comments() {
        let short = PublishKeys::load(&["short".into()], &[] as &[&Path]).unwrap_err();
        assert!(short.contains("at least 16"), "{short}");
        let spaced = PublishKeys::load(&["0123456789 abcdefg".into()], &[] as &[&Path]);
        assert!(spaced.unwrap_err().contains("visible ASCII"));

        let dir = std::env::temp_dir().join(format!("ringcast-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keys");
        std::fs::write(&file, format!("# rotated 2026-11-30\n{A}\n\n  {B}  \n")).unwrap();
        let k = PublishKeys::load(&[], &[&file]).unwrap();
        assert_eq!(k.len(), 2);
        assert_eq!(
            k.check(Some(format!("Bearer {B}").as_bytes())),
            KeyCheck::Valid
        );
        std::fs::write(&file, "tooshort\n").unwrap();
        let err = PublishKeys::load(&[], &[&file]).unwrap_err();
        assert!(err.contains("line 1"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
