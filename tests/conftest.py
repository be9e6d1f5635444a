"""Shared fixtures: where the HeCo benchmarks live, and each benchmark loaded once per session."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

# The tests use small graphs, where thread start-up costs more than it saves; on a 2-core
# machine shared with other work two threads can stall small ops by 10x or more.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread():
    """Re-apply before every test: UMAP's numba start-up resets the OpenMP thread count that
    MKL uses, and two spinning OpenMP threads on a busy 2-core machine made a 45 s test take
    over 10 minutes."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def heco_root() -> Path:
    """``Path($HETCRF_DATA)``, the folder with acm/, dblp/, aminer/, freebase/; skips the test
    when the variable is unset or the folder is missing."""
    root = os.environ.get("HETCRF_DATA")
    if not root:
        pytest.skip("HETCRF_DATA is not set (point it at the HeCo datasets folder)")
    path = Path(root)
    if not path.is_dir():
        pytest.skip(f"HETCRF_DATA={root} is not a folder")
    return path


@pytest.fixture(scope="session")
def heco(heco_root: Path) -> Callable:
    """``heco(name)`` returns ``load_dataset(name)`` from ``heco_root``, loaded once per session
    (never downloading). Treat the result as read-only: other tests share it."""
    from hetcrf_lite.data import load_dataset

    cache: dict = {}

    def get(name: str):
        if name not in cache:
            cache[name] = load_dataset(name, root=heco_root, download=False)
        return cache[name]

    return get
