use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use bytestring::ByteString;
use midge_codec::{Properties, QoS, SubscriptionOptions};

use super::*;
use crate::mailbox::SessionHandle;

fn handle(id: &str) -> Arc<SessionHandle> {
    let h = SessionHandle::new(ByteString::from(id), 100);
    h.set_online(true);
    h
}

fn msg(topic: &str, qos: QoS, retain: bool, publisher: &str) -> Arc<Message> {
    Arc::new(Message::from_publish(
        topic.into(),
        Bytes::from_static(b"x"),
        qos,
        retain,
        Properties::new(),
        publisher.into(),
        Instant::now(),
    ))
}

fn drain(h: &SessionHandle) -> Vec<Delivery> {
    let mut out = VecDeque::new();
    h.mailbox.drain_into(&mut out, usize::MAX);
    out.into()
}

fn received(router: &Router, filter: &str, topic: &str) -> bool {
    let h = handle("s");
    router.subscribe(&h, filter, SubscriptionOptions::qos(QoS::AtMostOnce), None);
    router.route(&msg(topic, QoS::AtMostOnce, false, "p"), None);
    router.unsubscribe(&h, filter);
    !drain(&h).is_empty()
}

#[test]
fn wildcards_match_as_section_4_7_says() {
    let r = Router::new();
    let cases = [
        ("a/b", "a/b", true),
        ("a/+", "a/b", true),
        ("a/+", "a/b/c", false),
        ("a/+/c", "a/b/c", true),
        ("+/+", "a/b", true),
        ("+", "a/b", false),
        ("a/#", "a", true),
        ("a/#", "a/b/c", true),
        ("#", "a/b/c", true),
        ("+/#", "a", true),
        ("/+", "/a", true),
        ("+/a", "/a", true), // "+" matches the empty first level
        ("a//b", "a//b", true),
        ("a/+/b", "a//b", true),
        ("#", "$SYS/x", false),
        ("+/x", "$SYS/x", false),
        ("$SYS/#", "$SYS/x", true),
        ("$SYS/+", "$SYS/x", true),
        ("a/b", "a/b/c", false),
        ("A/b", "a/b", false),
    ];
    for (filter, topic, expect) in cases {
        assert_eq!(received(&r, filter, topic), expect, "{filter} vs {topic}");
        assert_eq!(midge_codec::topic_matches(filter, topic), expect, "codec helper: {filter} vs {topic}");
    }
}

#[test]
fn overlapping_subscriptions_deliver_once_with_the_highest_qos_and_every_identifier() {
    let r = Router::new();
    let h = handle("c");
    r.subscribe(&h, "a/#", SubscriptionOptions::qos(QoS::AtMostOnce), Some(1));
    r.subscribe(&h, "a/+", SubscriptionOptions::qos(QoS::ExactlyOnce), Some(2));
    r.subscribe(&h, "a/b", SubscriptionOptions::qos(QoS::AtLeastOnce), None);
    let out = r.route(&msg("a/b", QoS::ExactlyOnce, false, "p"), None);
    assert_eq!(out.delivered, 1);
    let d = drain(&h);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].qos, QoS::ExactlyOnce);
    let mut ids = d[0].sub_ids.clone();
    ids.sort();
    assert_eq!(ids, vec![1, 2]);
}

#[test]
fn a_delivery_carries_each_subscription_identifier_once() {
    let r = Router::new();
    let h = handle("c");
    let q1 = SubscriptionOptions::qos(QoS::AtLeastOnce);
    // One SUBSCRIBE of overlapping filters gives them one identifier.
    for filter in ["a/b/c", "a/+/c", "+/b/c", "+/+/c", "a/b/+", "#"] {
        r.subscribe(&h, filter, q1, Some(7));
    }
    r.subscribe(&h, "a/#", q1, Some(9));
    r.subscribe(&h, "+/b/#", q1, None);
    let out = r.route(&msg("a/b/c", QoS::AtLeastOnce, false, "p"), None);
    assert_eq!((out.delivered, out.work), (1, 16), "8 lists matched, 8 subscriptions reached");
    let d = drain(&h);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].sub_ids, vec![7, 9]);
    assert_eq!(d[0].queued_bytes(), d[0].message.queued_bytes() + 8);
}

#[test]
fn delivered_qos_is_the_lower_of_published_and_granted() {
    let r = Router::new();
    let h = handle("c");
    r.subscribe(&h, "t", SubscriptionOptions::qos(QoS::AtLeastOnce), None);
    r.route(&msg("t", QoS::ExactlyOnce, false, "p"), None);
    r.route(&msg("t", QoS::AtMostOnce, false, "p"), None);
    let qos: Vec<QoS> = drain(&h).iter().map(|d| d.qos).collect();
    assert_eq!(qos, vec![QoS::AtLeastOnce, QoS::AtMostOnce]);
}

#[test]
fn retain_flag_is_cleared_unless_retain_as_published() {
    let r = Router::new();
    let plain = handle("plain");
    let rap = handle("rap");
    r.subscribe(&plain, "t", SubscriptionOptions::qos(QoS::AtMostOnce), None);
    let opts = SubscriptionOptions { retain_as_published: true, ..SubscriptionOptions::qos(QoS::AtMostOnce) };
    r.subscribe(&rap, "t", opts, None);
    r.route(&msg("t", QoS::AtMostOnce, true, "p"), None);
    assert!(!drain(&plain)[0].retain);
    assert!(drain(&rap)[0].retain);
}

#[test]
fn no_local_skips_the_publisher() {
    let r = Router::new();
    let me = handle("me");
    let opts = SubscriptionOptions { no_local: true, ..SubscriptionOptions::qos(QoS::AtMostOnce) };
    r.subscribe(&me, "t", opts, None);
    r.route(&msg("t", QoS::AtMostOnce, false, "me"), None);
    assert!(drain(&me).is_empty());
    r.route(&msg("t", QoS::AtMostOnce, false, "other"), None);
    assert_eq!(drain(&me).len(), 1);
}

#[test]
fn unsubscribe_removes_and_reports() {
    let r = Router::new();
    let h = handle("c");
    assert!(!r.subscribe(&h, "a/+/c", SubscriptionOptions::default(), None));
    assert!(r.subscribe(&h, "a/+/c", SubscriptionOptions::default(), None), "second subscribe replaces");
    assert!(r.unsubscribe(&h, "a/+/c"));
    assert!(!r.unsubscribe(&h, "a/+/c"));
    r.route(&msg("a/b/c", QoS::AtMostOnce, false, "p"), None);
    assert!(drain(&h).is_empty());
}

#[test]
fn shared_group_gets_one_copy_spread_over_members() {
    let r = Router::new();
    let a = handle("a");
    let b = handle("b");
    let plain = handle("plain");
    r.subscribe(&a, "$share/g/t/+", SubscriptionOptions::default(), None);
    r.subscribe(&b, "$share/g/t/+", SubscriptionOptions::default(), None);
    r.subscribe(&plain, "t/+", SubscriptionOptions::default(), None);
    for _ in 0..10 {
        r.route(&msg("t/x", QoS::AtMostOnce, false, "p"), None);
    }
    let (na, nb) = (drain(&a).len(), drain(&b).len());
    assert_eq!(na + nb, 10, "one delivery per message to the group");
    assert_eq!((na, nb), (5, 5), "round robin");
    assert_eq!(drain(&plain).len(), 10);
}

#[test]
fn a_shared_delivery_rerouted_to_a_member_with_a_full_queue_comes_back_as_it_was() {
    let r = Router::new();
    let a = handle("a");
    let b = SessionHandle::new(ByteString::from("b"), 1);
    b.set_online(true);
    r.subscribe(&a, "$share/g/t", SubscriptionOptions::qos(QoS::ExactlyOnce), Some(7));
    r.subscribe(&b, "$share/g/t", SubscriptionOptions::qos(QoS::AtLeastOnce), None);
    r.route(&msg("t", QoS::ExactlyOnce, false, "p"), None);
    r.route(&msg("t", QoS::ExactlyOnce, false, "p"), None);
    let mut got = drain(&a);
    assert_eq!((got.len(), b.mailbox.len()), (1, 1), "one each, b's queue now full");
    let mut d = got.remove(0);
    d.entry = Some(crate::session::StoreEntry { id: 3, commit: 0 });
    let d = r.reroute_shared(d, a.id, None, false).expect_err("b has no room");
    assert_eq!((d.qos, d.sub_ids.as_slice(), d.entry.map(|e| e.id)), (QoS::ExactlyOnce, &[7][..], Some(3)));
    assert_eq!(b.mailbox.dropped(), 0, "nothing dropped");
    // When a's session ends, b takes it over its queue's limit rather than let it go.
    r.reroute_shared(d.clone(), a.id, None, true).expect("the session ends: b takes it");
    assert_eq!((b.mailbox.len(), b.mailbox.dropped()), (2, 0));
    drain(&b);
    r.route(&msg("t", QoS::ExactlyOnce, false, "p"), None);
    r.route(&msg("t", QoS::ExactlyOnce, false, "p"), None);
    drain(&a);
    assert_eq!(b.mailbox.len(), 1, "b's queue full again");
    // Another member with room takes it, whichever the round robin tries first.
    let c = handle("c");
    r.subscribe(&c, "$share/g/t", SubscriptionOptions::qos(QoS::AtLeastOnce), None);
    r.reroute_shared(d, a.id, None, false).expect("c has room");
    assert_eq!((b.mailbox.len(), b.mailbox.dropped()), (1, 0));
    let d = drain(&c).remove(0);
    assert_eq!((d.qos, d.sub_ids.len(), d.entry), (QoS::AtLeastOnce, 0, None), "as c's");
}

#[test]
fn offline_sessions_get_qos_1_and_2_but_not_qos_0() {
    let r = Router::new();
    let h = handle("c");
    h.set_online(false);
    r.subscribe(&h, "t", SubscriptionOptions::qos(QoS::ExactlyOnce), None);
    r.route(&msg("t", QoS::AtMostOnce, false, "p"), None);
    r.route(&msg("t", QoS::AtLeastOnce, false, "p"), None);
    assert_eq!(drain(&h).len(), 1);
}

#[test]
fn a_full_mailbox_congests_online_and_drops_offline() {
    let r = Router::new();
    let busy = SessionHandle::new("busy".into(), 3);
    busy.set_online(true);
    let away = SessionHandle::new("away".into(), 3);
    let fast = handle("fast");
    r.subscribe(&busy, "t", SubscriptionOptions::qos(QoS::AtLeastOnce), None);
    r.subscribe(&away, "t", SubscriptionOptions::qos(QoS::AtLeastOnce), None);
    r.subscribe(&fast, "t", SubscriptionOptions::qos(QoS::AtLeastOnce), None);
    let (mut dropped, mut congested) = (0, 0);
    for _ in 0..10 {
        let o = r.route(&msg("t", QoS::AtLeastOnce, false, "p"), None);
        dropped += o.dropped;
        congested += o.congested.len();
        assert!(o.congested.iter().all(|h| h.id == busy.id), "only the connected one slows publishers");
    }
    assert_eq!(congested, 7, "past its capacity, the publisher is told to wait");
    assert_eq!(dropped, 7, "an offline session's queue is a hard limit");
    assert_eq!(away.mailbox.dropped(), 7);
    assert_eq!(drain(&busy).len(), 10, "nothing lost for a subscriber that reads");
    assert_eq!(drain(&fast).len(), 10, "the others are not held back");
}

#[test]
fn the_payload_is_shared_not_copied() {
    let r = Router::new();
    let subs: Vec<_> = (0..5).map(|i| handle(&format!("s{i}"))).collect();
    for s in &subs {
        r.subscribe(s, "t", SubscriptionOptions::default(), None);
    }
    let m = msg("t", QoS::AtMostOnce, false, "p");
    r.route(&m, None);
    for s in &subs {
        let d = drain(s);
        assert!(Arc::ptr_eq(&d[0].message, &m));
        assert_eq!(d[0].message.payload.as_ptr(), m.payload.as_ptr());
    }
}

#[test]
fn retained_messages_one_per_topic_replaced_and_removed() {
    let r = Router::new();
    let now = Instant::now();
    r.retain(&msg("a/b", QoS::AtMostOnce, true, "p"));
    r.retain(&msg("a/c", QoS::AtLeastOnce, true, "p"));
    r.retain(&msg("$SYS/x", QoS::AtMostOnce, true, "p"));
    assert_eq!(r.retained_count(), 3);
    let replaced = msg("a/b", QoS::ExactlyOnce, true, "p");
    r.retain(&replaced);
    assert_eq!(r.retained_count(), 3);
    let got = r.retained_for("a/b", now);
    assert_eq!(got.len(), 1);
    assert!(Arc::ptr_eq(&got[0], &replaced));
    let topics = |f: &str| {
        let mut t: Vec<String> = r.retained_for(f, now).iter().map(|m| m.topic.to_string()).collect();
        t.sort();
        t
    };
    assert_eq!(topics("a/+"), vec!["a/b", "a/c"]);
    assert_eq!(topics("#"), vec!["a/b", "a/c"], "$ topics are not matched by # [MQTT-4.7.2-1]");
    assert_eq!(topics("+/x"), Vec::<String>::new());
    assert_eq!(topics("$SYS/#"), vec!["$SYS/x"]);
    assert_eq!(topics("a/#"), vec!["a/b", "a/c"]);
    let empty = Arc::new(Message::from_publish(
        "a/b".into(),
        Bytes::new(),
        QoS::AtMostOnce,
        true,
        Properties::new(),
        "p".into(),
        now,
    ));
    r.retain(&empty);
    assert_eq!(topics("a/+"), vec!["a/c"]);
    assert_eq!(r.retained_count(), 2);
}

#[test]
fn matching_a_topic_in_a_large_tree_touches_only_its_branches() {
    // Not a benchmark: a sanity check that 10,000 unrelated subscriptions do not match.
    let r = Router::new();
    let hs: Vec<_> = (0..100).map(|i| handle(&format!("c{i}"))).collect();
    for i in 0..10_000 {
        r.subscribe(&hs[i % 100], &format!("dev/{i}/+"), SubscriptionOptions::default(), None);
    }
    let out = r.route(&msg("dev/42/temp", QoS::AtMostOnce, false, "p"), None);
    assert_eq!(out.delivered, 1);
}

// ---- property: the tree matches as the codec's topic_matches says -----------------------

mod matching {
    use std::collections::{BTreeMap, BTreeSet};

    use midge_codec::{parse_shared, topic_matches, validate_topic_filter, validate_topic_name};
    use proptest::prelude::*;

    use super::*;

    /// Topic levels: plain, empty, `$` ones (which wildcards at the first level skip).
    fn topic_level() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["a", "b", "", "$SYS", "$x", "c"])
    }

    fn topic() -> impl Strategy<Value = String> {
        prop::collection::vec(topic_level(), 1..5)
            .prop_map(|levels| levels.join("/"))
            .prop_filter("a topic name is not empty", |t| !t.is_empty())
    }

    /// Filters: the topic levels and `+` at any level, `#` last, perhaps `$share/g|h/`.
    fn filter() -> impl Strategy<Value = String> {
        let level = prop_oneof![4 => topic_level(), 2 => Just("+")];
        (prop::collection::vec(level, 1..5), any::<bool>(), 0..3u8)
            .prop_map(|(mut levels, hash, share)| {
                if hash {
                    levels.push("#");
                }
                let plain = levels.join("/");
                match share {
                    0 => plain,
                    1 => format!("$share/g/{plain}"),
                    _ => format!("$share/h/{plain}"),
                }
            })
            .prop_filter("a valid filter", |f| validate_topic_filter(f).is_ok())
    }

    fn qos() -> impl Strategy<Value = QoS> {
        prop::sample::select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
    }

    /// Each session's filters, each with the QoS granted and whether it is unsubscribed
    /// before the second round.
    type Subscriptions = Vec<Vec<(String, QoS, bool)>>;

    /// Each session's filters, and the topics published (with their QoS).
    fn scenario() -> impl Strategy<Value = (Subscriptions, Vec<(String, QoS)>)> {
        (
            prop::collection::vec(prop::collection::vec((filter(), qos(), any::<bool>()), 1..5), 1..5),
            prop::collection::vec((topic(), qos()), 1..10),
        )
    }

    fn split(filter: &str) -> (Option<&str>, &str) {
        match parse_shared(filter) {
            Ok(Some(s)) => (Some(s.group), s.filter),
            _ => (None, filter),
        }
    }

    /// Routes each topic and checks who receives it against `topic_matches`: a session with
    /// matching plain subscriptions exactly once, at the highest QoS granted; one without any
    /// never, unless it is the member a matching shared group picked; each matching group
    /// gives it to one member.
    ///
    /// A session both subscribed and a member of a matching group may get one copy or two:
    /// section 4.8.2 allows the second ("this could result in a second copy being sent to
    /// this Client"), and the router gives one when the subscriptions sit at different nodes
    /// of the tree (the targets are merged) and two when they sit at the same one.
    fn check(
        router: &Router,
        sessions: &[(Arc<SessionHandle>, BTreeMap<String, QoS>)],
        topics: &[(String, QoS)],
    ) {
        for (topic, published) in topics {
            assert!(validate_topic_name(topic).is_ok());
            router.route(&msg(topic, *published, false, "publisher"), None);
            let got: Vec<Vec<Delivery>> = sessions.iter().map(|(h, _)| drain(h)).collect();
            // Shared groups that match: (group, filter) -> members.
            let mut groups: BTreeMap<(&str, &str), BTreeSet<usize>> = BTreeMap::new();
            let mut plain_receivers = 0;
            for (i, (_, filters)) in sessions.iter().enumerate() {
                let mut direct: Option<QoS> = None;
                let mut in_groups = 0;
                for (f, q) in filters {
                    let (group, plain) = split(f);
                    if !topic_matches(plain, topic) {
                        continue;
                    }
                    match group {
                        None => direct = Some(direct.map_or(*q, |d| d.max(*q))),
                        Some(g) => {
                            groups.entry((g, plain)).or_default().insert(i);
                            in_groups += 1;
                        }
                    }
                }
                let n = got[i].len();
                let at_most = usize::from(direct.is_some()) + in_groups;
                assert!(n <= at_most, "{topic}: session {i} got {n} copies with {filters:?}");
                match direct {
                    Some(q) => {
                        plain_receivers += 1;
                        assert!(n >= 1, "{topic}: session {i} with {filters:?} got nothing");
                        if in_groups == 0 {
                            assert_eq!(n, 1, "{topic}: session {i} got {n} copies with {filters:?}");
                            assert_eq!(got[i][0].qos, q.min(*published), "{topic}: QoS for session {i}");
                        }
                    }
                    None if in_groups == 0 => {
                        assert_eq!(n, 0, "{topic}: session {i} with {filters:?} matches nothing, got it")
                    }
                    None => {}
                }
            }
            // Every matching group gives the message to one of its members.
            for ((g, f), members) in &groups {
                assert!(
                    members.iter().any(|&i| !got[i].is_empty()),
                    "{topic}: no member of $share/{g}/{f} ({members:?}) got it"
                );
            }
            let copies: usize = got.iter().map(Vec::len).sum();
            assert!(copies <= plain_receivers + groups.len(), "{topic}: {copies} copies");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn routing_agrees_with_topic_matches((subscriptions, topics) in scenario()) {
            let router = Router::new();
            let mut sessions = Vec::new();
            for (i, filters) in subscriptions.iter().enumerate() {
                let h = handle(&format!("s{i}"));
                let mut granted = BTreeMap::new();
                for (f, q, _) in filters {
                    router.subscribe(&h, f, SubscriptionOptions::qos(*q), None);
                    // A second SUBSCRIBE to the same filter replaces the first.
                    granted.insert(f.clone(), *q);
                }
                sessions.push((h, granted));
            }
            check(&router, &sessions, &topics);
            // Unsubscribe some: the others match exactly as before.
            for ((h, granted), filters) in sessions.iter_mut().zip(&subscriptions) {
                for (f, _, drop) in filters {
                    if *drop && granted.remove(f).is_some() {
                        prop_assert!(router.unsubscribe(h, f), "{f} was subscribed");
                    }
                }
            }
            check(&router, &sessions, &topics);
        }
    }
}

#[test]
fn a_filter_keeps_each_subscriber_once_as_it_grows_past_its_short_list_and_shrinks_back() {
    // Subscribers of one filter are a short list up to 8, then a map, then a list again.
    let r = Router::new();
    let hs: Vec<_> = (0..20).map(|i| handle(&format!("s{i}"))).collect();
    let qos0 = SubscriptionOptions::qos(QoS::AtMostOnce);
    let counts = |r: &Router| {
        r.route(&msg("a/b", QoS::AtMostOnce, false, "p"), None);
        hs.iter().map(|h| drain(h).len()).collect::<Vec<_>>()
    };
    for n in [1, 8, 9, 20] {
        for h in &hs[..n] {
            assert!(!r.subscribe(h, "a/b", qos0, None), "a new subscription");
        }
        let got = counts(&r);
        assert!(got[..n].iter().all(|&c| c == 1) && got[n..].iter().all(|&c| c == 0), "{n}: {got:?}");
        for h in &hs[..n] {
            assert!(r.unsubscribe(h, "a/b"));
        }
        assert!(counts(&r).iter().all(|&c| c == 0));
    }
    // Subscribing again replaces: still one delivery each, at the new QoS.
    for h in &hs {
        r.subscribe(h, "a/b", qos0, None);
        assert!(r.subscribe(h, "a/b", SubscriptionOptions::qos(QoS::AtLeastOnce), None));
    }
    r.route(&msg("a/b", QoS::AtLeastOnce, false, "p"), None);
    for h in &hs {
        let d = drain(h);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].qos, QoS::AtLeastOnce);
    }
    // Leaving one by one, down through the map and the list: the others still get it.
    for i in 0..20 {
        assert!(r.unsubscribe(&hs[i], "a/b"));
        assert!(!r.unsubscribe(&hs[i], "a/b"));
        let got = counts(&r);
        assert!(got[..=i].iter().all(|&c| c == 0) && got[i + 1..].iter().all(|&c| c == 1), "{i}: {got:?}");
    }
}

#[test]
fn unsubscribing_everything_leaves_an_empty_tree() {
    // Plain, shared, '+' and '#' filters, nested and side by side, from several sessions:
    // once all are removed, no node, subscriber list or group is left behind.
    let r = Router::new();
    let hs: Vec<_> = (0..12).map(|i| handle(&format!("t{i}"))).collect();
    let filters = [
        "a",
        "a/b",
        "a/b/c",
        "a/+",
        "a/+/c",
        "a/#",
        "+",
        "+/b",
        "#",
        "$share/g/a/b",
        "$share/g/a/#",
        "$share/h/a/b",
        "/",
        "a//b",
        "$SYS/x",
    ];
    let qos0 = SubscriptionOptions::qos(QoS::AtMostOnce);
    for (i, h) in hs.iter().enumerate() {
        for f in filters.iter().skip(i % 3) {
            assert!(!r.subscribe(h, f, qos0, None));
        }
    }
    r.route(&msg("a/b", QoS::AtMostOnce, false, "p"), None);
    assert!(hs.iter().all(|h| !drain(h).is_empty()));
    for (i, h) in hs.iter().enumerate().rev() {
        for f in filters.iter().skip(i % 3) {
            assert!(r.unsubscribe(h, f), "{f}");
        }
    }
    assert!(r.shards.iter().all(|s| s.read().is_empty()) && r.wildcard.read().is_empty());
    assert_eq!(r.wildcard_count.load(Ordering::Relaxed), 0);
}
