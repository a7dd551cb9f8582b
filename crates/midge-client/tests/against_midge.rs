//! The client library against the midge broker, in process, on port 0.
use std::net::SocketAddr;
use std::time::Duration;

use midge_broker::config::parse_str;
use midge_broker::Server;
use midge_client::{connect, Event, Options};
use midge_codec::*;

async fn broker(conf: &str) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let (config, _) = parse_str(&format!("listener 0 127.0.0.1\n{conf}"), "t.conf").unwrap();
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addrs()[0];
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    (addr, tx)
}

fn opts(addr: SocketAddr, version: ProtocolVersion, id: &str) -> Options {
    Options::new(addr.ip().to_string(), addr.port(), Connect::new(version, id))
}

async fn next_message(events: &mut midge_client::Events) -> Publish {
    match tokio::time::timeout(Duration::from_secs(5), events.recv()).await.expect("in time") {
        Some(Event::Message(p)) => p,
        other => panic!("message expected, got {other:?}"),
    }
}

#[tokio::test]
async fn publish_and_receive_at_every_qos_in_every_version() {
    let (addr, _stop) = broker("allow_anonymous true\n").await;
    for v in [ProtocolVersion::V3_1, ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let (sub, mut events, _) = connect(opts(addr, v, "sub")).await.unwrap();
        let ack = sub
            .subscribe(Subscribe::new(0, "t/#", SubscriptionOptions::qos(QoS::ExactlyOnce)))
            .await
            .unwrap();
        assert_eq!(ack.reason_codes, vec![ReasonCode::GrantedQoS2]);
        let (publ, _, _) = connect(opts(addr, v, "pub")).await.unwrap();
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let mut p = Publish::new("t/x", format!("q{}", qos.as_u8()));
            p.qos = qos;
            publ.publish(p).await.unwrap();
            let got = next_message(&mut events).await;
            assert_eq!(got.qos, qos);
            assert_eq!(&got.payload[..], format!("q{}", qos.as_u8()).as_bytes());
        }
        publ.disconnect().await.unwrap();
        sub.disconnect().await.unwrap();
        assert_eq!(events.recv().await, Some(Event::Closed(None)));
    }
}

#[tokio::test]
async fn many_publishes_in_flight_at_once() {
    let (addr, _stop) = broker("allow_anonymous true\n").await;
    let (sub, mut events, _) = connect(opts(addr, ProtocolVersion::V5, "sub")).await.unwrap();
    sub.subscribe(Subscribe::new(0, "n", SubscriptionOptions::qos(QoS::AtLeastOnce))).await.unwrap();
    let (publ, _, connack) = connect(opts(addr, ProtocolVersion::V5, "pub")).await.unwrap();
    assert_eq!(connack.properties.receive_maximum(), Some(20), "the broker's window");
    let mut acks = Vec::new();
    for i in 0..200u32 {
        let mut p = Publish::new("n", i.to_be_bytes().to_vec());
        p.qos = QoS::AtLeastOnce;
        acks.push(publ.start_publish(p).await.unwrap());
    }
    for a in acks {
        assert_eq!(a.await.unwrap(), ReasonCode::Success);
    }
    for i in 0..200u32 {
        assert_eq!(&next_message(&mut events).await.payload[..], &i.to_be_bytes(), "in order");
    }
}

#[tokio::test]
async fn a_refusal_is_an_error_with_its_code() {
    let (addr, _stop) = broker("").await;
    let err = connect(opts(addr, ProtocolVersion::V3_1_1, "x")).await.unwrap_err();
    assert!(err.is_refused());
    assert_eq!(err.refused_code(), Some(ReasonCode::NotAuthorized));
    assert_eq!(err.to_string(), "Connection Refused: not authorised.");
}

#[tokio::test]
async fn a_takeover_ends_the_old_connection_with_its_reason() {
    let (addr, _stop) = broker("allow_anonymous true\n").await;
    let (_old, mut old_events, _) = connect(opts(addr, ProtocolVersion::V5, "same")).await.unwrap();
    let (_new, _, _) = connect(opts(addr, ProtocolVersion::V5, "same")).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), old_events.recv()).await.unwrap() {
        Some(Event::Disconnected(d)) => assert_eq!(d.reason_code, ReasonCode::SessionTakenOver),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn keep_alive_pings_keep_the_connection() {
    let (addr, _stop) = broker("allow_anonymous true\n").await;
    let mut o = opts(addr, ProtocolVersion::V3_1_1, "pinger");
    o.connect.keep_alive = 1;
    let (c, mut events, _) = connect(o).await.unwrap();
    // Three keep-alive periods of silence from the application: the client pings.
    assert!(
        tokio::time::timeout(Duration::from_millis(3200), events.recv()).await.is_err(),
        "still connected"
    );
    c.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_flow_control_holds_acks_without_losing() {
    let (addr, _stop) = broker("allow_anonymous true\nmax_queued_messages 5\n").await;
    let (sub, mut events, _) = connect(opts(addr, ProtocolVersion::V3_1_1, "fc-sub")).await.unwrap();
    sub.subscribe(Subscribe::new(0, "fc", SubscriptionOptions::qos(QoS::AtLeastOnce))).await.unwrap();
    let (publ, _, _) = connect(opts(addr, ProtocolVersion::V3_1_1, "fc-pub")).await.unwrap();
    let n = 300u32;
    let sender = tokio::spawn(async move {
        let mut acks = Vec::new();
        for i in 0..n {
            let mut p = Publish::new("fc", i.to_be_bytes().to_vec());
            p.qos = QoS::AtLeastOnce;
            acks.push(publ.start_publish(p).await.unwrap());
        }
        for a in acks {
            a.await.unwrap();
        }
    });
    for i in 0..n {
        let m = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .unwrap_or_else(|_| panic!("stalled at message {i}"));
        match m {
            Some(Event::Message(p)) => assert_eq!(&p.payload[..], &i.to_be_bytes(), "in order, none lost"),
            other => panic!("{other:?}"),
        }
    }
    tokio::time::timeout(Duration::from_secs(5), sender).await.expect("all acknowledged").unwrap();
}
