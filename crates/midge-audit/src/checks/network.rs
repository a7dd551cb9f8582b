//! Who can reach the broker and how: passwords over plain TCP, anonymous clients from the
//! network, no ACL for network clients. mosquitto 2.0's defaults: without a listener the
//! broker listens on localhost only and allows anonymous clients (local only mode); with
//! listeners, `allow_anonymous` defaults to false.
use super::Context;
use crate::finding::{Finding, Kind, Severity};
use crate::model::{ListenerView, Security};

pub(super) fn check(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let m = cx.model;
    // Passwords on loopback only: capturing loopback traffic takes root (or CAP_NET_RAW),
    // which reads the password file and the broker's memory anyway, so it is a note.
    if m.local_only() {
        if let Some(at) = m.global().password_source() {
            out.push(Finding::new(
                Severity::Info,
                Kind::PasswordWithoutTls,
                at,
                "passwords accepted on the default listener 1883 (localhost, local only mode: no listener \
                 is configured) without TLS: capturing loopback traffic takes root (or a capture program given \
                 CAP_NET_RAW); add a TLS listener for clients on other machines",
            ));
        }
        return;
    }
    // The metrics endpoint (`protocol http`) takes no MQTT client: none of these apply.
    for l in m.listeners().filter(|l| l.listener.is_mqtt()) {
        let security = l.security();
        unverified_user_names(cx, &l, &security, out);
        let local = l.is_local();
        if security.password_source().is_some() && !l.tls_enabled() {
            out.push(if local {
                Finding::new(
                    Severity::Info,
                    Kind::PasswordWithoutTls,
                    l.at(),
                    format!(
                        "passwords accepted on {} without TLS; it is loopback-only, and capturing loopback \
                         traffic takes root (or a capture program given CAP_NET_RAW)",
                        l.name()
                    ),
                )
            } else {
                Finding::new(
                    Severity::High,
                    Kind::PasswordWithoutTls,
                    l.at(),
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
        if let Some(anon) = security.anonymous() {
            if !l.requires_certificate() {
                out.push(Finding::new(
                    Severity::High,
                    Kind::AnonymousNetwork,
                    l.at(),
                    format!(
                        "anonymous clients accepted on {} from the network ({}): anyone \
                         who reaches the port can publish and subscribe; set allow_anonymous false and give \
                         clients passwords or certificates",
                        l.name(),
                        anon
                    ),
                ));
            }
        }
        if security.settings.acl_file.is_none() && security.plugins().is_empty() {
            out.push(Finding::new(
                Severity::Medium,
                Kind::NoAcl,
                l.at(),
                format!(
                    "no acl_file: every client that connects on {} from the network may publish and subscribe \
                     to every topic; add an acl_file that gives each user its own topics",
                    l.name()
                ),
            ));
        }
    }
}

/// Anonymous clients allowed, no password check and no certificate names: a client's user
/// name is whatever it says. When the ACL grants rights by user name, any client that can
/// reach the listener (a local process too) takes those rights by claiming the name.
fn unverified_user_names(
    cx: &Context<'_>,
    l: &ListenerView<'_>,
    security: &Security<'_>,
    out: &mut Vec<Finding>,
) {
    let anonymous = security.settings.allow_anonymous == Some(true);
    if !anonymous || security.password_source().is_some() || !security.plugins().is_empty() {
        return;
    }
    if l.names_users_by_certificate() {
        return;
    }
    let Some(acl) = security.file("acl_file") else { return };
    let Ok(text) = std::fs::read_to_string(cx.path(&acl.path)) else { return };
    let mut users = text.lines().filter_map(|line| line.trim().strip_prefix("user ")).map(str::trim);
    let Some(user) = users.next() else { return };
    out.push(Finding::new(
        Severity::Medium,
        Kind::UnverifiedUserNames,
        l.at(),
        format!(
            "{} lets clients in without a password or a certificate, and the ACL ({}) grants rights by user \
             name: a client that says it is '{user}' gets '{user}''s rights; add a password_file, or \
             allow_anonymous false",
            l.name(),
            acl.at
        ),
    ));
}
