//! SUBSCRIBE and UNSUBSCRIBE: the access check, the options granted, the effects on the
//! router, and the retained messages a new subscription is to receive.
use bytestring::ByteString;
use midge_codec::ReasonCode;
use midge_codec::{
    parse_shared, Packet, Properties, RetainHandling, SubAck, Subscribe, SubscriptionOptions, UnsubAck,
    Unsubscribe,
};

use super::close::CloseReason;
use super::effect::Effect;
use super::state::{Replay, SubscriptionRecord};
use super::Session;
use crate::router::too_deep;

/// Why a 3.1.1 connection that names a filter of more levels than the broker walks is
/// closed (3.1.1 has no code for it; mosquitto closes it too).
fn too_deep_filter() -> CloseReason {
    CloseReason::protocol(ReasonCode::TopicFilterInvalid, "topic filter with more than 200 levels")
}

impl Session {
    /// `room`: the bytes left under the broker's `memory_limit` (None: no limit).
    pub(super) fn on_subscribe(&mut self, s: Subscribe, room: Option<usize>) {
        let sub_id = s.properties.subscription_identifiers().next();
        let mut codes = Vec::with_capacity(s.filters.len());
        // A copy: the filter is a slice of the SUBSCRIBE packet, which it would keep alive
        // (user properties and all) as long as the subscription lives.
        let filters: Vec<_> =
            s.filters.into_iter().map(|(f, o)| (ByteString::from(&*self.mounted(f)), o)).collect();
        // memory_limit: the subscriptions this SUBSCRIBE would add (not those it replaces),
        // counted as the router counts them. If they do not fit, each gets 0x97 Quota exceeded
        // (3.1.1: 0x80 Failure) and the client stays connected: one that subscribes again to
        // what it has on each connection still gets its queued messages.
        let adds = |filters: &[(ByteString, SubscriptionOptions)]| -> usize {
            // A filter too deep to subscribe to is refused for that, and takes nothing.
            let mut new: Vec<&ByteString> = filters
                .iter()
                .map(|(f, _)| f)
                .filter(|f| !too_deep(f) && !self.state.subscriptions.contains_key(*f))
                .collect();
            // A filter named twice makes one subscription.
            new.sort_unstable();
            new.dedup();
            new.into_iter().map(|f| crate::router::subscription_cost(f)).sum()
        };
        let refuse_new = room.is_some_and(|room| adds(&filters) > room);
        let mut refused = 0usize;
        for (filter, requested) in filters {
            if refuse_new && !self.state.subscriptions.contains_key(&filter) {
                refused += 1;
                codes.push(ReasonCode::QuotaExceeded);
                continue;
            }
            if too_deep(&filter) {
                // More levels than the broker walks: 5.0 says 0x8F Topic Filter invalid for
                // this filter in SUBACK (the filter is well formed, so not mosquitto's 0x81
                // Malformed Packet: section 4.13); 3.1.1 has no such code, and the
                // connection closes, as mosquitto closes it.
                if !self.version.is_v5() {
                    return self.close(too_deep_filter());
                }
                codes.push(ReasonCode::TopicFilterInvalid);
                continue;
            }
            // Granted as requested, up to max_qos; any requested QoS is accepted [MQTT-3.2.2-10].
            let mut options =
                SubscriptionOptions { qos: requested.qos.min(self.limits.max_qos), ..requested };
            if !self.version.is_v5() && self.is_bridge() {
                // A 3.1.1 bridge (try_private) gets what mosquitto gives it: nothing it
                // published itself comes back, and RETAIN stays as published, so two brokers
                // bridged both ways do not echo messages.
                options.no_local = true;
                options.retain_as_published = true;
            }
            let existed = self
                .state
                .subscriptions
                .insert(filter.clone(), SubscriptionRecord { options, id: sub_id })
                .is_some();
            let shared = matches!(parse_shared(&filter), Ok(Some(_)));
            // Retained messages for the new subscription [MQTT-3.8.4-4]; per Retain Handling in
            // 5.0 [MQTT-3.3.1-9] to [MQTT-3.3.1-11]; none for shared subscriptions (4.8.2).
            let send_retained = !shared
                && match options.retain_handling {
                    RetainHandling::SendAtSubscribe => true,
                    RetainHandling::SendIfNew => !existed,
                    RetainHandling::DoNotSend => false,
                };
            if send_retained {
                self.state.replays.start(Replay {
                    filter: filter.clone(),
                    qos: options.qos,
                    sub_id,
                    cursor: None,
                });
            }
            self.busy().effects.push_back(Effect::Subscribe { filter, options, id: sub_id });
            codes.push(ReasonCode::granted(options.qos));
        }
        if refused > 0 {
            tracing::warn!(
                "Client {}: {refused} new subscriptions refused, the broker is at its memory_limit.",
                self.client_id
            );
        }
        // [MQTT-3.8.4-1] SUBACK with the same packet identifier, one code per filter in order
        // [MQTT-3.8.4-5], [MQTT-3.8.4-6]; the retained messages follow it.
        self.busy().out.push_back(Packet::SubAck(SubAck {
            packet_id: s.packet_id,
            properties: Properties::new(),
            reason_codes: codes,
        }));
    }

    pub(super) fn on_unsubscribe(&mut self, u: Unsubscribe) {
        let mut codes = Vec::with_capacity(u.filters.len());
        for filter in u.filters {
            let filter = self.mounted(filter);
            if too_deep(&filter) {
                // As for SUBSCRIBE: 0x8F for 5.0, the connection closed for 3.1.1.
                if !self.version.is_v5() {
                    return self.close(too_deep_filter());
                }
                codes.push(ReasonCode::TopicFilterInvalid);
                continue;
            }
            let existed = self.state.subscriptions.remove(&filter).is_some();
            self.state.replays.stop(&filter);
            if existed {
                self.busy().effects.push_back(Effect::Unsubscribe { filter });
            }
            codes.push(if existed { ReasonCode::Success } else { ReasonCode::NoSubscriptionExisted });
        }
        // [MQTT-3.10.4-4] UNSUBACK with the same packet identifier (5.0: a code per filter).
        let codes = if self.version.is_v5() { codes } else { Vec::new() };
        self.busy().out.push_back(Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            properties: Properties::new(),
            reason_codes: codes,
        }));
    }
}
