"""Pruning to a budget: per-group sensitivity, measured latency tables and NetAdapt-style allocation.

    groups.py         the prunable groups (torch-pruning's channel groups; attention heads per block)
    prune_to.py       prune a copy of the model to per-group widths (the pruning pass with per-group ratios)
    scoring.py        score a candidate: BN re-estimation, a few distillation steps (--score-steps), then --metric
                      on a small validation subset (without data: fidelity to dense on random inputs, labelled)
    latency_table.py  cost per group and width: latency measured on the target (cached), or MACs
    like_groups.py    groups of the same configuration (like blocks) share one measured row
    allocator.py      greedy NetAdapt steps over a cost table and a scorer until the table's target is met; the
                      uniform allocation at the same estimate
    landing.py        the model measured, the table's target moved by a secant until it lands in the budget's band
    executor.py       where candidates are scored: inline, a local process pool (--workers) or Ray
    budget_pass.py    the pruning pass of a budget compile: table, search, landing, tie-break
    tie_break.py      searched vs uniform widths, each recovered briefly, the better kept on validation
    sensitivity.py    `p2d sensitivity`'s measurement: one group at a time at each ratio

Its views (report fields, Markdown, allocation.png, sensitivity.png) are report/budget.py and report/sensitivity.py.
"""
