"""Sparse operations shared by the layers: the CSR plan of a graph and its cache, the GCN
normalisation, a sparse-matrix product with a cached transpose for its backward, the row index
of any ``[2, E]`` index (:class:`RowIndex`) and the one neighbour sampler
(:func:`sample_neighbors`).

Introduced in notebook 02 (the plan behind :class:`~hetcrf_lite.encoder.MetaPathGATConv`'s fused
backend) and notebook 04 (:func:`gcn_operators`, the second-stage GCN).

Every meta-path graph is an ``edge_index`` ``[2, E]`` (row 0 source, row 1 destination). Its
:class:`CSRPlan` is the CSR form with destinations as rows, built once per tensor and kept by
:data:`PLAN_CACHE` while that tensor lives and is not modified in place; the encoder's fused
kernel, the GCN operators and the edge decoder all read the same plan (int32 column indices, 4
bytes per edge, shared), so no module holds a CSR copy of its own.

Why not PyG's :class:`~torch_geometric.EdgeIndex`, which keeps CSR and CSC on the tensor itself:
the graphs reach the layers as plain tensors (built by :mod:`hetcrf_lite.data`, thinned by edge
dropping, or passed by a user), so an ``EdgeIndex`` made at the layer boundary would be a new
object, and its cache lost, on every call; and the plan carries what ``EdgeIndex`` has no place
for: the edge blocks of the fused kernel, the reverse-edge permutation of attention dropout, and
the cached GCN values on the same index arrays.
"""
from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import ConfigError, DataError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "CSRPlan",
    "TensorCache",
    "PLAN_CACHE",
    "check_edge_index",
    "csr_plan",
    "coalesced_plan",
    "csr_tensor",
    "row_chunks",
    "RowIndex",
    "sample_neighbors",
    "gcn_rows",
    "gcn_operators",
    "gcn_propagate",
    "SparseMM",
    "sparse_mm",
]

# Edges per block of the fused kernel's edge loop on CPU (see hetcrf_lite.gat_fused).
DEFAULT_CHUNK_SIZE = 32768


def csr_tensor(crow: Tensor, col: Tensor, values: Tensor, num_rows: int, num_cols: int) -> Tensor:
    """A ``torch.sparse_csr_tensor`` without the invariant check (the plan's arrays are valid by
    construction) and without torch's "sparse CSR support is in beta" warning.

    Not taught in a notebook: plumbing behind the fused backend of notebook 02 and the GCN operators
    of notebook 04."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, (num_rows, num_cols),
                                       check_invariants=False)


@dataclass
class CSRPlan:
    """CSR form of ``edge_index`` with destinations as rows, and its edge blocks.

    ``col[e]`` is the source of edge ``e`` in CSR order and its destination is the row whose
    ``ptr`` range holds ``e``; ``order`` maps CSR position to input column (``None`` when the
    input is already sorted by destination). Destinations are not stored (:meth:`block_rows`
    rebuilds them), so a plan costs ``col`` and, once transposed, ``perm``: 8 bytes per edge, and
    it holds no reference to the ``edge_index`` it was built from (a graph thinned for one step
    is freed after its forward pass while its plan waits for the backward).

    Not taught in a notebook: plumbing behind the fused backend of notebook 02 and the GCN operators
    of notebook 04.
    """

    num_nodes: int
    ptr: Tensor  # [N + 1] int64
    col: Tensor  # [E] int32 (int64 for huge graphs)
    order: Tensor | None
    chunk_size: int
    blocks: list[tuple[int, int, int, int]] = field(default_factory=list)  # (n0, n1, e0, e1)
    crows: list[Tensor] = field(default_factory=list)  # local crow of each block
    symmetric: bool | None = None  # known once the transpose was built
    transposed: "CSRPlan | None" = None
    perm: Tensor | None = None  # [E]: forward position of each transposed position
    gcn: tuple[Tensor, Tensor] | None = None  # cached (csr, csr_t) of the GCN normalisation

    @property
    def num_edges(self) -> int:
        return int(self.col.numel())

    @property
    def row(self) -> Tensor:
        """``[E]`` destination of every edge in CSR order, built on demand (not stored)."""
        return self.block_rows(0, self.num_nodes, self.ptr.to(self.col.dtype), self.num_edges)

    def block_rows(self, n0: int, n1: int, crow: Tensor, k: int) -> Tensor:
        """``[k]`` destination of every edge of the block ``(n0, n1)`` with local ``crow``."""
        ids = torch.arange(n0, n1, device=crow.device, dtype=crow.dtype)
        return torch.repeat_interleave(ids, crow.diff(), output_size=k)

    def rows(self, n0: int, n1: int) -> tuple[Tensor, Tensor, Tensor]:
        """The edges into destinations ``n0 .. n1 - 1``: local ``crow`` ``[n1 - n0 + 1]``
        (``col.dtype``), their sources ``col`` and their destinations renumbered from 0, in CSR
        order (views of the plan's arrays where possible); the chunks of chunked inference."""
        e0, e1 = int(self.ptr[n0]), int(self.ptr[n1])
        crow = (self.ptr[n0 : n1 + 1] - e0).to(self.col.dtype)
        return crow, self.col[e0:e1], self.block_rows(0, n1 - n0, crow, e1 - e0)

    def make_blocks(self) -> None:
        """Cut the rows into blocks of about ``chunk_size`` edges, at row boundaries."""
        E, N, K = self.num_edges, self.num_nodes, self.chunk_size
        ptr = self.ptr.cpu()
        cuts = torch.searchsorted(ptr, torch.arange(K, E, K)).tolist() if E > K else []
        cuts = sorted(set([0, *cuts, N]))
        self.blocks, self.crows = [], []
        for n0, n1 in zip(cuts[:-1], cuts[1:]):
            e0, e1 = int(ptr[n0]), int(ptr[n1])
            if e1 > e0:
                self.blocks.append((n0, n1, e0, e1))
                self.crows.append((self.ptr[n0 : n1 + 1] - e0).to(self.col.dtype))

    def matrix(self, values: Tensor) -> Tensor:
        """The CSR matrix ``A[dst, src]`` of this plan with ``values`` (``[E]``, CSR order)."""
        return csr_tensor(self.ptr.to(self.col.dtype), self.col, values, self.num_nodes,
                          self.num_nodes)

    def transpose(self) -> "CSRPlan":
        """The plan of the reversed graph (sources as rows), built once with scipy's O(E) transpose.

        ``perm[k]`` is the forward position of transposed position ``k``. For a symmetric graph
        sorted by (destination, source) the reversed plan has the same arrays as this one; only
        ``perm`` (the reverse edge of each edge) differs, and only attention dropout uses it.
        """
        if self.transposed is None:
            self.transposed = self._build_transpose()
            self.transposed.perm = self.perm
        return self.transposed

    def _build_transpose(self) -> "CSRPlan":
        N, E, dev = self.num_nodes, self.num_edges, self.col.device
        # int32 arrays when they fit: scipy keeps the index type it is given, so the transpose's
        # temporaries are 12 bytes per edge instead of 24, and its positions are ``perm`` itself.
        idx = np.int32 if max(E, N) < 2**31 - 1 else np.int64
        col = self.col.cpu().numpy().astype(idx, copy=False)
        ptr = self.ptr.cpu().numpy().astype(idx)
        csc = sp.csr_matrix((np.arange(E, dtype=idx), col, ptr), shape=(N, N)).tocsc()
        self.perm = torch.from_numpy(csc.data).to(device=dev, dtype=self.col.dtype)
        self.symmetric = bool(np.array_equal(csc.indptr, ptr) and np.array_equal(csc.indices, col))
        if self.symmetric:
            return CSRPlan(N, self.ptr, self.col, None, self.chunk_size, self.blocks, self.crows,
                           True)
        ptr_t = torch.from_numpy(csc.indptr.astype(np.int64)).to(dev)
        col_t = torch.from_numpy(csc.indices).to(device=dev, dtype=self.col.dtype)
        plan = CSRPlan(N, ptr_t, col_t, None, self.chunk_size)
        plan.make_blocks()
        return plan


class TensorCache:
    """Values computed from a tensor, kept while that tensor lives and is not modified in place.

    ``get(key, tensor, build)`` returns the value stored under ``key`` if it was built from this
    very tensor at its current version (and ``valid(value)`` holds), else calls ``build()`` and
    stores the result. The cache holds only a weak reference to the tensor; with
    ``evict_with_tensor=True`` an entry leaves the cache when its tensor is freed (a global cache
    keyed by tensor), otherwise each key holds one entry, replaced when another tensor comes
    (a module's cache keyed by meta-path name).

    Not taught in a notebook: plumbing behind the fused backend of notebook 02 and the GCN operators
    of notebook 04.
    """

    def __init__(self, evict_with_tensor: bool = False) -> None:
        self.evict_with_tensor = evict_with_tensor
        self._store: dict[Any, tuple[weakref.ref, int, Any]] = {}

    def __contains__(self, key: Any) -> bool:
        return key in self._store

    def get(self, key: Any, tensor: Tensor, build: Callable[[], Any],
            valid: Callable[[Any], bool] | None = None) -> Any:
        hit = self._store.get(key)
        if (hit is not None and hit[0]() is tensor and hit[1] == tensor._version
                and (valid is None or valid(hit[2]))):
            return hit[2]
        value = build()
        store = self._store
        evict = (lambda _, key=key: store.pop(key, None)) if self.evict_with_tensor else None
        self._store[key] = (weakref.ref(tensor, evict), tensor._version, value)
        return value


PLAN_CACHE = TensorCache(evict_with_tensor=True)  # keyed by id(edge_index)


def csr_plan(edge_index: Tensor, num_nodes: int, chunk_size: int | None = None) -> CSRPlan:
    """The cached :class:`CSRPlan` of ``edge_index``; rebuilt when the tensor is modified in place
    or asked for with other ``num_nodes`` or ``chunk_size``. ``chunk_size=None`` takes the cached
    plan whatever its blocks (for callers that read only the CSR arrays).

    Not taught in a notebook: plumbing behind the fused backend of notebook 02 and the GCN operators
    of notebook 04."""
    def valid(plan: CSRPlan) -> bool:
        return plan.num_nodes == num_nodes and chunk_size in (None, plan.chunk_size)

    return PLAN_CACHE.get(id(edge_index), edge_index,
                          lambda: _build_plan(edge_index, num_nodes,
                                              chunk_size or DEFAULT_CHUNK_SIZE), valid)


def coalesced_plan(edge_index: Tensor, num_nodes: int) -> CSRPlan | None:
    """The cached plan of ``edge_index`` when its CSR arrays *are* the matrix ``A[dst, src]``
    (columns sorted by (destination, source), no duplicate edge, ids below ``num_nodes``), else
    ``None``. Meta-path graphs as :mod:`hetcrf_lite.data` stores them qualify; with duplicates a
    borrowed CSR would sum them in another order than a coalesced one.

    Not taught in a notebook: plumbing behind the fused backend of notebook 02 and the GCN operators
    of notebook 04."""
    if edge_index.shape[1] == 0 or int(edge_index.max()) >= num_nodes:
        return None
    plan = csr_plan(edge_index, num_nodes)
    if plan.order is not None:
        return None
    row, col = plan.row, plan.col
    if bool(((col[1:] <= col[:-1]) & (row[1:] == row[:-1])).any()):
        return None  # within a destination the sources must increase strictly
    return plan


def check_edge_index(edge_index: Tensor, num_nodes: int) -> None:
    """Raise :class:`~hetcrf_lite.errors.DataError` unless ``edge_index`` is a dense integer
    ``[2, E]`` tensor of node ids in ``[0, num_nodes)``.

    Not taught in a notebook: plumbing behind the fused backend of notebook 02 and the GCN operators
    of notebook 04."""
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise DataError(f"edge_index must have shape [2, E], got {list(edge_index.shape)}; "
                        "pass row 0 = sources, row 1 = destinations.")
    if edge_index.dtype not in (torch.int32, torch.int64) or edge_index.is_sparse:
        raise DataError(f"edge_index must be a dense int64 tensor, got {edge_index.dtype}; "
                        "convert it with edge_index.long().")
    if edge_index.size(1) and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes):
        raise DataError(f"edge_index holds node ids outside [0, {num_nodes}) "
                        f"(min {int(edge_index.min())}, max {int(edge_index.max())}); it must "
                        "index the rows of x.")


def _build_plan(edge_index: Tensor, num_nodes: int, chunk_size: int) -> CSRPlan:
    check_edge_index(edge_index, num_nodes)
    E = edge_index.size(1)
    src, dst = edge_index[0], edge_index[1]
    # int32 indices: MKL's sparse kernels take them natively (int64 is converted on every call).
    idx = torch.int32 if max(E, num_nodes) < 2**31 - 1 else torch.int64
    order = None
    if E > 1 and bool((dst[1:] < dst[:-1]).any()):
        # data.py sorts meta-path graphs by destination; other inputs are sorted here, once.
        order = torch.sort(dst, stable=True).indices
        src = src[order]
    ptr = F.pad(torch.bincount(dst, minlength=num_nodes).cumsum(0), (1, 0))  # [N + 1]
    # a copy even for int32 input: a view would keep edge_index alive through its ``_base``
    col = src.to(idx, copy=True).contiguous()
    plan = CSRPlan(num_nodes, ptr, col, order, chunk_size)
    plan.make_blocks()
    return plan


@dataclass
class RowIndex:
    """CSR view of a ``[2, E]`` index grouped by one of its rows.

    ``ptr[i]:ptr[i + 1]`` are the positions (into ``col`` and ``eid``) of the entries of row
    ``i``; ``col`` holds the other end of each entry and ``eid`` its column in the original
    index (to carry edge attributes). Meta-path graphs (sorted by destination, then source) and
    positive sets (sorted by anchor) need no sort: ``eid`` is then ``None``.

    Why not a :class:`CSRPlan`: that is the square graph of a layer, cached, with the blocks of
    the fused kernel; a row index groups any ``[2, E]`` index (a bipartite relation, positive
    pairs, the entries of sparse features) by either row, and borrows its column ids when the
    index is already grouped. Not taught in a notebook: plumbing of the mini-batches of notebook
    08 and of the sparse feature masking of notebook 03.
    """

    ptr: Tensor  # [R + 1] int64
    col: Tensor  # [E]
    eid: Tensor | None  # [E] or None (identity)

    @classmethod
    def build(cls, index: Tensor, num_rows: int, by: int = 1) -> "RowIndex":
        """Group ``index [2, E]`` by row ``by`` (1: destination of an edge index, 0: anchor of a
        positive index); a stable sort only when the input is not already grouped."""
        key, other = index[by], index[1 - by]
        eid = None
        if key.numel() > 1 and bool((key[1:] < key[:-1]).any()):
            eid = torch.sort(key, stable=True).indices
            key, other = key[eid], other[eid]
        ptr = F.pad(torch.bincount(key, minlength=num_rows).cumsum(0), (1, 0))  # [R + 1]
        return cls(ptr, other.contiguous(), eid)

    def gather(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Entries of ``rows``: ``(seg, pos)``, ``seg[q]`` the index into ``rows`` of entry
        ``q``, ``pos[q]`` its position in ``col``; rows in the given order, entries in CSR
        order within a row."""
        start = self.ptr[rows]
        cnt = self.ptr[rows + 1] - start  # [R']
        seg = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), cnt)
        shift = torch.repeat_interleave(start - (cnt.cumsum(0) - cnt), cnt)
        return seg, shift + torch.arange(seg.numel(), device=rows.device)

    def edge_ids(self, pos: Tensor) -> Tensor:
        """Columns of the original index of the entries at ``pos``."""
        return pos if self.eid is None else self.eid[pos]

    def sample(self, rows: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        """Up to ``k`` entries of each of ``rows`` drawn uniformly without replacement, the row's
        own id (a self-loop) excluded; ``k = -1`` keeps them all. The draw is the package's one
        neighbour sampler, :func:`sample_neighbors`, on the rows'
        entries, so it costs the entries of ``rows``, not of the graph.

        Returns:
            ``[S]`` the sampled neighbours (``col`` values), grouped by row in the order of
            ``rows``.
        """
        seg, pos = self.gather(rows)
        nb = self.col[pos]
        edges = torch.stack([seg, nb])[:, nb != rows[seg]]  # the row's node is in anyway
        return edges[1] if k == -1 else sample_neighbors(edges, k, rows.numel(), generator)[1]


def sample_neighbors(edge_index: Tensor, k: int, num_nodes: int | None = None,
                     generator: torch.Generator | None = None) -> Tensor:
    """Keep at most ``k`` uniformly drawn edges per source node (row 0), without replacement.

    Vectorised: a random key per edge, a stable sort by node, and each edge's rank within its
    node. Nodes with fewer than ``k`` edges keep all of them (HeCo resamples those with
    replacement; duplicates would only re-weight the same neighbours at random).

    Args:
        edge_index (torch.Tensor): ``[2, E]``, row 0 the node whose neighbours are sampled.
        k (int): neighbours kept per node, ``>= 1``.
        num_nodes (int, optional): number of row-0 nodes; inferred when ``None``.
            (default: ``None``)
        generator (torch.Generator, optional): source of randomness. (default: ``None``)

    Returns:
        The kept edges ``[2, E']``, in their original order.

    Introduced in notebook 04 (the schema view's neighbour sampling). The package's one neighbour
    sampler: the mini-batch fan-out (:meth:`RowIndex.sample`) draws with it too.
    """
    if k < 1:
        raise ConfigError(f"neighbours sampled per type k={k} must be >= 1")
    src = edge_index[0]
    if src.numel() == 0:
        return edge_index
    n = int(src.max()) + 1 if num_nodes is None else num_nodes
    gdev = torch.device("cpu") if generator is None else generator.device
    order = torch.rand(src.numel(), generator=generator, device=gdev).to(src.device).argsort()
    order = order[src[order].argsort(stable=True)]  # grouped by node, random within a group
    counts = torch.bincount(src, minlength=n)  # [n]
    start = counts.cumsum(0) - counts  # [n] first slot of each node's group
    rank = torch.arange(src.numel(), device=src.device) - start[src[order]]  # [E]
    keep = order[rank < k].sort().values
    return edge_index[:, keep]


def row_chunks(num_rows: int, chunk_rows: int) -> list[tuple[int, int]]:
    """``(n0, n1)`` ranges of at most ``chunk_rows`` rows covering ``0 .. num_rows - 1``: the
    destination chunks of chunked, no-grad inference (``chunk_rows`` arguments of the layers,
    :func:`hetcrf_lite.minibatch.layerwise_embeddings`).

    Not taught in a notebook: plumbing of the mini-batch inference of notebook 08."""
    if chunk_rows < 1:
        raise ConfigError(f"chunk_size={chunk_rows} must be >= 1 (destination nodes per chunk)")
    return [(a, min(a + chunk_rows, num_rows)) for a in range(0, num_rows, chunk_rows)]


def gcn_rows(plan: CSRPlan, dtype: torch.dtype, n0: int = 0, n1: int | None = None) -> Tensor:
    r"""Rows ``n0 .. n1 - 1`` (default: all) of the GCN normalisation
    :math:`\mathbf{D}^{-1/2}\mathbf{A}\mathbf{D}^{-1/2}` of ``plan``'s graph (in-degrees
    :math:`\mathbf{D}`), a ``[n1 - n0, N]`` sparse CSR matrix on the plan's index arrays, not
    cached: whole, the matrix of :func:`gcn_operators`; in row chunks, that of
    :func:`gcn_propagate` in chunked inference.

    Introduced in notebook 04 (as :func:`gcn_operators`)."""
    n1 = plan.num_nodes if n1 is None else n1
    deg = plan.ptr.diff().to(dtype)  # in-degree, as GCNConv
    dinv = deg.pow(-0.5).masked_fill_(deg == 0, 0.0)
    crow, col, dst = plan.rows(n0, n1)
    val = dinv.index_select(0, dst + n0) * dinv.index_select(0, col)  # [E_rows]
    return csr_tensor(crow, col, val, n1 - n0, plan.num_nodes)


def gcn_operators(edge_index: Tensor, num_nodes: int,
                  dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    r"""The GCN normalisation :math:`\mathbf{D}^{-1/2}\mathbf{A}\mathbf{D}^{-1/2}` of a graph
    (rows = destinations, :math:`\mathbf{D}` the in-degrees, no self-loops added: exactly
    ``gcn_norm(add_self_loops=False)``) and its transpose, sparse CSR, cached on the graph's plan.

    Introduced in notebook 04 (the second-stage GCN); also the operator of
    :class:`~hetcrf_lite.encoder.MetaPathGCNEncoder`. Both matrices borrow the plan's index
    arrays (only the values are new, 4 bytes per edge); for a symmetric graph the transpose *is*
    the matrix (``dinv_i dinv_j = dinv_j dinv_i`` bitwise), one object for both. Duplicate edges
    count in the degrees and are summed, as with ``gcn_norm``.
    """
    dtype = dtype or torch.get_default_dtype()
    plan = csr_plan(edge_index, num_nodes)
    if plan.gcn is None or plan.gcn[0].dtype != dtype:
        a = gcn_rows(plan, dtype)
        tp = plan.transpose()
        plan.gcn = (a, a) if plan.symmetric else (a, tp.matrix(a.values().index_select(0, tp.perm)))
    return plan.gcn


def gcn_propagate(edge_index: Tensor, x: Tensor, dtype: torch.dtype | None = None,
                  chunk_rows: int | None = None) -> Tensor:
    r""":math:`\mathbf{D}^{-1/2}\mathbf{A}\mathbf{D}^{-1/2}\mathbf{X}` of ``edge_index``'s
    graph over the rows of ``x``: with ``chunk_rows=None`` through the cached
    :func:`gcn_operators` (normalised in ``dtype``) and :func:`sparse_mm`, differentiable in
    ``x``; with ``chunk_rows``, chunks of that many destinations from :func:`gcn_rows`, nothing
    cached but the plan (no-grad chunked inference, :mod:`hetcrf_lite.minibatch`).

    Introduced in notebook 04 (the second-stage GCN)."""
    n = x.size(0)
    if chunk_rows is None:
        a, a_t = gcn_operators(edge_index, n, dtype)
        return sparse_mm(a, x, a_t)
    plan = csr_plan(edge_index, n)
    return torch.cat([torch.sparse.mm(gcn_rows(plan, x.dtype, n0, n1), x)
                      for n0, n1 in row_chunks(n, chunk_rows)])


class SparseMM(torch.autograd.Function):
    """``A @ X`` for a constant sparse CSR ``A`` whose transpose ``A^T`` is given: the backward is
    one more product with the cached ``A^T``.

    Introduced in notebook 04. Why not torch's own backward of ``torch.sparse.mm(A, X)``: it
    builds the transpose of ``A`` on every call. Measured once (``benchmarks/encoder_speed.py
    --spmm``, ACM's normalised P-S-P, 4.3 M edges, ``X`` ``[4019, 64]``, one thread, median of 3
    CPU seconds on the busy 2-core machine, 2026-12-06, docs/performance.md): forward 0.031 s,
    torch's backward 0.433 s, this backward 0.048 s: torch's is 9x this one (14x the forward).
    """

    @staticmethod
    def forward(ctx, x: Tensor, a: Tensor, a_t: Tensor) -> Tensor:
        ctx.a_t = a_t
        return torch.sparse.mm(a, x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        return torch.sparse.mm(ctx.a_t, grad.contiguous()), None, None


def sparse_mm(a: Tensor, x: Tensor, a_t: Tensor) -> Tensor:
    """``A @ X`` differentiable in ``X`` through :class:`SparseMM` (``A`` cast to ``X``'s dtype).

    Introduced in notebook 04 (as :class:`SparseMM`)."""
    return SparseMM.apply(x, a.to(x.dtype), a_t.to(x.dtype))
