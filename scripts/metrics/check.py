"""GET /metrics read by Prometheus' own parser (the official Python client's), while real clients come and go.

Run by scripts/metrics-check.sh against `echo --metrics` on PORT. Checks that the page parses as the text
exposition format, that the names follow Prometheus' conventions, and that the counters move as connections,
messages and closes do. Exits non-zero with the reason on the first failure.
"""

import asyncio
import sys
import urllib.request

import websockets
from prometheus_client.parser import text_string_to_metric_families

PORT = int(sys.argv[1])
BASE = f"127.0.0.1:{PORT}"


def scrape():
    with urllib.request.urlopen(f"http://{BASE}/metrics", timeout=5) as resp:
        ctype = resp.headers["Content-Type"]
        assert ctype.startswith("text/plain; version=0.0.4"), ctype
        text = resp.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {}
    for family in families.values():
        assert family.name.startswith("wsloop_"), family.name
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return families, samples


def value(samples, name, **labels):
    labels.setdefault("loop", "0")
    return samples.get((name, tuple(sorted(labels.items()))), 0)


async def traffic():
    async with websockets.connect(f"ws://{BASE}/", compression=None) as a, \
            websockets.connect(f"ws://{BASE}/", compression=None) as b:
        for i in range(10):
            await a.send(f"hello {i}")
            assert await a.recv() == f"hello {i}"
        await b.send(b"\x00" * 1000)
        assert len(await b.recv()) == 1000
        _, during = scrape()
        assert value(during, "wsloop_users") == 2, during
        await a.close(code=4001, reason="done")
        await b.close(code=1000)
    # A refusal: a WebSocket request without its key.
    req = urllib.request.Request(f"http://{BASE}/", headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                                          "Sec-WebSocket-Version": "13"})
    try:
        urllib.request.urlopen(req, timeout=5)
        raise AssertionError("a handshake without Sec-WebSocket-Key was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 400, e.code


def main():
    families, before = scrape()
    kinds = {name: f.type for name, f in families.items()}
    for name in ["wsloop_connections_accepted", "wsloop_handshakes", "wsloop_messages_received",
                 "wsloop_received_bytes", "wsloop_sent_bytes", "wsloop_closes_received"]:
        if name == "wsloop_closes_received" and name not in kinds:
            continue  # no close counted yet: a family without samples is left out
        assert kinds.get(name) == "counter", (name, kinds.get(name))
    assert kinds["wsloop_connections"] == "gauge"
    assert kinds["wsloop_queued_bytes"] == "gauge"
    assert kinds["wsloop_loop_turn_seconds"] == "histogram"
    asyncio.run(traffic())
    _, after = scrape()

    def moved(name, by, **labels):
        got = value(after, name, **labels) - value(before, name, **labels)
        assert got == by, f"{name}{labels} moved by {got}, not {by}"

    moved("wsloop_handshakes_total", 2)
    moved("wsloop_messages_received_total", 11)
    moved("wsloop_messages_sent_total", 11)
    moved("wsloop_closes_received_total", 1, code="4xxx")
    moved("wsloop_closes_received_total", 1, code="1000")
    moved("wsloop_handshakes_refused_total", 1, status="400")
    assert value(after, "wsloop_received_bytes_total") - value(before, "wsloop_received_bytes_total") > 10 * 15 + 1000
    assert value(after, "wsloop_sent_bytes_total") - value(before, "wsloop_sent_bytes_total") > 10 * 9 + 1000
    assert value(after, "wsloop_loop_turn_seconds_count") > value(before, "wsloop_loop_turn_seconds_count")
    inf = value(after, "wsloop_loop_turn_seconds_bucket", le="+Inf")
    assert inf == value(after, "wsloop_loop_turn_seconds_count"), "the +Inf bucket holds every turn"
    print(f"metrics check: ok ({len(after)} samples parsed by prometheus_client, counters moved as expected)")


main()
