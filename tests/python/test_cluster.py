"""Cluster mode (issue 18): three midge nodes share one MQTT space through one nats-server
with JetStream. Every wait is for an event: a node's log says it subscribed on NATS (NATS
answered a PING after the SUB), or a client got what it waits for; the absence of a
duplicate is checked with a marker message sent after the one that could be duplicated
(NATS keeps the order of one publisher's messages to one subscriber)."""
from __future__ import annotations

import signal
import subprocess
import threading
import time

import pytest

import mqtt_raw as raw
from cluster_support import NatsCluster, NatsServer, Node, StoreNode
from mqtt_raw import V5, V311
from persistence_support import (LoadPublisher, LoadSubscriber, acknowledge, connect, messages_until,
                                 nothing_more, park, tally, until)
from support import TIMEOUT, mosquitto_pub, stop_all, unique_id

try:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
except ImportError:  # pragma: no cover: require_paho fails the test
    pass


@pytest.fixture
def nats(tmp_path):
    n = NatsServer(tmp_path).start()
    yield n
    n.stop()


@pytest.fixture
def nodes(tmp_path, nats):
    """Three nodes, a, b and c, joined to `nats`. Each must exit 0 on SIGTERM at the end,
    except one a test killed."""
    started: list[Node] = []
    try:
        for x in "abc":
            started.append(Node(tmp_path, nats, f"node-{x}").start())
    except BaseException:
        for n in started:
            n.kill9()
        raise
    yield started
    stop_all(started, allowed=(0, -9))


def subscribe_on(node: Node, client, filter_: str, qos: int = 0, **options) -> None:
    """Subscribes `client` (connected to `node`) and waits until the node has the NATS
    subscription for it."""
    mark = node.mark()
    client.subscribe(filter_, qos, **options)
    node.wait_nats_subscribed(filter_, since=mark)


def drain_until(client, marker: bytes, timeout: float = TIMEOUT) -> list:
    return [(m.topic, m.payload, m.qos, m.retain) for m in client.messages_until(marker, timeout)]


@pytest.mark.parametrize("version", ["311", "5"])
@pytest.mark.parametrize("pub_qos,sub_qos", [(0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0)])
def test_cross_node_publish_at_the_qos_mqtt_gives(nodes, paho_clients, version, pub_qos, sub_qos):
    a, _, c = nodes
    sub = paho_clients(c, unique_id("sub"), version=version)
    sub.connect()
    subscribe_on(c, sub, "q/t", sub_qos)
    pub = paho_clients(a, unique_id("pub"), version=version)
    pub.connect()
    pub.publish("q/t", b"m1", qos=pub_qos)
    m = sub.next_message()
    # [MQTT-3.8.4-8] (3.1.1: [MQTT-3.8.4-6]): the lower of the published and granted QoS.
    assert (m.topic, m.payload, m.qos, m.retain) == ("q/t", b"m1", min(pub_qos, sub_qos), False)


def test_wildcards_and_topics_nats_would_misread(nodes, paho_clients):
    a, b, _ = nodes
    topics = ["w", "w/a.b/x", "w/*/x", "w/>/x", "w/sp ace/x", "w//x", "w/x", "w/é/x", "w/a/b/c"]
    hash_sub = paho_clients(b, unique_id("hash"))
    hash_sub.connect()
    subscribe_on(b, hash_sub, "w/#", 1)
    plus_sub = paho_clients(b, unique_id("plus"))
    plus_sub.connect()
    subscribe_on(b, plus_sub, "w/+/x", 1)
    exact = paho_clients(b, unique_id("exact"))
    exact.connect()
    subscribe_on(b, exact, "w/*/x", 1)
    pub = paho_clients(a, unique_id("pub"))
    pub.connect()
    for t in topics:
        pub.publish(t, t.encode(), qos=1)
    pub.publish("w/end", b"end1", qos=1)
    pub.publish("w/*/x", b"end2", qos=1)
    # Order is kept per topic [MQTT-4.6.0-6]; across topics a node may get a message
    # through another of its NATS subscriptions first: hence sets of distinct payloads.
    # `w/#` matches its parent `w` [MQTT-4.7.1-2] and everything below.
    got = hash_sub.messages_until_all([t.encode() for t in topics] + [b"end1", b"end2"])
    assert sorted(m.topic for m in got) == sorted([*topics, "w/end", "w/*/x"])
    # `w/+/x`: one level, empty included; `.`, `*`, `>` and spaces are plain characters.
    want = [b"w/a.b/x", b"w/*/x", b"w/>/x", b"w/sp ace/x", b"w//x", "w/é/x".encode(), b"end2"]
    got = plus_sub.messages_until_all(want)
    assert sorted(m.payload for m in got) == sorted(want)
    # A filter with `*` in it is no wildcard; the two messages of its topic come in order.
    assert [p for _, p, *_ in drain_until(exact, b"end2")] == [b"w/*/x", b"end2"]
    # Nothing more: a last message reaches each after anything that could have been late.
    pub.publish("w/*/x", b"last", qos=1)
    for client in (hash_sub, plus_sub, exact):
        assert client.next_message().payload == b"last"


def test_a_node_never_gets_its_own_messages_back_and_overlaps_deliver_once(nodes, paho_clients):
    a, b, _ = nodes
    local = paho_clients(a, unique_id("local"))
    local.connect()
    subscribe_on(a, local, "e/#", 2)
    remote = paho_clients(b, unique_id("remote"))
    remote.connect()
    # One client with overlapping filters, and two more filters on the node: NATS delivers
    # a message once per matching subscription, the node once per client.
    subscribe_on(b, remote, "e/#", 2)
    subscribe_on(b, remote, "e/+", 2)
    other = paho_clients(b, unique_id("other"))
    other.connect()
    subscribe_on(b, other, "e/x", 2)
    pub = paho_clients(a, unique_id("pub"))
    pub.connect()
    for i in range(20):
        pub.publish("e/x", f"m{i}".encode(), qos=i % 3)
    pub.publish("e/x", b"end", qos=2)
    want = [f"m{i}".encode() for i in range(20)] + [b"end"]
    for client in (local, remote, other):
        got = client.messages_until_all(want)
        payloads = [m.payload for m in got]
        assert sorted(payloads) == sorted(want), f"duplicates or losses: {payloads}"
    # Nothing more comes (the last message was the marker, and QoS 0 ones came before it).
    pub.publish("e/x", b"after", qos=0)
    for client in (local, remote, other):
        assert client.next_message().payload == b"after"


def test_mqtt5_properties_and_retain_as_published_travel(nodes, paho_clients):
    a, b, _ = nodes
    rap = paho_clients(b, unique_id("rap"), version="5")
    rap.connect()
    subscribe_on(b, rap, "p/#", 1, retainAsPublished=True)
    plain = paho_clients(b, unique_id("plain"), version="5")
    plain.connect()
    subscribe_on(b, plain, "p/+", 1)
    pub = paho_clients(a, unique_id("pub"), version="5")
    pub.connect()
    props = Properties(PacketTypes.PUBLISH)
    props.PayloadFormatIndicator = 1
    props.ContentType = "text/plain; charset=utf-8"
    props.ResponseTopic = "reply/to me.now"
    props.CorrelationData = b"\x00\xff id"
    props.UserProperty = [("k 1", "v1"), ("k 1", "v2"), ("é", "")]
    props.MessageExpiryInterval = 300
    info = pub.client.publish("p/1", b"with props", 1, True, properties=props)
    info.wait_for_publish(TIMEOUT)
    for client, retain in ((rap, True), (plain, False)):
        m = client.next_message()
        assert (m.topic, m.payload, m.qos) == ("p/1", b"with props", 1)
        # [MQTT-3.3.1-12], [MQTT-3.3.1-13]: RETAIN as published only with Retain As Published.
        assert m.retain is retain
        p = m.properties
        assert p.PayloadFormatIndicator == 1
        assert p.ContentType == "text/plain; charset=utf-8"
        assert p.ResponseTopic == "reply/to me.now"
        assert p.CorrelationData == b"\x00\xff id"
        assert p.UserProperty == [("k 1", "v1"), ("k 1", "v2"), ("é", "")]
        assert 295 <= p.MessageExpiryInterval <= 300


def test_shared_subscription_across_nodes_delivers_each_message_once(nodes, paho_clients):
    a, b, c = nodes
    members = []
    for node in (a, b, c):
        for _ in range(2):
            m = paho_clients(node, unique_id("member"), version="5")
            m.connect()
            members.append(m)
    mark = {n.name: n.mark() for n in nodes}
    for m in members:
        m.subscribe("$share/g/s/#", 1)
    for n in nodes:
        n.wait_nats_subscribed("$share/g/s/#", since=mark[n.name])
    pubs = []
    for node in (a, b):
        p = paho_clients(node, unique_id("pub"), version="5")
        p.connect()
        pubs.append(p)
    want = set()
    for i in range(60):
        payload = f"m{i}".encode()
        pubs[i % 2].publish(f"s/{i}", payload, qos=1)
        want.add(payload)
    # Who got what: each message once, in all; every node's members got some (NATS picks
    # among the nodes of the queue group, the node among its members).
    by_member: dict[int, list[bytes]] = {i: [] for i in range(len(members))}

    def collect() -> list[bytes]:
        for i, m in enumerate(members):
            while not m.messages.empty():
                by_member[i].append(m.messages.get().payload)
        return [p for got in by_member.values() for p in got]

    deadline = time.monotonic() + TIMEOUT
    while not want <= set(collect()) and time.monotonic() < deadline:
        time.sleep(0.01)  # poll interval over six clients' queues
    # A last message after the others: once it is in, a duplicate of an earlier one would be too.
    pubs[0].publish("s/end", b"end", qos=1)
    while b"end" not in collect() and time.monotonic() < deadline + TIMEOUT:
        time.sleep(0.01)  # poll interval
    got = collect()
    assert sorted(got) == sorted(want | {b"end"}), f"{len(got)} deliveries of {len(want) + 1} messages"
    for node_index in range(3):
        assert by_member[2 * node_index] + by_member[2 * node_index + 1], f"no message for {nodes[node_index].name}"


def test_retained_messages_are_seen_from_other_nodes_and_deleted_by_an_empty_one(nodes, paho_clients):
    a, b, c = nodes
    marks = {n.name: n.mark() for n in (b, c)}
    mosquitto_pub(a, "-t", "r/1", "-m", "kept", "-q", "1", "-r")
    mosquitto_pub(a, "-t", "r/2", "-m", "deleted", "-q", "1", "-r")
    for n in (b, c):
        n.wait_retained_from_stream("r/2", since=marks[n.name])
    sub = paho_clients(c, unique_id("late"))
    sub.connect()
    sub.subscribe("r/#", 1)
    got = sub.messages_until_all([b"kept", b"deleted"])
    assert {(m.topic, m.payload, m.retain) for m in got} == {("r/1", b"kept", True), ("r/2", b"deleted", True)}
    # An empty retained message deletes [MQTT-3.3.1-6], on every node.
    mark = c.mark()
    mosquitto_pub(b, "-t", "r/2", "-n", "-q", "1", "-r")
    c.wait_retained_from_stream("r/2", since=mark)
    late = paho_clients(c, unique_id("later"))
    late.connect()
    late.subscribe("r/#", 1)
    late.subscribe("marker", 1)
    mosquitto_pub(c, "-t", "marker", "-m", "end", "-q", "1")
    assert drain_until(late, b"end") == [("r/1", b"kept", 1, True), ("marker", b"end", 1, False)]


def test_retained_messages_survive_a_node_restart(tmp_path, nats, nodes, paho_clients):
    a, b, c = nodes
    mark = c.mark()
    mosquitto_pub(a, "-t", "restart/t", "-m", "still here", "-q", "1", "-r")
    c.wait_retained_from_stream("restart/t", since=mark)
    assert c.stop() == 0
    # The same node again, with an empty local store: it loads the stream at start.
    again = Node(tmp_path, nats, "node-c").start()
    nodes[2] = again
    assert again.find_log(r"Cluster: node node-c joined .*; [1-9]\d* retained messages? loaded\.")
    sub = paho_clients(again, unique_id("after"))
    sub.connect()
    sub.subscribe("restart/#", 1)
    m = sub.next_message()
    assert (m.topic, m.payload, m.retain) == ("restart/t", b"still here", True)


def test_a_node_killed_9_leaves_the_others_serving(nodes, paho_clients):
    a, b, c = nodes
    sub = paho_clients(b, unique_id("sub"), version="5")
    sub.connect()
    subscribe_on(b, sub, "k/#", 1)
    doomed = paho_clients(c, unique_id("doomed"))
    doomed.connect()
    subscribe_on(c, doomed, "k/#", 1)
    c.kill9()
    pub = paho_clients(a, unique_id("pub"), version="5")
    pub.connect()
    want = [f"m{i}".encode() for i in range(50)]
    for p in want:
        pub.publish("k/x", p, qos=1)
    assert [m.payload for m in sub.messages_until_all(want)] == want


def test_mosquitto_clients_across_nodes(nodes, mosquitto_subs):
    a, _, c = nodes
    mark = c.mark()
    s = mosquitto_subs(c, ["m/#"], "-v", version="5", qos=2)
    c.wait_nats_subscribed("m/#", since=mark)
    mosquitto_pub(a, "-t", "m/one", "-m", "1", "-q", "2", version="5")
    mosquitto_pub(a, "-t", "m/two", "-m", "2", "-q", "1", version="311")
    assert s.read_lines(2) == ["m/one 1", "m/two 2"]


def test_a_node_without_nats_does_not_start(tmp_path, midge_binary):
    from support import RUN_AS, free_port
    port = free_port()
    conf = tmp_path / "alone.conf"
    conf.write_text("\n".join([*RUN_AS, f"listener {free_port()} 127.0.0.1", f"cluster_nats_url nats://127.0.0.1:{port}"]) + "\n")
    r = subprocess.run([str(midge_binary), "broker", "-c", str(conf)], capture_output=True, timeout=60)
    assert r.returncode != 0
    assert f"cannot connect to NATS at nats://127.0.0.1:{port}" in r.stderr.decode(errors="replace")


@pytest.mark.parametrize("version", ["311", "5"])
def test_a_client_id_connecting_to_another_node_takes_it_over(nodes, paho_clients, version):
    a, b, c = nodes
    cid = unique_id("roamer")
    first = paho_clients(a, cid, version=version)
    first.connect()
    mark = a.mark()
    second = paho_clients(b, cid, version=version)
    second.connect()
    # [MQTT-3.1.4-3]: the existing connection is closed; 5.0 tells it why (0x8E).
    reason = first.wait_disconnected()
    if version == "5":
        assert reason.value == 0x8E, reason
    a.wait_for_log(rf"Client {cid} connected to another node of the cluster\.", since=mark)
    # The new connection stays, and works across nodes.
    subscribe_on(b, second, "roam/#", 1)
    mosquitto_pub(c, "-t", "roam/x", "-m", "here", "-q", "1")
    assert second.next_message().payload == b"here"
    assert second.is_connected()
    # And back: the first node takes it again, the second closes.
    third = paho_clients(a, cid, version=version)
    third.connect()
    second.wait_disconnected()
    assert third.is_connected()


def test_a_burst_of_connections_holds_up_no_takeover_and_leaves_no_claims_behind(tmp_path, nats):
    """Three waves of 5 s of connections on node a, each with a client id of its own: every
    one is claimed in the sessions bucket, many at a time: a client id that connects to a
    right after the last wave, then to node b, is closed on a within 3 s (claimed one at a
    time, about 1,000 a second, its claim waited for every one before it: 14.5 s after
    77,000, while the client id was connected on both nodes). And a keeps no claim of a client id that has no
    session left: the last two waves leave its memory within 2 MiB (or 80 bytes an id) of
    where the first left it (230 bytes an id, for ever, before)."""
    from hostile_support import MIB, Memory
    a, b = Node(tmp_path, nats, "node-a").start(), None
    try:
        b = Node(tmp_path, nats, "node-b").start()
        made = [0]

        def wave(seconds: float) -> None:
            end = time.monotonic() + seconds

            def connections(k: int) -> None:
                i = 0
                while time.monotonic() < end:
                    with raw.RawClient(a.port, timeout=10) as c:
                        c.connect(f"burst-{k}-{i}-{unique_id('c')}")
                        c.send(raw.disconnect())
                    i += 1
                    made[0] += 1

            threads = [threading.Thread(target=connections, args=(k,)) for k in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        wave(5)
        warm, before = Memory.of(a.proc.pid), made[0]
        wave(5)
        wave(5)
        later = made[0] - before
        roamer = unique_id("roamer")
        first, _ = connect(a.port, roamer, V311, clean=True)
        taken_at = time.monotonic()
        second, _ = connect(b.port, roamer, V311, clean=True)
        first.wait_closed(timeout=3)
        took = time.monotonic() - taken_at
        grown = Memory.of(a.proc.pid).rss - warm.rss
        assert grown < max(2 * MIB, 80 * later), f"{grown / MIB:.1f} MiB more after {later} client ids"
        print(f"{made[0]} connections; the takeover closed a's connection in {took:.2f} s; "
              f"{grown / MIB:.1f} MiB more after {later} client ids")
        second.close()
    finally:
        stop_all([a, b])


@pytest.mark.parametrize("version", [V311, V5], ids=["311", "5"])
def test_a_session_resumes_on_another_node_and_back(nodes, version):
    """A client id with a persistent session on node a connects to node b without clean
    start: b gets the session from a (session present) with its subscription and what was
    queued for it while it was away, in order; connecting back to a while online on b moves
    it again, and b's connection is closed as in a takeover [MQTT-3.1.4-3] (5.0: 0x8E).
    Nothing is delivered twice."""
    a, b, c = nodes
    cid = unique_id("mover")
    mover, ack = connect(a.port, cid, version)
    assert not ack.session_present
    mover.subscribe(1, [("move/#", 1)])
    watcher, _ = connect(a.port, unique_id("watcher"), version, clean=True, expiry=None)
    watcher.subscribe(1, [("move/#", 1)])
    publisher, _ = connect(c.port, unique_id("pub"), version, clean=True, expiry=None)
    publisher.publish("move/x", b"before", qos=1, packet_id=1)
    assert [p.payload for p in messages_until(mover, b"before")] == [b"before"]
    assert [p.payload for p in messages_until(watcher, b"before")] == [b"before"]
    park(mover)
    # Queued on a while the client is away: a has routed them once its watcher has the last.
    for i, m in enumerate([b"m1", b"m2", b"m3"]):
        publisher.publish("move/x", m, qos=1, packet_id=2 + i)
    assert [p.payload for p in messages_until(watcher, b"m3")] == [b"m1", b"m2", b"m3"]
    mark_a, mark_b = a.mark(), b.mark()
    mover, ack = connect(b.port, cid, version)
    assert ack.session_present, "b resumed the session a had"
    assert [p.payload for p in messages_until(mover, b"m3")] == [b"m1", b"m2", b"m3"]
    a.wait_for_log(rf"Cluster: the session of {cid} moved to another node\.", since=mark_a)
    b.wait_for_log(rf"Cluster: the session of {cid} came from node-a/", since=mark_b)
    # The subscription came along: a message published now reaches the client on b.
    publisher.publish("move/x", b"m4", qos=1, packet_id=5)
    assert [p.payload for p in messages_until(mover, b"m4")] == [b"m4"]
    # Back to a while online on b: b's connection closes, a has the session.
    back, ack = connect(a.port, cid, version)
    assert ack.session_present
    closed = mover.wait_closed()
    if version == V5:
        assert [(p.type, p.reason) for p in closed] == [(raw.DISCONNECT, 0x8E)], closed
    publisher.publish("move/x", b"m5", qos=1, packet_id=6)
    assert [p.payload for p in messages_until(back, b"m5")] == [b"m5"], "nothing twice, nothing lost"
    assert nothing_more(back) == []
    for x in (back, watcher, publisher):
        x.close()


def test_a_session_moving_on_at_once_is_found_each_time(nodes):
    """A client that leaves each node as soon as its session arrived there (CONNACK, then
    DISCONNECT) and connects to the other, twenty times: the node it goes to finds the
    session where it went last (its client id is claimed there before the CONNACK), so the
    session is present each time, and the message queued for it meanwhile arrives once."""
    a, b, c = nodes
    cid = unique_id("hop")
    mover, _ = connect(a.port, cid, V5)
    mover.subscribe(1, [("hop/#", 1)])
    park(mover)
    publisher, _ = connect(c.port, unique_id("pub"), V5, clean=True, expiry=None)
    publisher.publish("hop/x", b"queued", qos=1, packet_id=1)
    got: list[bytes] = []
    for i, node in enumerate([b, a] * 10):
        mover, ack = connect(node.port, cid, V5)
        assert ack.session_present, f"move {i + 1}: the session did not come to {node.node}"
        got += [p.payload for p in nothing_more(mover, quiet=0.05) if p.type == raw.PUBLISH]
        park(mover)
    mover, ack = connect(a.port, cid, V5)
    assert ack.session_present
    got += [p.payload for p in nothing_more(mover) if p.type == raw.PUBLISH]
    assert got == [b"queued"], got
    for x in (mover, publisher):
        x.close()


def park_with_two_queued(port: int, publish_port: int, cid: str, prefix: str, version: int):
    """A session of `cid` subscribed to PREFIX/# at QoS 1 and parked on the node at `port`,
    with m1 and m2 published on PREFIX/x on the node at `publish_port` and queued for it (a
    watcher on its node has both). Returns the watcher and the publisher."""
    mover, _ = connect(port, cid, version)
    mover.subscribe(1, [(f"{prefix}/#", 1)])
    park(mover)
    watcher, _ = connect(port, unique_id("watcher"), version, clean=True, expiry=None)
    watcher.subscribe(1, [(f"{prefix}/#", 1)])
    publisher, _ = connect(publish_port, unique_id("pub"), version, clean=True, expiry=None)
    for i, m in enumerate([b"m1", b"m2"]):
        publisher.publish(f"{prefix}/x", m, qos=1, packet_id=1 + i)
    assert [p.payload for p in messages_until(watcher, b"m2")] == [b"m1", b"m2"]
    return watcher, publisher


@pytest.mark.parametrize("version", [V311, V5], ids=["311", "5"])
def test_a_session_moved_to_a_node_with_a_store_survives_its_kill_9(tmp_path, nats, version):
    """The session a node with persistence takes from another is in its store at once: its
    messages in flight when the client leaves, the node killed with SIGKILL and restarted,
    are sent again [MQTT-4.4.0-1], with the subscription still there."""
    a = Node(tmp_path, nats, "node-a").start()
    s1 = s2 = None
    try:
        s1 = StoreNode(tmp_path, nats, "node-s1").start()
        s2 = StoreNode(tmp_path, nats, "node-s2").start()
        cid = unique_id("stored")
        watcher, publisher = park_with_two_queued(s1.port, a.port, cid, "st", version)
        mover, ack = connect(s2.port, cid, version)
        assert ack.session_present
        # Sent, not acknowledged: in flight when the client leaves.
        got = [mover.expect(raw.PUBLISH) for _ in range(2)]
        assert [p.payload for p in got] == [b"m1", b"m2"]
        park(mover)
        s2.kill()
        s2.start()
        mover, ack = connect(s2.port, cid, version)
        assert ack.session_present, "the session came back from s2's store"
        again = [mover.expect(raw.PUBLISH) for _ in range(2)]
        assert [(p.payload, p.dup, p.packet_id) for p in again] == [
            (b"m1", True, got[0].packet_id), (b"m2", True, got[1].packet_id)]
        for p in again:
            mover.send(raw.puback(p.packet_id, version))
        publisher.publish("st/x", b"m3", qos=1, packet_id=3)
        assert [p.payload for p in messages_until(mover, b"m3")] == [b"m3"]
        for x in (mover, watcher, publisher):
            x.close()
    finally:
        stop_all((a, s1, s2), allowed=(0, -9))  # s2 is killed once on the way


@pytest.mark.parametrize("version", [V311, V5], ids=["311", "5"])
def test_a_node_restarted_on_its_store_hands_its_sessions_over(tmp_path, nats, version):
    """A node with persistence killed with SIGKILL and restarted claims the sessions its
    store gave back for its new run: a client connecting to another node gets its session
    from it (session present), with what was queued for it before the kill, once."""
    a = Node(tmp_path, nats, "node-a").start()
    s1 = None
    try:
        s1 = StoreNode(tmp_path, nats, "node-s1").start()
        cid = unique_id("restored")
        watcher, publisher = park_with_two_queued(s1.port, a.port, cid, "rs", version)
        watcher.close()
        s1.kill()
        s1.start()  # a log of its own for each run
        s1.wait_for_log(rf"Cluster: client id {cid} claimed here for its session from the store\.")
        mover, ack = connect(a.port, cid, version)
        assert ack.session_present, "a got the session from s1's new run"
        assert [p.payload for p in messages_until(mover, b"m2")] == [b"m1", b"m2"]
        publisher.publish("rs/x", b"m3", qos=1, packet_id=3)
        assert [p.payload for p in messages_until(mover, b"m3")] == [b"m3"]
        assert [p for p in nothing_more(mover) if p.type == raw.PUBLISH] == []
        for x in (mover, publisher):
            x.close()
    finally:
        stop_all((a, s1), allowed=(0, -9))


def test_a_session_left_behind_by_a_clean_start_elsewhere_ends(nodes):
    """A client parks on node a, then connects to node b with clean start: its old session
    ends on a too (it would otherwise stay, parked and out of date, until it expired)."""
    a, b, _ = nodes
    cid = unique_id("behind")
    old, _ = connect(a.port, cid, V5)
    old.subscribe(1, [("behind/#", 1)])
    park(old)
    mark = a.mark()
    fresh, ack = connect(b.port, cid, V5, clean=True)
    assert not ack.session_present
    a.wait_for_log(rf"Cluster: the session of {cid} parked here ends: its client id was taken on node-b/", since=mark)
    fresh.close()


@pytest.mark.parametrize("publisher_on", ["c", "a"])
def test_a_session_moving_between_nodes_under_load_gets_each_qos2_message_once(nodes, publisher_on):
    """QoS 2 messages published without pause on node c (or on a, one of the two nodes the
    session moves between: its own messages reach the session locally or through the
    stream) while their subscriber's session moves back and forth between nodes a and b
    (five moves, the publisher still publishing after the last): each message reaches the
    client exactly once (a copy resent after a move carries DUP and the packet identifier
    the client had; none comes again as a new message), none is lost."""
    a, b, c = nodes
    cid = unique_id("busy")
    mover, _ = connect(a.port, cid, V5)
    mover.subscribe(1, [("busy/#", 2)])
    park(mover)
    publisher, _ = connect({"a": a, "c": c}[publisher_on].port, unique_id("pub"), V5, clean=True, expiry=None)
    published: list[bytes] = []
    stop = threading.Event()

    def publish_until_stopped() -> None:
        n = 0
        while not stop.is_set():
            batch = [f"n{n + i}".encode() for i in range(20)]
            publish_window(publisher, "busy/x", batch, 2)
            published.extend(batch)
            n += len(batch)

    sending = threading.Thread(target=publish_until_stopped, daemon=True)
    sending.start()
    new: list[bytes] = []  # payloads of PUBLISH packets without DUP
    ids: dict[bytes, int] = {}  # the packet identifier each payload came with
    moves = 0

    def take(p, acknowledged: bool = False) -> None:
        if not acknowledged:
            acknowledge(mover, p)
        if p.type != raw.PUBLISH:
            return
        if p.dup and p.payload in ids:
            assert ids[p.payload] == p.packet_id, f"{p.payload!r} resent with another packet id"
            return
        assert p.payload not in ids, f"{p.payload!r} came again as a new message (move {moves})"
        ids[p.payload] = p.packet_id
        new.append(p.payload)

    for node in (b, a, b, a, b):
        mover, ack = connect(node.port, cid, V5)
        moves += 1
        assert ack.session_present, f"the session came to {node.node}"
        wanted = len(ids) + 60
        deadline = time.monotonic() + TIMEOUT
        while len(ids) < wanted and time.monotonic() < deadline:
            try:
                take(mover.recv(timeout=0.5))
            except TimeoutError:
                continue
        park(mover)
    assert sending.is_alive(), "the moves happened while messages were being published"
    stop.set()
    sending.join(timeout=TIMEOUT)
    assert not sending.is_alive()
    mover, ack = connect(a.port, cid, V5)
    moves += 1
    assert ack.session_present
    deadline = time.monotonic() + TIMEOUT
    while set(published) - set(ids) and time.monotonic() < deadline:
        try:
            take(mover.recv(timeout=0.5))
        except TimeoutError:
            continue
    for p in nothing_more(mover):
        take(p, acknowledged=True)
    assert set(ids) == set(published), f"lost: {sorted(set(published) - set(ids))[:10]}"
    assert len(new) == len(published)
    for x in (mover, publisher):
        x.close()


def test_a_client_without_a_session_anywhere_starts_afresh_at_once(nodes):
    """Without clean start and without a session on any node (or only an out-of-date copy of
    one whose node is gone), a node asks the cluster and starts a new session (session
    present 0)."""
    a, b, _ = nodes
    fresh, ack = connect(b.port, unique_id("fresh"), V5)
    assert not ack.session_present
    fresh.close()
    cid = unique_id("orphan")
    on_a, _ = connect(a.port, cid, V311)
    mark = a.mark()
    park(on_a)
    a.wait_for_log(rf"Cluster: a copy of the parked session of {cid} is kept in the cluster\.", since=mark)
    # Back on a, and a killed while the client is connected: the cluster's copy is of the
    # connection before, out of date.
    mark = a.mark()
    online, ack = connect(a.port, cid, V311)
    assert ack.session_present
    a.wait_for_log(rf"Cluster: client id {cid} claimed here\.", since=mark)
    a.kill9()
    online.close()
    mark = b.mark()
    again, ack = connect(b.port, cid, V311)
    assert not ack.session_present, "the node that had it is gone: a new session"
    b.wait_for_log(rf"the cluster's copy is of an earlier connection: it starts afresh", since=mark)
    again.close()


@pytest.mark.parametrize("version", [V311, V5], ids=["311", "5"])
def test_a_parked_session_outlives_its_node_killed_for_good(nats, nodes, version):
    """A node keeps a copy of each session that parks in the cluster (MIDGE_PARKED): when
    that node is lost (SIGKILL, never restarted), the client connecting to another node gets
    its session back (session present) with its subscription, the message it had not
    acknowledged (resent with DUP and its packet id [MQTT-4.4.0-1]), and what was published
    for it after it left, on the lost node and on others, before and after the loss: each
    exactly once, QoS 2 included."""
    a, b, c = nodes
    cid = unique_id("lost")
    mover, _ = connect(a.port, cid, version)
    mover.subscribe(1, [("lost/#", 2)])
    watcher, _ = connect(a.port, unique_id("watcher"), version, clean=True, expiry=None)
    watcher.subscribe(1, [("lost/#", 2)])
    on_a, _ = connect(a.port, unique_id("pub-a"), version, clean=True, expiry=None)
    on_c, _ = connect(c.port, unique_id("pub-c"), version, clean=True, expiry=None)
    on_c.publish("lost/c", b"m0", qos=2, packet_id=1)
    unacked = mover.expect(raw.PUBLISH)
    assert unacked.payload == b"m0" and unacked.qos == 2
    mark = a.mark()
    park(mover)
    a.wait_for_log(rf"Cluster: a copy of the parked session of {cid} is kept in the cluster\.", since=mark)
    on_c.publish("lost/c", b"m1", qos=2, packet_id=2)
    on_a.publish("lost/a", b"m2", qos=2, packet_id=1)
    assert sorted(p.payload for p in messages_until(watcher, b"m0")) == [b"m0"]
    assert sorted(receive_all(watcher, {b"m1", b"m2"})) == [b"m1", b"m2"]
    # a has acknowledged them to JetStream (its store, if it had one, would have them): the
    # stream keeps them all the same, for the copy.
    nats.wait_consumer_acknowledged_all("MIDGE_QOS", "midge-node-a")
    a.kill9()
    on_c.publish("lost/c", b"m3", qos=2, packet_id=3)
    mark_b = b.mark()
    mover, ack = connect(b.port, cid, version)
    assert ack.session_present, "the session came from the cluster's copy"
    again = mover.expect(raw.PUBLISH)
    assert (again.payload, again.dup, again.packet_id) == (b"m0", True, unacked.packet_id)
    acknowledge(mover, again)
    assert sorted(receive_all(mover, {b"m1", b"m2", b"m3"})) == [b"m1", b"m2", b"m3"], "each once"
    assert [p for p in nothing_more(mover) if p.type == raw.PUBLISH] == []
    b.wait_for_log(rf"Cluster: the session of {cid} came from node-a/", since=mark_b)
    # Its subscription is b's now.
    on_c.publish("lost/c", b"m4", qos=1, packet_id=4)
    assert [p.payload for p in messages_until(mover, b"m4")] == [b"m4"]
    for x in (mover, watcher, on_c):
        x.close()


# ---------------------------------------------------------------------------------------
# At least once across nodes: QoS 1 and 2 go through the JetStream stream MIDGE_QOS, the
# publisher's acknowledgement waits for JetStream's, and a node acknowledges the stream only
# once its store has what it queued.
# ---------------------------------------------------------------------------------------


def receive_all(c, wanted: set[bytes], timeout: float = TIMEOUT) -> list[bytes]:
    """Payloads of the PUBLISH packets `c` receives (acknowledged as they come) until every
    one of `wanted` is in."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while not wanted <= set(got):
        try:
            p = c.recv(timeout=max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            raise AssertionError(f"missing {sorted(wanted - set(got))[:10]} (of {len(wanted)}) "
                                 f"after {timeout} s; got {len(got)}") from None
        acknowledge(c, p)
        if p.type == raw.PUBLISH:
            got.append(p.payload)
    return got


def publish_window(c, topic: str, payloads: list[bytes], qos: int, window: int = 10) -> None:
    """Publishes with `window` messages in flight and returns once every one is acknowledged
    (QoS 2: PUBREC answered with PUBREL, PUBCOMP received)."""
    pending: dict[int, bytes] = {}
    todo = list(payloads)
    pid = 0
    while todo or pending:
        while todo and len(pending) < window:
            pid += 1
            pending[pid] = todo.pop(0)
            c.send(raw.publish(topic, pending[pid], qos=qos, packet_id=pid, version=c.version))
        p = c.recv(timeout=TIMEOUT)
        if p.type == raw.PUBREC:
            c.send(raw.pubrel(p.packet_id, c.version))
        elif p.type in (raw.PUBACK, raw.PUBCOMP):
            assert p.reason < 0x80, p
            del pending[p.packet_id]


@pytest.mark.parametrize("online", [True, False], ids=["online", "offline"])
@pytest.mark.parametrize("version", [V311, V5], ids=["311", "5"])
def test_what_a_node_acknowledged_arrives_even_if_it_is_killed_9_at_once(nodes, version, online):
    a, _, c = nodes
    cid = unique_id("durable")
    sub, _ = connect(c.port, cid, version)
    sub.subscribe(1, [("ack/#", 1)])
    if not online:
        park(sub)
    pub, _ = connect(a.port, unique_id("pub"), version, clean=True)
    want = [f"m{i}".encode() for i in range(300)]
    publish_window(pub, "ack/t", want, qos=1)
    a.kill9()
    pub.close()
    if not online:
        sub, ack = connect(c.port, cid, version)
        assert ack.session_present
    got = receive_all(sub, set(want))
    # In order (one publisher, one topic [MQTT-4.6.0-6]), and once each.
    assert got == want
    sub.close()


@pytest.fixture
def store_node_c(tmp_path, nats):
    """Node a (no store) and node c with a store, which a test may kill and restart."""
    a = Node(tmp_path, nats, "node-a").start()
    c = None
    try:
        c = StoreNode(tmp_path, nats, "node-c", ["max_queued_messages 100000"]).start()
        yield a, c
    finally:
        # c may have been killed by the test and not started again.
        stop_all((a, c), allowed=(0, -9))


@pytest.mark.parametrize("qos", [1, 2])
@pytest.mark.parametrize("version", [V311, V5], ids=["311", "5"])
def test_the_subscribers_node_killed_9_under_load_loses_nothing_acknowledged(store_node_c, version, qos):
    """A publisher on node a publishes without pause; node c, with two persistent
    subscribers (one online, one offline), is killed with SIGKILL and restarted on the same
    store while it does. Every message a acknowledged reaches both; QoS 2 exactly once."""
    a, c = store_node_c
    online = LoadSubscriber(c.port, unique_id("on"), version, "load/#", qos_levels=(qos,))
    offline = LoadSubscriber(c.port, unique_id("off"), version, "load/#", qos_levels=(qos,))
    subs = [online, offline]
    for s in subs:
        s.subscribe_once()
    online.start()
    pub = LoadPublisher(a.port, unique_id("pub"), version, qos, qos == 2, "load/x", "p")
    pub.start()
    try:
        def state() -> str:
            return "; ".join(x.describe() for x in [pub, *subs])

        for _ in range(2):
            base = pub.acked_count()
            until(lambda: pub.acked_count() >= base + 100, 30, lambda: f"acknowledgements: {state()}")
            # Messages reach c, some of them queued and acknowledged to the stream.
            until(lambda: len(online.received()) >= base + 50, 30, lambda: f"deliveries on c: {state()}")
            c.kill()
            # a goes on acknowledging while c is away (JetStream keeps c's share).
            down = pub.acked_count()
            until(lambda: pub.acked_count() >= down + 50, 30, lambda: f"acknowledgements without c: {state()}")
            c.start()
        pub.stop()
        offline.start()
        end, _ = connect(a.port, unique_id("end"), version, clean=True)
        end.publish("load/end", "end:0", qos=1)
        end.close()
        for s in subs:
            until(lambda: "end:0" in s.received(), 30, lambda: f"end:0 on {s.client_id}: {state()}")
        until(lambda: all(s.settled(set()) for s in subs), 5, lambda: f"QoS 2 flows: {state()}")
    finally:
        for x in [pub, *subs]:
            x.stopping.set()
        for x in [pub, *subs]:
            x.finished.wait(20)
    problems = [f"{x.client_id}: {an}" for x in [pub, *subs] for an in x.anomalies]
    problems += [f"{s.client_id}: {v}" for s in subs for v in s.qos2_violations]
    for s in subs:
        t = tally(s.client_id, s.deliveries, [pub], qos)
        assert t.acknowledged >= 200, t.line()
        if t.missing:
            problems.append(f"{t.line()}: missing {t.missing[:10]}")
        if qos == 2 and t.duplicates:
            # With what the client saw of them (connection, packet, packet id, message, DUP):
            # whether the second copy came as a new message after a restart, and with which id.
            trace = s.history(set(t.duplicated[:3]))
            problems.append(f"{t.line()}: twice {t.duplicated[:10]}; trace {trace}")
    assert not problems, "\n".join(problems)


def test_a_qos1_message_past_nats_max_payload_is_acknowledged_and_stays_local(nodes, paho_clients):
    """NATS refuses a message past its max_payload (1 MiB here): it reaches the publisher's
    node only, and its publisher is acknowledged rather than kept waiting; the node's link to
    NATS is unharmed."""
    a, _, c = nodes
    local = paho_clients(a, unique_id("local"))
    local.connect()
    local.subscribe("big/#", 1)
    remote = paho_clients(c, unique_id("remote"))
    remote.connect()
    subscribe_on(c, remote, "big/#", 1)
    pub = paho_clients(a, unique_id("pub"))
    pub.connect()
    mark = a.mark()
    big = b"x" * (2 << 20)
    pub.publish("big/one", big, qos=1)
    assert local.next_message().payload == big
    a.wait_for_log(r"Cluster: a QoS 1 message of big/one .* reaches local subscribers only\.", since=mark)
    pub.publish("big/two", b"small", qos=1)
    assert remote.next_message().payload == b"small"
    # Retained: kept on its node only (not sent to the retained stream again and again), and
    # a later retained message still reaches the stream.
    mark = a.mark()
    pub.publish("big/kept", big, qos=1, retain=True)
    a.wait_for_log(r"Cluster: the retained message of big/kept is larger than NATS's max_payload .* kept on this "
                   r"node only\.", since=mark)
    mark_c = c.mark()
    pub.publish("big/next", b"small", qos=1, retain=True)
    c.wait_retained_from_stream("big/next", since=mark_c)
    assert "big/kept is not stored yet" not in a.log()


# ---------------------------------------------------------------------------------------
# Three NATS servers in a NATS cluster, midge's streams with 3 replicas: one NATS server is
# killed with SIGKILL and the midge nodes carry on.
# ---------------------------------------------------------------------------------------


@pytest.fixture
def nats3(tmp_path):
    c = NatsCluster(tmp_path).start()
    yield c
    c.stop()


def test_midge_carries_on_when_one_of_three_nats_servers_is_killed_9(tmp_path, nats3, paho_clients):
    nodes = []
    try:
        for x in "abc":
            nodes.append(Node(tmp_path, nats3, f"node-{x}", ["cluster_replicas 3"]).start())
        a, b, c = nodes
        # Retained before the failure, read by a late subscriber after it.
        mark = c.mark()
        mosquitto_pub(a, "-t", "n3/retained/before", "-m", "before", "-q", "1", "-r")
        c.wait_retained_from_stream("n3/retained/before", since=mark)
        sub = paho_clients(c, unique_id("sub"), version="5")
        sub.connect(clean_start=False, session_expiry=300)
        subscribe_on(c, sub, "n3/q/#", 1)
        pub = paho_clients(a, unique_id("pub"), version="5")
        pub.connect()
        pub.publish("n3/q/1", b"before", qos=1)
        assert sub.next_message().payload == b"before"
        # The NATS server node a publishes through goes.
        doomed = nats3.serving("midge node-a")
        nats3.servers[doomed].kill9()
        # QoS 1: acknowledged once JetStream (2 of 3 replicas) has it again, and delivered.
        want = [f"after{i}".encode() for i in range(20)]
        for p in want:
            pub.publish("n3/q/1", p, qos=1, timeout=60)
        assert [m.payload for m in sub.messages_until_all(want, timeout=60)] == want
        # QoS 0: the nodes' NATS subscriptions moved to the servers left. A QoS 0 message
        # published while a node reconnects may be lost (README): published until one
        # arrives.
        qos0 = paho_clients(c, unique_id("qos0"), version="5")
        qos0.connect()
        subscribe_on(c, qos0, "n3/zero/#", 0)
        deadline = time.monotonic() + 30
        got = None
        while got is None:
            assert time.monotonic() < deadline, "no QoS 0 message crossed nodes within 30 s"
            pub.publish("n3/zero/x", b"zero", qos=0)
            try:
                got = qos0.next_message(timeout=0.5)
            except AssertionError:
                pass
        assert got.payload == b"zero"
        # Retained: the one from before, and one published after, from a third node.
        mark = c.mark()
        mosquitto_pub(b, "-t", "n3/retained/after", "-m", "after", "-q", "1", "-r")
        # A node's reader of the retained stream (an ordered consumer, one copy) may have been
        # on the server killed: it is made again once its heartbeats are missed, seconds later.
        c.wait_retained_from_stream("n3/retained/after", since=mark, timeout=60)
        late = paho_clients(c, unique_id("late"))
        late.connect()
        late.subscribe("n3/retained/#", 1)
        got = late.messages_until_all([b"before", b"after"])
        assert {(m.topic, m.payload, m.retain) for m in got} == {
            ("n3/retained/before", b"before", True), ("n3/retained/after", b"after", True)}
    finally:
        stop_all(nodes)


def test_while_nats_is_away_qos1_publishers_wait_and_nothing_is_lost(tmp_path, nats, nodes):
    """NATS stops (SIGKILL): a QoS 1 message published on node a reaches a's own subscriber
    at once, but its PUBACK waits; NATS comes back on the same port and store: the PUBACK
    comes, and the subscriber on node c gets the message."""
    a, _, c = nodes
    remote, _ = connect(c.port, unique_id("remote"), V5)
    remote.subscribe(1, [("away/#", 1)])
    local, _ = connect(a.port, unique_id("local"), V5)
    local.subscribe(1, [("away/#", 1)])
    pub, _ = connect(a.port, unique_id("pub"), V5, clean=True)
    pub.publish("away/t", "before", qos=1)
    assert receive_all(remote, {b"before"}) == [b"before"]
    assert receive_all(local, {b"before"}) == [b"before"]
    mark = a.mark()
    nats.kill9()
    a.wait_for_log(r"Cluster: NATS disconnected\.", since=mark)
    pub.send(raw.publish("away/t", "while away", qos=1, packet_id=7, version=V5))
    assert receive_all(local, {b"while away"}) == [b"while away"]
    with pytest.raises(TimeoutError):
        p = pub.recv(timeout=1.0)
        raise AssertionError(f"acknowledged while NATS is away: {p!r}")
    nats.start()
    p = pub.recv(timeout=60)
    assert (p.type, p.packet_id, p.reason) == (raw.PUBACK, 7, 0)
    assert receive_all(remote, {b"while away"}, timeout=30) == [b"while away"]


def test_while_nats_is_away_a_client_retaining_flat_out_cannot_grow_a_nodes_memory(nats, nodes):
    """NATS stops (SIGKILL), and a client on node a publishes 200,000 retained QoS 0 messages
    on one topic as fast as it can: each is for the retained stream, but a topic keeps only
    its latest waiting, so a's memory stays within 32 MiB of where it was (a task and a copy
    for each message grew it by 476 MB in 5 s). NATS comes back: node c gets the last one."""
    from hostile_support import MIB, Memory
    a, _, c = nodes
    mark = a.mark()
    nats.kill9()
    a.wait_for_log(r"Cluster: NATS disconnected\.", since=mark)
    before = Memory.of(a.proc.pid)
    pub, _ = connect(a.port, unique_id("retainer"), V311, clean=True)
    total, batch = 200_000, 2_000
    for first in range(0, total, batch):
        pub.send(b"".join(raw.publish("kept/one", f"v{i}", qos=0, retain=True) for i in range(first, first + batch)))
    pub.send(raw.pingreq())
    assert pub.recv(timeout=60).type == raw.PINGRESP
    after = Memory.of(a.proc.pid)
    assert after.hwm - before.rss < 32 * MIB, f"peak {after.hwm / MIB:.0f} MiB from {before.rss / MIB:.0f} MiB"
    nats.start()
    last = f"v{total - 1}".encode()
    c.wait_retained_from_stream("kept/one", timeout=60)
    # An older one the NATS client held while it was away may reach the stream first.
    deadline = time.monotonic() + 60
    while (seen := retained_on(c, "kept/one")) != last:
        assert time.monotonic() < deadline, f"node c keeps {seen!r} for kept/one, not {last!r}"


def retained_on(node: Node, topic: str) -> bytes | None:
    """The payload of the retained message `node` gives a new subscriber to `topic`."""
    r, _ = connect(node.port, unique_id("reader"), V311, clean=True)
    with r:
        r.subscribe(1, [(topic, 0)])
        try:
            return r.recv(timeout=1.0).payload
        except TimeoutError:
            return None


# ---------------------------------------------------------------------------------------
# Wills of the clients of a node killed with SIGKILL, published by a surviving node (or by
# the node itself when it is back first).
# ---------------------------------------------------------------------------------------


def will_client(node, version: int, topic: str, payload: str, qos: int = 1):
    """A client with a will, connected to `node`, once the cluster keeps its will."""
    import re
    mark = node.mark()
    cid = unique_id("testament")
    c, _ = connect(node.port, cid, version, clean=True, will={"topic": topic, "payload": payload, "qos": qos})
    node.wait_for_log(rf"Cluster: the will of {re.escape(cid)} is kept in the cluster\.", since=mark)
    c.client_id = cid
    return c


@pytest.mark.parametrize("version", [V311, V5], ids=["311", "5"])
def test_the_wills_of_a_killed_nodes_clients_are_published_by_another_node(nodes, version):
    a, b, c = nodes
    sub, _ = connect(c.port, unique_id("heir"), V5)
    sub.subscribe(1, [("wills/#", 1)])
    # Kept referenced: the connection stays open until node a dies.
    gone = will_client(a, version, "wills/gone", "gone with its node")
    left = will_client(a, version, "wills/left", "never sent")
    mark = a.mark()
    left.send(raw.disconnect(version))  # a normal DISCONNECT: no will [MQTT-3.1.2-10]
    left.wait_closed()
    a.wait_for_log(rf"Cluster: the will of {left.client_id} left the cluster\.", since=mark)
    a.kill9()
    got = receive_all(sub, {b"gone with its node"}, timeout=30)
    assert got == [b"gone with its node"]
    # Exactly one node published it, and the will of the clean disconnect never comes: a
    # message published after both would overtake nothing.
    pub, _ = connect(b.port, unique_id("after"), V5, clean=True)
    pub.publish("wills/end", "end", qos=1)
    assert receive_all(sub, {b"end"}) == [b"end"]
    assert sum(n.log().count(f"publishing the will of {gone.client_id}") for n in (b, c)) == 1


def test_a_node_restarted_at_once_publishes_the_wills_of_its_previous_run(tmp_path, nats, nodes):
    a, _, c = nodes
    sub, _ = connect(c.port, unique_id("heir"), V5)
    sub.subscribe(1, [("wills/#", 1)])
    alive = will_client(a, V5, "wills/restart", "before the restart")
    a.kill9()
    again = Node(tmp_path, nats, "node-a").start()
    nodes[0] = again
    assert receive_all(sub, {b"before the restart"}, timeout=30) == [b"before the restart"]
    alive.close()


def test_a_client_that_moved_to_another_node_keeps_its_will_there(nodes):
    """The node a client left (taken over elsewhere) removes its own will record only, not
    the one the new node put under the same client id: the new node's death publishes it."""
    import re
    a, b, c = nodes
    sub, _ = connect(c.port, unique_id("heir"), V5)
    sub.subscribe(1, [("wills/#", 1)])
    first = will_client(a, V311, "wills/first", "left behind")
    cid = first.client_id
    mark_a, mark_b = a.mark(), b.mark()
    # Node a stopped: it takes the client's move in after node b has put the new will.
    a.proc.send_signal(signal.SIGSTOP)
    try:
        second, _ = connect(b.port, cid, V311, clean=True,
                            will={"topic": "wills/second", "payload": "moved", "qos": 1})
        b.wait_for_log(rf"Cluster: the will of {re.escape(cid)} is kept in the cluster\.", since=mark_b)
    finally:
        a.proc.send_signal(signal.SIGCONT)
    first.wait_closed()
    a.wait_for_log(rf"Cluster: the will of {re.escape(cid)} was replaced by another node's\.", since=mark_a)
    b.kill9()
    got = receive_all(sub, {b"moved"}, timeout=30)
    assert b"moved" in got
    second.close()


def test_a_will_the_acl_forbids_is_not_published_when_its_node_dies(tmp_path, nats):
    """A CONNECT whose will topic the ACL forbids is accepted (as mosquitto 2.0 accepts it),
    and its will is not kept in the cluster: the node that publishes a dead node's wills
    cannot ask the client's rights, so only the allowed will of the two is reaped (the
    forbidden one went out from the other node after a kill -9)."""
    import re
    acl = tmp_path / "acl"
    acl.write_text("topic read #\ntopic write wills/allowed\n")
    a, b = (Node(tmp_path, nats, f"node-{x}", extra=[f"acl_file {acl}"]).start() for x in "ab")
    try:
        sub, _ = connect(b.port, unique_id("heir"), V5)
        sub.subscribe(1, [("wills/#", 1)])
        allowed = will_client(a, V311, "wills/allowed", "allowed")
        cid, mark = unique_id("forbidden"), a.mark()
        forbidden, _ = connect(a.port, cid, V311, clean=True,
                               will={"topic": "wills/forbidden", "payload": "forbidden", "qos": 1})
        a.wait_for_log(rf"Cluster: the will of {re.escape(cid)} is (not )?kept in the cluster", since=mark)
        mark = b.mark()
        a.kill9()
        assert receive_all(sub, {b"allowed"}, timeout=30) == [b"allowed"]
        b.wait_for_log(r"Cluster: 1 will of clients of node-a/\S+, which is gone, to publish\.", since=mark)
        assert not re.search(r"Cluster: \d+ wills of clients of node-a", b.log()[mark:])
        allowed.close()
        forbidden.close()
    finally:
        stop_all([a, b], allowed=(0, -9))
