//! What a run says when the broker did not take the load: a subscription or PUBLISHes it
//! refused (5.0 reason codes; 3.1.1's SUBACK failure), or nothing delivered at all (an ACL
//! that denies the bench's topics drops 3.1.1 and QoS 0 messages without a word). The run
//! fails (exit code 1) with the reason on the spot, instead of a 100% loss in the summary.
use midge_codec::{ProtocolVersion, QoS, ReasonCode, SubAck};

use super::BenchError;

/// PUBLISHes the broker refused: how many, and the first one's topic and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusals {
    pub count: u64,
    pub topic: String,
    pub reason: ReasonCode,
}

impl Refusals {
    /// Adds `count` refusals of PUBLISHes to `topic` (the first topic and reason are kept).
    pub fn add(refusals: &mut Option<Refusals>, topic: &str, reason: ReasonCode, count: u64) {
        match refusals {
            Some(r) => r.count += count,
            None => *refusals = Some(Refusals { count, topic: topic.to_owned(), reason }),
        }
    }
}

/// A SUBACK that refuses the subscription to `filter`.
pub fn check_suback(filter: &str, ack: &SubAck, version: ProtocolVersion) -> Result<(), BenchError> {
    match ack.reason_codes.iter().find(|c| c.is_error()) {
        Some(code) => {
            Err(BenchError::SubscriptionRefused { filter: filter.to_owned(), reason: reason(*code, version) })
        }
        None => Ok(()),
    }
}

/// A reason code in the words of the version spoken (3.1.1's SUBACK has only "Failure").
fn reason(code: ReasonCode, version: ProtocolVersion) -> String {
    if version.is_v5() {
        code.description().to_owned()
    } else {
        "Failure".to_owned()
    }
}

/// What the run ended with, once counted.
pub struct Outcome<'a> {
    pub version: ProtocolVersion,
    pub qos: QoS,
    pub prefix: &'a str,
    pub published: u64,
    pub delivered: u64,
    pub refusals: Option<Refusals>,
}

/// The error a run fails with: PUBLISHes refused, or nothing delivered; `None` for a run
/// that delivered.
pub fn verdict(o: &Outcome<'_>) -> Option<BenchError> {
    if let Some(r) = &o.refusals {
        return Some(BenchError::PublishRefused {
            count: r.count,
            published: o.published,
            topic: r.topic.clone(),
            reason: r.reason.description().to_owned(),
        });
    }
    if o.published == 0 || o.delivered > 0 {
        return None;
    }
    // The broker took the subscriptions and the messages and said nothing: in 3.1.1, or at
    // QoS 0, an ACL's refusal is silent (the broker's log names it).
    let silent = if !o.version.is_v5() {
        "MQTT 3.1.1 has no way to refuse a PUBLISH"
    } else if o.qos == QoS::AtMostOnce {
        "a QoS 0 PUBLISH gets no answer"
    } else {
        "the broker acknowledged every PUBLISH"
    };
    Some(BenchError::NothingDelivered {
        published: o.published,
        prefix: o.prefix.to_owned(),
        silent,
        ask: !o.version.is_v5() || o.qos == QoS::AtMostOnce,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(
        version: ProtocolVersion,
        qos: QoS,
        delivered: u64,
        refusals: Option<Refusals>,
    ) -> Outcome<'static> {
        Outcome { version, qos, prefix: "bench", published: 260, delivered, refusals }
    }

    #[test]
    fn a_run_that_delivers_nothing_fails_and_says_why() {
        let e = verdict(&outcome(ProtocolVersion::V3_1_1, QoS::AtMostOnce, 0, None)).unwrap();
        let text = e.to_string();
        assert!(
            text.starts_with("nothing arrived: 0 of 260 messages published under 'bench/' were delivered"),
            "{text}"
        );
        assert!(text.contains("MQTT 3.1.1 has no way to refuse a PUBLISH"), "{text}");
        assert!(text.contains("--prefix") && text.contains("-V 5 -q 1"), "{text}");
        assert!(verdict(&outcome(ProtocolVersion::V3_1_1, QoS::AtMostOnce, 1, None)).is_none());
        let e = verdict(&outcome(ProtocolVersion::V5, QoS::AtLeastOnce, 0, None)).unwrap().to_string();
        assert!(!e.contains("-V 5 -q 1"), "{e}");
    }

    #[test]
    fn refusals_name_the_topic_and_the_reason() {
        let mut r = None;
        Refusals::add(&mut r, "bench/x/p/0", ReasonCode::NotAuthorized, 1);
        Refusals::add(&mut r, "bench/x/p/1", ReasonCode::QuotaExceeded, 1);
        let e = verdict(&outcome(ProtocolVersion::V5, QoS::AtLeastOnce, 5, r)).unwrap().to_string();
        assert_eq!(
            e,
            "the broker refused 2 of 260 messages, the first one published to 'bench/x/p/0': Not authorized; \
             choose topics it allows with --prefix"
        );
        let ack = SubAck {
            packet_id: 1,
            properties: Default::default(),
            reason_codes: vec![ReasonCode::NotAuthorized],
        };
        let e = check_suback("bench/#", &ack, ProtocolVersion::V5).unwrap_err().to_string();
        assert_eq!(
            e,
            "the broker refused the subscription to 'bench/#': Not authorized; choose topics it allows with --prefix"
        );
        let e = check_suback("bench/#", &ack, ProtocolVersion::V3_1_1).unwrap_err().to_string();
        assert!(e.ends_with("'bench/#': Failure; choose topics it allows with --prefix"), "{e}");
    }
}
