"""`p2d targets`: every target and whether it can run here."""
from __future__ import annotations

import json


def cmd_targets(args) -> int:
    """List every target and whether it can run on this machine (with the reason when not)."""
    from prune2deploy.backends.registry import TARGETS, availability

    rows = []
    for name, spec in TARGETS.items():
        ok, reason = availability(name)
        rows.append({"target": name, "available": ok, "reason": reason, "description": spec.description,
                     "round_to": spec.round_to})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(f"{r['target']:<11} {'yes' if r['available'] else 'no ':<4} round-to {r['round_to']:<3} "
              f"{r['description']}")
        print(f"{'':<16}{r['reason']}")
    return 0
