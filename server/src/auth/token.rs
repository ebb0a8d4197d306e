//! Client tokens: JWTs that say who a client is and which channels it may
//! read and publish to. Verified once — when a request or connection
//! presents one — never per delivery.
//!
//! Keys: `--jwt-secret` (HS256), `--jwt-public-key` (a PEM file: an RSA
//! key verifies RS256, an EC P-256 key ES256), and `--jwt-jwks` (a JWKS
//! file of such keys, each chosen by the `kid` in a token's header, so
//! keys rotate by adding the new one before tokens use it). Only those
//! algorithms are accepted, so a token signed with another — `alg: none`
//! included — is refused whatever it claims.
//!
//! Claims:
//! * `exp` (required): expiry, seconds since the epoch. No leeway: the
//!   node's clock is the judge, so keep it synchronised.
//! * `sub`: the client's identity.
//! * `channels`: what the client may read — names, or prefixes ending in
//!   `*` (`chat:*`; `*` alone is every channel). Absent: nothing.
//! * `publish`: what it may publish to over `/ws`, in the same form.

use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Verifies client tokens with the configured keys.
pub struct Verifier {
    keys: Vec<Key>,
    recent: Recent,
}

/// Tokens verified lately, by their exact text, with what they grant.
///
/// A client that reconnects — a page reload, a reconnect storm after a
/// restart — presents the same token again, and checking an ES256 or
/// RS256 signature costs ~260 µs (HS256: ~3 µs; docs/benchmarks.md). The
/// text is the key, so a hit is the very token verified before; its
/// expiry is checked again on every hit. Bounded: when full it is
/// emptied. One for the node behind a mutex, held for a lookup or an
/// insert only.
struct Recent {
    verified: std::sync::Mutex<std::collections::HashMap<Box<str>, Arc<Access>>>,
}

/// Most tokens [`Recent`] holds (a few MB).
const RECENT_TOKENS: usize = 16_384;

impl Recent {
    fn new() -> Recent {
        Recent {
            verified: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn get(&self, token: &str) -> Option<Arc<Access>> {
        self.lock().get(token).cloned()
    }

    fn put(&self, token: &str, access: &Arc<Access>) {
        let mut verified = self.lock();
        if verified.len() >= RECENT_TOKENS {
            verified.clear();
        }
        verified.insert(token.into(), access.clone());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<Box<str>, Arc<Access>>> {
        // Inserts and lookups cannot leave the map inconsistent.
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One verification key.
struct Key {
    /// Its JWKS `kid`; `None` for `--jwt-secret` and `--jwt-public-key`.
    kid: Option<String>,
    key: DecodingKey,
    validation: Validation,
}

impl Key {
    fn new(kid: Option<String>, key: DecodingKey, alg: Algorithm) -> Key {
        Key {
            kid,
            key,
            validation: validation(alg),
        }
    }

    fn algorithm(&self) -> Algorithm {
        self.validation.algorithms[0]
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Verifier({})", self.algorithms())
    }
}

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The client's identity (`sub`).
    pub sub: Option<Box<str>>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    read: Patterns,
    publish: Patterns,
}

/// Why a token was refused; each has its own reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// None was presented where one is required.
    Missing,
    /// Past its `exp`.
    Expired,
    /// The signature does not verify with any configured key.
    BadSignature,
    /// Signed with an algorithm the node does not accept (`none`, or one
    /// for which it has no key).
    Algorithm,
    /// Its header names a key (`kid`) the node does not have.
    UnknownKey(String),
    /// Not a JWT, or claims of the wrong shape (the detail says which).
    Malformed(String),
}

impl TokenError {
    /// The reason sent to the client and logged.
    pub fn reason(&self) -> String {
        match self {
            TokenError::Missing => "token required: send Authorization: Bearer <token>".into(),
            TokenError::Expired => "token expired".into(),
            TokenError::BadSignature => "token signature invalid".into(),
            TokenError::Algorithm => {
                "token algorithm not accepted (the node verifies HS256, RS256 or ES256 with its own keys)".into()
            }
            TokenError::UnknownKey(kid) => format!("token signed with an unknown key (kid {kid:?})"),
            TokenError::Malformed(detail) => format!("token malformed: {detail}"),
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    exp: Option<u64>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
}

impl Verifier {
    /// The verifier for the configured keys; `None` when there are none
    /// (tokens are then neither needed nor read).
    pub fn load(
        secret: Option<&str>,
        public_key: Option<&Path>,
        jwks: Option<&Path>,
    ) -> Result<Option<Verifier>, String> {
        let mut keys = Vec::new();
        if let Some(secret) = secret {
            if secret.len() < 32 {
                return Err("--jwt-secret must be at least 32 bytes (HS256 needs a key as long as its hash)".into());
            }
            let key = DecodingKey::from_secret(secret.as_bytes());
            keys.push(Key::new(None, key, Algorithm::HS256));
        }
        if let Some(path) = public_key {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read --jwt-public-key {}: {e}", path.display()))?;
            keys.push(if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
                Key::new(None, k, Algorithm::RS256)
            } else if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
                Key::new(None, k, Algorithm::ES256)
            } else {
                return Err(format!(
                    "--jwt-public-key {}: not an RSA or EC public key in PEM",
                    path.display()
                ));
            });
        }
        if let Some(path) = jwks {
            keys.extend(load_jwks(path)?);
        }
        Ok((!keys.is_empty()).then_some(Verifier {
            keys,
            recent: Recent::new(),
        }))
    }

    /// The algorithms it accepts, as the banner shows them.
    pub fn algorithms(&self) -> String {
        let mut names: Vec<String> = Vec::new();
        for k in &self.keys {
            let name = format!("{:?}", k.algorithm());
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let with_ids = self.keys.iter().filter(|k| k.kid.is_some()).count();
        if with_ids > 0 {
            format!("{}; {with_ids} JWKS keys by kid", names.join(", "))
        } else {
            names.join(", ")
        }
    }

    /// Verifies `token`: what it grants, or why not.
    pub fn verify(&self, token: &str) -> Result<Arc<Access>, TokenError> {
        if let Some(access) = self.recent.get(token) {
            // As jsonwebtoken judges `exp`: valid through its second.
            if access.exp < jsonwebtoken::get_current_timestamp() {
                return Err(TokenError::Expired);
            }
            return Ok(access);
        }
        let access = self.verify_signed(token)?;
        self.recent.put(token, &access);
        Ok(access)
    }

    /// [`Verifier::verify`] without the cache: the signature and claims,
    /// what a token not seen lately costs.
    pub fn verify_signed(&self, token: &str) -> Result<Arc<Access>, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            // A header that names an algorithm jsonwebtoken does not know
            // (`none`) is a refused algorithm, not a malformed token.
            if names_an_algorithm(token) {
                TokenError::Algorithm
            } else {
                TokenError::Malformed(describe(e.kind()))
            }
        })?;
        let key = self.key_for(header.kid.as_deref(), header.alg)?;
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &key.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => TokenError::Algorithm,
                other => TokenError::Malformed(describe(other)),
            },
        )?;
        let c = data.claims;
        let exp = c
            .exp
            .ok_or_else(|| TokenError::Malformed("missing claim exp".into()))?;
        Ok(Arc::new(Access {
            sub: c.sub.map(String::into_boxed_str),
            exp,
            read: Patterns::parse(&c.channels),
            publish: Patterns::parse(&c.publish),
        }))
    }

    /// The key a token's header points to: the JWKS key its `kid` names,
    /// else the first key without a `kid` for its algorithm.
    fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<&Key, TokenError> {
        if let Some(kid) = kid {
            if let Some(key) = self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)) {
                return if key.algorithm() == alg {
                    Ok(key)
                } else {
                    Err(TokenError::Algorithm)
                };
            }
        }
        let unnamed = self.keys.iter().filter(|k| k.kid.is_none());
        match (unnamed.clone().find(|k| k.algorithm() == alg), kid) {
            (Some(key), _) => Ok(key),
            (None, Some(kid)) if self.keys.iter().any(|k| k.kid.is_some()) => {
                Err(TokenError::UnknownKey(kid.into()))
            }
            (None, _) => Err(TokenError::Algorithm),
        }
    }
}

/// The keys of a JWKS file: each with a `kid`, and an RSA (RS256), EC P-256
/// (ES256) or symmetric (HS256) key.
fn load_jwks(path: &Path) -> Result<Vec<Key>, String> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
    let what = format!("--jwt-jwks {}", path.display());
    let text = std::fs::read(path).map_err(|e| format!("cannot read {what}: {e}"))?;
    let set: JwkSet =
        serde_json::from_slice(&text).map_err(|e| format!("{what}: not a JWKS ({e})"))?;
    if set.keys.is_empty() {
        return Err(format!("{what}: no keys"));
    }
    let mut keys = Vec::with_capacity(set.keys.len());
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            return Err(format!(
                "{what}: every key needs a kid (tokens choose keys by it)"
            ));
        };
        let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
            (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
            (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES256))
                if p.curve == EllipticCurve::P256 =>
            {
                Algorithm::ES256
            }
            (AlgorithmParameters::OctetKey(_), None | Some(KeyAlgorithm::HS256)) => {
                Algorithm::HS256
            }
            (_, alg) => {
                return Err(format!(
                "{what}: key {kid:?} is for {}; the node verifies RS256, ES256 (P-256) and HS256",
                alg.map_or_else(|| "another key type".to_string(), |a| format!("{a:?}"))
            ))
            }
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("{what}: key {kid:?}: {e}"))?;
        if keys
            .iter()
            .any(|k: &Key| k.kid.as_deref() == Some(kid.as_str()))
        {
            return Err(format!("{what}: kid {kid:?} appears twice"));
        }
        keys.push(Key::new(Some(kid), key, alg));
    }
    Ok(keys)
}

/// Whether the token's header is JSON with an `alg` string.
fn names_an_algorithm(token: &str) -> bool {
    use base64::Engine;
    let Some(header) = token.split('.').next() else {
        return false;
    };
    let Ok(json) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&json).is_ok_and(|h| h["alg"].is_string())
}

fn validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = 0;
    v.set_required_spec_claims(&["exp"]);
    v
}

fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidToken => "not a JWT (header.claims.signature)".into(),
        ErrorKind::Base64(_) => "bad base64".into(),
        ErrorKind::Json(e) => format!("bad JSON ({e})"),
        ErrorKind::MissingRequiredClaim(c) => format!("missing claim {c}"),
        ErrorKind::InvalidClaimFormat(c) => format!("claim {c} has the wrong type"),
        ErrorKind::ImmatureSignature => "not valid yet (nbf)".into(),
        other => format!("{other:?}"),
    }
}

impl Access {
    /// Whether the token lets its holder read `channel`.
    pub fn may_read(&self, channel: &str) -> bool {
        self.read.matches(channel)
    }

    /// Whether the token lets its holder publish to `channel`.
    pub fn may_publish(&self, channel: &str) -> bool {
        self.publish.matches(channel)
    }

    /// Whether it has expired at `unix_secs`.
    pub fn expired_at(&self, unix_secs: u64) -> bool {
        self.exp <= unix_secs
    }

    /// A grant of every channel for `sub`, for tests of what follows a
    /// token.
    #[cfg(test)]
    pub fn for_tests(sub: Option<&str>) -> Access {
        Access {
            sub: sub.map(Into::into),
            exp: u64::MAX,
            read: Patterns::parse(&["*".into()]),
            publish: Patterns::parse(&["*".into()]),
        }
    }
}

/// Channel names and prefixes (`chat:*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Patterns {
    exact: Vec<Box<str>>,
    prefixes: Vec<Box<str>>,
}

impl Patterns {
    fn parse(list: &[String]) -> Patterns {
        let mut p = Patterns::default();
        for item in list {
            match item.strip_suffix('*') {
                Some(prefix) => p.prefixes.push(prefix.into()),
                None => p.exact.push(item.as_str().into()),
            }
        }
        p
    }

    fn matches(&self, channel: &str) -> bool {
        self.exact.iter().any(|e| &**e == channel)
            || self.prefixes.iter().any(|p| channel.starts_with(&**p))
    }
}

/// The bearer token of an `Authorization` header value, if it is one.
pub fn bearer_token(authorization: Option<&[u8]>) -> Option<&str> {
    let credential = super::keys::bearer(authorization?)?;
    std::str::from_utf8(credential)
        .ok()
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn hs256(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn verifier() -> Verifier {
        Verifier::load(Some(SECRET), None, None).unwrap().unwrap()
    }

    #[test]
    fn a_valid_token_grants_its_channels_and_nothing_else() {
        let t = hs256(
            json!({"sub": "ann", "exp": now() + 60, "channels": ["chat:*", "news"], "publish": ["chat:room1"]}),
        );
        let a = verifier().verify(&t).unwrap();
        assert_eq!(a.sub.as_deref(), Some("ann"));
        assert!(a.may_read("chat:room1") && a.may_read("chat:") && a.may_read("news"));
        assert!(!a.may_read("newsroom") && !a.may_read("secret"));
        assert!(a.may_publish("chat:room1") && !a.may_publish("chat:room2"));
        let everything = hs256(json!({"exp": now() + 60, "channels": ["*"]}));
        assert!(verifier().verify(&everything).unwrap().may_read("anything"));
    }

    #[test]
    fn each_bad_token_has_its_own_reason() {
        let v = verifier();
        let expired = hs256(json!({"exp": now() - 1, "channels": ["*"]}));
        assert_eq!(v.verify(&expired), Err(TokenError::Expired));
        let other_key = encode(
            &Header::new(Algorithm::HS256),
            &json!({"exp": now() + 60}),
            &EncodingKey::from_secret(b"another secret, another secret!!"),
        )
        .unwrap();
        assert_eq!(v.verify(&other_key), Err(TokenError::BadSignature));
        // A tampered claim breaks the signature.
        let good = hs256(json!({"exp": now() + 60, "channels": ["a"]}));
        let mut parts: Vec<&str> = good.split('.').collect();
        let forged = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            json!({"exp": now() + 60, "channels": ["*"]}).to_string(),
        );
        parts[1] = &forged;
        assert_eq!(v.verify(&parts.join(".")), Err(TokenError::BadSignature));
        // `alg: none`, unsigned.
        let none_header = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            r#"{"alg":"none","typ":"JWT"}"#,
        );
        let unsigned = format!("{none_header}.{forged}.");
        assert_eq!(v.verify(&unsigned), Err(TokenError::Algorithm));
        // RS256 with no RSA key configured.
        let rs_header = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            r#"{"alg":"RS256","typ":"JWT"}"#,
        );
        assert_eq!(
            v.verify(&format!("{rs_header}.{forged}.c2ln")),
            Err(TokenError::Algorithm)
        );
        assert!(matches!(
            v.verify("not a token"),
            Err(TokenError::Malformed(_))
        ));
        let no_exp = hs256(json!({"sub": "x"}));
        assert_eq!(
            v.verify(&no_exp),
            Err(TokenError::Malformed("missing claim exp".into()))
        );
    }

    /// A P-256 key pair made for the tests (`openssl ecparam -name
    /// prime256v1 -genkey`), and its public half as JWK coordinates.
    const EC_PRIVATE_PEM: &str = include_str!("../../tests/fixtures/ec-p256-private.pem");
    const EC_X: &str = "xNGuXjZtrtju1xgYuUShQk7tmQGeqEHibR4f-FUQEW8";
    const EC_Y: &str = "-r-X7w2ew5DxgDCc7L3Az78opdSe_4dItv9UQo-OuLU";

    fn jwks_file(name: &str, keys: serde_json::Value) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("ringcast-{name}-{}.json", std::process::id()));
        std::fs::write(&path, json!({ "keys": keys }).to_string()).unwrap();
        path
    }

    fn es256(kid: Option<&str>, claims: serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = kid.map(String::from);
        let key = EncodingKey::from_ec_pem(EC_PRIVATE_PEM.as_bytes()).unwrap();
        encode(&header, &claims, &key).unwrap()
    }

    #[test]
    fn jwks_keys_are_chosen_by_kid() {
        let hs = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, SECRET);
        let path = jwks_file(
            "jwks",
            json!([
                {"kty": "EC", "crv": "P-256", "x": EC_X, "y": EC_Y, "kid": "ec-2026", "use": "sig"},
                {"kty": "oct", "k": hs, "kid": "hs-old", "alg": "HS256"},
            ]),
        );
        let v = Verifier::load(None, None, Some(&path)).unwrap().unwrap();
        assert_eq!(v.algorithms(), "ES256, HS256; 2 JWKS keys by kid");
        let claims = json!({"sub": "ann", "exp": now() + 60, "channels": ["a"]});
        assert!(v
            .verify(&es256(Some("ec-2026"), claims.clone()))
            .unwrap()
            .may_read("a"));
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("hs-old".into());
        let hs_token = encode(
            &header,
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(v.verify(&hs_token).unwrap().sub.as_deref(), Some("ann"));
        assert_eq!(
            v.verify(&es256(Some("retired"), claims.clone())),
            Err(TokenError::UnknownKey("retired".into()))
        );
        // A kid with the wrong algorithm: the key decides, not the header.
        header.kid = Some("ec-2026".into());
        let confused = encode(
            &header,
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(v.verify(&confused), Err(TokenError::Algorithm));
        // No kid: refused, as no key without one is configured.
        assert_eq!(v.verify(&es256(None, claims)), Err(TokenError::Algorithm));
    }

    #[test]
    fn bad_jwks_files_are_refused_at_load() {
        for (keys, why) in [
            (json!([]), "no keys"),
            (
                json!([{"kty": "EC", "crv": "P-256", "x": EC_X, "y": EC_Y}]),
                "needs a kid",
            ),
            (
                json!([{"kty": "EC", "crv": "P-384", "x": EC_X, "y": EC_Y, "kid": "a"}]),
                "the node verifies RS256, ES256 (P-256) and HS256",
            ),
            (
                json!([{"kty": "oct", "k": "c2VjcmV0", "kid": "a"}, {"kty": "oct", "k": "c2VjcmV0", "kid": "a"}]),
                "appears twice",
            ),
        ] {
            let path = jwks_file("bad-jwks", keys);
            let err = Verifier::load(None, None, Some(&path)).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn a_token_verified_before_is_served_from_the_cache_until_it_expires() {
        let v = verifier();
        let t = hs256(json!({"sub": "ann", "exp": now() + 2, "channels": ["a"]}));
        let first = v.verify(&t).unwrap();
        let again = v.verify(&t).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "the cached grant");
        // Past its expiry by the wall clock the verifier reads (polled: a
        // sleep of so long need not move that clock by as much here).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while jsonwebtoken::get_current_timestamp() <= first.exp {
            assert!(
                std::time::Instant::now() < deadline,
                "the wall clock stands still"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert_eq!(
            v.verify(&t),
            Err(TokenError::Expired),
            "expiry is checked on a hit"
        );
        // A token whose signature differs in one byte is verified on its
        // own. The first character of the signature is changed, not the
        // last: the last of 43 base64url characters carries two padding
        // bits, and most replacements there are not canonical base64 at all.
        let sig = t.rfind('.').unwrap() + 1;
        let mut forged = t.clone();
        let swap = if t[sig..].starts_with('A') { "B" } else { "A" };
        forged.replace_range(sig..sig + 1, swap);
        assert_eq!(v.verify(&forged), Err(TokenError::BadSignature));
        // Bounded.
        for i in 0..RECENT_TOKENS + 10 {
            v.verify(&hs256(json!({"exp": now() + 60, "n": i})))
                .unwrap();
        }
        assert!(v.recent.lock().len() <= RECENT_TOKENS);
    }

    #[test]
    fn keys_are_checked_at_load() {
        assert!(Verifier::load(Some("short"), None, None)
            .unwrap_err()
            .contains("32 bytes"));
        assert!(Verifier::load(None, None, None).unwrap().is_none());
        let missing = Verifier::load(None, Some(Path::new("/nonexistent.pem")), None);
        assert!(missing.unwrap_err().contains("cannot read"));
    }
}
