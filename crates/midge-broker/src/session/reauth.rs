//! Re-authentication (5.0 section 4.12.1): AUTH exchanges with the method the client
//! connected with, while the connection runs.
use midge_codec::ReasonCode;

use super::close::CloseReason;
use super::Session;
use crate::auth::{AuthExchange, AuthStep, Enhanced};

/// The enhanced authentication method a client connected with, and a re-authentication in
/// progress.
#[derive(Debug)]
pub(super) struct EnhancedState {
    method: Enhanced,
    reauth: Option<Box<dyn AuthExchange>>,
}

impl Session {
    /// The enhanced authentication method the client connected with (5.0), which it may
    /// use again to re-authenticate.
    pub fn set_enhanced(&mut self, enhanced: Option<Enhanced>) {
        if let Some(method) = enhanced {
            self.extra().enhanced = Some(EnhancedState { method, reauth: None });
        }
    }

    /// Re-authentication (section 4.12.1): the client sends AUTH 0x19 with the method it
    /// connected with, then the exchange runs as at CONNECT; it ends with AUTH 0x00, or with
    /// DISCONNECT when it fails [MQTT-4.12.1-2].
    pub(super) fn on_auth(&mut self, a: midge_codec::Auth) {
        let Some(enhanced) = self.extra.as_ref().and_then(|x| x.enhanced.as_ref()).map(|e| e.method.clone())
        else {
            return self.close(CloseReason::protocol(
                ReasonCode::ProtocolError,
                "AUTH without an authentication method in CONNECT",
            ));
        };
        let name = enhanced.method.name();
        if a.properties.authentication_method().map(|m| &**m) != Some(name) {
            // [MQTT-4.12.1-1]: the same Authentication Method as in CONNECT.
            return self.close(CloseReason::protocol(ReasonCode::ProtocolError, "AUTH with another method"));
        }
        match a.reason_code {
            ReasonCode::ReAuthenticate if self.reauth().is_none() => {
                let exchange = enhanced.method.start(&self.client_id);
                if let Some(e) = self.extra.as_mut().and_then(|x| x.enhanced.as_mut()) {
                    e.reauth = Some(exchange);
                }
            }
            ReasonCode::ContinueAuthentication if self.reauth().is_some() => {}
            _ => return self.close(CloseReason::protocol(ReasonCode::ProtocolError, "unexpected AUTH")),
        }
        let data = a.properties.authentication_data().map(|d| &d[..]);
        let Some(exchange) =
            self.extra.as_mut().and_then(|x| x.enhanced.as_mut()).and_then(|e| e.reauth.as_mut())
        else {
            return;
        };
        match exchange.step(data) {
            AuthStep::Continue(d) => self.busy().out.push_back(crate::broker::auth_packet(
                name,
                ReasonCode::ContinueAuthentication,
                Some(d),
            )),
            AuthStep::Success { data, .. } => {
                self.end_reauth();
                self.busy().out.push_back(crate::broker::auth_packet(name, ReasonCode::Success, data));
            }
            AuthStep::Failure(code) => {
                self.end_reauth();
                self.close(CloseReason::protocol(code, "re-authentication failed"));
            }
        }
    }

    fn reauth(&self) -> Option<&dyn AuthExchange> {
        self.extra.as_ref().and_then(|x| x.enhanced.as_ref()).and_then(|e| e.reauth.as_deref())
    }

    fn end_reauth(&mut self) {
        if let Some(e) = self.extra.as_mut().and_then(|x| x.enhanced.as_mut()) {
            e.reauth = None;
        }
    }
}
