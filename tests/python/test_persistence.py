"""Persistence: what midge has acknowledged survives restarts, SIGKILL and damaged files.

The promise under test (README, "Persistence"): once midge has sent PUBACK (QoS 1) or
PUBREC (QoS 2) for a message, the message reaches every persistent subscription that
matched it (3.1.1 clean session off, 5.0 session expiry above 0), even if the broker is
killed with SIGKILL the next instant, and a QoS 2 message is never delivered twice.
Retained messages, sessions (subscriptions with their options and identifiers, queued and
in-flight messages, QoS 2 state, delayed wills) come back after a restart; a damaged store
is reported and what is intact kept; mosquitto's own database is imported at first start.

Each test runs real brokers (midge, and Debian's mosquitto for the import) on free ports
and real clients (raw sockets, paho-mqtt, mosquitto_pub / mosquitto_sub).

    flock /tmp/midge-build.lock env MIDGE_BIN=target/debug/midge python3 -m pytest -q tests/python/test_persistence.py
    PERSIST_SEED=N ...                # another seed for the kill loops' random moments
    PERSIST_REPORT=/tmp/p.jsonl ...   # the loops' counts, as JSON lines (also printed: -s)
"""
from __future__ import annotations

import os
import random
import re
import subprocess
import time
from dataclasses import dataclass

import pytest

import mqtt_raw as raw
from mqtt_raw import V5, V311, RawClient
from persistence_support import (
    FAKETIME_LIB,
    LoadPublisher,
    LoadSubscriber,
    PahoLoadSubscriber,
    StoreBroker,
    collect,
    connect,
    messages_until,
    nothing_more,
    park,
    record,
    tally,
    until,
)
from support import require_tool, unique_id

SEED = int(os.environ.get("PERSIST_SEED", "20251206"))


@pytest.fixture
def store_brokers(tmp_path, midge_binary):
    """Makes midge brokers with persistence (`store_brokers("max_queued_messages 10")`, then
    `.start()`); each still running at the end is stopped with SIGTERM, which must exit 0."""
    made: list[StoreBroker] = []

    def make(*extra: str, verbose: bool = False, name: str = "midge", **kw) -> StoreBroker:
        verbose = verbose or bool(os.environ.get("PERSIST_VERBOSE"))
        b = StoreBroker(tmp_path, list(extra), verbose=verbose, name=f"{name}{len(made) or ''}", **kw)
        made.append(b)
        return b

    yield make
    failures = []
    for b in made:
        if b.alive():
            rc = b.stop()
            if rc != 0:
                failures.append(f"{b.name} exited with {rc} after SIGTERM; log tail:\n{b.log()[-3000:]}")
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------------------------------
# 1. Kill and restart loops under load
# ---------------------------------------------------------------------------------------

@dataclass
class LoopRun:
    """What one loop of restarts under load ended with."""

    label: str
    summary: str
    # Promise 1: every acknowledged message reached every persistent subscription.
    lost: list[str]
    # ... the same, for messages whose first acknowledgement answered a resend after a
    # restart (QOS2_RESEND_NOT_ROUTED).
    lost_after_resend: list[str]
    # Promise 2: no QoS 2 message twice, no packet identifier reused in the middle of a flow.
    twice: list[str]


LOOPS = [
    pytest.param(("kill", (), 5), id="sigkill"),
    pytest.param(("term", (), 3), id="sigterm"),
    pytest.param(("kill", ("persistence_sync_interval 20",), 4), id="sigkill-sync-interval-20"),
]


@pytest.fixture(scope="module", params=LOOPS)
def loop_run(request, tmp_path_factory, midge_binary) -> LoopRun:
    """Publishers (3.1.1 and 5.0; QoS 1 with clean sessions, QoS 2 with persistent sessions
    that resend with DUP) publish without pause while the broker is stopped (SIGKILL at
    random moments of a seeded RNG, or SIGTERM) and started again on the same port with the
    same configuration, several times. Four persistent subscribers with a QoS 2 subscription
    to everything: two online throughout (raw 3.1.1, which sends its PUBREC 50 ms after a
    QoS 2 PUBLISH, and paho 5.0), reconnecting after each restart, and two offline
    throughout (raw 5.0 and 3.1.1), which connect at the end. Then every subscriber drains
    its session; the counts are recorded."""
    how, extra, rounds = request.param
    label = f"loop-{how}{'-' + extra[0].replace(' ', '-') if extra else ''}"
    rng = random.Random(f"{SEED}/{label}")
    verbose = bool(os.environ.get("PERSIST_VERBOSE"))
    broker = StoreBroker(tmp_path_factory.mktemp(label), ["max_queued_messages 100000", *extra], verbose=verbose)
    broker.start()
    try:
        yield _run_loop(broker, how, rounds, rng, label)
    finally:
        if broker.alive():
            rc = broker.stop()
            assert rc == 0, f"midge exited with {rc} after SIGTERM; log tail:\n{broker.log()[-3000:]}"


def _run_loop(broker: StoreBroker, how: str, rounds: int, rng: random.Random, label: str) -> LoopRun:
    started = time.monotonic()
    port = broker.port
    online = [LoadSubscriber(port, unique_id("on311"), V311, "load/q2/#", pubrec_delay=0.05, qos_levels=(2,)),
              PahoLoadSubscriber(port, unique_id("on5paho"), V5, "load/#")]
    offline = [LoadSubscriber(port, unique_id("off5"), V5, "load/#"),
               LoadSubscriber(port, unique_id("off311"), V311, "load/#")]
    subs = [*online, *offline]
    for s in [online[0], *offline]:
        s.subscribe_once()
    online[1].start()
    until(online[1].subscribed.is_set, 5, "the paho subscriber's SUBACK")
    online[0].start()
    pubs = [LoadPublisher(port, unique_id("p311q1"), V311, 1, False, "load/q1/a", "p311q1"),
            LoadPublisher(port, unique_id("p5q1"), V5, 1, False, "load/q1/b", "p5q1"),
            LoadPublisher(port, unique_id("p311q2"), V311, 2, True, "load/q2/c", "p311q2"),
            LoadPublisher(port, unique_id("p5q2"), V5, 2, True, "load/q2/d", "p5q2")]
    for p in pubs:
        p.start()

    def state() -> str:
        return "; ".join(c.describe() for c in [*pubs, *subs])

    restored = []
    for _ in range(rounds):
        # Traffic flows (every publisher has had a few acknowledgements since the last
        # start), then the broker goes down at a random moment.
        base = [p.acked_count() for p in pubs]
        until(lambda: all(p.acked_count() >= b + 5 for p, b in zip(pubs, base)), 20,
              lambda: f"publishers acknowledged after a restart: {state()}\nlog:\n{broker.log()[-3000:]}")
        time.sleep(rng.uniform(0.0, 0.3))  # the random moment of the kill
        broker.restart(how)
        restored.append(broker.restored_counts())
    for p in pubs:
        p.stop()
    loop_done = time.monotonic()
    acked = set().union(*(p.acked for p in pubs))
    for s in offline:
        s.start()
    # A last message after all others: once it is in, anything queued before it is too.
    end = RawClient(port, version=V311)
    end.connect(unique_id("end"))
    end.publish("load/q2/end", "end:0", qos=1)
    end.close()
    lost, lost_after_resend, twice = [], [], []
    deadline = time.monotonic() + 30
    for s in subs:
        try:
            until(lambda: "end:0" in s.received(), max(0.1, deadline - time.monotonic()), "")
        except AssertionError:
            lost.append(f"{s.client_id} did not receive end:0, published after everything else: {s.describe()}")
    # QoS 2 flows begun before end:0 complete (paho hands a QoS 2 message over on PUBREL).
    try:
        until(lambda: all(s.settled(acked & s.wanted(pubs)) for s in subs), 2, "")
    except AssertionError:
        twice += [f"QoS 2 flows that never completed: {s.describe()}" for s in subs if not s.settled(set())]
    for s in subs:
        s.stop()

    tallies = [tally(s.client_id, s.deliveries, pubs, qos) for s in subs for qos in s.qos_levels]
    record(label, seed=SEED, rounds=rounds, how=how, restored=restored,
           loop_s=round(loop_done - started, 1), drain_s=round(time.monotonic() - loop_done, 1),
           publishers={p.tag: {"sent": len(p.sent), "acknowledged": len(p.acked), "connections": p.connects,
                               "resent": p.resent, "abandoned": p.abandoned,
                               "pubcomp_0x92": p.unknown_pubrel} for p in pubs},
           subscribers={f"{t.subscriber} q{t.qos}": {"acknowledged": t.acknowledged, "delivered": t.delivered,
                                                       "duplicates": t.duplicates,
                                                       "unacknowledged_delivered": t.unacknowledged_delivered,
                                                       "missing": len(t.missing)} for t in tallies})
    summary = f"seed {SEED}, {rounds} rounds ({how}); restored (sessions, retained, queued) {restored}\n"
    summary += "\n".join(t.line() for t in tallies)
    lost += [f"{c.client_id}: {a}" for c in [*pubs, *subs] for a in c.anomalies]
    lost += [f"{p.client_id}: refused {r}" for p in pubs for r in p.refused]
    for t in tallies:
        for m in t.missing:
            p = next(p for p in pubs if m.startswith(p.tag + ":"))
            line = f"{t.subscriber} never received {m}, acknowledged; its publisher's view (connection, event): " \
                   f"{p.trace.get(m)}"
            (lost_after_resend if acknowledged_after_resend(p, m) else lost).append(line)
        if t.qos == 2 and t.duplicates:
            s = next(s for s in subs if s.client_id == t.subscriber)
            twice.append(f"{t.subscriber} received {t.duplicates} QoS 2 messages twice: {t.duplicated[:10]}; "
                         f"its trace (connection, packet, packet id, message, DUP) for the first ones: "
                         f"{s.history(set(t.duplicated[:3])) if hasattr(s, 'history') else '-'}")
    twice += [f"{s.client_id}: {r}" for s in subs for r in getattr(s, "qos2_violations", [])]
    assert all(t.acknowledged > 0 for t in tallies), summary
    return LoopRun(label, summary, lost, lost_after_resend, twice)


def acknowledged_after_resend(p: LoadPublisher, mid: str) -> bool:
    """True when a message's first acknowledgement answered its resend (PUBLISH with DUP
    after a reconnection)."""
    events = [e for _, e in p.trace.get(mid, [])]
    first = next((i for i, e in enumerate(events) if e.startswith(("PUBREC", "PUBACK"))), len(events))
    return any("DUP again" in e for e in events[:first])


# When a persistent QoS 2 publisher's PUBLISH is resent after a restart, the broker answers
# PUBREC from the stored QoS 2 packet id alone: if it was killed after storing that id and
# before storing the message for every subscriber, the message is acknowledged and lost.
QOS2_RESEND_NOT_ROUTED = (
    "midge stores an incoming QoS 2 packet id before the copies of the message queued for each "
    "subscriber, in separate writes: killed between them, it answers the publisher's resend "
    "(PUBLISH with DUP) with PUBREC from the packet id alone, and the subscribers whose copy was "
    "not written never get the message")


def test_loop_every_acknowledged_message_reaches_every_persistent_subscriber(loop_run):
    """Every message a publisher had PUBACK or PUBREC for was delivered to each of the four
    persistent subscribers (online or offline during the restarts, 3.1.1 and 5.0, raw and
    paho), at least once; nothing was refused; each found its session at every reconnection.
    Losses of the known kind (QOS2_RESEND_NOT_ROUTED, which depends on where a SIGKILL lands,
    and which test_qos2_resend_after_kill_is_routed_to_every_subscriber reproduces) mark this
    test xfailed with their details, any other loss fails it."""
    assert not loop_run.lost, "\n".join(loop_run.lost + loop_run.lost_after_resend) + "\n" + loop_run.summary
    if loop_run.lost_after_resend:
        pytest.xfail(f"{QOS2_RESEND_NOT_ROUTED}:\n" + "\n".join(loop_run.lost_after_resend))


# The broker writes that it sent a QoS 2 PUBLISH (the delivery's packet id) only when the
# client next sends it something: killed or stopped before, it has forgotten the packet id.
QOS2_SENT_NOT_RECORDED = (
    "midge sends a QoS 2 PUBLISH before recording its packet id in the store (the record is "
    "appended when the client's next packet arrives): restarted before the PUBREC is handled, it "
    "sends the message again with a new packet id and DUP 0, so a client gets it twice, and it "
    "reuses the first packet id for another message while the client still holds it for PUBREL")


@pytest.mark.xfail(strict=True, reason=QOS2_SENT_NOT_RECORDED)
def test_loop_qos2_messages_are_never_delivered_twice(loop_run):
    """No subscriber received a QoS 2 message twice (a resent PUBLISH comes with the packet id
    the client holds and DUP, so the client knows it), every QoS 2 flow the broker started
    was completed (PUBREL for every PUBREC), and no packet identifier was reused while the
    client held it."""
    assert not loop_run.twice, "\n".join(loop_run.twice) + "\n" + loop_run.summary


# ---------------------------------------------------------------------------------------
# 2. What survives a restart: retained messages, sessions, wills, QoS 2 flows
# ---------------------------------------------------------------------------------------

VERSIONS = [pytest.param(V311, id="v311"), pytest.param(V5, id="v5")]

RICH_PROPERTIES = [("PayloadFormatIndicator", 1), ("MessageExpiryInterval", 3600), ("ContentType", "text/plain"),
                   ("ResponseTopic", "reply/here"), ("CorrelationData", b"\x00\x01corr"),
                   ("UserProperty", ("site", "lab")), ("UserProperty", ("site", "annex")),
                   ("UserProperty", ("é", "ü"))]


def retained(port: int, version: int, filter: str, quiet: float = 0.5) -> dict[str, raw.Packet]:
    """The retained messages a fresh subscriber to `filter` (QoS 2) receives, by topic."""
    with RawClient(port, version=version) as c:
        c.connect(unique_id("look"))
        c.subscribe(1, [(filter, 2)])
        got = collect(c, quiet)
    pubs = [p for p in got if p.type == raw.PUBLISH]
    assert all(p.retain for p in pubs), pubs
    assert len({p.topic for p in pubs}) == len(pubs), f"a topic twice: {pubs}"
    return {p.topic: p for p in pubs}


def test_retained_messages_set_replaced_and_cleared_survive_sigkill_and_sigterm(store_brokers):
    """Retained messages set, replaced and cleared (empty payload) before a SIGKILL are, after
    the restart, exactly as they were: the last value of each topic, none for the cleared
    one, with the QoS and the 5.0 properties of the message (user properties in order,
    content type, payload format, response topic, correlation data; the expiry interval
    lowered by the time that passed). The same after a second, graceful, restart; 3.1.1
    subscribers (mosquitto_sub) get them too."""
    broker = store_brokers().start()
    with RawClient(broker.port, version=V5) as pub:
        pub.connect(unique_id("ret"))
        pub.publish("ret/set", "one", qos=1, retain=True, packet_id=1)
        pub.publish("ret/replaced", "old", qos=1, retain=True, packet_id=2)
        pub.publish("ret/replaced", "new", qos=2, retain=True, packet_id=3)
        pub.publish("ret/cleared", "soon gone", qos=1, retain=True, packet_id=4)
        pub.publish("ret/cleared", "", qos=1, retain=True, packet_id=5)
        pub.publish("ret/props", "with properties", qos=2, retain=True, packet_id=6, props=RICH_PROPERTIES)
    published = time.monotonic()
    for how in ("kill", "term"):
        broker.restart(how)
        assert broker.restored_counts()[1] == 3, broker.restored.group(0)
        got = retained(broker.port, V5, "ret/#")
        assert {t: (p.payload, p.qos) for t, p in got.items()} == {
            "ret/set": (b"one", 1), "ret/replaced": (b"new", 2), "ret/props": (b"with properties", 2)}, how
        props = got["ret/props"].props
        left = props.pop("MessageExpiryInterval")
        assert 3600 - (time.monotonic() - published) - 2 <= left <= 3600, f"expiry interval {left} after {how}"
        assert props == {"PayloadFormatIndicator": 1, "ContentType": "text/plain", "ResponseTopic": "reply/here",
                         "CorrelationData": b"\x00\x01corr",
                         "UserProperty": [("site", "lab"), ("site", "annex"), ("é", "ü")]}, f"after {how}"
        assert got["ret/set"].props == {}, got["ret/set"]
    out = mosquitto_sub_once(broker, "ret/#", 3)
    assert sorted(out) == ["ret/props with properties", "ret/replaced new", "ret/set one"]


def mosquitto_sub_once(broker: StoreBroker, topic: str, count: int) -> list[str]:
    """mosquitto_sub -v -C count -W 5 (3.1.1): the lines it printed."""
    r = subprocess.run([require_tool("mosquitto_sub"), "-h", "127.0.0.1", "-p", str(broker.port), "-v",
                        "-t", topic, "-C", str(count), "-W", "5"], capture_output=True, timeout=15)
    assert r.returncode == 0, f"mosquitto_sub exited {r.returncode}: {r.stdout!r} {r.stderr!r}"
    return r.stdout.decode().splitlines()


def test_message_expiry_keeps_counting_while_the_broker_is_down(store_brokers):
    """A message with a 2 s expiry and one with 30 s, retained and queued for an offline 5.0
    session, then SIGKILL; the broker starts again 3 s after they were published: the 2 s
    one is gone (neither retained nor delivered), the 30 s one arrives with its expiry
    interval lowered by the time that passed, down included."""
    broker = store_brokers().start()
    sub_id = unique_id("exp-sub")
    sub, _ = connect(broker.port, sub_id, V5, clean=True, expiry=300)
    sub.subscribe(1, [("exp/#", 1)])
    park(sub)
    with RawClient(broker.port, version=V5) as pub:
        pub.connect(unique_id("exp-pub"))
        pub.publish("exp/short", "2 s", qos=1, retain=True, packet_id=1, props={"MessageExpiryInterval": 2})
        pub.publish("exp/long", "30 s", qos=1, retain=True, packet_id=2, props={"MessageExpiryInterval": 30})
    published = time.monotonic()
    broker.kill()
    time.sleep(max(0.0, published + 3 - time.monotonic()))  # the broker is down for 3 s
    broker.start()
    got = retained(broker.port, V5, "exp/#")
    assert list(got) == ["exp/long"], got
    assert 30 - (time.monotonic() - published) - 1 <= got["exp/long"].props["MessageExpiryInterval"] <= 27, got
    c, ack = connect(broker.port, sub_id, V5, clean=False)
    with c:
        assert ack.session_present
        msgs = [p for p in nothing_more(c) if p.type == raw.PUBLISH]
    assert [(p.topic, p.payload) for p in msgs] == [("exp/long", b"30 s")], msgs
    assert 30 - (time.monotonic() - published) - 1 <= msgs[0].props["MessageExpiryInterval"] <= 27, msgs



def test_subscriptions_keep_their_options_and_identifiers_across_sigkill(store_brokers):
    """A 5.0 session's subscriptions, made before a SIGKILL, work after the restart as they
    were made: the granted QoS (a QoS 2 message comes at QoS 1 on a QoS 1 subscription), the
    subscription identifier (7, and 300, which takes two bytes), No Local (its own messages
    do not come back) and Retain As Published (RETAIN stays set). A 3.1.1 session's
    subscription keeps its QoS too."""
    broker = store_brokers().start()
    cid, cid311 = unique_id("opts5"), unique_id("opts311")
    c, _ = connect(broker.port, cid, V5, clean=True, expiry=300)
    assert c.subscribe(1, [("opts/id/#", 1)], props={"SubscriptionIdentifier": 7}).codes == [1]
    assert c.subscribe(2, [("opts/nl", 2 | 0x04 | 0x08)], props={"SubscriptionIdentifier": 300}).codes == [2]
    park(c)
    c, _ = connect(broker.port, cid311, V311, clean=False)
    assert c.subscribe(1, [("opts/id/+", 1)]).codes == [1]
    park(c)
    broker.restart("kill")
    assert broker.restored_counts()[0] == 2, broker.restored.group(0)
    c, ack = connect(broker.port, cid, V5, clean=False)
    c311, ack311 = connect(broker.port, cid311, V311, clean=False)
    with c, c311, RawClient(broker.port, version=V5) as other:
        assert ack.session_present and ack311.session_present
        other.connect(unique_id("other"))
        c.publish("opts/nl", "mine", qos=1, retain=True, packet_id=1)  # No Local: not for me
        other.publish("opts/nl", "retained", qos=2, retain=True, packet_id=1)
        other.publish("opts/id/x", "downgraded", qos=2, packet_id=2)
        got = [p for p in collect(c) if p.type == raw.PUBLISH]
        got311 = [p for p in collect(c311) if p.type == raw.PUBLISH]
    assert [(p.topic, p.payload, p.qos, p.retain, p.props.get("SubscriptionIdentifier")) for p in got] == [
        ("opts/nl", b"retained", 2, True, [300]), ("opts/id/x", b"downgraded", 1, False, [7])], got
    assert [(p.topic, p.payload, p.qos) for p in got311] == [("opts/id/x", b"downgraded", 1)], got311


def test_session_expiry_keeps_counting_after_a_restart(store_brokers):
    """Two 5.0 sessions parked with a queued message, one with a 2 s session expiry, one
    with 60 s; SIGKILL and restart at once (both are restored); 3 s after the restart the
    2 s session is gone (no session, no message) and the 60 s one is there with its
    message."""
    broker = store_brokers().start()
    short, long = unique_id("short"), unique_id("long")
    for cid, expiry in ((short, 2), (long, 60)):
        c, _ = connect(broker.port, cid, V5, clean=True, expiry=expiry)
        c.subscribe(1, [("sx/#", 1)])
        park(c)
    with RawClient(broker.port, version=V5) as pub:
        pub.connect(unique_id("sx-pub"))
        pub.publish("sx/a", "queued", qos=1, packet_id=1)
    broker.restart("kill")
    assert broker.restored_counts() == (2, 0, 2), broker.restored.group(0)
    restarted = time.monotonic()
    time.sleep(3)  # the 2 s session expires 3 s after the restart at the latest
    c, ack = connect(broker.port, short, V5, clean=False)
    with c:
        assert not ack.session_present, f"{short}'s session outlived its 2 s expiry: {ack!r}"
        assert nothing_more(c) == []
    c, ack = connect(broker.port, long, V5, clean=False)
    with c:
        assert ack.session_present
        got = [p for p in nothing_more(c) if p.type == raw.PUBLISH]
    assert [(p.topic, p.payload) for p in got] == [("sx/a", b"queued")], got
    assert time.monotonic() - restarted < 10


def faketime_env(offset: str) -> dict[str, str]:
    """The broker's clock `offset` ahead ("+2h"), wall clock and monotonic, with libfaketime."""
    if not os.path.exists(FAKETIME_LIB):
        pytest.fail(f"{FAKETIME_LIB} is missing: apt-get install libfaketime (scripts/test installs it)",
                    pytrace=False)
    return {"LD_PRELOAD": FAKETIME_LIB, "FAKETIME": offset, "FAKETIME_NO_CACHE": "1"}


def test_persistent_client_expiration_ends_sessions_offline_longer_across_restarts(store_brokers):
    """`persistent_client_expiration 1h`: a 3.1.1 session (clean session off) and a 5.0
    session that never expires by itself (expiry 0xFFFFFFFF) survive a restart, then are gone
    when the broker starts again two hours later (its clock moved on with libfaketime),
    queued messages and all; a 5.0 session with a 3 h expiry is still there with its
    messages."""
    broker = store_brokers("persistent_client_expiration 1h").start()
    s311, s5inf, s5long = unique_id("pce311"), unique_id("pce5inf"), unique_id("pce5long")
    for cid, version, expiry in ((s311, V311, None), (s5inf, V5, 0xFFFFFFFF), (s5long, V5, 3 * 3600)):
        c, _ = connect(broker.port, cid, version, clean=version == V5, expiry=expiry)
        c.subscribe(1, [("pce/#", 1)])
        park(c)
    with RawClient(broker.port) as pub:
        pub.connect(unique_id("pce-pub"))
        pub.publish("pce/a", "first", qos=1, packet_id=1)
    broker.restart("term")
    c, ack = connect(broker.port, s311, V311, clean=False)
    with c:
        assert ack.session_present, "the 3.1.1 session did not survive a plain restart"
        assert [p.payload for p in nothing_more(c) if p.type == raw.PUBLISH] == [b"first"]
        park(c)
    with RawClient(broker.port) as pub:
        pub.connect(unique_id("pce-pub"))
        pub.publish("pce/a", "second", qos=1, packet_id=1)
    broker.restart("term", env=faketime_env("+2h"))
    for cid, version in ((s311, V311), (s5inf, V5)):
        c, ack = connect(broker.port, cid, version, clean=False)
        with c:
            assert not ack.session_present, f"{cid}'s session outlived persistent_client_expiration 1h"
            assert nothing_more(c) == []
    c, ack = connect(broker.port, s5long, V5, clean=False)
    with c:
        assert ack.session_present
        assert [p.payload for p in nothing_more(c) if p.type == raw.PUBLISH] == [b"first", b"second"]


def test_a_delayed_will_survives_sigkill_and_is_published_after_its_delay(store_brokers):
    """A 5.0 client with a will (delay 2 s, session expiry 60 s) loses its connection; the
    broker is SIGKILLed as soon as it has noticed, and started again: the will is published
    once, 2 s after the connection was lost (the delay counts across the restart), to a
    persistent subscriber that was offline meanwhile."""
    broker = store_brokers().start()
    watcher, cid = unique_id("will-watch"), unique_id("will-client")
    c, _ = connect(broker.port, watcher, V311, clean=False)
    c.subscribe(1, [("will/#", 1)])
    park(c)
    will = {"topic": f"will/{cid}", "payload": b"gone", "qos": 1, "props": {"WillDelayInterval": 2}}
    client, _ = connect(broker.port, cid, V5, clean=True, expiry=60, will=will)
    mark = broker.mark()
    client.close()  # no DISCONNECT: the will is due
    lost = time.monotonic()
    broker.wait_for_log(rf"Client {re.escape(cid)} closed its connection\.", since=mark)
    broker.restart("kill")
    assert broker.restored_counts()[0] == 2, broker.restored.group(0)
    c, ack = connect(broker.port, watcher, V311, clean=False)
    with c:
        assert ack.session_present
        m = c.expect(raw.PUBLISH, timeout=6)
        arrived = time.monotonic() - lost
        assert (m.topic, m.payload) == (f"will/{cid}", b"gone"), m
        acknowledge_and_check_quiet = [p for p in collect(c) if p.type == raw.PUBLISH]
        c.send(raw.puback(m.packet_id))
    assert 1.7 <= arrived <= 4.0, f"the will came {arrived:.2f} s after the connection was lost (delay 2 s)"
    assert acknowledge_and_check_quiet == [], f"the will came more than once: {acknowledge_and_check_quiet}"


@pytest.mark.parametrize("version", VERSIONS)
def test_incoming_qos2_in_flight_across_sigkill_is_delivered_once(store_brokers, version):
    """A persistent publisher sends a QoS 2 PUBLISH and gets PUBREC; the broker is SIGKILLed
    before PUBREL and restarted. The publisher, reconnected (session present), resends the
    PUBLISH with DUP as MQTT says: it is acknowledged again (PUBREC, then PUBCOMP for its
    PUBREL), and the subscriber receives the message once."""
    broker = store_brokers().start()
    sub, pub_id = unique_id("in2-sub"), unique_id("in2-pub")
    c, _ = connect(broker.port, sub, version, clean=False)
    c.subscribe(1, [("in2/#", 2)])
    park(c)
    p, _ = connect(broker.port, pub_id, version, clean=False)
    p.send(raw.publish("in2/x", "once", qos=2, packet_id=7, version=version))
    assert p.expect(raw.PUBREC).packet_id == 7
    p.close()
    broker.restart("kill")
    p, ack = connect(broker.port, pub_id, version, clean=False)
    with p:
        assert ack.session_present
        p.send(raw.publish("in2/x", "once", qos=2, dup=True, packet_id=7, version=version))
        rec = p.expect(raw.PUBREC)
        assert (rec.packet_id, rec.reason) == (7, 0), rec
        p.send(raw.pubrel(7, version))
        comp = p.expect(raw.PUBCOMP)
        assert (comp.packet_id, comp.reason) == (7, 0), comp
        p.publish("in2/x", "after", qos=1, packet_id=8)
    c, ack = connect(broker.port, sub, version, clean=False)
    with c:
        assert ack.session_present
        got = messages_until(c, b"after")
        got += [x for x in nothing_more(c) if x.type == raw.PUBLISH]
    assert [(m.payload, m.qos) for m in got] == [(b"once", 2), (b"after", 1)], got


@pytest.mark.parametrize("version", VERSIONS)
def test_outgoing_qos2_released_before_sigkill_gets_pubrel_not_the_message_again(store_brokers, version):
    """A persistent subscriber receives a QoS 2 PUBLISH and sends PUBREC; the broker answers
    PUBREL; the subscriber has not sent PUBCOMP when the broker is SIGKILLed. After the
    restart the subscriber gets PUBREL for that packet id, not the PUBLISH again, and after
    PUBCOMP nothing more of that message."""
    broker = store_brokers().start()
    sub = unique_id("out2-sub")
    c, _ = connect(broker.port, sub, version, clean=False)
    c.subscribe(1, [("out2/#", 2)])
    with RawClient(broker.port, version=version) as pub:
        pub.connect(unique_id("out2-pub"))
        pub.publish("out2/x", "released", qos=2, packet_id=1)
        m = c.expect(raw.PUBLISH)
        assert (m.payload, m.qos) == (b"released", 2), m
        c.send(raw.pubrec(m.packet_id, version))
        assert c.expect(raw.PUBREL).packet_id == m.packet_id
    c.close()
    broker.restart("kill")
    c, ack = connect(broker.port, sub, version, clean=False)
    with c:
        assert ack.session_present
        first = c.recv()
        assert (first.type, first.packet_id) == (raw.PUBREL, m.packet_id), f"expected PUBREL, got {first!r}"
        c.send(raw.pubcomp(m.packet_id, version))
        with RawClient(broker.port, version=version) as pub:
            pub.connect(unique_id("out2-pub"))
            pub.publish("out2/x", "after", qos=1, packet_id=1)
        got = messages_until(c, b"after")
    assert [x.payload for x in got] == [b"after"], got


@pytest.mark.xfail(strict=True, reason=QOS2_SENT_NOT_RECORDED)
@pytest.mark.parametrize("how", ["kill", "term"])
@pytest.mark.parametrize("version", VERSIONS)
def test_outgoing_qos2_unanswered_at_a_restart_is_resent_with_its_packet_id_and_dup(store_brokers, version, how):
    """A persistent subscriber has received a QoS 2 PUBLISH and not answered yet when the
    broker is stopped (SIGKILL, or SIGTERM). After the restart it must get that PUBLISH again with the same
    packet identifier and DUP set ([MQTT-4.4.0-1], [MQTT-3.3.1-1]), so that it knows it is
    the message it already has (and a QoS 2 message is never delivered twice); and no other
    message may use that packet id before the flow completes. (A first message went through
    the whole flow before, so that the unanswered one does not have packet id 1.)"""
    broker = store_brokers().start()
    sub = unique_id("out2-sub")
    c, _ = connect(broker.port, sub, version, clean=False)
    c.subscribe(1, [("out2/#", 2)])
    with RawClient(broker.port, version=version) as pub:
        pub.connect(unique_id("out2-pub"))
        # A first message goes through the whole flow, so that the second has packet id 2.
        pub.publish("out2/x", "answered", qos=2, packet_id=1)
        m = c.expect(raw.PUBLISH)
        c.send(raw.pubrec(m.packet_id, version))
        assert c.expect(raw.PUBREL).packet_id == m.packet_id
        c.send(raw.pubcomp(m.packet_id, version))
        c.send(raw.pingreq())
        c.expect(raw.PINGRESP)  # the broker has handled PUBCOMP
        pub.publish("out2/x", "unanswered", qos=2, packet_id=2)
        first = c.expect(raw.PUBLISH)
        assert first.payload == b"unanswered" and first.packet_id != m.packet_id, first
    c.close()
    broker.restart(how)
    c, ack = connect(broker.port, sub, version, clean=False)
    with c:
        assert ack.session_present
        with RawClient(broker.port, version=version) as pub:
            pub.connect(unique_id("out2-pub"))
            pub.publish("out2/x", "next", qos=2, packet_id=1)
        again = c.expect(raw.PUBLISH)
        assert (again.payload, again.packet_id, again.dup) == (b"unanswered", first.packet_id, True), (
            f"before the restart: {first!r}; after it: {again!r}")
        got = [again] + [x for x in collect(c) if x.type == raw.PUBLISH]
    assert [(x.payload, x.packet_id == first.packet_id) for x in got] == [(b"unanswered", True), (b"next", False)], got


RESEND_ROUNDS = int(os.environ.get("PERSIST_RESEND_ROUNDS", "40"))


@pytest.mark.xfail(strict=True, reason=QOS2_RESEND_NOT_ROUTED)
def test_qos2_resent_after_sigkill_reaches_every_subscriber(store_brokers, request):
    """One persistent QoS 2 publisher, one message in flight at a time, eight offline
    persistent subscribers; the broker is SIGKILLed at random moments (seeded) while it
    publishes, RESEND_ROUNDS times, and the publisher resends what was in flight with DUP
    after each restart. Every message it got PUBREC for reaches all eight, once."""
    rng = random.Random(f"{SEED}/{request.node.name}")
    broker = store_brokers("max_queued_messages 100000").start()
    subs = [LoadSubscriber(broker.port, unique_id(f"burst{i}"), V311, "burst/#") for i in range(int(os.environ.get("PERSIST_RESEND_SUBS", "8")))]
    for s in subs:
        s.subscribe_once()
    pub = LoadPublisher(broker.port, unique_id("burst-pub"), V311, 2, True, "burst/x", "b", window=1)
    pub.start()
    for _ in range(RESEND_ROUNDS):
        base = pub.acked_count()
        until(lambda: pub.acked_count() >= base + 3, 10, lambda: pub.describe())
        # The random moment of the kill: within 0.2 ms of a PUBLISH leaving the
        # publisher, while the broker handles it.
        pub.just_sent.clear()
        assert pub.just_sent.wait(5), pub.describe()
        spin_until = time.perf_counter() + rng.uniform(0.0, 0.0002)
        while time.perf_counter() < spin_until:
            pass
        broker.restart("kill")
    pub.stop()
    for s in subs:
        s.start()
    with RawClient(broker.port) as end:
        end.connect(unique_id("end"))
        end.publish("burst/end", "end:0", qos=1)
    for s in subs:
        until(lambda: "end:0" in s.received(), 20, lambda: s.describe())
        s.stop()
    tallies = [tally(s.client_id, s.deliveries, [pub], 2) for s in subs]
    record(request.node.name, seed=SEED, rounds=RESEND_ROUNDS, sent=len(pub.sent), acknowledged=len(pub.acked),
           resent=pub.resent, missing={t.subscriber: t.missing for t in tallies if t.missing},
           duplicates=sum(t.duplicates for t in tallies))
    lost = [f"{t.subscriber} never received {m}; its publisher's view (connection, event): {pub.trace.get(m)}"
            for t in tallies for m in t.missing]
    assert not lost, f"seed {SEED}, {RESEND_ROUNDS} rounds:\n" + "\n".join(lost)
    assert all(t.duplicates == 0 for t in tallies), [t.line() for t in tallies]
