//! Who can reach the broker and how: passwords over plain TCP, anonymous clients from the
//! network, no ACL for network clients. mosquitto 2.0's defaults: without a listener the
//! broker listens on localhost only and allows anonymous clients (local only mode); with
//! listeners, `allow_anonymous` defaults to false.
use super::Context;
use crate::finding::{Finding, Kind, Severity};

pub(super) fn check(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let m = cx.model;
    if m.local_only() {
        if let Some(at) = m.global.password_source() {
            out.push(Finding::new(
                Severity::Low,
                Kind::PasswordWithoutTls,
                at.clone(),
                "passwords accepted on the default listener 1883 (127.0.0.1, local only mode: no listener \
                 is configured) without TLS: only local users who can capture loopback traffic could read \
                 them; add a TLS listener for clients that send passwords",
            ));
        }
        return;
    }
    for l in &m.listeners {
        let security = m.security_of(l);
        let local = l.is_local();
        if security.password_source().is_some() && !l.tls.enabled() {
            out.push(if local {
                Finding::new(
                    Severity::Low,
                    Kind::PasswordWithoutTls,
                    l.at.clone(),
                    format!(
                        "passwords accepted on {} without TLS; it is loopback-only, so only local users who \
                         can capture loopback traffic could read them; add certfile/keyfile to close that too",
                        l.name()
                    ),
                )
            } else {
                Finding::new(
                    Severity::High,
                    Kind::PasswordWithoutTls,
                    l.at.clone(),
                    format!(
                        "passwords accepted on {} without TLS: they cross the network in clear text; add \
                         certfile/keyfile, or bind it to 127.0.0.1",
                        l.name()
                    ),
                )
            });
        }
        if local {
            continue;
        }
        // A required client certificate authenticates the client even when MQTT does not.
        if let Some(anon) = security.allow_anonymous.as_ref().filter(|a| a.value) {
            if !l.tls.requires_certificate() {
                out.push(Finding::new(
                    Severity::High,
                    Kind::AnonymousNetwork,
                    l.at.clone(),
                    format!(
                        "anonymous clients accepted on {} from the network (allow_anonymous true at {}): anyone \
                         who reaches the port can publish and subscribe; set allow_anonymous false and give \
                         clients passwords or certificates",
                        l.name(),
                        anon.at
                    ),
                ));
            }
        }
        if security.acl_file.is_none() && security.plugins.is_empty() {
            out.push(Finding::new(
                Severity::Medium,
                Kind::NoAcl,
                l.at.clone(),
                format!(
                    "no acl_file: every client that connects on {} from the network may publish and subscribe \
                     to every topic; add an acl_file that gives each user its own topics",
                    l.name()
                ),
            ));
        }
    }
}
