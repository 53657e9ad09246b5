#!/usr/bin/env python3
"""Summarises a Delta table's JSON log, read from stdin as the kind suite prints it:
a line `### <commit file name>` before each commit file's contents.

Prints `commits=<n> rows=<live rows> files=<live data files> txn=<txn actions>`: rows are the
numRecords of the data files added and not removed since (from each add action's stats), so a
compaction does not count rows twice. Exits non-zero when an add action has no numRecords.
"""

import json
import sys


def main() -> int:
    commits: dict[int, list[str]] = {}
    current = None
    for line in sys.stdin:
        line = line.rstrip("\n")
        if line.startswith("### "):
            name = line[4:].strip().rsplit("/", 1)[-1]
            if not name.endswith(".json"):
                current = None
                continue
            current = commits.setdefault(int(name[: -len(".json")]), [])
        elif current is not None and line.strip():
            current.append(line)
    live: dict[str, int] = {}
    txn = 0
    for version in sorted(commits):
        for line in commits[version]:
            action = json.loads(line)
            if "add" in action:
                stats = json.loads(action["add"].get("stats") or "{}")
                if "numRecords" not in stats:
                    print(f"commit {version}: add {action['add']['path']} has no numRecords", file=sys.stderr)
                    return 2
                live[action["add"]["path"]] = int(stats["numRecords"])
            elif "remove" in action:
                live.pop(action["remove"]["path"], None)
            elif "txn" in action:
                txn += 1
    if commits and min(commits) != 0:
        print(f"the log does not start at version 0 (first: {min(commits)})", file=sys.stderr)
        return 2
    print(f"commits={len(commits)} rows={sum(live.values())} files={len(live)} txn={txn}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
