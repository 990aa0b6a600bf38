"""`p2d cache info|clear`: the compile cache, p2d's own entries only."""
from __future__ import annotations

import json


def cmd_cache(args) -> int:
    """Show (info) or empty (clear) the compile cache. Only p2d's own entries are counted and deleted:
    directories named by their key that hold p2d's entry marker; anything else there is left alone."""
    from pathlib import Path

    from prune2deploy.artifacts import cache, cache_limits

    cache_dir = Path(args.cache_dir) if args.cache_dir else cache.default_dir()
    if args.action == "clear":
        removed, others = cache_limits.clear(cache_dir)
        result = {"cache_dir": str(cache_dir), "removed_entries": len(removed),
                  "removed_bytes": sum(e.bytes for e in removed), "other_items_kept": others}
        text = (f"removed {len(removed)} entries ({result['removed_bytes'] / 1e6:.1f} MB) from {cache_dir}"
                + (f"; kept {others} items p2d did not write" if others else ""))
    else:
        found, others = cache_limits.entries(cache_dir)
        result = {"cache_dir": str(cache_dir), "entries": len(found), "bytes": sum(e.bytes for e in found),
                  "max_bytes": cache_limits.max_bytes(None), "other_items": others}
        text = (f"{cache_dir}: {len(found)} entries, {result['bytes'] / 1e6:.1f} MB "
                f"(compiles evict beyond {cache_limits.DEFAULT_MAX_GB:g} GB unless --cache-max-gb says otherwise)"
                + (f"; {others} other items p2d did not write" if others else ""))
    print(json.dumps(result, indent=2) if args.json else text)
    return 0
