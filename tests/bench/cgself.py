#!/usr/bin/env python3
"""Self cost per function of a callgrind dump, per request: `cgself.py DUMP REQUESTS [TOP]`.

callgrind_annotate 3.19 prints inclusive costs whatever `--inclusive` says for dumps taken with
`callgrind_control -d`, so the self costs are summed here: every cost line of a function block
except the inclusive cost line that follows each `calls=` line.
"""

import re
import sys
from collections import defaultdict


def self_costs(path):
    names, costs = {}, defaultdict(int)
    fn, after_call = None, False
    ref = re.compile(r"\((\d+)\)(?: (.*))?")
    for line in open(path, errors="replace"):
        if line.startswith("fn="):
            m = ref.match(line[3:].strip())
            if m:
                if m.group(2):
                    names[m.group(1)] = m.group(2)
                fn = m.group(1)
            after_call = False
        elif line.startswith("calls="):
            after_call = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            if after_call:
                after_call = False
                continue
            parts = line.split()
            if fn is not None and len(parts) >= 2:
                costs[fn] += int(parts[1])
        elif line.startswith(("cfn=", "cfi=", "cfl=", "cob=")):
            m = ref.match(line.split("=", 1)[1].strip())
            if m and m.group(2) and line.startswith("cfn="):
                names[m.group(1)] = m.group(2)
    return {names.get(k, k): v for k, v in costs.items()}


def total(path):
    """The dump's total instructions (its `summary:`/`totals:` line)."""
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    return 0


def main():
    path, n = sys.argv[1], int(sys.argv[2])
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 40
    costs = self_costs(path)
    total = sum(costs.values())
    print(f"self cost, instructions per request (total {total / n:,.0f})")
    for name, c in sorted(costs.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{c / n:>9,.0f}  {100 * c / total:5.1f} %  {name[:150]}")


if __name__ == "__main__":
    main()
