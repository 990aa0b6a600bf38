"""Settings: CompileOptions, the CLI flags and recipe keys."""
