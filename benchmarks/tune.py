"""Validation-only tuning grid over the shipped config (the code lives in ``hetcrf_lite.tune``).

    HETCRF_DATA=/path/to/heco python benchmarks/tune.py --dataset aminer \\
        --grid lr=0.001,0.003 tau=0.5,0.8 --seeds 0 --out runs/tune
    # validation score every 10 epochs while training (how the shipped epoch counts were picked)
    python benchmarks/tune.py --dataset acm --seeds 0 1 2 --fixed epochs=200 patience=1000 \\
        --curve-every 10 --figure figures/tune_curve_acm.png
    python benchmarks/tune.py --dataset acm --replot a.json b.json --figure curve.png

Every grid point trains with ``default_config(dataset, **point)`` and is scored with each label
rate's validation nodes standing in for its test nodes (no test label is read). Writes
``<dataset>-tune.json`` and ``<dataset>-best.yaml`` in ``--out``. For a budgeted search on any
graph (lr, tau, epochs and embedding, with a progress bar and a time budget) use
``hetcrf-lite tune`` instead; see ``hetcrf_lite/tune.py``.
"""
from __future__ import annotations

import sys
from pathlib import Path

from hetcrf_lite.tune import (curve_summary, grid_main, merge_results, parse_grid,  # noqa: F401
                              plot_curves, score, validation_only, validation_scores)

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    return grid_main(argv, ROOT)


if __name__ == "__main__":
    sys.exit(main())
