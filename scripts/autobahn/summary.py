#!/usr/bin/env python3
"""Summarise an Autobahn testsuite report for scripts/autobahn.sh.

Usage: summary.py REPORT_DIR JUSTIFIED_LIST

REPORT_DIR is the fuzzing client's `outdir` (it holds index.json and one JSON
file per case). JUSTIFIED_LIST names the cases that may end NON-STRICT or
INFORMATIONAL, one per line: a case id (or a glob such as `6.4.*`), then the
reason, which is required. Lines starting with `#` are comments.

Prints one summary line with the counts, the failed case ids, details for every
case that needs attention, the 9.x (performance) durations and those of 12.x and
13.x (permessage-deflate) per section. Exits 1 on any FAILED or UNIMPLEMENTED case
or any NON-STRICT case that the list does not justify, else 0.
"""

import fnmatch
import json
import os
import re
import sys

# Worst result wins: a case counts under the worse of its behaviour and its
# closing behaviour.
RANK = ["OK", "INFORMATIONAL", "UNIMPLEMENTED", "NON-STRICT", "FAILED"]

# behaviorClose speaks its own words; everything but these three is a failure
# ("FAILED", "WRONG CODE", "UNCLEAN", "FAILED BY CLIENT").
CLOSE_AS = {"OK": "OK", "INFORMATIONAL": "INFORMATIONAL", "NON-STRICT": "NON-STRICT"}


def case_key(case_id):
    return [int(part) if part.isdigit() else part for part in case_id.split(".")]


def classify(entry):
    behavior = entry.get("behavior", "FAILED")
    behavior = behavior if behavior in RANK else "FAILED"
    close = CLOSE_AS.get(entry.get("behaviorClose", "FAILED"), "FAILED")
    return max(behavior, close, key=RANK.index)


def load_justified(path):
    """Returns [(pattern, reason)] and a list of malformed lines."""
    justified, malformed = [], []
    if not os.path.exists(path):
        return justified, malformed
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, 1)
            if len(parts) < 2 or not parts[1].strip():
                malformed.append("%s:%d: %s (no reason given)" % (path, number, line))
                continue
            justified.append((parts[0], parts[1].strip()))
    return justified, malformed


def reason_for(case_id, justified):
    for pattern, reason in justified:
        if fnmatch.fnmatchcase(case_id, pattern):
            return reason
    return None


def case_report(report_dir, entry):
    name = entry.get("reportfile")
    if not name:
        return {}
    try:
        with open(os.path.join(report_dir, name), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def clip(text, limit=300):
    text = " ".join(re.sub(r"<br\s*/?>", " ", str(text)).split())
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def short_label(description):
    """'Send fragmented text message message with message payload of length 4 * 2**20 (4M).
    Sent out in fragments of 64.' -> 'text 4 MiB, fragments of 64'.

    The size comes from the 'N * 2**E' expression: a few of the suite's
    parenthesised sizes are off (9.2.5 says 16M for 8 MiB)."""
    kind = "binary" if "binary" in description else "text"
    rtt = re.search(r"Send (\d+) \w+ messages of payload size (\d+)", description)
    if rtt:
        return "%s, %s round trips of %s bytes" % (kind, rtt.group(1), rtt.group(2))
    size = re.search(r"(\d+) \* 2\*\*(10|20)", description)
    label = "%s %s" % (kind, size.group(1) + (" KiB" if size.group(2) == "10" else " MiB") if size else "?")
    split = re.search(r"(fragments of \w+|chops of \w+ octets)", description)
    return label + (", " + split.group(1) if split else ", one frame")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    report_dir, justified_path = sys.argv[1], sys.argv[2]
    index_path = os.path.join(report_dir, "index.json")
    try:
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
    except (OSError, ValueError) as e:
        print("autobahn: cannot read %s: %s" % (index_path, e))
        return 1

    cases = {}
    for agent_cases in index.values():
        cases.update(agent_cases)
    if not cases:
        print("autobahn: %s lists no cases" % index_path)
        return 1

    justified, malformed = load_justified(justified_path)
    by_result = {name: [] for name in RANK}
    for case_id in sorted(cases, key=case_key):
        by_result[classify(cases[case_id])].append(case_id)

    failed = by_result["FAILED"]
    unjustified = [c for c in by_result["NON-STRICT"] if reason_for(c, justified) is None]
    unexplained = [c for c in by_result["INFORMATIONAL"] if reason_for(c, justified) is None]

    print("autobahn: %d OK, %d NON-STRICT, %d INFORMATIONAL, %d UNIMPLEMENTED, %d FAILED" % tuple(
        len(by_result[name]) for name in ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]))
    print("failed: %s" % (" ".join(failed) if failed else "none"))
    for name in ["NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"]:
        if by_result[name]:
            print("%s: %s" % (name.lower(), " ".join(by_result[name])))
    if unjustified:
        print("non-strict, not justified in %s: %s" % (justified_path, " ".join(unjustified)))
    if unexplained:
        print("note: informational, not explained in %s: %s" % (justified_path, " ".join(unexplained)))
    for line in malformed:
        print("note: ignored %s" % line)

    # Every case runs, the compression ones too: a case the server does not implement needs attention.
    attention = failed + by_result["UNIMPLEMENTED"] + unjustified
    if attention:
        print()
        print("details (the full report is %s):" % os.path.join(report_dir, "index.html"))
    for case_id in attention:
        entry = cases[case_id]
        report = case_report(report_dir, entry)
        print("  %s [%s / close %s, remote close code %s]" % (
            case_id, entry.get("behavior"), entry.get("behaviorClose"), entry.get("remoteCloseCode")))
        print("    case:     %s" % clip(report.get("description", "?")))
        print("    expected: %s" % clip(report.get("expectation", "?")))
        print("    observed: %s" % clip(report.get("result", "?")))
        print("    closing:  %s" % clip(report.get("resultClose", "?")))

    perf = [c for c in sorted(cases, key=case_key) if c.startswith("9.")]
    if perf:
        print()
        print("9.x durations (ms):")
        for case_id in perf:
            entry = cases[case_id]
            label = short_label(case_report(report_dir, entry).get("description", ""))
            print("  %-7s %-42s %7s  %s" % (case_id, label, entry.get("duration", "?"), classify(entry)))
        total = sum(cases[c].get("duration") or 0 for c in perf)
        print("  %-7s %-42s %7d" % ("9.*", "all of the above", total))

    # permessage-deflate: each 12.N / 13.N section is one offer with 18 message sizes; its total says more than
    # its cases one by one.
    sections = {}
    for case_id in cases:
        parts = case_id.split(".")
        if parts[0] in ("12", "13"):
            sections.setdefault("%s.%s" % (parts[0], parts[1]), []).append(case_id)
    if sections:
        print()
        print("12.x and 13.x durations per section (ms):")
        for section in sorted(sections, key=case_key):
            ids = sections[section]
            worst = max((classify(cases[c]) for c in ids), key=RANK.index)
            total = sum(cases[c].get("duration") or 0 for c in ids)
            slowest = max(ids, key=lambda c: cases[c].get("duration") or 0)
            print("  %-7s %3d cases %8d  slowest %s %d  %s" % (
                section + ".*", len(ids), total, slowest, cases[slowest].get("duration") or 0, worst))

    return 1 if attention else 0


if __name__ == "__main__":
    sys.exit(main())
