"""Shared by the tests: tiny graphs shaped as hetcrf_lite.data stores meta-path graphs, and the
edge homophily of a dataset's meta-path graphs."""
from __future__ import annotations

import torch


def sym_graph(num_nodes: int, num_edges: int, seed: int, self_loops: bool = True) -> torch.Tensor:
    """Symmetric, binarised edge_index sorted by (destination, source), as data.py stores them."""
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, num_nodes, (2, num_edges), generator=g)
    ei = torch.cat([ei, ei.flip(0)], dim=1)
    if self_loops:
        ei = torch.cat([ei, torch.arange(num_nodes).repeat(2, 1)], dim=1)
    key = torch.unique(ei[1] * num_nodes + ei[0])  # sorted by (dst, src), duplicates removed
    return torch.stack([key % num_nodes, key // num_nodes])


def edge_homophily(ds) -> dict[str, float]:
    """Share of each meta-path graph's edges that join two nodes of one class (PyG's edge
    homophily)."""
    from torch_geometric.utils import homophily

    return {k: float(homophily(e, ds.labels, method="edge")) for k, e in ds.metapath_adj.items()}
