//! Who may connect, and what they may do: the password file, the ACL file, certificate
//! identities, and the slowdown of repeated failures. Reloaded as a whole on SIGHUP.
//!
//! Password checks are where a hostile client can make the broker work: each costs a PBKDF2
//! computation. They run on a bounded pool ([`pool`]), one login per source address at a
//! time ([`turns`]), after the address's failure delay ([`FailureLimiter`]), and an unknown
//! user costs what a known one does ([`password::decoy_for`]).
pub mod acl;
pub mod certificate;
pub mod enhanced;
mod limiter;
pub mod password;
pub mod pool;
pub mod subject;
pub mod turns;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

pub use acl::{Acl, AclError};
pub use certificate::{ClientCertificate, Revocations, SharedRevocations};
pub use enhanced::{AuthExchange, AuthMethod, AuthStep, Enhanced};
pub use limiter::FailureLimiter;
pub use password::{Hash, PasswordFile, PasswordFileError};
pub use pool::{HashPool, PoolError};
pub use turns::Turns;

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
    /// What an unknown user's password is checked against ([`password::decoy_for`]).
    decoy: Hash,
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
        let passwords = match config.password_file.as_deref() {
            Some(path) => {
                let (file, bad) = PasswordFile::load_skipping_bad(path)?;
                for e in bad {
                    // As mosquitto: the entry is removed, and the broker goes on.
                    tracing::error!("Error: {e}: this entry is left out (its user cannot log in).");
                }
                Some(file.by_user())
            }
            None => None,
        };
        let acl = config.acl_file.as_deref().map(Acl::load).transpose()?;
        let decoy = password::decoy_for(passwords.iter().flat_map(|p| p.values()));
        let rng = ring::rand::SystemRandom::new();
        // The system RNG only fails when the OS has none.
        let cache_key =
            ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng).expect("system random number generator");
        Ok(Security {
            passwords,
            decoy,
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

    /// Checks a user name and password against the password file: [`Security::is_cached`],
    /// else [`Security::verify_password`]. CPU-heavy on a cache miss (PBKDF2): call it off
    /// the async threads.
    pub fn check_password(&self, user: &str, password: &[u8]) -> Login {
        if self.is_cached(user, password) {
            return Login::Accepted;
        }
        self.verify_password(user, password)
    }

    /// True when this password was verified for `user` since the file was loaded: a keyed
    /// HMAC, microseconds. Only a right password is ever cached, so a miss tells nothing
    /// until the hash is computed; the caller must still apply the failure delay before
    /// asking, or a client could try guesses against the cache at full speed.
    pub fn is_cached(&self, user: &str, password: &[u8]) -> bool {
        self.verified
            .lock()
            .get(user)
            .is_some_and(|known| ring::hmac::verify(&self.cache_key, password, known.as_ref()).is_ok())
    }

    /// Computes the password's hash and compares it with the user's (then caches it when it
    /// matches). An unknown user's password is checked against the decoy hash, at the same
    /// cost, so the time of a refusal does not tell whether the user exists. An empty
    /// password (or none) matches no hash, as mosquitto reads it: no password.
    pub fn verify_password(&self, user: &str, password: &[u8]) -> Login {
        let Some(passwords) = &self.passwords else {
            return Login::Refused;
        };
        // The full hash computation (logged, so its cost can be seen).
        tracing::debug!("Computing the password hash of user '{user}' (not in the cache).");
        match passwords.get(user) {
            Some(hash) if hash.verify(password) && !password.is_empty() => {
                let tag = ring::hmac::sign(&self.cache_key, password);
                self.verified.lock().insert(user.to_owned(), tag);
                Login::Accepted
            }
            Some(_) => Login::Refused,
            None => {
                let _ = self.decoy.verify(password);
                Login::Refused
            }
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
    /// The listener it came in on (by its index), whose settings `security` are.
    listener: usize,
}

impl ClientAccess {
    /// The rights of a client with this user name and id, on the listener of this index
    /// (whose settings `security` are).
    pub fn new(
        security: SharedSecurity,
        username: Option<String>,
        client_id: String,
        listener: usize,
    ) -> Self {
        ClientAccess { security, username, client_id, listener }
    }

    /// Whose rights these are: the user name and the listener's index (for the store, which
    /// gives a restored will its client's rights back).
    pub fn owner(&self) -> (Option<&str>, usize) {
        (self.username.as_deref(), self.listener)
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
