"""Pruning to a budget: per-group sensitivity, measured latency tables and NetAdapt-style allocation.

    groups.py         the prunable groups (torch-pruning's channel groups; attention heads per block)
    prune_to.py       prune a copy of the model to per-group widths (the pruning pass with per-group ratios)
    scoring.py        score a candidate: BN re-estimation, then --metric on a small validation subset
                      (without data: fidelity to the dense model on random inputs, labelled as such)
    latency_table.py  cost per group and width: latency measured on the target (cached), or MACs
    allocator.py      greedy NetAdapt steps over a cost table and a scorer until the budget is met
    executor.py       where candidates are scored: inline, a local process pool (--workers) or Ray
    sensitivity.py    `p2d sensitivity`: one group at a time at each ratio
    summary.py        report.json/report.md views and the plots (allocation.png, sensitivity.png)
"""
