//! Messages to the client: deliveries turned into PUBLISH within the inflight window, the
//! client's acknowledgements of them, retained messages for new subscriptions, topic aliases
//! towards the client, and the resend of what was in flight when a session resumes.
use std::collections::VecDeque;
use std::time::Instant;

use bytestring::ByteString;
use midge_codec::{Packet, Properties, Property, Publish, PublishAck, QoS, ReasonCode};

use super::effect::{DeliveryEvent, Effect};
use super::message::{Delivery, StoreEntry};
use super::outgoing::{Awaiting, PubRecOutcome};
use super::state::Replay;
use super::Session;
use crate::router::RetainedPage;

impl Session {
    /// True when the session can take more deliveries now: nothing is waiting for a slot in
    /// the inflight window, which has room.
    pub fn wants_deliveries(&self) -> bool {
        self.close.is_none()
            && self.state.outgoing.pending.is_empty()
            && self.state.outgoing.inflight_len() < self.limits.max_inflight
    }

    /// Resends messages in flight held back at resume, as far as the window allows.
    fn resend_unsent(&mut self, now: Instant) {
        while self.close.is_none() && self.state.outgoing.sent_len() < self.limits.max_inflight {
            let Some(f) = self.state.outgoing.next_unsent().cloned() else { break };
            match f.state {
                Awaiting::PubComp => {
                    let id = f.packet_id;
                    self.busy().out.push_back(Packet::PubRel(PublishAck::new(id)))
                }
                Awaiting::PubAck | Awaiting::PubRec => {
                    let p = self.publish_packet(&f.delivery, f.packet_id, true, now);
                    self.send_publish(p);
                }
            }
        }
    }

    /// Where deliveries wait for a slot: the broker moves those from the session's mailbox
    /// here, then calls [`Session::pump`].
    pub fn pending_mut(&mut self) -> &mut VecDeque<Delivery> {
        &mut self.state.outgoing.pending
    }

    /// The retained messages the session is to send next, if a replay is under way: the
    /// broker reads the next page of the store from the replay's cursor and hands it to
    /// [`Session::replayed`].
    pub fn next_replay(&self) -> Option<&Replay> {
        if self.close.is_some() {
            return None;
        }
        self.state.replays.front()
    }

    /// A page of retained messages for the replay [`Session::next_replay`] returned: queued
    /// with RETAIN set [MQTT-3.3.1-8] and the subscription's QoS and identifier.
    pub fn replayed(&mut self, page: RetainedPage) {
        let Some(replay) = self.state.replays.front_mut() else { return };
        for message in page.messages {
            // upgrade_outgoing_qos: at the subscription's QoS, as mosquitto (the spec says
            // the lower of the two [MQTT-3.8.4-8]; the option is the user's choice).
            let qos = if self.limits.upgrade_outgoing_qos { replay.qos } else { message.qos.min(replay.qos) };
            self.state.outgoing.pending.push_back(Delivery {
                qos,
                retain: true,
                sub_ids: replay.sub_id.into_iter().collect(),
                message,
                share: None,
                entry: None,
            });
        }
        match page.next {
            Some(cursor) => replay.cursor = Some(cursor),
            None => {
                self.state.replays.pop_front();
            }
        }
    }

    /// Turns pending deliveries into PUBLISH packets, as far as the inflight window allows
    /// and within `budget` (a delivery costs [`delivery_cost`]: 1, more with many
    /// subscription identifiers). Returns what they cost, which may pass `budget` by the last
    /// one's cost. The caller decides when (it stops while its socket is slow, so the
    /// mailbox, which is bounded, absorbs the backlog).
    pub fn pump(&mut self, now: Instant, budget: usize) -> usize {
        self.resend_unsent(now);
        let mut sent = 0;
        while sent < budget && self.close.is_none() {
            let Some(mut d) = self.state.outgoing.pending.pop_front() else { break };
            // [MQTT-3.2.2-11] never above the peer's Maximum QoS: what was queued at a
            // higher QoS (a bridge's remote that was away) goes at its maximum.
            d.qos = d.qos.min(self.limits.peer_max_qos);
            // [MQTT-3.3.2-5] an expired message is not delivered. The ACL is checked on
            // delivery too: a client never receives what it may not read, whatever its
            // subscription matched.
            if d.message.is_expired(now)
                || self.access.as_ref().is_some_and(|a| !a.can_read(&d.message.topic))
            {
                if d.qos != QoS::AtMostOnce {
                    // As mosquitto, which numbers a QoS 1 or 2 message when it queues it: a
                    // message dropped from the queue uses its packet identifier up.
                    self.state.outgoing.skip_id();
                }
                self.delivered(d.entry);
                continue;
            }
            if d.qos == QoS::AtMostOnce {
                let p = self.publish_packet(&d, 0, false, now);
                self.send_publish(p);
                // A stored QoS 1 or 2 message sent at QoS 0 (Maximum QoS 0) is done.
                self.delivered(d.entry);
                sent += delivery_cost(&d);
                continue;
            }
            if self.state.outgoing.inflight_len() >= self.limits.max_inflight || self.inflight_bytes_full() {
                self.state.outgoing.pending.push_front(d);
                break;
            }
            let p = self.publish_packet(&d, 0, false, now);
            let cost = delivery_cost(&d);
            let (qos, entry) = (d.qos, d.entry);
            let id = self.state.outgoing.start(d);
            if let Some(entry) = entry.filter(|_| qos != QoS::AtMostOnce) {
                self.busy().effects.push_back(Effect::Delivery(DeliveryEvent::Sent { entry, packet_id: id }));
            }
            self.send_publish(Publish { packet_id: id, ..p });
            sent += cost;
        }
        sent
    }

    /// True when the payloads in flight reach `max_inflight_bytes`: as mosquitto, one more
    /// message goes while they are below it.
    fn inflight_bytes_full(&self) -> bool {
        let max = self.limits.max_inflight_bytes as usize;
        max > 0 && self.state.outgoing.inflight_payload() >= max
    }

    /// Resends what was in flight when the previous connection ended: PUBLISH with DUP for
    /// messages not yet acknowledged, PUBREL for those received, in the original order
    /// [MQTT-4.4.0-1], [MQTT-4.6.0-1]; no more at once than the new connection's Receive
    /// Maximum allows [MQTT-3.3.4-9]: the rest follow, with their identifiers, as
    /// acknowledgements come.
    pub(super) fn resume(&mut self, now: Instant) {
        self.state.outgoing.mark_unsent();
        // [MQTT-3.2.2-11] a message not yet acknowledged goes again within the peer's
        // Maximum QoS (a bridge's remote may announce a lower one than before); at QoS 0
        // it leaves the window and is sent first.
        for d in self.state.outgoing.cap_qos(self.limits.peer_max_qos).into_iter().rev() {
            self.state.outgoing.pending.push_front(d);
        }
        self.resend_unsent(now);
    }

    /// A delivery recorded in the store is done with.
    fn delivered(&mut self, entry: Option<StoreEntry>) {
        if let Some(entry) = entry {
            self.busy().effects.push_back(Effect::Delivery(DeliveryEvent::Done { entry }));
        }
    }

    pub(super) fn on_puback(&mut self, packet_id: u16) {
        match self.state.outgoing.puback(packet_id) {
            Some(f) => self.delivered(f.delivery.entry),
            None => tracing::debug!("Client {} sent PUBACK for unknown id {packet_id}.", self.client_id),
        }
    }

    pub(super) fn on_pubrec(&mut self, packet_id: u16, reason: ReasonCode) {
        let refused = self.version.is_v5() && reason.is_error();
        match self.state.outgoing.pubrec(packet_id, refused) {
            PubRecOutcome::Release { first, entry } => {
                if let (true, Some(entry)) = (first, entry) {
                    self.busy()
                        .effects
                        .push_back(Effect::Delivery(DeliveryEvent::Released { entry, packet_id }));
                }
                self.busy().out.push_back(Packet::PubRel(PublishAck::new(packet_id)))
            }
            PubRecOutcome::Refused(entry) => self.delivered(entry),
            PubRecOutcome::Unknown => self.busy().out.push_back(Packet::PubRel(PublishAck::with_reason(
                packet_id,
                ReasonCode::PacketIdentifierNotFound,
            ))),
        }
    }

    pub(super) fn on_pubcomp(&mut self, packet_id: u16) {
        match self.state.outgoing.pubcomp(packet_id) {
            Some(f) => self.delivered(f.delivery.entry),
            None => tracing::debug!("Client {} sent PUBCOMP for unknown id {packet_id}.", self.client_id),
        }
    }

    fn publish_packet(&self, d: &Delivery, packet_id: u16, dup: bool, now: Instant) -> Publish {
        let m = &d.message;
        let properties =
            if self.version.is_v5() { m.outgoing_properties(&d.sub_ids, now) } else { Properties::new() };
        Publish {
            dup,
            qos: d.qos,
            retain: d.retain,
            // Its subscriptions are under the mount point, and so is what they match.
            topic: self.unmounted(&m.topic).unwrap_or_else(|| m.topic.clone()),
            packet_id,
            properties,
            payload: m.payload.clone(),
        }
    }

    fn send_publish(&mut self, mut p: Publish) {
        let new_alias = self.apply_alias(&mut p);
        let packet = Packet::Publish(p);
        let len = if self.limits.client_max_packet_size == usize::MAX {
            0
        } else {
            packet.encoded_len(self.version)
        };
        if len > self.limits.client_max_packet_size {
            // [MQTT-3.1.2-24] not sent to a client whose Maximum Packet Size it exceeds;
            // [MQTT-3.1.2-25] discarded as if it had been sent. A message in flight is
            // completed here, since the client will never acknowledge it.
            if let Packet::Publish(p) = &packet {
                let entry = match p.qos {
                    QoS::AtMostOnce => None,
                    QoS::AtLeastOnce => {
                        self.state.outgoing.puback(p.packet_id).and_then(|f| f.delivery.entry)
                    }
                    QoS::ExactlyOnce => match self.state.outgoing.pubrec(p.packet_id, true) {
                        PubRecOutcome::Refused(entry) => entry,
                        _ => None,
                    },
                };
                self.delivered(entry);
            }
            if let Some(topic) = new_alias {
                // Not sent, so the alias was not set: the next PUBLISH on the topic sets it
                // (section 3.3.2.3.4).
                self.extra().aliases.outgoing.remove(&topic);
            }
            self.extra().oversized_dropped += 1;
            // mosquitto's words, at its level (NOTICE), a line per message.
            tracing::info!("Dropping too large outgoing PUBLISH for {} ({len} bytes)", self.client_id);
            return;
        }
        self.busy().out.push_back(packet);
    }

    /// Topic aliases towards a 5.0 client that announced a Topic Alias Maximum: the first
    /// PUBLISH of a topic carries the topic and a new alias, later ones the alias alone
    /// (section 3.3.2.3.4). Once every alias is taken, other topics go in full. Returns the
    /// topic when this PUBLISH assigns it a new alias.
    ///
    /// At most as many as the listener takes from its clients (`max_topic_alias`), however
    /// many the client would take: each alias holds its topic for the connection's life.
    fn apply_alias(&mut self, p: &mut Publish) -> Option<ByteString> {
        let max = self.limits.client_topic_alias_maximum.min(self.limits.topic_alias_maximum);
        if max == 0 || !self.version.is_v5() {
            return None;
        }
        let aliases = &mut self.extra().aliases;
        if let Some(&alias) = aliases.outgoing.get(&p.topic) {
            p.properties.push(Property::TopicAlias(alias));
            p.topic = ByteString::new();
            return None;
        }
        let next = aliases.outgoing.len() + 1;
        if next > usize::from(max) {
            return None;
        }
        let alias = next as u16;
        // A copy: the topic is a slice of its publisher's packet, which it would keep alive
        // (payload and all) as long as the alias lives.
        p.topic = ByteString::from(&*p.topic);
        aliases.outgoing.insert(p.topic.clone(), alias);
        p.properties.push(Property::TopicAlias(alias));
        Some(p.topic.clone())
    }
}

/// What a delivery costs of [`Session::pump`]'s budget: 1, and 1 more for each 64
/// subscription identifiers it carries (a client's many overlapping subscriptions with
/// identifiers of their own make each PUBLISH to it carry all of them [MQTT-3.3.4-4]: 1,024
/// such packets made one round of 67 million identifiers).
fn delivery_cost(d: &Delivery) -> usize {
    1 + d.sub_ids.len() / 64
}
