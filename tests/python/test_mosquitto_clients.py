"""midge as mosquitto's own command line clients use it: mosquitto_pub and mosquitto_sub
with MQTT 3.1, 3.1.1 and 5.0.

A subscriber is started and the test waits until the broker has acknowledged its
SUBSCRIBE (from the broker's verbose log) before anything is published; "exactly these
messages" is checked with `-C N` (the subscriber exits after N messages) and a last marker
message published after the others, so a message that should not have come shows up
instead of the marker."""
from __future__ import annotations

import random
import re
import string

import pytest

from support import mosquitto_pub, require_tool, unique_id

VERSIONS = ["31", "311", "5"]
# mosquitto's protocol numbers in "New client connected ... (pN, ...)".
LOG_PROTOCOL = {"31": 1, "311": 2, "5": 5}


@pytest.fixture(autouse=True)
def _tools():
    require_tool("mosquitto_pub")
    require_tool("mosquitto_sub")


# ---------------------------------------------------------------------------------------
# Publish / subscribe at each QoS
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("version", VERSIONS)
def test_pub_sub_each_version_and_qos(broker, mosquitto_subs, version, qos):
    topic = f"qos/v{version}/q{qos}"
    sub = mosquitto_subs(broker, [topic], "-v", "-C", "3", version=version, qos=qos)
    broker.wait_for_log(
        rf"New client connected from 127\.0\.0\.1:\d+ as {re.escape(sub.client_id)} \(p{LOG_PROTOCOL[version]}, c1, k60\)\."
    )
    payloads = [f"message {i} v{version} q{qos}" for i in range(3)]
    for p in payloads:
        mosquitto_pub(broker, "-t", topic, "-m", p, "-q", str(qos), version=version)
    assert sub.wait_exit() == 0
    assert sub.output() == [f"{topic} {p}" for p in payloads]
    # The publisher's QoS flow ran to completion and every client left normally.
    assert not broker.find_log(r"disconnected due to|Socket error")


def test_qos_flows_in_the_log(broker, mosquitto_subs):
    """The verbose log shows the QoS 2 handshake with the publisher and QoS 2 delivery to a
    QoS 2 subscriber, whose acknowledgements complete the flow."""
    sub = mosquitto_subs(broker, ["flow/t"], "-C", "1", qos=2)
    pub_id = unique_id("pub")
    mosquitto_pub(broker, "-t", "flow/t", "-m", "x", "-q", "2", "-i", pub_id)
    assert sub.wait_exit() == 0
    assert sub.output() == ["x"]
    for line in [
        rf"Received PUBLISH from {pub_id} \(d0, q2, r0, m\d+, 'flow/t', \.\.\. \(1 bytes\)\)",
        rf"Sending PUBREC to {pub_id}",
        rf"Received PUBREL from {pub_id}",
        rf"Sending PUBCOMP to {pub_id}",
        rf"Sending PUBLISH to {sub.client_id} \(d0, q2, r0, m\d+, 'flow/t'",
        rf"Received PUBREC from {sub.client_id}",
        rf"Sending PUBREL to {sub.client_id}",
        rf"Received PUBCOMP from {sub.client_id}",
    ]:
        # (The last acknowledgements may be logged just after mosquitto_sub exits.)
        broker.wait_for_log(line)


@pytest.mark.parametrize("pub_version,sub_version", [("5", "31"), ("31", "5"), ("311", "5"), ("5", "311")])
def test_versions_interoperate(broker, mosquitto_subs, pub_version, sub_version):
    sub = mosquitto_subs(broker, ["mix/#"], "-v", "-C", "2", version=sub_version, qos=1)
    mosquitto_pub(broker, "-t", "mix/a", "-m", "one", "-q", "1", version=pub_version)
    mosquitto_pub(broker, "-t", "mix/b", "-m", "two", "-q", "2", version=pub_version)
    assert sub.wait_exit() == 0
    assert sub.output() == ["mix/a one", "mix/b two"]


def test_delivered_qos_is_the_lower_of_published_and_subscribed(broker, mosquitto_subs):
    subs = {q: mosquitto_subs(broker, ["dq/t"], "-F", "%q %p", "-C", "3", qos=q) for q in (0, 1, 2)}
    for q in (0, 1, 2):
        mosquitto_pub(broker, "-t", "dq/t", "-m", f"pub{q}", "-q", str(q))
    for sq, sub in subs.items():
        assert sub.wait_exit() == 0
        assert sub.output() == [f"{min(pq, sq)} pub{pq}" for pq in (0, 1, 2)], f"subscriber at QoS {sq}"


def test_large_payload_from_stdin(broker, mosquitto_subs):
    payload = "".join(random.choices(string.ascii_letters, k=300_000))
    sub = mosquitto_subs(broker, ["big/t"], "-C", "1", "-F", "%l %p", qos=1)
    mosquitto_pub(broker, "-t", "big/t", "-s", "-q", "1", stdin=payload.encode())
    assert sub.wait_exit(timeout=10) == 0
    assert sub.output() == [f"{len(payload)} {payload}"]


def test_pub_line_mode(broker, mosquitto_subs):
    """mosquitto_pub -l sends each line of its input as a message, on one connection."""
    sub = mosquitto_subs(broker, ["lines/t"], "-C", "3", qos=1)
    mosquitto_pub(broker, "-t", "lines/t", "-l", "-q", "1", stdin=b"alpha\nbeta\ngamma\n")
    assert sub.wait_exit() == 0
    assert sub.output() == ["alpha", "beta", "gamma"]


def test_v5_publish_properties_are_forwarded(broker, mosquitto_subs):
    sub = mosquitto_subs(broker, ["props/#"], "-F", "%C|%P|%R|%E|%p", "-C", "1", version="5", qos=1)
    mosquitto_pub(
        broker, "-t", "props/a", "-m", "hi", "-q", "1",
        "-D", "publish", "content-type", "text/plain",
        "-D", "publish", "user-property", "k", "v",
        "-D", "publish", "response-topic", "resp/x",
        "-D", "publish", "message-expiry-interval", "30",
        version="5",
    )
    assert sub.wait_exit() == 0
    [line] = sub.output()
    content_type, user, response, expiry, payload = line.split("|")
    assert (content_type, user, response, payload) == ("text/plain", "k:v", "resp/x", "hi")
    # The expiry interval is forwarded, less the time the message waited [MQTT-3.3.2-6].
    assert 0 < int(expiry) <= 30


# ---------------------------------------------------------------------------------------
# Retained messages
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_retained_one_per_topic_and_replaced(broker, mosquitto_subs, version):
    mosquitto_pub(broker, "-t", "ret/a", "-m", "first", "-r", version=version)
    mosquitto_pub(broker, "-t", "ret/a", "-m", "second", "-r", "-q", "1", version=version)
    mosquitto_pub(broker, "-t", "ret/b", "-m", "other", "-r", "-q", "2", version=version)
    # --retained-only prints retained messages and exits at the first live one.
    sub = mosquitto_subs(broker, ["ret/#"], "-v", "--retained-only", version=version, qos=1)
    mosquitto_pub(broker, "-t", "ret/live", "-m", "live", version=version)
    assert sub.wait_exit() == 0
    assert sorted(sub.output()) == ["ret/a second", "ret/b other"]


@pytest.mark.parametrize("version", ["311", "5"])
def test_empty_retained_payload_removes_the_retained_message(broker, mosquitto_subs, version):
    mosquitto_pub(broker, "-t", "rm/a", "-m", "gone soon", "-r", version=version)
    mosquitto_pub(broker, "-t", "rm/b", "-m", "stays", "-r", version=version)
    # A subscriber present while it is removed gets the empty message as a normal one
    # (-R: it ignores the retained "gone soon" it gets at subscribe time).
    live = mosquitto_subs(broker, ["rm/a"], "-v", "-R", "-C", "1", version=version)
    mosquitto_pub(broker, "-t", "rm/a", "-n", "-r", version=version)
    assert live.wait_exit() == 0
    assert live.output() == ["rm/a (null)"]
    sub = mosquitto_subs(broker, ["rm/#"], "-v", "--retained-only", version=version)
    mosquitto_pub(broker, "-t", "rm/marker", "-m", "m", version=version)
    assert sub.wait_exit() == 0
    assert sub.output() == ["rm/b stays"]


def test_retain_flag_on_delivery(broker, mosquitto_subs):
    """Retained messages sent for a new subscription have RETAIN 1; a message published with
    RETAIN to an existing subscription is forwarded with RETAIN 0 (3.1.1 [MQTT-3.3.1-9],
    5.0 without Retain As Published), or 1 with Retain As Published (5.0)."""
    mosquitto_pub(broker, "-t", "rf/old", "-m", "old", "-r")
    s311 = mosquitto_subs(broker, ["rf/#"], "-F", "%r %t %p", "-C", "2")
    s5 = mosquitto_subs(broker, ["rf/#"], "-F", "%r %t %p", "-C", "2", version="5")
    s5rap = mosquitto_subs(broker, ["rf/#"], "-F", "%r %t %p", "-C", "2", "--retain-as-published", version="5")
    mosquitto_pub(broker, "-t", "rf/new", "-m", "new", "-r")
    for sub, live_flag in [(s311, 0), (s5, 0), (s5rap, 1)]:
        assert sub.wait_exit() == 0
        assert sub.output() == ["1 rf/old old", f"{live_flag} rf/new new"], sub.cmd


def test_retained_delivered_to_each_new_subscriber(broker, mosquitto_subs):
    mosquitto_pub(broker, "-t", "rn/t", "-m", "kept", "-r", "-q", "1")
    for version in VERSIONS:
        sub = mosquitto_subs(broker, ["rn/t"], "-v", "-C", "1", version=version, wait=False)
        assert sub.wait_exit() == 0
        assert sub.output() == ["rn/t kept"]


def test_sub_R_ignores_stale_retained_messages(broker, mosquitto_subs):
    mosquitto_pub(broker, "-t", "st/a", "-m", "stale", "-r")
    sub = mosquitto_subs(broker, ["st/#"], "-v", "-R", "-C", "1")
    mosquitto_pub(broker, "-t", "st/a", "-m", "fresh")
    assert sub.wait_exit() == 0
    assert sub.output() == ["st/a fresh"]


# ---------------------------------------------------------------------------------------
# Wildcards and $ topics
# ---------------------------------------------------------------------------------------

WILDCARD_TOPICS = [
    ("w/b/c", "1"), ("w/b/d", "2"), ("w/b/c/d", "3"), ("w", "4"),
    ("v/b/c", "5"), ("w//c", "6"), ("x", "7"), ("w/end/c", "end"),
]


@pytest.mark.parametrize("version", ["311", "5"])
@pytest.mark.parametrize(
    "filt,expected",
    [
        ("w/+/c", ["w/b/c 1", "w//c 6", "w/end/c end"]),
        ("+/+/c", ["w/b/c 1", "v/b/c 5", "w//c 6", "w/end/c end"]),
        ("w/#", ["w/b/c 1", "w/b/d 2", "w/b/c/d 3", "w 4", "w//c 6", "w/end/c end"]),
        ("#", [f"{t} {p}" for t, p in WILDCARD_TOPICS]),
        ("+", ["w 4", "x 7"]),
        ("w/b/c", ["w/b/c 1"]),
    ],
)
def test_wildcards(broker, mosquitto_subs, version, filt, expected):
    sub = mosquitto_subs(broker, [filt], "-v", "-C", str(len(expected)), version=version)
    for topic, payload in WILDCARD_TOPICS:
        mosquitto_pub(broker, "-t", topic, "-m", payload, version=version)
    assert sub.wait_exit() == 0
    assert sub.output() == expected


def test_dollar_topics_not_matched_by_leading_wildcards(broker, mosquitto_subs):
    subs = {
        "#": mosquitto_subs(broker, ["#"], "-v", "-C", "1"),
        "+/x": mosquitto_subs(broker, ["+/x"], "-v", "-C", "1"),
        "+/#": mosquitto_subs(broker, ["+/#"], "-v", "-C", "1"),
        "$test/#": mosquitto_subs(broker, ["$test/#"], "-v", "-C", "1"),
        "$test/+": mosquitto_subs(broker, ["$test/+"], "-v", "-C", "1"),
    }
    mosquitto_pub(broker, "-t", "$test/x", "-m", "dollar")
    mosquitto_pub(broker, "-t", "plain/x", "-m", "plain")
    for f in ("#", "+/x", "+/#"):
        assert subs[f].wait_exit() == 0
        assert subs[f].output() == ["plain/x plain"], f"subscriber on {f!r}"
    for f in ("$test/#", "$test/+"):
        assert subs[f].wait_exit() == 0
        assert subs[f].output() == ["$test/x dollar"], f"subscriber on {f!r}"


def test_retained_dollar_topic_not_sent_to_hash_subscriber(broker, mosquitto_subs):
    mosquitto_pub(broker, "-t", "$test/ret", "-m", "hidden", "-r")
    mosquitto_pub(broker, "-t", "vis/ret", "-m", "visible", "-r")
    sub = mosquitto_subs(broker, ["#"], "-v", "--retained-only")
    mosquitto_pub(broker, "-t", "vis/marker", "-m", "m")
    assert sub.wait_exit() == 0
    assert sub.output() == ["vis/ret visible"]
    dollar = mosquitto_subs(broker, ["$test/#"], "-v", "-C", "1", wait=False)
    assert dollar.wait_exit() == 0
    assert dollar.output() == ["$test/ret hidden"]


# ---------------------------------------------------------------------------------------
# mosquitto_sub's exit codes
# ---------------------------------------------------------------------------------------

def test_sub_count_exits_zero_after_n_messages(broker, mosquitto_subs):
    sub = mosquitto_subs(broker, ["cnt/t"], "-C", "2", qos=1)
    for i in range(4):
        mosquitto_pub(broker, "-t", "cnt/t", "-m", f"m{i}", "-q", "1")
    assert sub.wait_exit() == 0
    assert sub.output() == ["m0", "m1"]


def test_sub_E_exits_zero_once_subscribed(broker, mosquitto_subs):
    sub = mosquitto_subs(broker, ["e/t"], "-E", version="5")
    assert sub.wait_exit() == 0
    assert sub.output() == []
    broker.wait_for_log(rf"Client {sub.client_id} disconnected\.")


def test_sub_W_timeout_exit_code(broker, mosquitto_subs):
    """mosquitto_sub -W gives up when no message arrives: exit code 27 (it did connect)."""
    sub = mosquitto_subs(broker, ["quiet/t"], "-C", "1", "-W", "1")
    assert sub.wait_exit(timeout=5) == 27
    assert sub.output() == []


def test_sub_refused_connection_exit_code(broker_factory, mosquitto_subs):
    b = broker_factory("max_keepalive 10")
    sub = mosquitto_subs(b, ["r/t"], "-C", "1", "-k", "60", wait=False)
    rc = sub.wait_exit()
    assert rc != 0
    assert "identifier rejected" in sub.stderr()
    b.wait_for_log(rf"Client {sub.client_id} from 127\.0\.0\.1:\d+ refused: Client Identifier not valid "
                   rf"\(the keep alive is above max_keepalive\)\.")
