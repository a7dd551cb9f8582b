//! Authentication of a CONNECT: certificate identity, password file, anonymous access, and
//! the slowdown of repeated failures from one address.
//!
//! A password check goes, in order: one login per source address at a time (its other
//! logins wait their turn, [`crate::auth::turns`]); the address's failure delay, if it failed
//! recently; the cache of verified credentials; the hashing pool ([`crate::auth::pool`]).
//! So a flooding address has at most one hash queued, costs no CPU while it waits, and
//! cannot try guesses against the cache faster than the delay allows; logins from other
//! addresses go past it.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use midge_codec::{Auth, Connect, Packet, Properties, Property, ReasonCode};

use super::Broker;
use crate::auth::{
    AuthExchange, AuthMethod, AuthStep, ClientCertificate, Enhanced, Login, PoolError, Security,
    SharedSecurity,
};

/// Why a client without a certificate identity is refused on a listener that takes user
/// names from certificates.
const CERT_IDENTITY_MISSING: &str =
    "this listener takes the user name from a client certificate, and none with a name was presented";

/// Why a login is refused without its password being checked: its address has too many
/// logins waiting (one is checked at a time, after the failure delay).
const LOGINS_QUEUED: &str = "too many logins from this address at once: try again later";
const LOGINS_BUSY: &str = "too many logins at once: try again later";

/// Why a client whose certificate was revoked between its TLS handshake and its CONNECT is
/// refused (a CRL reloaded meanwhile).
const CERT_REVOKED: &str = "the client certificate was revoked by the CRL reloaded since the TLS handshake";

/// What the network side knows of a connection before its CONNECT.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// True on a TLS listener.
    pub tls: bool,
    /// The user name from the client certificate, when the listener maps certificates to
    /// users (use_identity_as_username, use_subject_as_username).
    pub cert_username: Option<String>,
    /// The listener takes user names from certificates: a client without one (or with no
    /// Common Name) is refused rather than let through to password login.
    pub cert_identity_required: bool,
    /// The listener it came in on, by its index in `Config::effective_listeners` (which
    /// security settings apply, with `per_listener_settings true`).
    pub listener: usize,
    /// The client certificate the TLS handshake verified, if any: a reload checks it
    /// against the listener's new CRL.
    pub certificate: Option<Arc<ClientCertificate>>,
    /// Opened once the client has logged in: a WebSocket connection is read only so far
    /// until then ([`LoginGate`]).
    pub login_gate: Option<Arc<LoginGate>>,
}

/// What holds a connection's reading back until its client has logged in, where the layer
/// under MQTT would otherwise read a whole message before MQTT sees any of it (a WebSocket
/// message may be as large as the largest packet): opened once, after authentication.
#[derive(Debug, Default)]
pub struct LoginGate {
    open: std::sync::atomic::AtomicBool,
    /// The reader waiting for it.
    waiter: atomic_waker::AtomicWaker,
}

impl LoginGate {
    /// The client has logged in: reading goes on.
    pub fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::Release);
        self.waiter.wake();
    }

    /// True once the client has logged in.
    pub fn is_open(&self) -> bool {
        self.open.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Ready once the gate is open; until then `cx` is woken when it opens.
    pub fn poll_open(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if !self.is_open() {
            self.waiter.register(cx.waker());
            if !self.is_open() {
                return std::task::Poll::Pending;
            }
        }
        std::task::Poll::Ready(())
    }
}

impl ConnInfo {
    /// A plain TCP connection from `peer`.
    pub fn plain(peer: SocketAddr) -> Self {
        ConnInfo {
            peer,
            tls: false,
            cert_username: None,
            cert_identity_required: false,
            listener: 0,
            certificate: None,
            login_gate: None,
        }
    }
}

/// How a client proved who it is: checked again when the security settings are reloaded
/// ([`Broker::still_allowed`]), as mosquitto does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    /// No user name.
    Anonymous,
    /// A user name without a password file to check it against: a label.
    Label,
    /// A password that matched the hash of this fingerprint.
    Password(u64),
    /// A certificate identity or an enhanced authentication: not checked again.
    Verified,
}

/// What is checked again after a reload, with the session's user name: the listener, the
/// credentials and the client certificate.
#[derive(Debug, Clone)]
pub struct Recheck {
    /// The listener (index in `Config::effective_listeners`).
    pub listener: usize,
    /// How the client proved who it is.
    pub credentials: Credentials,
    /// The client certificate, checked against the listener's CRL in force.
    pub certificate: Option<Arc<ClientCertificate>>,
}

/// Why a connected client is no longer let in after a reload ([`Broker::still_allowed`]).
/// The connection is closed, a 5.0 client told so with DISCONNECT 0x87 Not authorized, one
/// of the reason codes a Server may send [MQTT-3.14.2-1], after which the Server closes the
/// connection [MQTT-4.13.2-1].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Withdrawn {
    /// Its client certificate is revoked by the listener's reloaded CRL.
    CertificateRevoked {
        /// The certificate's subject, as text.
        subject: String,
        /// Its serial number, in hex.
        serial: String,
    },
    /// It is anonymous (or a user name without a password file) and its listener no longer
    /// allows anonymous clients.
    AnonymousOff,
    /// Its user's password changed, or the user is gone from the password file.
    PasswordChanged,
}

impl std::fmt::Display for Withdrawn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Withdrawn::CertificateRevoked { subject, serial } => {
                write!(f, "its certificate {subject} (serial {serial}) is revoked by the reloaded CRL")
            }
            Withdrawn::AnonymousOff => f.write_str("anonymous access is off in the reloaded settings"),
            Withdrawn::PasswordChanged => {
                f.write_str("its user's password changed or is gone from the reloaded password file")
            }
        }
    }
}

/// A client that passed authentication. Only [`Broker::authenticate`] makes one, so a
/// session cannot be opened without it.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub(crate) username: Option<ByteString>,
    /// How it proved it, for [`Recheck`].
    pub(crate) credentials: Credentials,
    /// The password file and ACL of its listener.
    pub(crate) security: SharedSecurity,
    /// The enhanced authentication method used, and its final data for CONNACK.
    pub(crate) enhanced: Option<(Enhanced, Option<Bytes>)>,
    /// The listener it came in on.
    pub(crate) listener: usize,
    /// The client certificate, for [`Recheck`].
    pub(crate) certificate: Option<Arc<ClientCertificate>>,
}

impl Authenticated {
    /// The user name the client is known by (for ACLs and logs).
    pub fn username(&self) -> Option<&ByteString> {
        self.username.as_ref()
    }

    /// What a reload checks again.
    pub fn recheck(&self) -> Recheck {
        Recheck {
            listener: self.listener,
            credentials: self.credentials,
            certificate: self.certificate.clone(),
        }
    }
}

/// A refused CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The reason code for CONNACK (0x86 / 0x87; 3.1.1: 0x04 / 0x05).
    pub code: ReasonCode,
    /// How long to wait before answering: the failure delay its address owed, when it was
    /// not waited for before the check ([`Broker::authenticate`]; zero from
    /// [`Broker::authenticate_async`], which waits first).
    pub delay: Duration,
    /// Why, for the log.
    pub why: &'static str,
    /// No CONNACK: the connection is just closed, as mosquitto closes it for a will it
    /// does not take.
    pub silent: bool,
}

impl Refusal {
    /// A refusal answered at once.
    pub fn new(code: ReasonCode, why: &'static str) -> Self {
        Refusal { code, delay: Duration::ZERO, why, silent: false }
    }

    /// A refusal told by closing the connection, without CONNACK.
    pub fn silent(why: &'static str) -> Self {
        Refusal { silent: true, ..Refusal::new(ReasonCode::UnspecifiedError, why) }
    }

    /// The CONNACK that tells a client the reason code (3.1.1 encodes the nearest return
    /// code), unless the refusal is [`Refusal::silent`]. [`Broker::refusal_connack`] adds
    /// what the broker says to every client.
    pub fn connack_for(&self, _version: midge_codec::ProtocolVersion) -> Option<midge_codec::ConnAck> {
        (!self.silent).then(|| self.connack())
    }

    /// The CONNACK that tells the client the reason code. No Reason String: mosquitto sends
    /// none, and `why` goes to the log.
    pub fn connack(&self) -> midge_codec::ConnAck {
        midge_codec::ConnAck::new(self.code)
    }
}

/// A login whose password is still to be checked: everything else about it is decided.
struct PasswordLogin {
    /// The password file in force when the CONNECT came.
    security: Arc<Security>,
    user: String,
    password: Vec<u8>,
    accepted: Authenticated,
}

/// Where [`Broker::begin_login`] leaves a CONNECT.
enum LoginStart {
    /// Decided without a password check.
    Decided(Result<Authenticated, Refusal>),
    /// Decided by the password.
    Password(Box<PasswordLogin>),
}

impl Broker {
    /// Whether a connected client would still be let in under the security settings in
    /// force (after a reload): not with a client certificate the listener's CRL now revokes;
    /// an anonymous client while its listener allows anonymous clients, a password while the
    /// user's hash is the one it matched. Certificate identities and enhanced authentication
    /// are not checked again otherwise.
    pub fn still_allowed(&self, r: &Recheck, username: Option<&str>) -> Result<(), Withdrawn> {
        if let Some(cert) = r.certificate.as_deref().filter(|c| c.is_revoked()) {
            return Err(Withdrawn::CertificateRevoked {
                subject: cert.subject().to_owned(),
                serial: cert.serial_hex(),
            });
        }
        let scope = self.scope(r.listener);
        let allowed = |ok: bool, why: Withdrawn| if ok { Ok(()) } else { Err(why) };
        match r.credentials {
            Credentials::Verified => Ok(()),
            Credentials::Anonymous => allowed(scope.anonymous_allowed(), Withdrawn::AnonymousOff),
            Credentials::Label => allowed(
                scope.anonymous_allowed() && !scope.security.load().has_passwords(),
                Withdrawn::AnonymousOff,
            ),
            Credentials::Password(fingerprint) => {
                let security = scope.security.load();
                if security.has_passwords() {
                    allowed(
                        username.is_some_and(|u| security.hash_fingerprint(u) == Some(fingerprint)),
                        Withdrawn::PasswordChanged,
                    )
                } else {
                    // No password file any more: a user name passes where anonymous clients do.
                    allowed(scope.anonymous_allowed(), Withdrawn::AnonymousOff)
                }
            }
        }
    }

    /// Everything decided before a password is checked.
    fn begin_login(&self, c: &Connect, info: &ConnInfo) -> LoginStart {
        let scope = self.scope(info.listener);
        let accepted = |username: Option<String>, credentials| Authenticated {
            username: username.map(ByteString::from),
            credentials,
            security: scope.security.clone(),
            enhanced: None,
            listener: info.listener,
            certificate: info.certificate.clone(),
        };
        let decided = |r| LoginStart::Decided(r);
        if info.certificate.as_deref().is_some_and(ClientCertificate::is_revoked) {
            // Verified by the handshake, revoked by a reload since.
            return decided(Err(Refusal::new(ReasonCode::NotAuthorized, CERT_REVOKED)));
        }
        // A certificate identity replaces the user name, and the password file is not used.
        if let Some(name) = &info.cert_username {
            return decided(Ok(accepted(Some(name.clone()), Credentials::Verified)));
        }
        if info.cert_identity_required {
            // As mosquitto: Bad User Name or Password (3.1.1: return code 4), the user name
            // being what the certificate did not give.
            return decided(Err(Refusal::new(ReasonCode::BadUserNameOrPassword, CERT_IDENTITY_MISSING)));
        }
        let security = scope.security.load_full();
        let Some(user) = &c.username else {
            return decided(if scope.anonymous_allowed() {
                Ok(accepted(None, Credentials::Anonymous))
            } else {
                // Anonymous access is off: 0x05 (3.1.1) / 0x87 (5.0) Not authorized.
                Err(Refusal::new(ReasonCode::NotAuthorized, "anonymous access is not allowed"))
            });
        };
        if !security.has_passwords() {
            // Without a password file a user name is only a label; it passes where
            // anonymous clients do.
            return decided(if scope.anonymous_allowed() {
                Ok(accepted(Some(user.to_string()), Credentials::Label))
            } else {
                Err(Refusal::new(
                    ReasonCode::NotAuthorized,
                    "anonymous access is not allowed and no password file is set",
                ))
            });
        }
        let fingerprint = security.hash_fingerprint(user).unwrap_or_default();
        LoginStart::Password(Box::new(PasswordLogin {
            accepted: accepted(Some(user.to_string()), Credentials::Password(fingerprint)),
            security,
            user: user.to_string(),
            password: c.password.as_deref().unwrap_or_default().to_vec(),
        }))
    }

    /// The outcome of a password check, recorded for its address.
    fn conclude(
        &self,
        login: PasswordLogin,
        outcome: Login,
        info: &ConnInfo,
        now: Instant,
    ) -> Result<Authenticated, Refusal> {
        match outcome {
            Login::Accepted => {
                self.limiter.succeeded(info.peer.ip());
                Ok(login.accepted)
            }
            Login::Refused => {
                self.limiter.failed(info.peer.ip(), now);
                // Unknown user and wrong password look the same: as mosquitto, 0x05 Not
                // authorized (5.0: 0x87), which the spec allows for any refused login.
                Err(Refusal::new(ReasonCode::NotAuthorized, "bad user name or password"))
            }
        }
    }

    /// Decides whether the client may connect, and as which user, at once: a password is
    /// checked on this thread (it may compute a PBKDF2 hash), and a refusal carries the
    /// failure delay its address owed in [`Refusal::delay`]. For tests with the time passed
    /// in; connections use [`Broker::authenticate_async`].
    pub fn authenticate(&self, c: &Connect, info: &ConnInfo, now: Instant) -> Result<Authenticated, Refusal> {
        match self.begin_login(c, info) {
            LoginStart::Decided(r) => r,
            LoginStart::Password(login) => {
                let owed = self.limiter.delay(info.peer.ip(), now);
                let outcome = login.security.check_password(&login.user, &login.password);
                self.conclude(*login, outcome, info, now).map_err(|r| Refusal { delay: owed, ..r })
            }
        }
    }

    /// Decides whether the client may connect, and as which user. A password is checked in
    /// its address's turn, after the address's failure delay, against the cache and then on
    /// the hashing pool (see the module's documentation); the wait is over when this
    /// returns, so a refusal's [`Refusal::delay`] is zero. A login that cannot be checked in
    /// time is refused with 0x89 Server busy.
    pub async fn authenticate_async(&self, c: &Connect, info: &ConnInfo) -> Result<Authenticated, Refusal> {
        let mut login = match self.begin_login(c, info) {
            LoginStart::Decided(r) => return r,
            LoginStart::Password(login) => login,
        };
        let ip = info.peer.ip();
        // The check must start soon enough to end within the time a client has for its
        // CONNECT (Config::connect_timeout_secs): a login whose address's turn, or whose
        // failure delay, would not let it is answered "Server busy" (3.1.1: server
        // unavailable), one of the codes a CONNACK may carry [MQTT-3.2.2-8], rather than
        // left to time out unanswered. The failure delay itself is capped at half that time,
        // so that a lone login from a failing address is always checked.
        let timeout = Duration::from_secs(self.config.connect_timeout_secs);
        let deadline = tokio::time::Instant::now() + timeout * 3 / 4;
        let Ok(_turn) = tokio::time::timeout_at(deadline, self.login_turns.take(ip)).await else {
            return Err(Refusal::new(ReasonCode::ServerBusy, LOGINS_QUEUED));
        };
        let delay = self.limiter.delay(ip, Instant::now()).min(timeout / 2);
        if tokio::time::Instant::now() + delay > deadline {
            return Err(Refusal::new(ReasonCode::ServerBusy, LOGINS_QUEUED));
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let outcome = if login.security.is_cached(&login.user, &login.password) {
            Login::Accepted
        } else {
            let (security, user, password) =
                (login.security.clone(), login.user.clone(), std::mem::take(&mut login.password));
            // Its place in the pool's queue by the deadline too: logins from many addresses
            // at once (one each) filled it, and a good one waited past the CONNECT's time,
            // to be closed unanswered.
            let check = move || security.verify_password(&user, &password);
            match self.hash_pool.run_queued_by(Some(deadline), check).await {
                Ok(outcome) => outcome,
                Err(PoolError::Busy) => return Err(Refusal::new(ReasonCode::ServerBusy, LOGINS_BUSY)),
                Err(e) => {
                    tracing::error!("Cannot check the password of user '{}': {e}.", login.user);
                    return Err(Refusal::new(ReasonCode::ServerUnavailable, "the password check failed"));
                }
            }
        };
        self.conclude(*login, outcome, info, Instant::now())
    }
}

/// An enhanced authentication (5.0 AUTH exchange) in progress at CONNECT.
pub struct EnhancedLogin {
    method: Arc<dyn AuthMethod>,
    security: SharedSecurity,
    listener: usize,
    certificate: Option<Arc<ClientCertificate>>,
    exchange: Box<dyn AuthExchange>,
}

/// What to do next in an enhanced authentication at CONNECT.
#[derive(Debug)]
pub enum LoginStep {
    /// Send this AUTH and wait for the client's AUTH.
    Send(Packet),
    /// Authenticated.
    Done(Authenticated),
    /// Refused.
    Refuse(Refusal),
}

/// An AUTH packet of `method` with a reason and data.
pub(crate) fn auth_packet(method: &str, reason: ReasonCode, data: Option<Bytes>) -> Packet {
    let mut properties = Properties::new();
    properties.push(Property::AuthenticationMethod(method.to_owned().into()));
    if let Some(d) = data {
        properties.push(Property::AuthenticationData(d));
    }
    Packet::Auth(Auth { reason_code: reason, properties })
}

impl EnhancedLogin {
    fn step(&mut self, data: Option<&[u8]>) -> LoginStep {
        match self.exchange.step(data) {
            AuthStep::Continue(d) => {
                LoginStep::Send(auth_packet(self.method.name(), ReasonCode::ContinueAuthentication, Some(d)))
            }
            AuthStep::Success { username, data } => LoginStep::Done(Authenticated {
                username: username.map(ByteString::from),
                credentials: Credentials::Verified,
                security: self.security.clone(),
                enhanced: Some((Enhanced { method: self.method.clone() }, data)),
                listener: self.listener,
                certificate: self.certificate.clone(),
            }),
            AuthStep::Failure(code) => LoginStep::Refuse(Refusal::new(code, "authentication failed")),
        }
    }

    /// The client's AUTH during the exchange: Continue authentication, same method
    /// [MQTT-4.12.0-4]; anything else is a Protocol Error.
    pub fn on_auth(&mut self, a: &Auth) -> LoginStep {
        let same_method = a.properties.authentication_method().map(|m| &**m) == Some(self.method.name());
        if a.reason_code != ReasonCode::ContinueAuthentication || !same_method {
            return LoginStep::Refuse(Refusal::new(
                ReasonCode::ProtocolError,
                "expected AUTH to continue authentication",
            ));
        }
        self.step(a.properties.authentication_data().map(|d| &d[..]))
    }
}

impl Broker {
    /// Starts the enhanced authentication a 5.0 CONNECT asks for with Authentication Method;
    /// `None` when it asks for none. An unknown method is refused with 0x8C.
    pub fn begin_enhanced(
        &self,
        c: &Connect,
        client_id: &str,
        info: &ConnInfo,
    ) -> Option<(Option<EnhancedLogin>, LoginStep)> {
        if !c.protocol.is_v5() {
            return None;
        }
        let name = c.properties.authentication_method()?;
        if info.cert_identity_required && info.cert_username.is_none() {
            // The listener's identities come from certificates: an AUTH method does not
            // stand in for one.
            return Some((
                None,
                LoginStep::Refuse(Refusal::new(ReasonCode::BadUserNameOrPassword, CERT_IDENTITY_MISSING)),
            ));
        }
        if info.certificate.as_deref().is_some_and(ClientCertificate::is_revoked) {
            return Some((None, LoginStep::Refuse(Refusal::new(ReasonCode::NotAuthorized, CERT_REVOKED))));
        }
        let Some(method) = self.auth_method(name) else {
            // [MQTT-4.12.0-1]: an unsupported method gets 0x8C Bad authentication method.
            return Some((
                None,
                LoginStep::Refuse(Refusal::new(
                    ReasonCode::BadAuthenticationMethod,
                    "unsupported authentication method",
                )),
            ));
        };
        let security = self.scope(info.listener).security.clone();
        let mut login = EnhancedLogin {
            exchange: method.start(client_id),
            method,
            security,
            listener: info.listener,
            certificate: info.certificate.clone(),
        };
        let step = login.step(c.properties.authentication_data().map(|d| &d[..]));
        Some((Some(login), step))
    }
}
