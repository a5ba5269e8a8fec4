//! Bearer tokens: stored as sha256 hashes, compared in constant time.

use sha2::{Digest, Sha256};

/// The lowercase hex sha256 of a token, as written in `[[tokens]] sha256`.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}
