"""How a compile runs: progress and stage limits, peak memory, timing statistics, torchrun helpers,
optional imports."""
