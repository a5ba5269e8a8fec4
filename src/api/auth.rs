//! Bearer tokens: stored as sha256 hashes, compared in constant time, each with a role. The
//! extractors [`Viewer`], [`Operator`] and [`Admin`] guard every route that is not open, so a
//! handler's signature says who may call it.

use std::fmt::Write as _;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;
use tds_core::config::{Role, TokenConfig};

use super::AppState;
use super::error::ApiError;

/// The lowercase hex sha256 of a token, as written in `[[tokens]] sha256`.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A configured token, its hash decoded once so that requests compare raw bytes.
#[derive(Debug, Clone)]
pub struct TokenEntry {
    name: String,
    hash: [u8; 32],
    role: Role,
}

/// The configured tokens; empty means the API is open (and bound to loopback only).
#[derive(Debug, Clone, Default)]
pub struct Tokens(Vec<TokenEntry>);

impl Tokens {
    /// Decodes the configured hashes; a malformed one is skipped with a warning (the config
    /// check refuses them, so this only guards hand-built configs).
    pub fn new(tokens: &[TokenConfig]) -> Self {
        let entries = tokens
            .iter()
            .filter_map(|t| {
                let hash = decode_hex(&t.sha256);
                if hash.is_none() {
                    tracing::warn!(token = %t.name, "token sha256 is not 64 hex digits; ignored");
                }
                Some(TokenEntry { name: t.name.clone(), hash: hash?, role: t.role })
            })
            .collect();
        Self(entries)
    }

    /// Whether auth is off (no tokens configured).
    pub fn is_open(&self) -> bool {
        self.0.is_empty()
    }

    /// The token matching `presented`, comparing every configured hash in constant time and
    /// without stopping at a match, so timing reveals neither the hash nor which one matched.
    fn find(&self, presented: &str) -> Option<&TokenEntry> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for entry in &self.0 {
            if bool::from(entry.hash.ct_eq(&digest)) {
                found = Some(entry);
            }
        }
        found
    }
}

fn decode_hex(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// Who is calling: the token's name (recorded as `requested_by`) and its role.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

fn unauthorized(message: &str, invalid: bool) -> ApiError {
    let challenge = if invalid { "Bearer realm=\"tds\", error=\"invalid_token\"" } else { "Bearer realm=\"tds\"" };
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).with_header(header::WWW_AUTHENTICATE, challenge)
}

/// Resolves the caller of a request and checks that its role is at least `needed`.
pub fn authorize(parts: &Parts, state: &AppState, needed: Role) -> Result<Caller, ApiError> {
    let tokens = state.tokens();
    if tokens.is_open() {
        return Ok(Caller { name: "anonymous".into(), role: Role::Admin });
    }
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized("this route needs a bearer token (Authorization: Bearer …)", false));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Err(unauthorized("the Authorization header must be 'Bearer <token>'", true));
    };
    let Some(entry) = tokens.find(token) else {
        return Err(unauthorized("the bearer token is not valid", true));
    };
    if entry.role < needed {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("token '{}' has role {}; this needs {}", entry.name, entry.role.as_str(), needed.as_str()),
        )
        .with_details(json!({ "role": entry.role.as_str(), "required": needed.as_str() })));
    }
    Ok(Caller { name: entry.name.clone(), role: entry.role })
}

macro_rules! role_extractor {
    ($name:ident, $role:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone)]
        pub struct $name(pub Caller);

        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
                authorize(parts, state, $role).map($name)
            }
        }
    };
}

role_extractor!(Viewer, Role::Viewer, "A caller allowed to read (status, logs, history, metrics, events).");
role_extractor!(Operator, Role::Operator, "A caller allowed to change deployments (submit, cancel, retry, rollback).");
role_extractor!(Admin, Role::Admin, "A caller allowed to change environments (pause, resume, limits).");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_the_config_format_and_compare() {
        let hash = hash_token("s3cret");
        assert_eq!(hash.len(), 64);
        let tokens =
            Tokens::new(&[TokenConfig { name: "ci".into(), sha256: hash.to_uppercase(), role: Role::Operator }]);
        assert_eq!(tokens.find("s3cret").map(|t| t.name.as_str()), Some("ci"));
        assert!(tokens.find("s3cret ").is_none());
        assert!(tokens.find("").is_none());
    }
}
