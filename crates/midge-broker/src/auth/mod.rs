//! Who may connect, and what they may do: the password file, the ACL file, certificate
//! identities, and the slowdown of repeated failures. Reloaded as a whole on SIGHUP.
pub mod acl;
pub mod enhanced;
mod limiter;
pub mod password;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

pub use acl::{Acl, AclError};
pub use enhanced::{AuthExchange, AuthMethod, AuthStep, Enhanced};
pub use limiter::FailureLimiter;
pub use password::{Hash, PasswordFile, PasswordFileError};

use crate::config::SecuritySettings;

/// Why the security files cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecurityError {
    /// The password file.
    #[error(transparent)]
    Password(#[from] PasswordFileError),
    /// The ACL file.
    #[error(transparent)]
    Acl(#[from] AclError),
}

/// The outcome of a password check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    /// The password is right.
    Accepted,
    /// Unknown user or wrong password (the client is not told which).
    Refused,
}

/// The password and ACL files as loaded, with a cache of verified credentials.
#[derive(Debug)]
pub struct Security {
    passwords: Option<HashMap<String, Hash>>,
    acl: Option<Acl>,
    /// user -> HMAC of the last password verified for it: a reconnect storm of the same
    /// credentials costs one PBKDF2 each, not one per connection. Keyed per process, and
    /// dropped with this object when the file is reloaded.
    verified: Mutex<HashMap<String, ring::hmac::Tag>>,
    cache_key: ring::hmac::Key,
    fingerprint_key: FingerprintKey,
}

/// The process's key for [`Security::hash_fingerprint`]: the same across reloads.
#[derive(Debug, Clone)]
struct FingerprintKey(std::hash::RandomState);

impl FingerprintKey {
    fn get() -> FingerprintKey {
        static KEY: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
        FingerprintKey(KEY.get_or_init(std::hash::RandomState::new).clone())
    }
}

impl Security {
    /// Reads the files the security settings name.
    pub fn load(config: &SecuritySettings) -> Result<Security, SecurityError> {
        let passwords =
            config.password_file.as_deref().map(PasswordFile::load).transpose()?.map(|f| f.by_user());
        let acl = config.acl_file.as_deref().map(Acl::load).transpose()?;
        let rng = ring::rand::SystemRandom::new();
        // The system RNG only fails when the OS has none.
        let cache_key =
            ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng).expect("system random number generator");
        Ok(Security {
            passwords,
            acl,
            verified: Mutex::new(HashMap::new()),
            cache_key,
            fingerprint_key: FingerprintKey::get(),
        })
    }

    /// True when a password file is configured.
    pub fn has_passwords(&self) -> bool {
        self.passwords.is_some()
    }

    /// A fingerprint of the hash `user` has in the password file, if any: a client that
    /// logged in against one fingerprint is let stay after a reload while it is the same.
    pub fn hash_fingerprint(&self, user: &str) -> Option<u64> {
        use std::hash::BuildHasher;
        let hash = self.passwords.as_ref()?.get(user)?;
        // Keyed per process, like the cache: not a value anyone outside can compute.
        Some(self.fingerprint_key.0.hash_one(hash))
    }

    /// The ACL, if one is configured.
    pub fn acl(&self) -> Option<&Acl> {
        self.acl.as_ref()
    }

    /// Checks a user name and password against the password file. CPU-heavy on a cache
    /// miss (PBKDF2): call it off the async threads.
    pub fn check_password(&self, user: &str, password: &[u8]) -> Login {
        let Some(hash) = self.passwords.as_ref().and_then(|p| p.get(user)) else {
            return Login::Refused;
        };
        let tag = ring::hmac::sign(&self.cache_key, password);
        if let Some(known) = self.verified.lock().get(user) {
            if ring::hmac::verify(&self.cache_key, password, known.as_ref()).is_ok() {
                return Login::Accepted;
            }
        }
        // A cache miss: the full hash computation (logged, so its cost can be seen).
        tracing::debug!("Computing the password hash of user '{user}' (not in the cache).");
        if hash.verify(password) {
            self.verified.lock().insert(user.to_owned(), tag);
            Login::Accepted
        } else {
            Login::Refused
        }
    }
}

/// The security settings in force, swapped whole on reload.
pub type SharedSecurity = Arc<ArcSwap<Security>>;

/// What one client may do, checked against the settings in force at each question.
#[derive(Debug, Clone)]
pub struct ClientAccess {
    security: SharedSecurity,
    username: Option<String>,
    client_id: String,
}

impl ClientAccess {
    /// The rights of a client with this user name and id.
    pub fn new(security: SharedSecurity, username: Option<String>, client_id: String) -> Self {
        ClientAccess { security, username, client_id }
    }

    fn with_acl(&self, f: impl FnOnce(&Acl, Option<&str>, &str) -> bool) -> bool {
        match self.security.load().acl() {
            Some(acl) => f(acl, self.username.as_deref(), &self.client_id),
            None => true,
        }
    }

    /// May it publish to `topic`?
    pub fn can_publish(&self, topic: &str) -> bool {
        self.with_acl(|a, u, c| a.can_publish(u, c, topic))
    }

    /// May it receive a message on `topic`?
    pub fn can_read(&self, topic: &str) -> bool {
        self.with_acl(|a, u, c| a.can_read(u, c, topic))
    }

    /// May it subscribe to `filter`?
    pub fn can_subscribe(&self, filter: &str) -> bool {
        self.with_acl(|a, u, c| a.can_subscribe(u, c, filter))
    }
}
