#!/usr/bin/env python3
"""Medians and ratios of the runs scripts/tls-load.sh kept: python3 scripts/tls-summary.py RAW [RAW...]

Each RESULT line there is prefixed with "PART CONFIG SERVER". Per part and configuration: every server's median of
each figure over its runs, then each TLS server against its plain self ("wsloop-tls" / "wsloop"): the ratio of the
medians and the median of the paired ratios (run i of one over run i of the other, which ran one right after the
other), with the lowest and highest of those. A rate ratio is the TLS share of the plain figure; a CPU ratio above 1
is what TLS adds per message (or handshake).
"""

import statistics
import sys

FIGURES = {
    "echo": [
        ("msgs_per_s", "msgs/s", 0),
        ("server_us_per_msg", "srv us/msg", 3),
        ("server_user_us_per_msg", "own code", 3),
        ("server_cpu_pct", "srv cpu%", 0),
        ("client_cpu_pct", "gen cpu%", 0),
        ("p50_us", "p50 us", 0),
        ("p99_us", "p99 us", 0),
    ],
    "handshakes": [
        ("handshakes_per_s", "hs/s", 0),
        ("server_us_per_handshake", "srv us/hs", 1),
        ("server_user_us_per_handshake", "own code", 1),
        ("server_cpu_pct", "srv cpu%", 0),
        ("client_cpu_pct", "gen cpu%", 0),
        ("p50_us", "p50 us", 0),
        ("p99_us", "p99 us", 0),
    ],
    "idle": [
        ("kib_per_conn_open", "KiB/conn open", 2),
        ("kib_per_conn_used", "KiB/conn used", 2),
        ("rss_open_mib", "RSS MiB open", 1),
    ],
}
# The figures compared, TLS over plain, per part.
COMPARED = {
    "echo": ["msgs_per_s", "server_us_per_msg", "server_user_us_per_msg"],
    "handshakes": ["handshakes_per_s", "server_us_per_handshake"],
    "idle": ["kib_per_conn_open", "kib_per_conn_used"],
}


def parse(paths):
    runs = {}  # (part, config) -> server -> list of dicts, in run order
    order = []
    for path in paths:
        with open(path) as f:
            for line in f:
                words = line.split()
                if len(words) < 5 or words[3] != "RESULT":
                    continue
                part, config, server = words[:3]
                kv = dict(w.split("=", 1) for w in words[4:] if "=" in w)
                values = {k: float(v) for k, v in kv.items() if k not in ("mode",)}
                if part == "idle":
                    values["kib_per_conn_open"] = values["bytes_per_conn_open"] / 1024
                    values["kib_per_conn_used"] = values["bytes_per_conn_used"] / 1024
                    values["rss_open_mib"] = values["rss_open"] / (1 << 20)
                key = (part, config)
                if key not in runs:
                    runs[key] = {}
                    order.append(key)
                runs[key].setdefault(server, []).append(values)
    return runs, order


def fmt(value, digits):
    return f"{value:.{digits}f}"


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    runs, order = parse(sys.argv[1:])
    for key in order:
        part, config = key
        figures = FIGURES[part]
        servers = runs[key]
        n = max(len(v) for v in servers.values())
        print(f"\n{part} {config}: medians of {n} runs per server")
        print(f"  {'server':24}" + "".join(f"{label:>15}" for _, label, _ in figures))
        for server, rows in servers.items():
            cells = []
            for name, _, digits in figures:
                vals = [r[name] for r in rows if name in r]
                cells.append(fmt(statistics.median(vals), digits) if vals else "-")
            print(f"  {server:24}" + "".join(f"{c:>15}" for c in cells))
        if part == "handshakes":
            print("  server-bound rate (1e6 / srv us per handshake, the most one core could do at that cost):")
            for server, rows in servers.items():
                us = statistics.median(r["server_us_per_handshake"] for r in rows)
                print(f"    {server:24} {1e6 / us:>10.0f} /s")
        for server, rows in servers.items():
            if not server.endswith("-tls") or server[:-4] not in servers:
                continue
            plain = servers[server[:-4]]
            print(f"  {server} / {server[:-4]}:")
            for name in COMPARED[part]:
                a = [r[name] for r in rows]
                b = [r[name] for r in plain]
                of_medians = statistics.median(a) / statistics.median(b)
                pairs = [x / y for x, y in zip(a, b) if y > 0]
                paired = statistics.median(pairs)
                print(
                    f"    {name:30} ratio of medians {of_medians:6.3f}; paired median {paired:6.3f}"
                    f" (range {min(pairs):.3f}-{max(pairs):.3f}, {len(pairs)} pairs)"
                )
        if "wsloop-tls" in servers and "tokio-tungstenite-tls" in servers:
            a, b = servers["wsloop-tls"], servers["tokio-tungstenite-tls"]
            print("  wsloop-tls / tokio-tungstenite-tls:")
            for name in COMPARED[part]:
                ma = statistics.median(r[name] for r in a)
                mb = statistics.median(r[name] for r in b)
                print(f"    {name:30} ratio of medians {ma / mb:6.3f}")


if __name__ == "__main__":
    main()
