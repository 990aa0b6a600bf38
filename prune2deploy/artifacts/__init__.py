"""Everything p2d writes: the output directory and its ownership, the manifest, the cache, parked models."""
