"""Small utilities every layer above the data shares: device, seeding, environment, data by name.

One definition each, public, used by the trainer, the model, the CLI, tuning and the benchmarks.
Atomic file writes live one module lower, in :mod:`hetcrf_lite.files` (``atomic_write_bytes``,
``save_json``), because the data loaders need them too.

Introduced in notebook 01 (``resolve_device`` in every notebook's setup cell).
"""
from __future__ import annotations

import os
import platform
import random
from typing import Any

import numpy as np
import torch

from .data import HINDataset, load_dataset
from .errors import TrainingError
from .synthetic import make_synthetic_hin

__all__ = ["seed_everything", "resolve_device", "environment_info", "load_named_dataset"]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so a run repeats exactly on CPU."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` picks CUDA when a GPU is visible, else the CPU.

    Raises:
        TrainingError: ``"cuda"`` asked for where no GPU is visible.

    Introduced in notebook 01.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device='cuda' but no CUDA GPU is visible; use device='auto' or 'cpu'")
    return torch.device(device)


def environment_info() -> dict[str, Any]:
    """Versions and machine, recorded with every result."""
    import sklearn
    import torch_geometric

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_geometric": torch_geometric.__version__,
        "numpy": np.__version__,
        "scikit_learn": sklearn.__version__,
        "machine": platform.machine(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def load_named_dataset(name: str, num_nodes: int | None = None, seed: int = 0,
                       pos_num: int | None = None, pos_score: str = "count") -> HINDataset:
    """A benchmark by name (:func:`~hetcrf_lite.data.load_dataset`, from ``$HETCRF_DATA`` or
    downloaded), or ``"synthetic"``: :func:`~hetcrf_lite.synthetic.make_synthetic_hin` with
    ``seed`` (and ``num_nodes`` target nodes when given; the positive-set options do not apply).

    Args:
        name (str): ``synthetic``, ``acm``, ``dblp``, ``aminer`` or ``freebase``.
        num_nodes (int, optional): target nodes of the synthetic graph. (default: ``None``)
        seed (int, optional): seed of the synthetic graph. (default: ``0``)
        pos_num (int, optional): meta-path positives per node of a benchmark; ``None`` keeps
            the stored sets. (default: ``None``)
        pos_score (str, optional): how meta-path positives are ranked. (default: ``"count"``)
    """
    if name == "synthetic":
        kwargs = {} if num_nodes is None else {"num_nodes": num_nodes}
        return make_synthetic_hin(seed=seed, **kwargs)
    return load_dataset(name, pos_num=pos_num, pos_score=pos_score)
