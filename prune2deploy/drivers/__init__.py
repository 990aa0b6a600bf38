"""Target drivers: the pipeline's side of a target (build artifacts, verify them, benchmark them)."""
