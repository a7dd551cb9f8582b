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
import time
from dataclasses import dataclass

import pytest

import mqtt_raw as raw
from mqtt_raw import V5, V311, RawClient
from persistence_support import (
    LoadPublisher,
    LoadSubscriber,
    PahoLoadSubscriber,
    StoreBroker,
    record,
    tally,
    until,
)
from support import unique_id

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
