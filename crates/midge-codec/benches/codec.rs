//! Criterion benchmarks of the codec's hot path: PUBLISH decode / encode (QoS 0 and 1; 16 B,
//! 1 KB and 64 KB payloads) and a 5.0 CONNECT with properties.
use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use midge_codec::{decode, Connect, Packet, Properties, Property, ProtocolVersion, Publish, QoS, Will};

const SIZES: [(usize, &str); 3] = [(16, "16B"), (1024, "1KB"), (65536, "64KB")];

fn publish(qos: QoS, size: usize) -> Packet {
    let mut p = Publish::new("sensors/building-1/floor-2/temperature", Bytes::from(vec![0x5a; size]));
    p.qos = qos;
    if qos != QoS::AtMostOnce {
        p.packet_id = 4242;
    }
    Packet::Publish(p)
}

fn connect_v5() -> Packet {
    let mut c = Connect::new(ProtocolVersion::V5, "sensor-0042-abcdef");
    c.keep_alive = 30;
    c.clean_start = false;
    c.username = Some("device-0042".into());
    c.password = Some(Bytes::from_static(b"correct horse battery staple"));
    c.properties = Properties::from(vec![
        Property::SessionExpiryInterval(3600),
        Property::ReceiveMaximum(64),
        Property::MaximumPacketSize(1 << 20),
        Property::TopicAliasMaximum(16),
        Property::RequestProblemInformation(1),
        Property::UserProperty("site".into(), "lyon".into()),
        Property::UserProperty("fw".into(), "1.4.2".into()),
    ]);
    c.will = Some(Will {
        topic: "devices/sensor-0042/status".into(),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Properties::from(vec![
            Property::WillDelayInterval(10),
            Property::ContentType("text/plain".into()),
        ]),
    });
    Packet::Connect(Box::new(c))
}

fn bench_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            for (size, label) in SIZES {
                let wire = publish(qos, size).to_bytes(version).unwrap();
                g.throughput(Throughput::Bytes(wire.len() as u64));
                let id = BenchmarkId::new(format!("publish/v{version}/qos{}", qos.as_u8()), label);
                // The buffer is refilled from a template each time, as a socket read would.
                let mut buf = BytesMut::with_capacity(wire.len());
                g.bench_function(id, |b| {
                    b.iter(|| {
                        buf.clear();
                        buf.extend_from_slice(&wire);
                        black_box(decode(&mut buf, version, usize::MAX).unwrap().unwrap())
                    })
                });
            }
        }
    }
    let wire = connect_v5().to_bytes(ProtocolVersion::V5).unwrap();
    g.throughput(Throughput::Bytes(wire.len() as u64));
    let mut buf = BytesMut::new();
    g.bench_function("connect/v5-properties", |b| {
        b.iter(|| {
            buf.clear();
            buf.extend_from_slice(&wire);
            black_box(decode(&mut buf, ProtocolVersion::V5, usize::MAX).unwrap().unwrap())
        })
    });
    g.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            for (size, label) in SIZES {
                let packet = publish(qos, size);
                g.throughput(Throughput::Bytes(packet.encoded_len(version) as u64));
                let id = BenchmarkId::new(format!("publish/v{version}/qos{}", qos.as_u8()), label);
                // One output buffer, reused as a connection's write buffer is.
                let mut out = BytesMut::with_capacity(packet.encoded_len(version));
                g.bench_function(id, |b| {
                    b.iter(|| {
                        out.clear();
                        black_box(&packet).encode(version, &mut out).unwrap();
                        black_box(out.len())
                    })
                });
            }
        }
    }
    let packet = connect_v5();
    g.throughput(Throughput::Bytes(packet.encoded_len(ProtocolVersion::V5) as u64));
    let mut out = BytesMut::new();
    g.bench_function("connect/v5-properties", |b| {
        b.iter(|| {
            out.clear();
            packet.encode(ProtocolVersion::V5, &mut out).unwrap();
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench_decode, bench_encode);
criterion_main!(benches);
