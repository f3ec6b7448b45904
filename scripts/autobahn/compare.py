#!/usr/bin/env python3
"""Compare two Autobahn testsuite reports case by case, for scripts/autobahn.sh.

Usage: compare.py REPORT_DIR_A REPORT_DIR_B

Each REPORT_DIR is a fuzzing client's `outdir` (it holds index.json). The same
server run over ws:// and over wss:// should give every case the same result:
the same behaviour and the same closing behaviour. Prints one line saying
whether it does, then one line per case that differs (or that only one report
has). Exits 1 if any case differs or a report cannot be read, else 0.
"""

import json
import os
import sys


def case_key(case_id):
    return [int(part) if part.isdigit() else part for part in case_id.split(".")]


def load(report_dir):
    """{case id: (behavior, behaviorClose)}, over every agent of the report."""
    with open(os.path.join(report_dir, "index.json"), encoding="utf-8") as f:
        index = json.load(f)
    results = {}
    for agent_cases in index.values():
        for case_id, entry in agent_cases.items():
            results[case_id] = (entry.get("behavior", "?"), entry.get("behaviorClose", "?"))
    return results


def show(result):
    return "missing" if result is None else "%s / close %s" % result


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    dir_a, dir_b = sys.argv[1], sys.argv[2]
    try:
        a, b = load(dir_a), load(dir_b)
    except (OSError, ValueError) as e:
        print("autobahn: cannot compare %s and %s: %s" % (dir_a, dir_b, e))
        return 1

    differ = [c for c in sorted(set(a) | set(b), key=case_key) if a.get(c) != b.get(c)]
    if not differ and a:
        print("autobahn: the %d cases have identical results (behaviour and closing) in %s and %s"
              % (len(a), dir_a, dir_b))
        return 0
    if not a:
        print("autobahn: %s and %s list no cases" % (dir_a, dir_b))
        return 1
    print("autobahn: %d of %d cases differ between %s and %s:"
          % (len(differ), len(set(a) | set(b)), dir_a, dir_b))
    width = max(len(c) for c in differ)
    for case_id in differ:
        print("  %-*s  %s  vs  %s" % (width, case_id, show(a.get(case_id)), show(b.get(case_id))))
    return 1


if __name__ == "__main__":
    sys.exit(main())
