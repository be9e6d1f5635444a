"""Golden embeddings for the restructuring (issue 14): a pure refactor must reproduce them.

    python tests/golden/make_golden.py            # rewrite tests/golden/*.npy (only before a
                                                  # refactor, or after a deliberate change)

Two runs, one torch thread, on the CPU: the built-in synthetic config (its full 80 epochs) and
ACM for 5 epochs (skipped when ``HETCRF_DATA`` is unset). tests/test_golden.py compares to 1e-6:
the synthetic run against ``make demo``'s embeddings.npy (the same config at one thread, through
the CLI), the ACM run by training it again.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
RUNS = {"synthetic": {}, "acm": {"epochs": 5}}


def golden_embedding(name: str) -> np.ndarray:
    """Train run ``name`` of :data:`RUNS` at one thread and return its default embedding."""
    from hetcrf_lite.config import default_config
    from hetcrf_lite.train import config_dataset, fit

    torch.set_num_threads(1)
    config = default_config(name, **RUNS[name])
    dataset = config_dataset(config)
    model, _ = fit(dataset, config, progress=False)
    with torch.no_grad():
        return model.embed().cpu().numpy()


if __name__ == "__main__":
    for name in RUNS:
        if name != "synthetic" and not os.environ.get("HETCRF_DATA"):
            sys.exit(f"HETCRF_DATA is unset: cannot write the {name} golden embedding")
        np.save(HERE / f"{name}.npy", golden_embedding(name).astype(np.float32))
        print("wrote", HERE / f"{name}.npy")
