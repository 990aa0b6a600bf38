"""`p2d targets`: every target and whether it can run here."""
from __future__ import annotations

import json


def cmd_targets(args) -> int:
    """List every target and whether it can run on this machine (with the reason when not)."""
    from prune2deploy.backends.registry import TARGETS, availability

    rows = []
    for name, spec in TARGETS.items():
        ok, reason = availability(name)
        row = {"target": name, "available": ok, "reason": reason, "description": spec.description,
               "round_to": spec.round_to}
        if ok:  # the precisions it deploys here, and what --precision auto picks (and why)
            driver = spec.driver()
            auto, why = driver.auto_precision()
            row.update(precisions=list(driver.precisions()), auto=auto, auto_why=why)
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(f"{r['target']:<11} {'yes' if r['available'] else 'no ':<4} round-to {r['round_to']:<3} "
              f"{r['description']}")
        print(f"{'':<16}{r['reason']}")
        if r.get("precisions"):
            print(f"{'':<16}precisions here: {', '.join(r['precisions'])}; auto: {r['auto']} ({r['auto_why']})")
    return 0
