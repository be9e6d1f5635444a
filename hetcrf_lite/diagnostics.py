"""Instruments for "when the channels fight": what an embedding holds, and what each channel does.

Introduced in notebook 09 (``knn_class_agreement`` already in notebook 08). Everything here reads a
trained model or an embedding; nothing changes training. The per-step quantities (semantic attention
beta, the channels' gradient cosine and norms on the shared encoder) are logged by
:class:`~hetcrf_lite.model.HetCRF` into the history (``record["diagnostics"]``, see
``channel_grad_every``); this module turns a finished model or embedding into numbers:

* :func:`knn_class_agreement` -- what a UMAP picture shows: the share of each node's ``k``
  nearest neighbours (cosine, in the embedding itself, not in the 2-D projection) that have
  its class;
* :func:`effective_rank` and :func:`mean_pairwise_cosine` -- collapse: how many directions the
  embedding really uses, and how alike its rows are;
* :func:`metapath_probe_scores` -- the linear probe on each meta-path's ``Z^m`` alone, so a
  collapsed beta can be compared with what it threw away;
* :func:`propagated_features` -- the training-free baseline: raw features next to their mean
  over each meta-path's neighbours;
* :func:`effective_neighbours` -- how many neighbours node-level attention really averages
  (on dense noisy features it collapses onto one).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy.stats import entropy
from sklearn.neighbors import NearestNeighbors

from .errors import DataError
from .eval import evaluate_embeddings

if TYPE_CHECKING:
    from .data import HINDataset

__all__ = ["knn_class_agreement", "effective_rank", "mean_pairwise_cosine",
           "metapath_probe_scores", "propagated_features", "embedding_report",
           "effective_neighbours"]


def _as_array(emb: torch.Tensor | np.ndarray) -> np.ndarray:
    x = emb.detach().cpu().numpy() if isinstance(emb, torch.Tensor) else np.asarray(emb)
    if x.ndim != 2 or x.shape[0] < 2:
        raise DataError(f"embedding must be [N >= 2, D], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise DataError("embedding holds NaN or Inf; train again with a lower lr")
    return x.astype(np.float64)


def knn_class_agreement(emb: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray,
                        k: int = 10) -> float:
    r"""Mean share of a node's ``k`` nearest neighbours (cosine) that share its class.

    .. math::
        \mathrm{kNN@k} = \frac{1}{|L|}\sum_{i \in L} \frac{1}{k}
        \sum_{j \in \mathcal{N}_k(i)} \mathbb{1}[y_j = y_i]

    over the labelled nodes :math:`L` (label ``-1`` is skipped as anchor and as neighbour). It
    is measured in the embedding, so it says what any 2-D projection (UMAP) can at best show:
    chance is about ``1 / num_classes`` for balanced classes, 1 is perfectly separated classes.

    Args:
        emb (Tensor or ndarray): ``[N, D]`` embeddings.
        labels (Tensor or ndarray): ``[N]`` class ids, ``-1`` unlabelled.
        k (int, optional): neighbours per node. (default: ``10``)

    Introduced in notebook 08.
    """
    x = _as_array(emb)
    y = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    keep = y >= 0
    x, y = x[keep], y[keep]
    if k < 1 or k >= len(y):
        raise DataError(f"k={k} must lie in [1, {len(y) - 1}] (labelled nodes - 1)")
    idx = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(x).kneighbors(
        x, return_distance=False)  # [N, k+1], the node itself among them
    agree = [(y[row[row != i][:k]] == y[i]).mean() for i, row in enumerate(idx)]
    return float(np.mean(agree))


def effective_rank(emb: torch.Tensor | np.ndarray) -> float:
    r"""Roy and Vetterli's effective rank of the centred embedding: ``exp`` of the entropy of
    its normalised singular values, between 1 (every row on one line) and ``D``.

    .. math::
        p_i = \sigma_i / \textstyle\sum_j \sigma_j, \qquad
        \mathrm{erank} = \exp\left(-\textstyle\sum_i p_i \log p_i\right)

    Introduced in notebook 09.
    """
    x = _as_array(emb)
    s = np.linalg.svd(x - x.mean(0), compute_uv=False)
    return float(np.exp(entropy(s))) if s.sum() > 0 else 1.0  # entropy normalises s to p


def mean_pairwise_cosine(emb: torch.Tensor | np.ndarray) -> float:
    r"""Mean cosine similarity over all pairs :math:`i \neq j`, exact, in :math:`O(ND)`:
    near 1 when every node looks the same (collapse).

    .. math::
        \frac{1}{N(N-1)} \sum_{i \neq j} \mathbf{u}_i^\top \mathbf{u}_j
        = \frac{\lVert \sum_i \mathbf{u}_i \rVert^2 - \sum_i \lVert \mathbf{u}_i \rVert^2}{N(N-1)}

    with :math:`\mathbf{u}_i` the L2-normalised rows (an all-zero row stays zero), so no
    :math:`N \times N` similarity matrix is built (notebook 03 derives it)."""
    x = np.asarray(_as_array(emb), dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    u = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)  # [N, D]
    n, total = len(u), u.sum(0)
    return float((total @ total - (u * u).sum()) / (n * (n - 1)))


def metapath_probe_scores(z: dict[str, torch.Tensor], dataset: "HINDataset", rate: int = 20,
                          runs: int = 10, lr: float | None = None) -> dict[str, float]:
    """Macro-F1 (%) of the linear probe on each meta-path embedding ``Z^m`` alone, at one label
    rate (the encoder output's ``z``): what a collapsed beta keeps and what it drops.

    Introduced in notebook 09."""
    out = {}
    for name, emb in z.items():
        res = evaluate_embeddings(emb.detach().cpu(), dataset, lr=lr, rates=[rate], runs=runs,
                                  clustering=False)
        out[name] = res.classification[rate].summary()["macro_f1"][0]
    return out


def propagated_features(dataset: "HINDataset", max_dense: int = 50_000_000,
                        dims: int = 256, seed: int = 0) -> np.ndarray:
    r"""The training-free baseline: ``[X, \bar{A}^1 X, ..., \bar{A}^M X]`` with
    :math:`\bar{A}^m` the row-normalised meta-path adjacency (self-loops kept, as stored).

    It asks how far the meta-path neighbourhoods alone carry the classes, with no parameter
    learned (SGC's one-hop propagation, one block per meta-path). Wide sparse inputs (identity
    features: ``N`` columns) are reduced first to ``dims`` columns by a seeded truncated SVD
    when the dense result would exceed ``max_dense`` entries; the output is float32.
    """
    from sklearn.decomposition import TruncatedSVD

    x = dataset.x
    n = dataset.num_nodes
    if x.is_sparse:
        xc = x.coalesce()
        xs = sp.csr_matrix((xc.values().numpy(), tuple(xc.indices().numpy())), shape=tuple(x.shape))
    else:
        xs = sp.csr_matrix(x.numpy())
    blocks = [xs]
    for ei in dataset.metapath_adj.values():
        e = ei.numpy()
        a = sp.csr_matrix((np.ones(e.shape[1]), (e[1], e[0])), shape=(n, n))
        deg = np.asarray(a.sum(1)).ravel()
        blocks.append(sp.diags(1.0 / np.maximum(deg, 1)) @ a @ xs)
    out = sp.hstack(blocks).tocsr()
    if out.shape[0] * out.shape[1] > max_dense:
        out = TruncatedSVD(dims, random_state=seed).fit_transform(out)
        return out.astype(np.float32)
    return out.toarray().astype(np.float32)


def embedding_report(emb: torch.Tensor | np.ndarray, dataset: "HINDataset",
                     k: int = 10) -> dict[str, Any]:
    """kNN class agreement, effective rank and mean pairwise cosine of one embedding.

    Introduced in notebook 09."""
    return {"knn_agreement": knn_class_agreement(emb, dataset.labels, k=k),
            "effective_rank": effective_rank(emb),
            "mean_cosine": mean_pairwise_cosine(emb)}


def effective_neighbours(alpha: torch.Tensor, edge_index: torch.Tensor,
                         num_nodes: int) -> torch.Tensor:
    r"""How many neighbours each node's attention really averages: ``[num_nodes]``.

    .. math::
        n_{\mathrm{eff}}(i) = \exp\Big(-\sum_{j \in \mathcal{N}(i)} \alpha_{ij}
        \log \alpha_{ij}\Big)

    the exponential of the entropy of node :math:`i`'s attention over its incoming edges: its
    in-degree when the weights are uniform (the neighbour mean), 1 when all weight sits on one
    neighbour. ``alpha`` is ``[E]`` or ``[E, heads]`` (averaged over heads), aligned with
    ``edge_index`` (row 1 the destination), as :class:`~hetcrf_lite.encoder.MetaPathGATConv`
    returns it; a node without incoming edges gets 0.

    Introduced in notebook 09.
    """
    from torch_geometric.utils import scatter

    a = alpha.detach().float()
    a = a.unsqueeze(1) if a.dim() == 1 else a  # [E, heads]
    if a.shape[0] != edge_index.shape[1]:
        raise DataError(f"alpha has {a.shape[0]} rows for {edge_index.shape[1]} edges; pass the "
                        "attention weights returned with this edge_index")
    plogp = torch.special.xlogy(a, a)  # [E, heads], 0 log 0 = 0
    ent = scatter(-plogp, edge_index[1], dim=0, dim_size=num_nodes, reduce="sum")  # [N, heads]
    has_edges = torch.bincount(edge_index[1], minlength=num_nodes) > 0  # [N]
    return torch.where(has_edges, ent.exp().mean(1), ent.new_zeros(num_nodes))
