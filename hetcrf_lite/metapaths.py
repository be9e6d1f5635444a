r"""Meta-paths: parsing, adjacency by sparse products, and meta-path positive sets.

A meta-path :math:`\mathcal{V}_1 \to \mathcal{V}_2 \to \dots \to \mathcal{V}_\ell` that
starts and ends at the target type turns a heterogeneous graph into a homogeneous graph over target
nodes. Its adjacency is the product of the relation matrices along the path,

.. math::

    C = R_{1,2} \, R_{2,3} \cdots R_{\ell-1,\ell}, \qquad A = \mathbb{1}[C > 0],

where :math:`C_{ij}` counts the path instances joining :math:`i` and :math:`j` and :math:`A` is the
binarised adjacency (self-loops included, as the products give them and as the published HeCo
files have them).

All products run on :mod:`scipy.sparse` CSR matrices rather than ``torch.sparse.mm`` (which
PyG's ``AddMetaPaths`` uses): scipy's sparse-sparse product allocates little beyond its output.
Measured on DBLP's A-P-T-P-A (7,043,571 edges, 2-core CPU): scipy 0.28 s and 84 MB extra peak
memory, ``torch.sparse.mm`` on COO tensors 1.30 s and 156 MB.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from .errors import ConfigError, MetaPathError

MetaPathSpec = str | Sequence[str]
"""A meta-path as letters (``"PAP"``, ``"P-A-P"``) or as a list of node type names."""

POS_SCORES = ("count", "normalised")


def _letter_table(node_types: Sequence[str]) -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    for t in node_types:
        table.setdefault(t[0].lower(), []).append(t)
    return table


def parse_metapath(
    spec: MetaPathSpec,
    node_types: Sequence[str],
    target: str,
    edge_types: Iterable[tuple[str, str, str]] | None = None,
) -> list[str]:
    r"""Turns a meta-path spec into a validated list of node type names.

    Args:
        spec (str or list of str): letters, one per node type (the first letter of the type
            name, case-insensitive: ``"PAP"``; dashes are allowed: ``"P-A-P"``), or node type
            names (``["paper", "author", "paper"]``). A dashed string may also spell full names
            (``"paper-author-paper"``).
        node_types (list of str): the node types of the graph.
        target (str): the type every meta-path must start and end at.
        edge_types (iterable of (str, str, str), optional): the graph's edge types; when given,
            every hop must have a relation in one direction or the other. (default: :obj:`None`)

    Returns:
        list of str: the node types along the path, e.g. ``["paper", "author", "paper"]``.

    Raises:
        MetaPathError: unknown or ambiguous letter / type, fewer than three types, not closing
            on ``target``, or a hop with no relation.

    Introduced in notebook 01.
    """
    node_types = list(node_types)
    shown = _show(spec)
    parts = spec.split("-") if isinstance(spec, str) and "-" in spec else list(spec)
    letters = _letter_table(node_types)
    types: list[str] = []
    for part in parts:
        if not isinstance(part, str) or not part:
            raise MetaPathError(f"meta-path {shown}: every step must be a non-empty string.")
        if part in node_types:  # an exact name wins over a letter ("P" could be a type)
            types.append(part)
            continue
        matches = letters.get(part.lower(), []) if len(part) == 1 else []
        if not matches:
            raise MetaPathError(
                f"meta-path {shown}: unknown node type {part!r}; the graph has {node_types} "
                f"(letters {sorted(letters)}). Use those names or their first letters."
            )
        if len(matches) > 1:
            raise MetaPathError(
                f"meta-path {shown}: letter {part!r} is ambiguous, it could be any of {matches}. "
                "Write the meta-path as a list of node type names instead."
            )
        types.append(matches[0])
    if len(types) < 3:
        raise MetaPathError(
            f"meta-path {shown} has {len(types)} node type(s); a meta-path needs at least three "
            f"({target}, a neighbour type, {target}), e.g. "
            f"{[target, '<other type>', target]}."
        )
    if types[0] != target or types[-1] != target:
        raise MetaPathError(
            f"meta-path {shown} runs {types[0]!r} -> {types[-1]!r}; it must start and end at the "
            f"target type {target!r} (e.g. {[target, types[1], target]})."
        )
    if edge_types is not None:
        pairs = {(s, d) for s, _, d in edge_types}
        for a, b in zip(types[:-1], types[1:]):
            if (a, b) not in pairs and (b, a) not in pairs:
                raise MetaPathError(
                    f"meta-path {shown}: no relation joins {a!r} and {b!r} in the graph (edge "
                    f"types: {sorted(pairs)}). Add that relation or choose another meta-path."
                )
    return types


def _show(spec: MetaPathSpec) -> str:
    return repr(spec) if isinstance(spec, str) else repr(list(spec))


def metapath_name(types: Sequence[str]) -> str:
    """Short name of a meta-path: its initials (``"PAP"``) when they are unambiguous among the
    path's own types, else the names joined by dashes (``"v0-v1-v0"``)."""
    initials = {t: t[0].upper() for t in types}
    if len(set(initials.values())) == len(initials):
        return "".join(initials[t] for t in types)
    return "-".join(types)


def _binary_csr(edge_index: Tensor, shape: tuple[int, int]) -> sp.csr_matrix:
    """CSR of an edge list, duplicates merged and values set to 1 (int64, exact counts later)."""
    ei = edge_index.detach().cpu().numpy()
    m = sp.csr_matrix((np.ones(ei.shape[1], dtype=np.int64), (ei[0], ei[1])), shape=shape)
    m.sum_duplicates()
    m.data[:] = 1
    return m


def relation_matrix(data: HeteroData, src: str, dst: str) -> sp.csr_matrix:
    r"""Binarised relation matrix :math:`R \in \{0,1\}^{n_{src} \times n_{dst}}` of one hop.

    The union of every edge type ``(src, *, dst)``; when there is none, the transpose of the edge
    types ``(dst, *, src)``. Duplicate edges count once.

    Args:
        data (HeteroData): the graph.
        src (str): source node type.
        dst (str): destination node type.

    Raises:
        MetaPathError: no relation joins ``src`` and ``dst``.
    """
    shape = (int(data[src].num_nodes), int(data[dst].num_nodes))
    fwd = [et for et in data.edge_types if et[0] == src and et[2] == dst]
    bwd = [et for et in data.edge_types if et[0] == dst and et[2] == src]
    if fwd:
        mats = [_binary_csr(data[et].edge_index, shape) for et in fwd]
    elif bwd:
        mats = [_binary_csr(data[et].edge_index, shape[::-1]).T.tocsr() for et in bwd]
    else:
        raise MetaPathError(
            f"no relation joins {src!r} and {dst!r}; edge types are {data.edge_types}."
        )
    out = sum(mats[1:], mats[0])
    out.data[:] = 1
    out.sort_indices()
    return out


def metapath_matrix(data: HeteroData, types: Sequence[str]) -> sp.csr_matrix:
    r"""Path-count matrix :math:`C = R_{1,2} \cdots R_{\ell-1,\ell}` as a scipy CSR (int64).

    When the path reads the same backwards and every hop of the second half is the transpose of
    its mirror hop (always so for relations stored in both directions), the product is computed as
    :math:`C = M M^\top` with :math:`M` the first half: one product fewer, and no large
    intermediate (DBLP A-P-T-P-A, products alone: 0.13 s instead of 0.74 s left to right).

    Args:
        data (HeteroData): the graph.
        types (list of str): node types along the path (see :func:`parse_metapath`).

    Introduced in notebook 01.
    """
    return _metapath_product(data, types)[0]


def _metapath_product(data: HeteroData, types: Sequence[str]) -> tuple[sp.csr_matrix, bool]:
    """The product of :func:`metapath_matrix` (sorted CSR) and whether it is symmetric by
    construction (the :math:`M M^\\top` form)."""
    hops = [relation_matrix(data, a, b) for a, b in zip(types[:-1], types[1:])]
    n_hops = len(hops)
    half = n_hops // 2
    mirrored = (
        n_hops % 2 == 0
        and list(types) == list(types)[::-1]
        and all(_same_pattern(hops[n_hops - 1 - i], hops[i].T.tocsr()) for i in range(half))
    )
    factors = hops[:half] if mirrored else hops  # the first half M of M M^T, or every hop
    out = factors[0]
    for r in factors[1:]:
        out = out @ r
    out = (out @ out.T).tocsr() if mirrored else out.tocsr()
    out.sort_indices()
    return out, mirrored


def _same_pattern(a: sp.csr_matrix, b: sp.csr_matrix) -> bool:
    a.sort_indices()
    b.sort_indices()
    return (
        a.shape == b.shape
        and np.array_equal(a.indptr, b.indptr)
        and np.array_equal(a.indices, b.indices)
    )


def csr_to_edge_index(matrix: sp.spmatrix, symmetric: bool = False) -> tuple[Tensor, Tensor]:
    """Edge index ``[2, E]`` (row 0 source, row 1 destination) sorted by (destination, source),
    and the stored values ``[E]``, of a square scipy sparse matrix ``A[src, dst]``.

    Args:
        matrix (scipy sparse): the matrix.
        symmetric (bool, optional): the caller knows :math:`A = A^\\top`, so the transpose is
            skipped. (default: :obj:`False`)
    """
    # rows of A^T are destinations, so CSR order of A^T is (dst, src)
    t = sp.csr_matrix(matrix) if symmetric else sp.csr_matrix(matrix).T.tocsr()
    t.sum_duplicates()
    t.sort_indices()
    edge_index = torch.empty(2, t.nnz, dtype=torch.int64)  # [2, E], filled in place
    out = edge_index.numpy()
    out[0] = t.indices  # sources
    out[1] = np.repeat(np.arange(t.shape[0], dtype=np.int64), np.diff(t.indptr))  # destinations
    return edge_index, torch.from_numpy(np.asarray(t.data))


def _transposed_csr(edge_index: Tensor, n: int) -> sp.csr_matrix:
    """Binary CSR of :math:`A^\\top` (rows = destinations), ``[N, N]`` float64.

    An ``edge_index`` already in the library's order (sorted by (dst, src), no duplicates) maps
    onto CSR arrays directly, without scipy's COO conversion; anything else takes that route.
    """
    ei = edge_index.detach().cpu().numpy()
    src, dst = ei[0], ei[1]
    if ei.shape[1] > 1:
        same = dst[1:] == dst[:-1]
        ordered = bool(np.all((dst[1:] > dst[:-1]) | (same & (src[1:] > src[:-1]))))
    else:
        ordered = True
    if not ordered:
        return _binary_csr(edge_index.flip(0), (n, n)).astype(np.float64)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(dst, minlength=n))])
    return sp.csr_matrix((np.ones(src.size), src, indptr), shape=(n, n))


def metapath_adjacency(data: HeteroData, types: Sequence[str]) -> tuple[Tensor, Tensor]:
    r"""Meta-path adjacency over target nodes as an edge index, with path-instance counts.

    .. math::

        (i, j) \in \mathcal{E} \iff C_{ij} > 0, \qquad C = R_{1,2} \cdots R_{\ell-1,\ell}

    Args:
        data (HeteroData): the graph; relations may be stored in either direction.
        types (list of str): node types along the path, from :func:`parse_metapath`.

    Returns:
        (Tensor, Tensor): ``edge_index`` ``[2, E]`` int64 (row 0 source, row 1 destination),
        binarised, self-loops as the product gives them, sorted by (destination, source); and
        ``counts`` ``[E]`` float32, the number of path instances of each edge.

    Introduced in notebook 01.
    """
    c, symmetric = _metapath_product(data, types)
    c.eliminate_zeros()
    edge_index, counts = csr_to_edge_index(c, symmetric=symmetric)
    return edge_index, counts.to(torch.float32)


def metapath_scores(
    metapath_adj: Mapping[str, Tensor], num_nodes: int, score: str = "count"
) -> sp.csr_matrix:
    r"""Sparse score matrix of node pairs joined by meta-paths (row = anchor).

    .. math::

        S^{\text{count}}_{ij} = \sum_m A^m_{ij}, \qquad
        S^{\text{normalised}}_{ij} = \sum_m \frac{A^m_{ij}}{\sum_k A^m_{ik}}

    ``count`` is HeCo's paper definition (the number of meta-paths joining :math:`i` and
    :math:`j`); ``normalised`` is what HeCo's ACM script computed (row-normalised adjacencies).

    Args:
        metapath_adj (dict): ``{name: edge_index [2, E]}`` (duplicates count once).
        num_nodes (int): number of target nodes :math:`N`.
        score (str, optional): ``"count"`` or ``"normalised"``. (default: :obj:`"count"`)

    Returns:
        scipy.sparse.csr_matrix: ``[N, N]`` float64 with sorted indices.

    Introduced in notebook 05.
    """
    if score not in POS_SCORES:
        raise ConfigError(f"pos_score={score!r}; choose one of {POS_SCORES}.")
    total_t = sp.csr_matrix((num_nodes, num_nodes), dtype=np.float64)  # S^T: rows = candidates
    for ei in metapath_adj.values():
        a_t = _transposed_csr(ei, num_nodes)
        if score == "normalised":
            deg = np.bincount(a_t.indices, minlength=num_nodes).astype(np.float64)  # row sums of A
            inv = np.divide(1.0, deg, out=np.zeros_like(deg), where=deg > 0)
            a_t.data = inv[a_t.indices]  # a row without edges stays zero, not NaN
        total_t = total_t + a_t
    total = total_t.T.tocsr()  # one linear conversion for all meta-paths together
    total.sort_indices()
    return total


def metapath_positives(
    metapath_adj: Mapping[str, Tensor],
    num_nodes: int,
    pos_num: int,
    score: str = "count",
) -> Tensor:
    r"""Positive sets from meta-path connectivity: each anchor plus its best-scored nodes.

    Each anchor :math:`i` gets :math:`\mathrm{Pos}(i) = \{i\} \cup \mathrm{top}_{k-1}\{j \ne i :
    S_{ij} > 0\}` with :math:`k` = ``pos_num`` and :math:`S` from :func:`metapath_scores`; ties are
    broken by the lowest node index, so the result is deterministic. The anchor is always in,
    whatever its score.

    Never dense: the CSR entries of :math:`S` are sorted by (row, anchor first, -score, column)
    in one vectorised pass (a stable sort on CSR order, which is already column-ascending within
    a row) and the first :math:`k` of each row are kept. DBLP with ``pos_num=1000`` (8.9 million
    scored pairs) takes 1-2 s on a shared 2-core CPU, about half of it building :math:`S`.

    Args:
        metapath_adj (dict): ``{name: edge_index [2, E]}`` over target nodes.
        num_nodes (int): number of target nodes :math:`N`.
        pos_num (int): size :math:`k` of each positive set, anchor included (fewer when an anchor
            has fewer connected nodes).
        score (str, optional): ``"count"`` or ``"normalised"``. (default: :obj:`"count"`)

    Returns:
        Tensor: ``[2, P]`` int64 pairs (anchor, positive), sorted by anchor then positive.

    Introduced in notebook 01.
    """
    if int(pos_num) < 1:
        raise ConfigError(f"pos_num={pos_num}: a positive set holds at least the anchor; use >= 1.")
    s = metapath_scores(metapath_adj, num_nodes, score)
    idx = np.int32 if num_nodes < 2**31 - 1 else np.int64  # halves the memory traffic
    row = np.repeat(np.arange(num_nodes, dtype=idx), np.diff(s.indptr))  # [nnz], nondecreasing
    diag = row == s.indices  # [nnz]
    has_self = np.zeros(num_nodes, dtype=bool)
    has_self[row[diag]] = True
    # the anchor sorts first in its row, whatever its score; the rest by score, ties by column
    if score == "count":
        # integer scores: one stable argsort on a packed key is ~5x faster than lexsort
        top = int(s.data.max()) + 1 if s.nnz else 1  # off-diagonal keys: 1 .. top - 1
        key = row.astype(np.int64) * top
        key += top - s.data.astype(np.int64)
        key[diag] = row[diag].astype(np.int64) * top  # offset 0: before every candidate
        order = np.argsort(key, kind="stable")
    else:
        neg = -s.data
        neg[diag] = -np.inf
        order = np.lexsort((neg, row))  # stable: column order kept within equal scores
    # sorting by row first leaves every row where it was, so rank = position - row start
    rank = np.arange(s.nnz, dtype=np.int64) - s.indptr[row]
    limit = int(pos_num) - (~has_self).astype(np.int64)  # a missing anchor is inserted below
    mask = np.zeros(s.nnz, dtype=bool)
    mask[order[rank < limit[row]]] = True  # kept entries, in CSR (anchor, positive) order
    anchor = row[mask].astype(np.int64)
    positive = s.indices[mask].astype(np.int64)
    lonely = np.flatnonzero(~has_self)  # anchors without a self-score are put in place
    if lonely.size:
        at = np.searchsorted(anchor * num_nodes + positive, lonely * num_nodes + lonely)
        anchor, positive = np.insert(anchor, at, lonely), np.insert(positive, at, lonely)
    return torch.from_numpy(np.stack([anchor, positive]))  # [2, P]


def _row_reduce(m: sp.csr_matrix, ufunc: np.ufunc, empty: float) -> np.ndarray:
    """``ufunc`` over the stored entries of each CSR row (``empty`` for rows without any)."""
    out = np.full(m.shape[0], empty, dtype=np.float64)
    counts = np.diff(m.indptr)
    rows = np.flatnonzero(counts)
    if rows.size:
        out[rows] = ufunc.reduceat(m.data, m.indptr[rows])
    return out


def topk_violations(pos: Tensor, scores: sp.spmatrix, k: int) -> np.ndarray:
    r"""Anchors whose positive set is not a valid top-``k`` set under ``scores``.

    For anchor :math:`i` with chosen set :math:`C_i` the set is valid when, leaving the anchor
    itself out of both sides if it is chosen (so the "anchor always in" rule and sets that drop
    the anchor both pass):

    * every chosen node has a positive score;
    * :math:`|C_i| = \min(k', \mathrm{nnz}_i)` with :math:`k' = k - [i \in C_i]` and
      :math:`\mathrm{nnz}_i` the number of scored candidates;
    * :math:`\min_{j \in C_i} S_{ij} \ge \max_{j \notin C_i} S_{ij}`.

    Args:
        pos (Tensor): ``[2, P]`` pairs (anchor, positive).
        scores (scipy sparse): ``[N, N]`` score matrix, e.g. from :func:`metapath_scores`.
        k (int): the set size the positives were chosen for.

    Returns:
        numpy.ndarray: sorted ids of the anchors that fail (empty when all pass).
    """
    n = scores.shape[0]
    s = sp.csr_matrix(scores, dtype=np.float64, copy=True)
    s.eliminate_zeros()
    p = pos.detach().cpu().numpy().astype(np.int64)
    if p.size and (p.min() < 0 or p.max() >= n):
        raise ValueError(f"positive ids must lie in [0, {n}); got [{p.min()}, {p.max()}].")
    anchor_in = np.zeros(n, dtype=bool)
    anchor_in[p[0][p[0] == p[1]]] = True
    p = p[:, p[0] != p[1]]
    chosen = _binary_csr(torch.from_numpy(p), (n, n)).astype(np.float64)
    # drop the chosen anchors' own scores: the anchor rule puts them in regardless
    coo = s.tocoo()
    drop = (coo.row == coo.col) & anchor_in[coo.row]
    s = sp.csr_matrix((coo.data[~drop], (coo.row[~drop], coo.col[~drop])), shape=(n, n))
    s.sort_indices()
    chosen_scores = chosen.multiply(s).tocsr()  # [N, N], only chosen entries with a score
    chosen_scores.eliminate_zeros()
    others = (s - chosen_scores).tocsr()
    others.eliminate_zeros()
    n_chosen = np.diff(chosen.indptr)
    n_scored = np.diff(s.indptr)
    ok = np.diff(chosen_scores.indptr) == n_chosen  # every chosen node is scored
    ok &= n_chosen == np.minimum(k - anchor_in.astype(np.int64), n_scored)
    ok &= _row_reduce(chosen_scores, np.minimum, np.inf) >= _row_reduce(others, np.maximum, -np.inf)
    return np.flatnonzero(~ok)


def is_valid_topk(pos: Tensor, scores: sp.spmatrix, k: int) -> bool:
    """``True`` when every anchor's positive set is a valid top-``k`` set (see
    :func:`topk_violations`)."""
    return topk_violations(pos, scores, k).size == 0
