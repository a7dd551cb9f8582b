//! Authentication of a CONNECT: certificate identity, password file, anonymous access, and
//! the slowdown of repeated failures from one address.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use midge_codec::{Auth, Connect, Packet, Properties, Property, ReasonCode};

use super::Broker;
use crate::auth::{AuthExchange, AuthMethod, AuthStep, Enhanced, Login, SharedSecurity};

/// Why a client without a certificate identity is refused on a listener that takes user
/// names from certificates.
const CERT_IDENTITY_MISSING: &str =
    "this listener takes the user name from a client certificate, and none with a name was presented";

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
}

impl ConnInfo {
    /// A plain TCP connection from `peer`.
    pub fn plain(peer: SocketAddr) -> Self {
        ConnInfo { peer, tls: false, cert_username: None, cert_identity_required: false, listener: 0 }
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

/// What is checked again after a reload, with the session's user name: the listener and
/// the credentials.
#[derive(Debug, Clone, Copy)]
pub struct Recheck {
    /// The listener (index in `Config::effective_listeners`).
    pub listener: usize,
    /// How the client proved who it is.
    pub credentials: Credentials,
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
}

impl Authenticated {
    /// The user name the client is known by (for ACLs and logs).
    pub fn username(&self) -> Option<&ByteString> {
        self.username.as_ref()
    }

    /// What a reload checks again.
    pub fn recheck(&self) -> Recheck {
        Recheck { listener: self.listener, credentials: self.credentials }
    }
}

/// A refused CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The reason code for CONNACK (0x86 / 0x87; 3.1.1: 0x04 / 0x05).
    pub code: ReasonCode,
    /// How long to wait before answering (repeated failures from this address).
    pub delay: Duration,
    /// Why, for the 5.0 Reason String and the log.
    pub why: &'static str,
}

impl Refusal {
    /// A refusal answered at once.
    pub fn new(code: ReasonCode, why: &'static str) -> Self {
        Refusal { code, delay: Duration::ZERO, why }
    }

    /// The CONNACK that tells a client of `version`, if it gets one: the reason code, and for
    /// 5.0 a Reason String (3.1.1 encodes the nearest return code and no properties). A
    /// 3.1.1 client whose will topic is refused gets none: its protocol has no code for
    /// it, and mosquitto closes the connection.
    pub fn connack_for(&self, version: midge_codec::ProtocolVersion) -> Option<midge_codec::ConnAck> {
        (version.is_v5() || self.code != ReasonCode::TopicNameInvalid).then(|| self.connack())
    }

    /// The CONNACK that tells the client: the reason code, and for 5.0 a Reason String
    /// (3.1.1 encodes the nearest return code and no properties).
    pub fn connack(&self) -> midge_codec::ConnAck {
        let mut ack = midge_codec::ConnAck::new(self.code);
        ack.properties.push(Property::ReasonString(self.why.into()));
        ack
    }
}

impl Broker {
    /// Whether a connected client would still be let in under the security settings in
    /// force (after a reload): an anonymous client while its listener allows anonymous
    /// clients, a password while the user's hash is the one it matched. Certificates and
    /// enhanced authentication are not checked again.
    pub fn still_allowed(&self, r: &Recheck, username: Option<&str>) -> bool {
        let scope = self.scope(r.listener);
        match r.credentials {
            Credentials::Verified => true,
            Credentials::Anonymous => scope.anonymous_allowed(),
            Credentials::Label => scope.anonymous_allowed() && !scope.security.load().has_passwords(),
            Credentials::Password(fingerprint) => {
                let security = scope.security.load();
                if security.has_passwords() {
                    username.is_some_and(|u| security.hash_fingerprint(u) == Some(fingerprint))
                } else {
                    // No password file any more: a user name passes where anonymous clients do.
                    scope.anonymous_allowed()
                }
            }
        }
    }

    /// Decides whether the client may connect, and as which user. May compute a PBKDF2
    /// hash: call [`Broker::authenticate_async`] from async code.
    pub fn authenticate(&self, c: &Connect, info: &ConnInfo, now: Instant) -> Result<Authenticated, Refusal> {
        let scope = self.scope(info.listener);
        let accepted = |username: Option<String>, credentials| Authenticated {
            username: username.map(ByteString::from),
            credentials,
            security: scope.security.clone(),
            enhanced: None,
            listener: info.listener,
        };
        // A certificate identity replaces the user name, and the password file is not used.
        if let Some(name) = &info.cert_username {
            return Ok(accepted(Some(name.clone()), Credentials::Verified));
        }
        if info.cert_identity_required {
            return Err(Refusal::new(ReasonCode::NotAuthorized, CERT_IDENTITY_MISSING));
        }
        let security = scope.security.load();
        let Some(user) = &c.username else {
            return if scope.anonymous_allowed() {
                Ok(accepted(None, Credentials::Anonymous))
            } else {
                // Anonymous access is off: 0x05 (3.1.1) / 0x87 (5.0) Not authorized.
                Err(Refusal::new(ReasonCode::NotAuthorized, "anonymous access is not allowed"))
            };
        };
        if !security.has_passwords() {
            // Without a password file a user name is only a label; it passes where
            // anonymous clients do.
            return if scope.anonymous_allowed() {
                Ok(accepted(Some(user.to_string()), Credentials::Label))
            } else {
                Err(Refusal::new(
                    ReasonCode::NotAuthorized,
                    "anonymous access is not allowed and no password file is set",
                ))
            };
        }
        let password = c.password.as_deref().unwrap_or_default();
        match security.check_password(user, password) {
            Login::Accepted => {
                self.limiter.succeeded(info.peer.ip());
                let fingerprint = security.hash_fingerprint(user).unwrap_or_default();
                Ok(accepted(Some(user.to_string()), Credentials::Password(fingerprint)))
            }
            Login::Refused => {
                // 3.1.1 0x04 / 5.0 0x86: unknown user and wrong password look the same.
                let delay = self.limiter.failed(info.peer.ip(), now);
                Err(Refusal {
                    code: ReasonCode::BadUserNameOrPassword,
                    delay,
                    why: "bad user name or password",
                })
            }
        }
    }

    /// [`Broker::authenticate`], with the password check on a blocking thread.
    pub async fn authenticate_async(
        self: &Arc<Self>,
        c: &Connect,
        info: &ConnInfo,
        now: Instant,
    ) -> Result<Authenticated, Refusal> {
        let needs_hash = info.cert_username.is_none()
            && c.username.is_some()
            && self.scope(info.listener).security.load().has_passwords();
        if !needs_hash {
            return self.authenticate(c, info, now);
        }
        let (broker, c2, info2) = (self.clone(), c.clone(), info.clone());
        match tokio::task::spawn_blocking(move || broker.authenticate(&c2, &info2, now)).await {
            Ok(r) => r,
            Err(_) => Err(Refusal::new(ReasonCode::ServerUnavailable, "the password check failed")),
        }
    }
}

/// An enhanced authentication (5.0 AUTH exchange) in progress at CONNECT.
pub struct EnhancedLogin {
    method: Arc<dyn AuthMethod>,
    security: SharedSecurity,
    listener: usize,
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
                LoginStep::Refuse(Refusal::new(ReasonCode::NotAuthorized, CERT_IDENTITY_MISSING)),
            ));
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
        let mut login =
            EnhancedLogin { exchange: method.start(client_id), method, security, listener: info.listener };
        let step = login.step(c.properties.authentication_data().map(|d| &d[..]));
        Some((Some(login), step))
    }
}
