"""Will a full-batch step fit? Memory of a full-batch HetCRF step, and the refusal that names
mini-batches instead.

Full-batch InfoNCE builds ``N x N`` similarity matrices, so its memory grows with the square of
the number of target nodes: 4019 ACM papers need about 0.3 GiB for it, 100k nodes would need
190 GiB. :func:`full_batch_memory_estimate` predicts a full-batch step's peak and
:func:`check_full_batch_fits`, called by :class:`~hetcrf_lite.model.HetCRF` before it builds
anything, refuses a graph that would not fit, naming the mini-batch option (``batch_size``).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from .config import HetCRFConfig
from .data import HINDataset
from .errors import ConfigError
from .utils import resolve_device

__all__ = ["full_batch_memory_estimate", "available_memory_bytes", "check_full_batch_fits"]

# Peaks per unit of a HetCRF training epoch (float32, CPU, one thread). InfoNCE: 5.05 N x N
# floats at N = 8000 for its forward and backward (logits, their exp and softmax, the gradient).
# The edge term covers the encoder's per-edge buffers and masks over three passes, the cached CSR
# operators of the second stage and of edge reconstruction, and the thinned copies of each graph;
# the node term the [N, hidden] activations kept for backward (synthetic 10k-20k nodes in
# mini-batch mode, benchmarks/scaling.py). Against benchmarks/epoch_speed.py's measured growth
# (ACM 1195 MB, DBLP 2238, AMiner 2028, Freebase 893) the estimate gives 1312, 2127, 2298, 789.
_NN_FLOATS = 5.1
_BYTES_PER_EDGE = 130
_HIDDEN_FLOATS_PER_NODE = 200  # [N, hidden] activations kept for backward, per hidden channel
_FEATURE_FLOATS_PER_ENTRY = 6  # masked copies, dropout outputs and masks of [N, F] features
_BALANCE_ANCHORS = 512  # gradient_balance_summary's anchors, [512, N] matrices
_BALANCE_FLOATS = 10


def full_batch_memory_estimate(num_nodes: int, num_edges: int = 0, num_features: int = 0,
                               hidden_channels: int = 64, heads: int = 1,
                               dtype_bytes: int = 4) -> int:
    r"""Bytes a full-batch HetCRF training step adds at its peak, beyond the loaded dataset.

    .. math::
        M \approx b\,\big(5.1\,N^2 + 200\,N h + 6\,N F + 10 \min(N, 512) N\big)
        + 130\,E\,\mathrm{heads}

    with :math:`b` bytes per float, :math:`h` the hidden width, :math:`F` the feature width and
    :math:`E` the number of meta-path edges over all meta-paths. The :math:`N^2` term is the
    dense two-way InfoNCE and dominates from a few thousand nodes on: at 4019 nodes (ACM) it is
    0.3 GiB, at 100k nodes 190 GiB. The constants are fitted to measured peaks (module comment;
    within 12% on the four benchmarks), so the estimate is the order of magnitude a refusal
    needs, not an exact figure.

    Args:
        num_nodes (int): number of target nodes :math:`N`.
        num_edges (int, optional): meta-path edges, summed over meta-paths. (default: ``0``)
        num_features (int, optional): width of the dense (or densified) features :math:`F`;
            ``0`` for features that stay sparse. (default: ``0``)
        hidden_channels (int, optional): hidden width :math:`h`. (default: ``64``)
        heads (int, optional): encoder attention heads. (default: ``1``)
        dtype_bytes (int, optional): bytes per float. (default: ``4``)
    """
    if num_nodes < 0 or num_edges < 0 or num_features < 0:
        raise ConfigError(f"sizes must be >= 0, got num_nodes={num_nodes}, "
                          f"num_edges={num_edges}, num_features={num_features}")
    n = float(num_nodes)
    floats = (_NN_FLOATS * n * n + _HIDDEN_FLOATS_PER_NODE * n * hidden_channels
              + _FEATURE_FLOATS_PER_ENTRY * n * num_features
              + _BALANCE_FLOATS * min(n, _BALANCE_ANCHORS) * n)
    return int(dtype_bytes * floats + _BYTES_PER_EDGE * num_edges * heads)


def available_memory_bytes(device: str | torch.device = "cpu") -> int:
    """Memory a new allocation can use now: free GPU memory on a CUDA device; on the CPU the
    smaller of ``MemAvailable`` and the cgroup's remaining limit (containers)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    avail = None
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    if avail is None:  # not Linux: the whole physical memory is the only figure there is
        try:
            avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):  # Windows: unknown, refuse nothing
            return sys.maxsize
    for limit_f, usage_f in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                             ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                              "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_f).read_text().strip()
            if limit != "max" and int(limit) < 2**60:
                avail = min(avail, int(limit) - int(Path(usage_f).read_text()))
        except (OSError, ValueError):
            continue
    return int(avail)


def _densified_width(dataset: HINDataset, config: HetCRFConfig) -> int:
    """Width of the features a full-batch step holds densely: dense features always; sparse ones
    when feature masking densifies them (``FeatureReconstruction``'s 2**26-entry rule)."""
    x = dataset.x
    if not x.is_sparse:
        return int(x.shape[1])
    densified = config.use_feat_recon and config.w_feat > 0 and x.shape[0] * x.shape[1] <= 2**26
    return int(x.shape[1]) if densified else 0


def check_full_batch_fits(dataset: HINDataset, config: HetCRFConfig,
                          budget_bytes: int | None = None) -> int:
    """Refuse full-batch training of a graph whose step would not fit in memory.

    Returns the estimate (:func:`full_batch_memory_estimate`) in bytes, or ``0`` in mini-batch
    mode (``config.batch_size`` smaller than the graph), which never builds ``N x N``.

    Args:
        dataset (HINDataset): the graph to train on.
        config (HetCRFConfig): ``batch_size``, ``hidden_channels``, ``heads``, ``device`` and the
            feature-reconstruction switches are read.
        budget_bytes (int, optional): memory allowed; ``None`` asks the device
            (:func:`available_memory_bytes`). (default: ``None``)

    Raises:
        ConfigError: the estimate exceeds the budget; the message names ``batch_size``.
    """
    n = dataset.num_nodes
    if config.batch_size is not None and config.batch_size < n:
        return 0
    edges = sum(int(ei.shape[1]) for ei in dataset.metapath_adj.values())
    need = full_batch_memory_estimate(n, edges, _densified_width(dataset, config),
                                      config.hidden_channels, config.heads)
    if budget_bytes is None:
        budget_bytes = available_memory_bytes(resolve_device(config.device))
    if need > budget_bytes:
        raise ConfigError(
            f"full-batch training of {dataset.name} ({n} target nodes, {edges} meta-path edges) "
            f"needs about {need / 2**30:.1f} GiB, mostly for the {n} x {n} InfoNCE similarities, "
            f"but {budget_bytes / 2**30:.1f} GiB are available. Train in mini-batches: set "
            f"batch_size (e.g. batch_size: 4096 in the config, or "
            f"config.replace(batch_size=4096)); memory then grows linearly with the graph.")
    return need
