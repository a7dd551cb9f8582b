//! What must hold of every packet the broker sends to a client.
//!
//! - It encodes in the client's version and decodes back to itself (5.0) or to the same
//!   bytes (3.1 / 3.1.1, whose acknowledgements carry no reason codes); a PUBLISH to a 3.1.1
//!   client carries no properties.
//! - Never beyond the client's Maximum Packet Size: no PUBLISH, and no packet with a Reason
//!   String or User Property (which the broker must leave out instead).
//! - Only packets a server sends; no DISCONNECT or AUTH to 3.1.1 clients; no AUTH to a client
//!   that did not use enhanced authentication; nothing after DISCONNECT; CONNACK once.
//! - Acknowledgements answer what the client sent, in order and with its identifiers: PUBACK
//!   / PUBREC for its QoS 1 / 2 PUBLISH (0x87 exactly when the ACL denies it, 5.0), PUBCOMP
//!   for its PUBREL (0x92 exactly when the identifier was not held), PUBREL for its PUBREC
//!   (0x92 for an unknown one), SUBACK (a code per filter, an error exactly when the ACL
//!   denies, never above the QoS asked or max_qos), UNSUBACK (5.0: 0x11 exactly when the
//!   session had no such subscription), PINGRESP for PINGREQ.
//! - A PUBLISH is a message some client published (or a will) on that topic, at no higher
//!   QoS, RETAIN only if published retained; the publisher could publish it and the receiver
//!   can read it (ACL); a subscription of the session matches it (`topic_matches`), with a
//!   granted QoS at least the delivered one, active between its publication and its
//!   delivery (retained messages: any subscription of the session), not No Local if the
//!   client published it itself; no more live copies than it was published (QoS 2
//!   duplicates included); not expired, with the time left and the forwarded properties; a
//!   will only after its connection was lost and its delay, never after a normal DISCONNECT
//!   or when the client came back in time.
//! - QoS 1 / 2: the packet identifier is not in use by another message in flight, no more
//!   in flight than the client's Receive Maximum and max_inflight_messages; topic aliases
//!   within the client's maximum and known when used alone; subscription identifiers are the
//!   session's.
//! - On a resumed session, the messages in flight are resent first, in order, with DUP and
//!   their identifiers (PUBREL for those released), and none is lost.
use midge_codec::{
    decode, parse_shared, topic_matches, BytesMut, Connect, Packet, ProtocolVersion, Publish, QoS, ReasonCode,
};

use super::world::{Awaiting, Conn, FilterHist, Out, World, Q2};

/// The topic of a PUBLISH whose alias the client could not resolve (a known finding).
const UNKNOWN_TOPIC: &str = "\u{0}unknown";

fn granted(code: ReasonCode) -> Option<QoS> {
    match code {
        ReasonCode::Success => Some(QoS::AtMostOnce),
        ReasonCode::GrantedQoS1 => Some(QoS::AtLeastOnce),
        ReasonCode::GrantedQoS2 => Some(QoS::ExactlyOnce),
        _ => None,
    }
}

/// The topic filter a (perhaps shared) subscription matches with.
fn plain(filter: &str) -> &str {
    match parse_shared(filter) {
        Ok(Some(s)) => s.filter,
        _ => filter,
    }
}

fn is_shared(filter: &str) -> bool {
    matches!(parse_shared(filter), Ok(Some(_)))
}

impl World {
    /// The packet on the wire, for a client of `version` that accepts packets of at most
    /// `max_packet` bytes.
    pub fn check_wire(&self, version: ProtocolVersion, p: &Packet, max_packet: Option<u32>, to: &str) {
        let bytes = match p.to_bytes(version) {
            Ok(b) => b,
            Err(e) => {
                self.violation(format!("{to}: the broker made a packet that does not encode ({e}): {p:?}"))
            }
        };
        let mut buf = BytesMut::from(&bytes[..]);
        let back = match decode(&mut buf, version, usize::MAX) {
            Ok(Some(q)) if buf.is_empty() => q,
            other => self.violation(format!("{to}: {p:?} encodes to bytes that decode to {other:?}")),
        };
        let again = back.to_bytes(version).expect("a decoded packet encodes");
        if again != bytes {
            self.violation(format!("{to}: {p:?} does not round-trip on the wire: {back:?}"));
        }
        if (version.is_v5() || matches!(p, Packet::Publish(_))) && back != *p {
            self.violation(format!("{to}: {p:?} decodes as {back:?}"));
        }
        if let Some(max) = max_packet {
            let omittable = |props: &midge_codec::Properties| {
                props.iter().any(|p| {
                    matches!(
                        p.id(),
                        midge_codec::PropertyId::ReasonString | midge_codec::PropertyId::UserProperty
                    )
                })
            };
            let must_fit = match p {
                Packet::Publish(_) => true,
                Packet::ConnAck(a) => omittable(&a.properties),
                Packet::Disconnect(d) => omittable(&d.properties),
                Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                    omittable(&a.properties)
                }
                Packet::SubAck(a) => omittable(&a.properties),
                Packet::UnsubAck(a) => omittable(&a.properties),
                Packet::Auth(a) => omittable(&a.properties),
                _ => false,
            };
            if must_fit && bytes.len() > max as usize {
                let what = format!(
                    "{to}: a packet of {} bytes exceeds the client's Maximum Packet Size of {max}: {p:?}",
                    bytes.len()
                );
                self.violation(what);
            }
        }
    }

    /// A CONNACK: on the wire, Session Present only without clean start and on success.
    /// Returns Session Present.
    pub fn check_connack(
        &self,
        version: ProtocolVersion,
        p: &Packet,
        c: &Connect,
        max_packet: Option<u32>,
    ) -> bool {
        self.check_wire(version, p, max_packet, "CONNACK");
        let Packet::ConnAck(ack) = p else { self.violation(format!("CONNACK expected, got {p:?}")) };
        if ack.session_present && (c.clean_start || ack.reason_code != ReasonCode::Success) {
            self.violation(format!(
                "Session Present with clean start {} and {:?}",
                c.clean_start, ack.reason_code
            ));
        }
        if self.trace {
            eprintln!("   broker -> {}: {p:?}", c.client_id);
        }
        ack.session_present
    }

    /// Packets the broker sent to a client, in order. `resume`: those a resumed session
    /// sends first.
    pub fn receive(&mut self, conn: &mut Conn, packets: Vec<Packet>, resume: bool) {
        for p in packets {
            let to = conn.client_id.clone();
            if self.trace {
                eprintln!("   broker -> {to}: {p:?}");
            }
            self.check_wire(conn.version, &p, conn.max_packet, &to);
            if conn.got_disconnect {
                self.violation(format!("{to}: {p:?} after DISCONNECT"));
            }
            let v5 = conn.version.is_v5();
            match p {
                Packet::Publish(pb) => self.delivery(conn, pb, resume),
                Packet::PubAck(a) => {
                    let Some(front) = conn.acks.pop_front() else {
                        self.violation(format!("{to}: PUBACK {} for no PUBLISH", a.packet_id))
                    };
                    if front.id != a.packet_id || front.qos != QoS::AtLeastOnce {
                        self.violation(format!("{to}: PUBACK {} where {front:?} was due", a.packet_id));
                    }
                    if v5 && (a.reason_code == ReasonCode::NotAuthorized) != front.denied {
                        self.violation(format!(
                            "{to}: PUBACK {:?}, ACL denies: {}",
                            a.reason_code, front.denied
                        ));
                    }
                    if v5 && !front.denied {
                        self.check_matched(front.msg, a.reason_code, &to);
                    }
                }
                Packet::PubRec(a) => {
                    let Some(front) = conn.acks.pop_front() else {
                        self.violation(format!("{to}: PUBREC {} for no PUBLISH", a.packet_id))
                    };
                    if front.id != a.packet_id || front.qos != QoS::ExactlyOnce {
                        self.violation(format!("{to}: PUBREC {} where {front:?} was due", a.packet_id));
                    }
                    if v5 && (a.reason_code == ReasonCode::NotAuthorized) != front.denied {
                        self.violation(format!(
                            "{to}: PUBREC {:?}, ACL denies: {}",
                            a.reason_code, front.denied
                        ));
                    }
                    // As mosquitto, PUBREC never says 0x10 (No matching subscribers).
                    if v5 && a.reason_code == ReasonCode::NoMatchingSubscribers {
                        self.violation(format!("{to}: PUBREC {a:?}"));
                    }
                    let sess = self.sessions.entry(to.clone()).or_default();
                    if sess.q2.get(&a.packet_id) == Some(&(Q2::Uncertain, front.gen)) {
                        if v5 && a.reason_code.is_error() {
                            // Refused (ACL): not held; one held before stays held.
                            sess.q2.remove(&a.packet_id);
                        } else {
                            sess.q2.insert(a.packet_id, (Q2::Present, front.gen));
                        }
                    }
                }
                Packet::PubRel(a) => {
                    if resume {
                        self.resent(conn, a.packet_id, None);
                        continue;
                    }
                    if conn.owed_pubrels.front().is_none_or(|o| o.0 != a.packet_id)
                        && self.resent_later(conn, a.packet_id, None)
                    {
                        continue;
                    }
                    let Some((id, known)) = conn.owed_pubrels.pop_front() else {
                        self.violation(format!("{to}: PUBREL {} for no PUBREC", a.packet_id))
                    };
                    if id != a.packet_id || (v5 && (a.reason_code == ReasonCode::Success) != known) {
                        self.violation(format!("{to}: PUBREL {a:?} where ({id}, known {known}) was due"));
                    }
                }
                Packet::PubComp(a) => {
                    let Some((id, before, gen)) = conn.pubrels.pop_front() else {
                        self.violation(format!("{to}: PUBCOMP {} for no PUBREL", a.packet_id))
                    };
                    if id != a.packet_id {
                        self.violation(format!("{to}: PUBCOMP {} where {id} was due", a.packet_id));
                    }
                    let expected = match before {
                        Some(Q2::Present) => Some(ReasonCode::Success),
                        // As mosquitto: a plain PUBCOMP for an unknown identifier (0x92
                        // is allowed, not required: section 3.7.2.1).
                        None => Some(ReasonCode::Success),
                        Some(Q2::Uncertain) => None,
                    };
                    if v5 && expected.is_some_and(|e| e != a.reason_code) {
                        self.violation(format!("{to}: PUBCOMP {a:?}, the identifier was {before:?}"));
                    }
                    let sess = self.sessions.entry(to.clone()).or_default();
                    if sess.q2.get(&id).map(|s| s.1) == Some(gen) {
                        sess.q2.remove(&id);
                    }
                }
                Packet::SubAck(a) => self.suback(conn, a),
                Packet::UnsubAck(a) => {
                    let Some((id, filters)) = conn.unsubs.pop_front() else {
                        self.violation(format!("{to}: UNSUBACK {} for no UNSUBSCRIBE", a.packet_id))
                    };
                    if id != a.packet_id || (v5 && a.reason_codes.len() != filters.len()) {
                        self.violation(format!("{to}: {a:?} where ({id}, {filters:?}) was due"));
                    }
                    let step = self.step;
                    let sess = self.sessions.entry(to.clone()).or_default();
                    for (k, f) in filters.iter().enumerate() {
                        let h = sess.filters.entry(f.clone()).or_default();
                        let was = h.active_since.take();
                        if let Some(since) = was {
                            h.intervals.push((since, step));
                        }
                        if v5 && (a.reason_codes[k] == ReasonCode::Success) != was.is_some() {
                            self.violation(format!(
                                "{to}: UNSUBACK {:?} for {f}, subscribed: {}",
                                a.reason_codes[k],
                                was.is_some()
                            ));
                        }
                    }
                }
                Packet::PingResp => {
                    if conn.pings == 0 {
                        self.violation(format!("{to}: PINGRESP without PINGREQ"));
                    }
                    conn.pings -= 1;
                }
                Packet::Disconnect(_) => {
                    if !v5 {
                        self.violation(format!("{to}: DISCONNECT to a {} client", conn.version));
                    }
                    conn.got_disconnect = true;
                }
                Packet::Auth(a) => {
                    if !v5 || !conn.enhanced {
                        self.violation(format!("{to}: AUTH without enhanced authentication: {a:?}"));
                    }
                }
                other => self.violation(format!("{to}: a server never sends {other:?}")),
            }
        }
    }

    /// A 5.0 PUBACK says whether a subscription matched message `k` (0x10 when
    /// none did): it must not say 0x10 while a connected client subscribed before it was
    /// published, nor 0x00 when no session had a matching subscription around then.
    fn check_matched(&self, k: usize, code: ReasonCode, to: &str) {
        let m = &self.msgs[k];
        match code {
            ReasonCode::NoMatchingSubscribers => {
                for c in self.slots.iter().flatten().filter(|c| c.since <= m.step) {
                    let Some(sess) = self.sessions.get(&c.client_id) else { continue };
                    for (f, h) in &sess.filters {
                        let subscribed =
                            h.active_since.is_some_and(|s| s <= m.step) && h.last_grant.0 <= m.step;
                        let no_local = h.last_grant.1 && m.publisher == c.client_id;
                        if subscribed && !no_local && topic_matches(plain(f), &m.topic) {
                            self.violation(format!(
                                "{to}: 0x10 No matching subscribers for {} on {}, while {} is subscribed to {f}",
                                String::from_utf8_lossy(&m.payload),
                                m.topic,
                                c.client_id
                            ));
                        }
                    }
                }
            }
            ReasonCode::Success => {
                // A subscription with No Local counts as matching its own client's message
                // (as mosquitto: it matched, and chose not to take it).
                let matches = |_: &str, f: &str, h: &FilterHist| {
                    h.active_between(m.step, self.step) && topic_matches(plain(f), &m.topic)
                };
                let matched = self
                    .sessions
                    .iter()
                    .any(|(cid, sess)| sess.filters.iter().any(|(f, h)| matches(cid, f, h)))
                    || self.retired.iter().any(|(cid, f, h)| matches(cid, f, h));
                if !matched {
                    self.violation(format!(
                        "{to}: 0x00 for {} on {}, which no subscription matches",
                        String::from_utf8_lossy(&m.payload),
                        m.topic
                    ));
                }
            }
            other => self.violation(format!("{to}: acknowledgement {other:?} of a message the ACL allows")),
        }
    }

    fn suback(&mut self, conn: &mut Conn, a: midge_codec::SubAck) {
        let to = conn.client_id.clone();
        let Some((id, filters, sub_id)) = conn.subs.pop_front() else {
            self.violation(format!("{to}: SUBACK {} for no SUBSCRIBE", a.packet_id))
        };
        if id != a.packet_id || a.reason_codes.len() != filters.len() {
            self.violation(format!("{to}: {a:?} where ({id}, {filters:?}) was due"));
        }
        let step = self.step;
        let max_qos = self.max_qos;
        let sess = self.sessions.entry(to.clone()).or_default();
        for ((f, o), code) in filters.iter().zip(&a.reason_codes) {
            // As mosquitto 2.0, the ACL refuses no subscription: what a client may read is
            // checked at each delivery (see `explains`).
            let g = granted(*code);
            if code.is_error() || g.is_some_and(|q| q > o.qos || q > max_qos) {
                self.violation(format!("{to}: SUBACK {code:?} for {f} {o:?}"));
            }
            if let Some(q) = g {
                let h: &mut FilterHist = sess.filters.entry(f.clone()).or_default();
                h.active_since.get_or_insert(step);
                h.max_qos = Some(h.max_qos.map_or(q, |m| m.max(q)));
                h.no_local_false |= !o.no_local;
                h.last_grant = (step, o.no_local);
                sess.sub_ids.extend(sub_id);
            }
        }
    }

    /// Part of a resumed session's resend: a PUBLISH (`Some`) or a PUBREL of identifier `id`.
    fn resent(&mut self, conn: &mut Conn, id: u16, publish: Option<(&Publish, &str)>) {
        let to = conn.client_id.clone();
        let Some(out) = self.sessions.get(&to).and_then(|s| s.inflight.get(&id)).cloned() else {
            self.violation(format!("{to}: resent {id} ({publish:?}), which is not in flight"))
        };
        match publish {
            Some((p, topic)) => {
                if !p.dup
                    || out.state == Awaiting::Comp
                    || out.qos != p.qos
                    || out.payload != p.payload
                    || (out.topic != topic && out.topic != UNKNOWN_TOPIC && topic != UNKNOWN_TOPIC)
                {
                    self.violation(format!("{to}: resent {p:?} for {out:?}"));
                }
            }
            None => {
                if out.state != Awaiting::Comp {
                    self.violation(format!("{to}: PUBREL {id} resent for {out:?}"));
                }
            }
        }
        if out.order <= conn.resume.0 && !conn.resume.1.is_empty() {
            self.violation(format!("{to}: {id} resent out of order"));
        }
        conn.resume.0 = out.order;
        conn.resume.1.insert(id);
    }

    /// After a resumed session's resend: nothing in flight was forgotten (but what came
    /// through a shared subscription at QoS 1, which may have gone to another member, and what no
    /// longer fits the client's Maximum Packet Size), and no more is in flight than the
    /// client allows.
    pub fn end_of_resume(&mut self, conn: &mut Conn) {
        let to = conn.client_id.clone();
        let resent = std::mem::take(&mut conn.resume.1);
        let Some(sess) = self.sessions.get_mut(&to) else { return };
        let mut lost = Vec::new();
        // The window filled up: what was not resent after the last one resent is resent as
        // acknowledgements come. What came before it and was not resent was passed over:
        // too large for the client's Maximum Packet Size [MQTT-3.1.2-25], or lost.
        let window_full = resent.len() >= conn.max_inflight;
        let last_resent = conn.resume.0;
        sess.inflight.retain(|id, out| {
            if resent.contains(id) {
                return true;
            }
            if window_full && out.order > last_resent {
                out.held = true;
                return true;
            }
            // A PUBREL is never too large.
            let too_large = conn.max_packet.is_some() && out.state != Awaiting::Comp;
            // A shared QoS 1 message may have gone to another member; a QoS 2 one never
            // does [MQTT-4.8.2-4].
            let given = out.shared && out.qos == QoS::AtLeastOnce && out.state != Awaiting::Comp;
            if !given && !too_large {
                lost.push((*id, out.clone()));
            }
            false
        });
        if !lost.is_empty() {
            self.violation(format!("{to}: in flight before, not resent on resume: {lost:?}"));
        }
        // PUBLISH packets resent: the client allows no more unacknowledged ones than its
        // Receive Maximum [MQTT-3.3.4-9], which may be lower than when they were first sent.
        let n = sess.inflight.values().filter(|o| o.state != Awaiting::Comp && !o.held).count();
        if n > conn.max_inflight {
            self.violation(format!(
                "{to}: {n} PUBLISH resent on resume, more than the {} the client allows now (Receive Maximum / max_inflight_messages)",
                conn.max_inflight
            ));
        }
    }

    /// A message held back at resume, resent now that the window has room: PUBLISH with
    /// DUP, or PUBREL. False when `id` is not one.
    fn resent_later(&mut self, conn: &Conn, id: u16, publish: Option<(&Publish, &str)>) -> bool {
        let to = &conn.client_id;
        let Some(out) = self.sessions.get_mut(to).and_then(|s| s.inflight.get_mut(&id)) else { return false };
        if !out.held || publish.is_some() != (out.state != Awaiting::Comp) {
            return false;
        }
        out.held = false;
        let out = out.clone();
        if let Some((p, topic)) = publish {
            if !p.dup
                || out.qos != p.qos
                || out.payload != p.payload
                || (out.topic != topic && out.topic != UNKNOWN_TOPIC && topic != UNKNOWN_TOPIC)
            {
                self.violation(format!("{to}: resent {p:?} for {out:?}"));
            }
        }
        self.check_window(conn);
        true
    }

    /// No more PUBLISH unacknowledged than the client allows [MQTT-3.3.4-9].
    fn check_window(&self, conn: &Conn) {
        let to = &conn.client_id;
        let Some(sess) = self.sessions.get(to) else { return };
        let n = sess.inflight.values().filter(|o| !o.held).count();
        if n > conn.max_inflight {
            self.violation(format!("{to}: {n} messages in flight, more than {}", conn.max_inflight));
        }
    }

    fn delivery(&mut self, conn: &mut Conn, p: Publish, resume: bool) {
        let to = conn.client_id.clone();
        let v5 = conn.version.is_v5();
        let mut topic = p.topic.to_string();
        if let Some(alias) = p.properties.topic_alias() {
            if !v5 || alias == 0 || alias > conn.alias_max {
                self.violation(format!(
                    "{to}: topic alias {alias} above the client's maximum {}",
                    conn.alias_max
                ));
            }
            if topic.is_empty() {
                match conn.aliases_in.get(&alias) {
                    Some(t) => topic = t.clone(),
                    None if conn.max_packet.is_some() => {
                        // The PUBLISH that assigned it may have been dropped as too large.
                        let what = format!("{to}: unknown topic alias {alias} used alone: {p:?}");
                        self.known("alias-assigned-to-dropped-publish", what);
                        // The topic is unknown: only what does not depend on it is checked.
                        topic = UNKNOWN_TOPIC.to_owned();
                    }
                    None => self.violation(format!("{to}: unknown topic alias {alias} used alone")),
                }
            } else {
                conn.aliases_in.insert(alias, topic.clone());
            }
        } else if topic.is_empty() {
            self.violation(format!("{to}: PUBLISH without a topic: {p:?}"));
        }
        if resume {
            if p.qos == QoS::AtMostOnce {
                self.violation(format!("{to}: QoS 0 resent on resume: {p:?}"));
            }
            self.resent(conn, p.packet_id, Some((&p, &topic)));
            return;
        }
        if p.qos != QoS::AtMostOnce && self.resent_later(conn, p.packet_id, Some((&p, &topic))) {
            return;
        }
        if p.dup {
            self.violation(format!("{to}: DUP on a first delivery: {p:?}"));
        }
        let Some(sess) = self.sessions.get(&to) else { self.violation(format!("{to}: no session")) };
        for id in p.properties.subscription_identifiers() {
            if !sess.sub_ids.contains(&id) {
                self.violation(format!("{to}: subscription identifier {id} it never used"));
            }
        }
        let shared = sess.filters.iter().any(|(f, _)| is_shared(f) && topic_matches(plain(f), &topic));
        let candidates = self.by_payload.get(&p.payload).cloned().unwrap_or_default();
        let unknown = topic == UNKNOWN_TOPIC;
        if !unknown && !candidates.iter().any(|&k| self.explains(k, conn, &topic, &p)) {
            let published: Vec<_> = candidates.iter().map(|&k| &self.msgs[k]).collect();
            let filters: Vec<_> = sess.filters.iter().collect();
            self.violation(format!(
                "{to} (user {:?}) received {p:?} on {topic}, which no publication explains: published {published:#?}, subscriptions {filters:?}",
                conn.username
            ));
        }
        if !p.retain && !shared && !unknown {
            let allowed: u32 =
                candidates.iter().map(|&k| &self.msgs[k]).filter(|m| m.topic == topic).map(|m| m.sends).sum();
            let sess = self.sessions.entry(to.clone()).or_default();
            let n = sess.live.entry((p.payload.clone(), topic.clone())).or_insert(0);
            *n += 1;
            let n = *n;
            if n > allowed {
                self.violation(format!("{to}: received {p:?} {n} times, published {allowed} times"));
            }
        }
        if p.qos != QoS::AtMostOnce {
            if let Some(other) = self.sessions.get(&to).and_then(|s| s.inflight.get(&p.packet_id)) {
                self.violation(format!("{to}: packet identifier {} in use by {other:?}: {p:?}", p.packet_id));
            }
            let sess = self.sessions.entry(to.clone()).or_default();
            sess.order += 1;
            let out = Out {
                qos: p.qos,
                state: if p.qos == QoS::AtLeastOnce { Awaiting::Ack } else { Awaiting::Rec },
                payload: p.payload.clone(),
                topic,
                order: sess.order,
                shared,
                held: false,
            };
            sess.inflight.insert(p.packet_id, out);
            self.check_window(conn);
        }
    }

    /// Whether message `k` explains PUBLISH `p` to `conn` on `topic`.
    fn explains(&self, k: usize, conn: &Conn, topic: &str, p: &Publish) -> bool {
        let m = &self.msgs[k];
        if m.topic != topic || p.qos > m.qos || (p.retain && !m.retain) {
            return false;
        }
        if let Some(w) = &m.will {
            if w.forbidden || w.lost_at.is_none() || w.due_min.is_some_and(|d| self.now < d) {
                return false;
            }
        }
        if let Some(acl) = self.acl {
            if !acl.can_publish(m.publisher_user.as_deref(), &m.publisher, topic)
                || !acl.can_read(conn.username.as_deref(), &conn.client_id, topic)
            {
                return false;
            }
        }
        if let (Some(secs), Some(at)) = (m.expiry, m.routed_at) {
            if self.now >= at + std::time::Duration::from_secs(u64::from(secs)) {
                return false;
            }
        }
        if conn.version.is_v5() {
            let left = p.properties.message_expiry_interval();
            match (m.expiry, left) {
                (None, None) => {}
                (Some(secs), Some(l)) if l >= 1 && l <= secs => {}
                _ => return false,
            }
            if super::world::forwarded(&p.properties) != m.forwarded {
                return false;
            }
        }
        let Some(sess) = self.sessions.get(&conn.client_id) else { return false };
        let own = m.publisher == conn.client_id;
        sess.filters.iter().any(|(f, h)| {
            topic_matches(plain(f), topic)
                && h.max_qos.is_some_and(|q| p.qos <= q)
                && (p.retain || h.active_between(m.step, self.step))
                // No Local: not back to the client that published it [MQTT-3.8.3-3]. Retained
                // messages sent for a new subscription are left out of the check: the broker
                // sends them whoever published them, which the specification leaves open.
                && (!own || h.no_local_false || p.retain)
        })
    }
}
