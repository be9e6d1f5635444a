"""The shared encoder of HetCRF: HAN (per-meta-path graph attention, then semantic attention).

Every meta-path turns the heterogeneous graph into a homogeneous graph over the target nodes; the
encoder runs one multi-head GAT layer per meta-path (node-level, "structural" attention) and fuses
the M results with semantic attention (Wang et al., "Heterogeneous Graph Attention Network", WWW
2019). :class:`MetaPathGCNEncoder` is the attention-free baseline with the same interface.

Why not PyG's ``GATConv`` / ``HANConv``: without ``torch-scatter`` they build one message per edge
and channel, an ``[E, heads * C]`` tensor (ACM's P-S-P graph has 4.3 million edges, DBLP's
A-P-T-P-A 7.0 million: 1-2 GB per tensor, several alive at once). :class:`MetaPathGATConv` computes
the same function without any per-edge message: the attention logits need only per-node scalars,
the weighted sum is a sparse-matrix product per head, and the backward pass is re-expressed as
sparse products too (see :class:`_GATAggregate`), so no ``[E, heads]`` float tensor outlives a
block of edges (attention dropout keeps a one-bit mask per edge and head; attention weights are
built only when asked for). Per edge a training pass holds 8 bytes of graph plan (int32 sources and
reverse-edge positions, cached per graph) and one byte of dropout mask (8 heads): on DBLP's 12
million meta-path edges 92 MB of plans and 12 MB of mask per pass.
``benchmarks/encoder_speed.py`` measures it against ``HANConv``.
"""
from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn.inits import glorot, zeros

from hetcrf_lite.errors import ConfigError, DataError, MetaPathError

__all__ = [
    "EncoderOutput",
    "MetaPathGATConv",
    "SemanticAttention",
    "HANEncoder",
    "MetaPathGCNEncoder",
    "build_encoder",
]

# Edges per block of the edge loop: [heads, block] float buffers of 8 x 32768 x 4 B = 1 MiB stay
# in cache, while the number of sparse products (2 per head and block, ~11 us call overhead each)
# stays small. Measured on ACM (HAN encoder, one thread): 2^15-2^16 fastest, 2^13 1.5x slower.
DEFAULT_CHUNK_SIZE = 32768
# On a GPU the same loop wants few, large blocks: each block launches a few dozen kernels, and at
# 2^15 edges DBLP's graphs made ~370 blocks per pass, the launches dominating (our encoder ran 7x
# slower than HANConv on an H200, docs/performance.md). 2^22 edges: 1-2 blocks per meta-path,
# [heads, block] buffers of 8 x 4M x 4 B = 128 MiB each. The block size changes no result.
CUDA_CHUNK_SIZE = 1 << 22


def _auto_chunk_size(device: torch.device) -> int:
    """Edges per block of the edge loop when the layer was given none: see the constants."""
    return CUDA_CHUNK_SIZE if device.type == "cuda" else DEFAULT_CHUNK_SIZE

# Softmax shift. Any constant per destination leaves the softmax unchanged; it only has to keep
# exp() in range. One constant per head, c = LeakyReLU(max s_src + max s_dst), bounds every logit
# (no overflow) and keeps every exp(logit - c) above exp(-spread), spread = (max - min) of s_src
# plus that of s_dst (LeakyReLU is monotone and 1-Lipschitz). While spread <= 60 that is a normal
# float32 (> 1e-26): as exact as the per-destination maximum and it saves a gather per edge block.
# Wider spreads (large attention vectors) fall back to the exact per-destination maximum.
_MAX_GLOBAL_SHIFT_SPREAD = 60.0


class EncoderOutput(NamedTuple):
    """What every encoder returns.

    Attributes:
        h: ``[N, hidden]`` fused embedding (semantic attention for HAN, mean for GCN).
        z: ``{metapath: [N, hidden]}`` embedding from each meta-path graph alone.
        node_attention: ``{metapath: [E, heads]}`` node-level attention weights, each row aligned
            with the columns of that meta-path's ``edge_index`` (softmax over the incoming edges of
            a destination, before attention dropout); ``None`` unless asked for, or for encoders
            without attention.
        semantic_attention: ``[M]`` semantic attention beta, ordered like ``z``; ``None`` for
            encoders without attention.
    """

    h: Tensor
    z: dict[str, Tensor]
    node_attention: dict[str, Tensor] | None
    semantic_attention: Tensor | None


# ---------------------------------------------------------------------------------------------
# Graph plans: CSR layout of an edge_index, its transpose and the edge blocks, cached per tensor.
# ---------------------------------------------------------------------------------------------


@dataclass
class _GraphPlan:
    """CSR form of ``edge_index`` with destinations as rows, plus the edge blocks of the loops.

    ``col[e]`` is the source of edge ``e`` in CSR order and its destination is the row whose
    ``ptr`` range holds ``e``; ``order`` maps CSR position to input column (``None`` when the input
    is already sorted by destination). Destinations are never stored: each block rebuilds its own
    from ``crow`` (:meth:`block_rows`, about 20 us a block), so a plan costs ``col`` (int32) and,
    once transposed, ``perm``: 8 bytes per edge (DBLP's 12 million meta-path edges: 92 MB), and
    holds no reference to the ``edge_index`` it was built from (a graph thinned for one step is
    freed after its forward pass, while its plan waits for the backward).
    """

    num_nodes: int
    ptr: Tensor  # [N + 1] int64
    col: Tensor  # [E] int32 (int64 for huge graphs)
    order: Tensor | None
    chunk_size: int
    blocks: list[tuple[int, int, int, int]] = field(default_factory=list)  # (n0, n1, e0, e1)
    crows: list[Tensor] = field(default_factory=list)  # local crow of each block
    symmetric: bool | None = None  # known once the transpose was built
    transposed: "_GraphPlan | None" = None
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

    def transpose(self) -> "_GraphPlan":
        """The plan of the reversed graph (sources as rows), built once with scipy's O(E) transpose.

        ``perm[k]`` is the forward position of transposed position ``k``. For a symmetric graph
        sorted by (destination, source) the reversed plan has the same arrays as this one; only
        ``perm`` (the reverse edge of each edge) differs, and only attention dropout uses it.
        """
        if self.transposed is not None:
            return self.transposed
        N, E = self.num_nodes, self.num_edges
        dev = self.col.device
        # int32 arrays throughout when they fit: scipy keeps the index type it is given, so the
        # transpose's temporaries are 12 bytes per edge instead of 24 (int64 positions and
        # indices), and its positions are the int32 ``perm`` itself (no copy).
        idx = np.int32 if max(E, N) < 2**31 - 1 else np.int64
        col = self.col.cpu().numpy().astype(idx, copy=False)
        ptr = self.ptr.cpu().numpy().astype(idx)
        csr = sp.csr_matrix((np.arange(E, dtype=idx), col, ptr), shape=(N, N))
        csc = csr.tocsc()  # counting-sort transpose; keeps duplicate edges
        del csr
        self.perm = torch.from_numpy(csc.data).to(device=dev, dtype=self.col.dtype)
        self.symmetric = bool(np.array_equal(csc.indptr, ptr) and np.array_equal(csc.indices, col))
        ptr_t = torch.from_numpy(csc.indptr.astype(np.int64)).to(dev)
        col_t = None if self.symmetric else torch.from_numpy(csc.indices).to(
            device=dev, dtype=self.col.dtype)
        del csc
        if self.symmetric:
            self.transposed = _GraphPlan(N, self.ptr, self.col, None, self.chunk_size,
                                         self.blocks, self.crows, True)
        else:
            self.transposed = _GraphPlan(N, ptr_t, col_t, None, self.chunk_size)
            self.transposed.make_blocks()
        self.transposed.perm = self.perm
        return self.transposed


_PLAN_CACHE: dict[int, tuple[weakref.ref, int, int, int, _GraphPlan]] = {}


def _graph_plan(edge_index: Tensor, num_nodes: int,
                chunk_size: int | None = DEFAULT_CHUNK_SIZE) -> _GraphPlan:
    """Return the (cached) plan of ``edge_index``; rebuilt when the tensor is modified in place.

    ``chunk_size=None`` takes the cached plan whatever its blocks (for callers that read only
    the CSR arrays), else builds one with the default blocks."""
    key = id(edge_index)
    hit = _PLAN_CACHE.get(key)
    if hit is not None:
        ref, version, n, k, plan = hit
        if (ref() is edge_index and version == edge_index._version and n == num_nodes
                and (chunk_size is None or k == chunk_size)):
            return plan
    chunk_size = DEFAULT_CHUNK_SIZE if chunk_size is None else chunk_size
    plan = _build_plan(edge_index, num_nodes, chunk_size)
    _PLAN_CACHE[key] = (weakref.ref(edge_index, lambda _, key=key: _PLAN_CACHE.pop(key, None)),
                        edge_index._version, num_nodes, chunk_size, plan)
    return plan


def _csr_plan(edge_index: Tensor, num_nodes: int) -> _GraphPlan | None:
    """The cached plan of ``edge_index`` when its CSR arrays *are* the matrix ``A[dst, src]``
    (columns sorted by (destination, source), no duplicate edge, ids below ``num_nodes``), else
    ``None``.

    Meta-path graphs as :mod:`hetcrf_lite.data` stores them qualify, so the sparse operators of
    the other modules can borrow the plan's int32 column indices (4 bytes per edge, shared)
    instead of building int64 copies of their own (8 bytes per edge, and per copy). With
    duplicates the borrowed CSR would sum them in another order than a coalesced one, hence
    ``None``."""
    if edge_index.shape[1] == 0 or int(edge_index.max()) >= num_nodes:
        return None
    plan = _graph_plan(edge_index, num_nodes, chunk_size=None)  # whatever its blocks
    if plan.order is not None:
        return None
    row, col = plan.row, plan.col
    if bool(((col[1:] <= col[:-1]) & (row[1:] == row[:-1])).any()):
        return None  # within a destination the sources must increase strictly
    return plan


def _build_plan(edge_index: Tensor, num_nodes: int, chunk_size: int) -> _GraphPlan:
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise DataError(f"edge_index must have shape [2, E], got {list(edge_index.shape)}; "
                        "pass row 0 = sources, row 1 = destinations.")
    if edge_index.dtype not in (torch.int32, torch.int64) or edge_index.is_sparse:
        raise DataError(f"edge_index must be a dense int64 tensor, got {edge_index.dtype}; "
                        "convert it with edge_index.long().")
    E = edge_index.size(1)
    if E and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes):
        raise DataError(f"edge_index holds node ids outside [0, {num_nodes}) "
                        f"(min {int(edge_index.min())}, max {int(edge_index.max())}); it must "
                        "index the rows of x.")
    src, dst = edge_index[0], edge_index[1]
    # int32 indices: MKL's sparse kernels take them natively (int64 is converted on every call).
    idx = torch.int32 if max(E, num_nodes) < 2**31 - 1 else torch.int64
    order = None
    if E > 1 and bool((dst[1:] < dst[:-1]).any()):
        # data.py sorts meta-path graphs by destination; other inputs are sorted here, once.
        order = torch.sort(dst, stable=True).indices
        src = src[order]
    ptr = torch.zeros(num_nodes + 1, dtype=torch.long, device=edge_index.device)
    ptr[1:] = torch.bincount(dst, minlength=num_nodes).cumsum(0)
    # a copy even for int32 input: a view would keep edge_index alive through its ``_base``
    col = src.to(idx, copy=True).contiguous()
    plan = _GraphPlan(num_nodes, ptr, col, order, chunk_size)
    plan.make_blocks()
    return plan


def _csr(crow: Tensor, col: Tensor, values: Tensor, num_rows: int, num_cols: int) -> Tensor:
    return torch.sparse_csr_tensor(crow, col, values, (num_rows, num_cols), check_invariants=False)


# ---------------------------------------------------------------------------------------------
# The fused attention-aggregation operator.
# ---------------------------------------------------------------------------------------------


class _EdgeBuffers:
    """Reusable per-block buffers (fresh large allocations page-fault: 3-10x slower than reuse).

    Masks are held as 0./1. floats: comparisons into and products with bool tensors take the
    slow type-promotion path (measured 4-5x slower per block).
    """

    def __init__(self, heads: int, max_block: int, like: Tensor,
                 index_dtype: torch.dtype | None = None):
        n = heads * max_block
        self.heads = heads
        self.x = like.new_empty(n)
        self.t = like.new_empty(n)
        self.pp = like.new_empty(n)
        self.pos = like.new_empty(n)
        if index_dtype is not None:  # for row_sums: two [H, k] blocks, edge-major
            self.pair = like.new_empty(max_block, 2 * heads)
            self.seg_col = torch.arange(max_block, dtype=index_dtype, device=like.device)
            self.seg_one = like.new_ones(max_block)

    def views(self, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        H = self.heads
        return (self.x[: H * k].view(H, k), self.t[: H * k].view(H, k),
                self.pp[: H * k].view(H, k), self.pos[: H * k].view(H, k))

    def row_sums(self, crow: Tensor, a: Tensor, b: Tensor) -> Tensor:
        """Sums of ``a`` and of ``b`` (``[H, k]``, edges of one block) over each CSR row of the
        block: ``[rows, 2 H]``, ``a``'s sums first.

        One sparse product with the block's segment matrix ``S = CSR(crow, arange(k), 1)``,
        ``S @ [a; b]^T``, instead of two ``torch._segment_reduce`` calls: 5-6x faster on CPU
        for the same sequential sums (measured on DBLP A-P-T-P-A blocks, 8 heads)."""
        H, k = self.heads, a.size(1)
        pair = self.pair[:k]  # [k, 2 H]
        pair[:, :H] = a.t()
        pair[:, H:] = b.t()
        seg = _csr(crow, self.seg_col[:k], self.seg_one[:k], crow.numel() - 1, k)
        return torch.sparse.mm(seg, pair)  # [rows, 2 H]


class _AttentionDropout:
    """Keep mask of attention dropout: drawn block by block, stored one *bit* per (edge, head),
    ``ceil(heads / 8)`` bytes per edge, edge-major so that the backward pass gathers one row per
    edge in transposed order (a head-major mask would need a random access per head: 5x slower
    on ACM P-S-P). Every training pass keeps its mask until its backward: with 8 heads a byte per
    (edge, head) was 8 bytes per edge, 96 MB per DBLP pass and three passes a step; packed, 12 MB.
    The draws are the same as unpacked (one ``uniform_`` per block, head-major), so the packing
    changes no result.
    """

    def __init__(self, num_edges: int, heads: int, p: float, device: torch.device,
                 dtype: torch.dtype = torch.float32):
        self.p, self.scale, self.heads = p, 1.0 / (1.0 - p), heads
        self.mask = torch.empty(num_edges, (heads + 7) // 8, dtype=torch.uint8, device=device)
        bit = torch.arange(heads, device=device) % 8
        self._weight = torch.pow(2.0, bit).to(dtype)  # [H] value of head h's bit in its byte
        self._shift = bit.to(torch.uint8).unsqueeze(1)  # [H, 1]

    def draw(self, e0: int, e1: int, out: Tensor) -> Tensor:
        """Draw the mask of edges ``e0:e1``; write it, head-major, as 0./1. into ``out`` [H, k]."""
        torch.ge(out.uniform_(), self.p, out=out)
        for g in range(self.mask.size(1)):  # each byte: sum of 2^b over its kept heads, exact
            h0, h1 = 8 * g, min(8 * g + 8, self.heads)
            self.mask[e0:e1, g] = self._weight[h0:h1] @ out[h0:h1]  # [k] in 0..255
        return out

    def gather(self, edges: Tensor, out: Tensor) -> Tensor:
        """The stored mask of ``edges`` (any order), head-major, as 0./1. into ``out`` [H, k]."""
        if self.mask.size(1) == 1:  # up to 8 heads: a 1-D gather, 5x faster than of [E, 1] rows
            packed = self.mask.view(-1).index_select(0, edges).unsqueeze(1)  # [k, 1]
        else:
            packed = self.mask.index_select(0, edges)  # [k, bytes]
        for g in range(packed.size(1)):
            h0, h1 = 8 * g, min(8 * g + 8, self.heads)
            bits = torch.bitwise_right_shift(packed[:, g], self._shift[h0:h1]).bitwise_and_(1)
            out[h0:h1].copy_(bits)  # [h, k] uint8 -> 0./1.
        return out


def _edge_scores(aT: Tensor, bT: Tensor, mT: Tensor, a_idx: Tensor, b_idx: Tensor,
                 slope: float, buf: _EdgeBuffers) -> tuple[Tensor, Tensor]:
    """Unnormalised attention of a block of edges, head-major.

    For edge ``e`` with source index ``a_idx[e]`` and destination index ``b_idx[e]`` returns
    ``p = exp(LeakyReLU(a[src] + b[dst]) - m[dst])`` and ``pp = p * [a[src] + b[dst] > 0]``
    (the part on the identity side of the LeakyReLU), both ``[H, k]`` views of ``buf``.
    """
    x, t, pp, pos = buf.views(a_idx.numel())
    torch.index_select(aT, 1, a_idx, out=x)  # [H, k]
    torch.index_select(bT, 1, b_idx, out=t)
    x += t
    torch.gt(x, 0, out=pos)  # 1. where the LeakyReLU is the identity
    F.leaky_relu_(x, slope)
    if mT.size(1) == 1:  # one shift per head
        x -= mT
    else:
        torch.index_select(mT, 1, b_idx, out=t)
        x -= t
    p = x.exp_()
    torch.mul(p, pos, out=pp)
    return p, pp


def _softmax_shift(aT: Tensor, bT: Tensor, plan: _GraphPlan, slope: float,
                   buf: _EdgeBuffers) -> Tensor:
    """Softmax shift, ``[H, 1]`` (one per head) or ``[H, N]`` (per destination), at least every
    logit it applies to, so no exp() overflows and each segment's largest term is not tiny."""
    if aT.numel() == 0:
        return aT.new_zeros(aT.size(0), 1)
    amax, bmax = aT.amax(1, keepdim=True), bT.amax(1, keepdim=True)  # [H, 1]
    spread = (amax - aT.amin(1, keepdim=True)) + (bmax - bT.amin(1, keepdim=True))
    if float(spread.max()) <= _MAX_GLOBAL_SHIFT_SPREAD:
        return F.leaky_relu(amax + bmax, slope)  # [H, 1]
    # Exact: max over each segment of s_src (LeakyReLU is monotone, so LeakyReLU(that + s_dst)
    # is the segment's largest logit); empty segments get 0.
    M = aT.new_zeros(bT.shape)
    for (n0, n1, e0, e1), crow in zip(plan.blocks, plan.crows):
        x = buf.views(e1 - e0)[0]
        torch.index_select(aT, 1, plan.col[e0:e1], out=x)
        seg = torch._segment_reduce(x, "max", offsets=crow.long().expand(x.size(0), -1), axis=1)
        M[:, n0:n1] = torch.where(torch.isinf(seg), 0.0, seg)
    return F.leaky_relu(M + bT, slope)  # [H, N]


class _GATAggregate(torch.autograd.Function):
    r"""``out_i = sum_j alpha_ij W x_j`` with ``alpha`` the GAT softmax, without per-edge messages.

    Per head, with ``a = s_src``, ``b = s_dst``, ``p_e = exp(LeakyReLU(a_j + b_i) - m_i)`` and the
    dropout keep mask ``d_e`` (scale ``s = 1 / (1 - dropout)``):

    .. math::
        Z_i = \sum_{e \to i} p_e, \quad
        \mathbf{out}_i = \frac{s}{Z_i} \sum_{e \to i} d_e p_e \mathbf{w}_j .

    Backward, with ``G = dL/dout``, ``g'_i = s G_i / Z_i``, ``r_i = <G_i, out_i> / Z_i``,
    ``q = d p`` and ``k_e = 1`` on the positive side of the LeakyReLU, ``slope`` otherwise: the
    logit gradient is ``dl_e = q_e <g'_i, w_j> - p_e r_i``, so

    .. math::
        \frac{\partial L}{\partial \mathbf{w}_j} = \sum_{e: j \to i} q_e \mathbf{g}'_i, \quad
        \frac{\partial L}{\partial b_i} = \langle \mathbf{g}'_i, \sum_{e \to i} k_e q_e
        \mathbf{w}_j \rangle - r_i \sum_{e \to i} k_e p_e, \quad
        \frac{\partial L}{\partial a_j} = \langle \mathbf{w}_j, \sum_{e: j \to i} k_e q_e
        \mathbf{g}'_i \rangle - \sum_{e: j \to i} k_e p_e r_i .

    Every sum is a sparse-matrix product (rows = destinations forward, sources backward), so the
    per-edge dot products ``<g'_i, w_j>`` (a sampled dense-dense product, 10x slower here than the
    products with MKL) are never formed; and torch's own backward of a CSR product is not used
    (it multiplies by the transpose, which torch re-sorts on every call: 90x slower than the
    forward product on ACM P-S-P). The transposed structure is built once per graph.
    ``k_e q_e = slope q_e + (1 - slope) q_e [x_e > 0]`` turns each ``k``-weighted sum into a
    combination of products with ``q`` and with its positive part.
    A ones column appended to ``w`` (and ``r`` to ``g'``) gives the scalar sums in the same product.
    The edge scores are recomputed in the backward pass instead of stored (bitwise the same).
    """

    @staticmethod
    def forward(ctx, wx: Tensor, a: Tensor, b: Tensor, plan: _GraphPlan, slope: float,
                dropout: float, want_alpha: bool) -> tuple[Tensor, Tensor]:
        N, H, C = wx.shape
        if any(ctx.needs_input_grad[:3]):
            # The backward walks the transposed plan: build it now (once per graph), while only
            # this pass's tensors are alive, rather than at the step's memory peak in backward.
            plan.transpose()
        aT, bT = a.t().contiguous(), b.t().contiguous()  # [H, N]
        ones = wx.new_ones(H, N, 1)
        w = torch.cat([wx.permute(1, 0, 2), ones], dim=-1).contiguous()  # [H, N, C + 1]
        max_block = max((e1 - e0 for _, _, e0, e1 in plan.blocks), default=0)
        buf = _EdgeBuffers(H, max_block, wx, plan.col.dtype if dropout > 0 else None)
        mT = _softmax_shift(aT, bT, plan, slope, buf)  # [H, N]
        U = wx.new_zeros(H, N, C + 1)  # [sum q w, sum q] per destination
        Up = wx.new_zeros(H, N, C + 1)  # the same over positive-side edges
        Zd = wx.new_zeros(2, H, N) if dropout > 0 else None  # undropped sums when dropping
        keep = (_AttentionDropout(plan.num_edges, H, dropout, wx.device, wx.dtype)
                if dropout > 0 else None)
        alpha = wx.new_empty(plan.num_edges, H) if want_alpha else wx.new_empty(0, H)
        for (n0, n1, e0, e1), crow in zip(plan.blocks, plan.crows):
            col = plan.col[e0:e1]
            rows = plan.block_rows(n0, n1, crow, e1 - e0)
            p, pp = _edge_scores(aT, bT, mT, col, rows, slope, buf)  # [H, k]
            if keep is not None:
                Zd[:, :, n0:n1] = buf.row_sums(crow, p, pp).t().view(2, H, n1 - n0)
                if want_alpha:
                    alpha[e0:e1] = (p / _rep(Zd[0, :, n0:n1], crow)).t()
                kb = keep.draw(e0, e1, buf.t[: p.numel()].view_as(p))  # t: free after the scores
                p.mul_(kb)
                pp.mul_(kb)
            crow_h, col_h = _stack_heads(crow, col, H, N, e1 - e0)
            U[:, n0:n1] = _heads_mm(crow_h, col_h, p, w, n1 - n0)
            Up[:, n0:n1] = _heads_mm(crow_h, col_h, pp, w, n1 - n0)
            if want_alpha and keep is None:
                alpha[e0:e1] = (p / _rep(U[:, n0:n1, C], crow)).t()
        Z, Zp = (Zd[0], Zd[1]) if keep is not None else (U[..., C], Up[..., C])  # [H, N]
        Zsafe = torch.where(Z > 0, Z, torch.ones_like(Z))  # isolated destination: out = 0
        scale = keep.scale if keep is not None else 1.0
        out = U[..., :C] * (scale / Zsafe).unsqueeze(-1)  # [H, N, C]
        V = slope * U[..., :C] + (1 - slope) * Up[..., :C]  # sum_e k q w
        Y = slope * Z + (1 - slope) * Zp  # sum_e k p
        ctx.save_for_backward(w, aT, bT, mT, Zsafe, V, Y, out)
        ctx.plan, ctx.keep, ctx.slope, ctx.scale = plan, keep, slope, scale
        ctx.mark_non_differentiable(alpha)
        if want_alpha and plan.order is not None:  # back to the input edge order
            alpha = torch.empty_like(alpha).index_copy_(0, plan.order, alpha)
        return out.permute(1, 0, 2).contiguous(), alpha

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor, _grad_alpha: Tensor):
        w, aT, bT, mT, Zsafe, V, Y, out = ctx.saved_tensors
        plan, keep, slope, scale = ctx.plan, ctx.keep, ctx.slope, ctx.scale
        H, N, C1 = w.shape
        C = C1 - 1
        G = grad_out.permute(1, 0, 2)  # [H, N, C]
        gp = G * (scale / Zsafe).unsqueeze(-1)  # g'
        r = (G * out).sum(-1) / Zsafe  # [H, N]
        grad_b = (gp * V).sum(-1) - r * Y  # [H, N]
        g = torch.cat([gp, r.unsqueeze(-1)], dim=-1).contiguous()  # [H, N, C + 1]
        tp = plan.transpose()
        R = G.new_zeros(H, N, C1)  # sum over out-edges of q [g', r]
        Rp = G.new_zeros(H, N, C1)
        Td = G.new_zeros(2, H, N) if keep is not None else None  # undropped r-sums when dropping
        max_block = max((e1 - e0 for _, _, e0, e1 in tp.blocks), default=0)
        buf = _EdgeBuffers(H, max_block, G, tp.col.dtype if keep is not None else None)
        for (j0, j1, k0, k1), crow in zip(tp.blocks, tp.crows):
            col = tp.col[k0:k1]  # destinations i of the out-edges of sources j0..j1
            p, pp = _edge_scores(aT, bT, mT, tp.block_rows(j0, j1, crow, k1 - k0), col, slope,
                                 buf)
            if keep is not None:  # r-sums over undropped weights, then drop (buffers t, pos free)
                t, pr = buf.t[: p.numel()].view_as(p), buf.pos[: p.numel()].view_as(p)
                torch.index_select(r, 1, col, out=t)  # r of each edge's destination
                torch.mul(p, t, out=pr)
                sums = buf.row_sums(crow, pr, t.mul_(pp))  # [rows, 2 H]: p r and pp r
                Td[:, :, j0:j1] = sums.t().view(2, H, j1 - j0)
                kb = keep.gather(tp.perm[k0:k1], t)
                p.mul_(kb)
                pp.mul_(kb)
            crow_h, col_h = _stack_heads(crow, col, H, N, k1 - k0)
            R[:, j0:j1] = _heads_mm(crow_h, col_h, p, g, j1 - j0)
            Rp[:, j0:j1] = _heads_mm(crow_h, col_h, pp, g, j1 - j0)
        T2 = slope * R[..., :C] + (1 - slope) * Rp[..., :C]  # sum k q g'
        if keep is None:
            T3 = slope * R[..., C] + (1 - slope) * Rp[..., C]  # sum k p r
        else:
            T3 = slope * Td[0] + (1 - slope) * Td[1]
        grad_a = (w[..., :C] * T2).sum(-1) - T3  # [H, N]
        grad_w = R[..., :C].permute(1, 0, 2)  # [N, H, C]
        return grad_w, grad_a.t(), grad_b.t(), None, None, None, None


def _stack_heads(crow: Tensor, col: Tensor, heads: int, num_nodes: int,
                 k: int) -> tuple[Tensor, Tensor]:
    """CSR indices of one edge block repeated once per head, block-diagonally: head ``h``'s rows
    follow head ``h - 1``'s and its columns are shifted by ``h * N`` (``[H rows + 1]``,
    ``[H k]``), so that one sparse product serves every head (:func:`_heads_mm`)."""
    if heads == 1:
        return crow, col
    shift = torch.arange(heads, device=col.device, dtype=col.dtype).unsqueeze(1)  # [H, 1]
    col_h = (col.unsqueeze(0) + shift * num_nodes).view(-1)  # [H k]
    crow_h = torch.cat([crow[:1], (crow[1:].unsqueeze(0) + shift * k).view(-1)])  # [H rows + 1]
    return crow_h, col_h


def _heads_mm(crow_h: Tensor, col_h: Tensor, values: Tensor, dense: Tensor, rows: int) -> Tensor:
    """``[H, rows, C]``: for every head ``h``, the block's ``[rows, N]`` matrix with the weights
    ``values[h]`` (``[H, k]``, contiguous) times ``dense[h]`` (``[H, N, C]``, contiguous).

    One block-diagonal product instead of ``H`` products: the same sums in the same order
    (bitwise equal), 17-34% faster with 8 heads on DBLP's blocks (MKL's cost per call and per
    row pass is paid once)."""
    H, N, C = dense.shape
    a = _csr(crow_h, col_h, values.reshape(-1), H * rows, H * N)
    return torch.sparse.mm(a, dense.view(H * N, C)).view(H, rows, C)


def _rep(values: Tensor, crow: Tensor) -> Tensor:
    """Repeat per-row values ``[H, rows]`` over the edges of each row (``[H, k]``)."""
    counts = crow.long().diff()
    return values.repeat_interleave(counts, dim=1, output_size=int(crow[-1]))


# ---------------------------------------------------------------------------------------------
# Layers.
# ---------------------------------------------------------------------------------------------


def _linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ weight.T + bias`` for dense or sparse (COO / CSR) ``x``."""
    sparse = x.is_sparse or x.layout == torch.sparse_csr
    out = torch.sparse.mm(x, weight.t()) if sparse else x @ weight.t()
    return out if bias is None else out + bias


def _feature_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Dropout on dense features, or on the stored values of sparse ones (never densified)."""
    if p == 0.0 or not training:
        return x
    if x.is_sparse:
        x = x.coalesce()
        return torch.sparse_coo_tensor(x.indices(), F.dropout(x.values(), p, True), x.shape,
                                       check_invariants=False,
                                       is_coalesced=True)
    if x.layout == torch.sparse_csr:
        return _csr(x.crow_indices(), x.col_indices(), F.dropout(x.values(), p, True), *x.shape)
    return F.dropout(x, p, True)


class MetaPathGATConv(nn.Module):
    r"""Multi-head graph attention over one meta-path graph (node-level attention of HAN), computed
    with sparse products and no per-edge messages.

    Same function as PyG's :class:`~torch_geometric.nn.conv.GATConv` with ``add_self_loops=False``
    (meta-path graphs carry their own self-loops; a node without incoming edges gets only the bias,
    never NaN), but ``out_channels`` is the total width, as in
    :class:`~torch_geometric.nn.conv.HANConv`:

    .. math::
        \mathbf{z}_i = \big\Vert_{k=1}^{K} \sum_{j \in \mathcal{N}(i)} \alpha^{k}_{ij}
        \mathbf{W}^{k} \mathbf{x}_j + \mathbf{b}

    with the attention coefficients of head :math:`k` (a softmax over the incoming edges of
    :math:`i`)

    .. math::
        \alpha^{k}_{ij} = \frac{\exp\left(\mathrm{LeakyReLU}\left(
        \mathbf{a}^{k\top}_{s} \mathbf{W}^{k} \mathbf{x}_j +
        \mathbf{a}^{k\top}_{t} \mathbf{W}^{k} \mathbf{x}_i \right)\right)}
        {\sum_{l \in \mathcal{N}(i)} \exp\left(\mathrm{LeakyReLU}\left(
        \mathbf{a}^{k\top}_{s} \mathbf{W}^{k} \mathbf{x}_l +
        \mathbf{a}^{k\top}_{t} \mathbf{W}^{k} \mathbf{x}_i \right)\right)} .

    The layer applies no activation (as ``GATConv``); :class:`HANEncoder` applies
    :math:`\sigma` = ELU after it, as HAN does. How it runs: the logits need only the per-node
    scalars :math:`s_{src} = \mathbf{a}_s^\top \mathbf{W}\mathbf{x}` and :math:`s_{dst}`; edges are
    processed in cached CSR blocks (destination-major), each block's weights feed one sparse
    product per head, and the backward pass is again sparse products (see ``_GATAggregate``).

    Args:
        in_channels (int): Size of each input sample.
        out_channels (int): Size of each output sample: ``heads * head_dim`` when ``concat=True``
            (``out_channels // heads`` channels per head), the width of every head when
            ``concat=False`` (heads averaged, as ``GATConv``).
        heads (int, optional): Number of attention heads. (default: :obj:`1`)
        concat (bool, optional): Concatenate the heads; if :obj:`False`, average them.
            (default: :obj:`True`)
        negative_slope (float, optional): LeakyReLU angle of the negative slope.
            (default: :obj:`0.2`)
        dropout (float, optional): Dropout probability of the normalised attention coefficients
            during training. (default: :obj:`0.0`)
        bias (bool, optional): Learn an additive bias. (default: :obj:`True`)
        chunk_size (int, optional): Edges per block of the edge loop (a speed knob, not a result
            knob); :obj:`None` picks by device: 32768 on CPU, 4194304 on CUDA.
            (default: :obj:`None`)

    Shapes:
        - **input:** node features :math:`(N, F_{in})` dense or sparse,
          edge indices :math:`(2, E)` (row 0 source, row 1 destination)
        - **output:** node features :math:`(N, F_{out})`, and with
          ``return_attention_weights=True`` also the attention weights :math:`(E, H)` aligned with
          the columns of ``edge_index`` (before dropout; not differentiable).
    """

    def __init__(self, in_channels: int, out_channels: int, heads: int = 1, concat: bool = True,
                 negative_slope: float = 0.2, dropout: float = 0.0, bias: bool = True,
                 chunk_size: int | None = None):
        super().__init__()
        if heads < 1 or out_channels < 1 or in_channels < 1:
            raise ConfigError(f"in_channels, out_channels and heads must be positive, got "
                              f"{in_channels}, {out_channels}, {heads}.")
        if concat and out_channels % heads != 0:
            raise ConfigError(f"out_channels={out_channels} is not divisible by heads={heads}; "
                              "with concat=True it is the total width heads * head_dim.")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must lie in [0, 1), got {dropout}.")
        if chunk_size is not None and chunk_size < 1:
            raise ConfigError(f"chunk_size must be positive or None, got {chunk_size}.")
        self.in_channels, self.out_channels, self.heads = in_channels, out_channels, heads
        self.concat, self.negative_slope, self.dropout = concat, negative_slope, dropout
        self.chunk_size = chunk_size
        self.head_dim = out_channels // heads if concat else out_channels
        self.lin = nn.Linear(in_channels, heads * self.head_dim, bias=False)
        self.att_src = nn.Parameter(torch.empty(1, heads, self.head_dim))
        self.att_dst = nn.Parameter(torch.empty(1, heads, self.head_dim))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        glorot(self.lin.weight)
        glorot(self.att_src)
        glorot(self.att_dst)
        zeros(self.bias)

    def forward(self, x: Tensor, edge_index: Tensor,
                return_attention_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        H, C = self.heads, self.head_dim
        wx = _linear(x, self.lin.weight).view(-1, H, C)  # [N, H, C]
        s_src = (wx * self.att_src).sum(-1)  # [N, H]
        s_dst = (wx * self.att_dst).sum(-1)  # [N, H]
        chunk = self.chunk_size or _auto_chunk_size(wx.device)
        plan = _graph_plan(edge_index, wx.size(0), chunk)
        drop = self.dropout if self.training else 0.0
        with warnings.catch_warnings():  # "sparse CSR support is in beta" on every new CSR tensor
            warnings.simplefilter("ignore", UserWarning)
            out, alpha = _GATAggregate.apply(wx, s_src, s_dst, plan, self.negative_slope, drop,
                                             return_attention_weights)  # [N, H, C]
        out = out.reshape(-1, H * C) if self.concat else out.mean(dim=1)
        if self.bias is not None:
            out = out + self.bias
        return (out, alpha) if return_attention_weights else out

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
                f"heads={self.heads})")


class SemanticAttention(nn.Module):
    r"""Semantic-level attention of HAN: a softmax over meta-paths, shared by all nodes.

    .. math::
        w_m = \frac{1}{N} \sum_{i=1}^{N} \mathbf{q}^{\top}
        \tanh\left(\mathbf{W} \mathbf{z}^{m}_i + \mathbf{b}\right), \qquad
        \beta_m = \frac{\exp(w_m)}{\sum_{m'} \exp(w_{m'})}, \qquad
        \mathbf{H} = \sum_{m=1}^{M} \beta_m \mathbf{Z}^{m} .

    Args:
        in_channels (int): Width of each meta-path embedding :math:`\mathbf{z}^m_i`.
        hidden_channels (int, optional): Width of the attention projection :math:`\mathbf{W}`
            (HAN's default). (default: :obj:`128`)

    Shapes:
        - **input:** :math:`(M, N, F)` stacked meta-path embeddings (or a list of :math:`(N, F)`)
        - **output:** :math:`(N, F)` fused embedding and :math:`(M,)` weights :math:`\beta`
    """

    def __init__(self, in_channels: int, hidden_channels: int = 128):
        super().__init__()
        self.detach_weights = False  # fuse with a constant beta (HetCRF's gen_beta_grad: false)
        self.lin = nn.Linear(in_channels, hidden_channels)
        self.q = nn.Parameter(torch.empty(1, hidden_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        glorot(self.lin.weight)
        zeros(self.lin.bias)
        glorot(self.q)

    def forward(self, zs: Tensor | list[Tensor]) -> tuple[Tensor, Tensor]:
        z = torch.stack(list(zs)) if not isinstance(zs, Tensor) else zs  # [M, N, F]
        w = (torch.tanh(self.lin(z)).mean(dim=1) * self.q).sum(-1)  # [M]
        beta = torch.softmax(w, dim=0)  # [M]
        if self.detach_weights:
            beta = beta.detach()
        return (beta.view(-1, 1, 1) * z).sum(0), beta


_ACTIVATIONS = {"elu": nn.ELU, "relu": nn.ReLU, "prelu": nn.PReLU, "identity": nn.Identity}


def _activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}.")
    return _ACTIVATIONS[name]()


def _check_keys(metapaths: list[str], edge_index_dict: dict[str, Tensor]) -> None:
    missing = [m for m in metapaths if m not in edge_index_dict]
    unknown = [k for k in edge_index_dict if k not in metapaths]
    if missing or unknown:
        raise MetaPathError(
            f"edge_index_dict keys {sorted(edge_index_dict)} do not match the encoder's "
            f"meta-paths {metapaths} (missing: {missing}, unknown: {unknown}); pass exactly one "
            "edge_index per meta-path given at construction.")


def _check_init(in_channels: int, hidden_channels: int, metapaths: list[str], num_layers: int,
                feat_drop: float) -> list[str]:
    metapaths = list(metapaths)
    if not metapaths:
        raise MetaPathError("an encoder needs at least one meta-path.")
    if len(set(metapaths)) != len(metapaths):
        raise MetaPathError(f"meta-path names must be unique, got {metapaths}.")
    if in_channels < 1 or hidden_channels < 1 or num_layers < 1:
        raise ConfigError(f"in_channels, hidden_channels and num_layers must be positive, got "
                          f"{in_channels}, {hidden_channels}, {num_layers}.")
    if not 0.0 <= feat_drop < 1.0:
        raise ConfigError(f"feat_drop must lie in [0, 1), got {feat_drop}.")
    return metapaths


class HANEncoder(nn.Module):
    r"""HAN encoder: input projection, a :class:`MetaPathGATConv` per meta-path, semantic attention.

    .. math::
        \mathbf{h}^{(0)}_i = \mathbf{P} \mathbf{x}_i + \mathbf{c}, \qquad
        \mathbf{z}^{m}_i = \sigma\Big( \big\Vert_{k} \sum_{j \in \mathcal{N}^m(i)}
        \alpha^{m,k}_{ij} \mathbf{W}^{m,k} \mathbf{h}_j + \mathbf{b}^m \Big), \qquad
        \mathbf{H} = \sum_m \beta_m \mathbf{Z}^m

    with :math:`\alpha^m` the attention of :class:`MetaPathGATConv` over meta-path graph
    :math:`m`, :math:`\beta` that of :class:`SemanticAttention` and :math:`\sigma` = ELU (HAN's
    choice; HeCo uses PReLU, available as ``activation="prelu"``). Choices, and why:

    * a shared input projection :math:`\mathbf{P}` (as HeCo's per-type ``fc`` and PyG's
      ``HANConv``) maps sparse or high-dimensional features once, to ``hidden_channels``; each
      meta-path keeps its own :math:`\mathbf{W}^m` (``hidden x hidden``, as HAN), so the composite
      per-meta-path map is :math:`\mathbf{W}^m \mathbf{P}`, HAN's per-path weight in factored form,
      at the cost of M small matrix products (under 1% of a forward on ACM);
    * no activation between :math:`\mathbf{P}` and :math:`\mathbf{W}^m` (one nonlinear layer per HAN
      layer, as HAN); ``num_layers > 1`` stacks HAN layers on the fused :math:`\mathbf{H}`, as
      HGMAE's encoder does; ``z``, the node and the semantic attention of the last layer are
      returned;
    * feature dropout on each layer's input (on the stored values for a sparse input).

    Args:
        in_channels (int): Width of the input features.
        hidden_channels (int): Width of every embedding (HeCo's 64 by default in the configs).
        metapaths (list[str]): Meta-path names; ``forward`` needs exactly these keys.
        heads (int, optional): Attention heads per meta-path; ``hidden_channels`` must be divisible
            by it (8 heads of 8 channels, as HAN). (default: :obj:`8`)
        num_layers (int, optional): Stacked HAN layers. (default: :obj:`1`)
        feat_drop (float, optional): Feature dropout. (default: :obj:`0.0`)
        attn_drop (float, optional): Dropout on the node-level attention. (default: :obj:`0.0`)
        negative_slope (float, optional): LeakyReLU slope of the attention. (default: :obj:`0.2`)
        semantic_hidden (int, optional): Width of the semantic attention projection (HAN).
            (default: :obj:`128`)
        activation (str, optional): ``"elu"``, ``"prelu"``, ``"relu"`` or ``"identity"``.
            (default: :obj:`"elu"`)

    Shapes:
        - **input:** features :math:`(N, F_{in})` dense or sparse COO; ``{metapath: (2, E_m)}``
        - **output:** :class:`EncoderOutput` (``h`` and each ``z`` of shape
          :math:`(N, \text{hidden})`, ``semantic_attention`` :math:`(M,)`)
    """

    def __init__(self, in_channels: int, hidden_channels: int, metapaths: list[str], heads: int = 8,
                 num_layers: int = 1, feat_drop: float = 0.0, attn_drop: float = 0.0,
                 negative_slope: float = 0.2, semantic_hidden: int = 128, activation: str = "elu"):
        super().__init__()
        self.metapaths = _check_init(in_channels, hidden_channels, metapaths, num_layers, feat_drop)
        if hidden_channels % heads != 0:
            raise ConfigError(f"hidden_channels={hidden_channels} is not divisible by "
                              f"heads={heads}; pick heads that divide it (64 = 8 heads x 8).")
        self.in_channels, self.hidden_channels, self.heads = in_channels, hidden_channels, heads
        self.num_layers, self.feat_drop = num_layers, feat_drop
        self.proj = nn.Linear(in_channels, hidden_channels)
        self.convs = nn.ModuleList(
            nn.ModuleDict({m: MetaPathGATConv(hidden_channels, hidden_channels, heads,
                                              negative_slope=negative_slope, dropout=attn_drop)
                           for m in self.metapaths})
            for _ in range(num_layers))
        self.acts = nn.ModuleList(_activation(activation) for _ in range(num_layers))
        self.semantic = nn.ModuleList(SemanticAttention(hidden_channels, semantic_hidden)
                                      for _ in range(num_layers))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        glorot(self.proj.weight)
        zeros(self.proj.bias)
        for module in [*(c for convs in self.convs for c in convs.values()), *self.semantic,
                       *self.acts]:
            if hasattr(module, "reset_parameters"):  # PReLU has one, ELU has none
                module.reset_parameters()

    def forward(self, x: Tensor, edge_index_dict: dict[str, Tensor],
                return_attention_weights: bool = False) -> EncoderOutput:
        """Encode; ``return_attention_weights=True`` also fills ``node_attention`` (costs an
        ``[E, heads]`` tensor per meta-path)."""
        _check_keys(self.metapaths, edge_index_dict)
        x = _feature_dropout(x, self.feat_drop, self.training)
        h = _linear(x, self.proj.weight, self.proj.bias)  # [N, hidden]
        for layer, (convs, act, semantic) in enumerate(zip(self.convs, self.acts, self.semantic)):
            if layer > 0:
                h = _feature_dropout(h, self.feat_drop, self.training)
            z, att = {}, {}
            for m in self.metapaths:
                res = convs[m](h, edge_index_dict[m], return_attention_weights)
                out, att[m] = res if return_attention_weights else (res, None)
                z[m] = act(out)  # [N, hidden]
            h, beta = semantic([z[m] for m in self.metapaths])
        return EncoderOutput(h, z, att if return_attention_weights else None, beta)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.hidden_channels}, "
                f"metapaths={self.metapaths}, heads={self.heads}, num_layers={self.num_layers})")


# ---------------------------------------------------------------------------------------------
# GCN baseline.
# ---------------------------------------------------------------------------------------------


def _gcn_operators(plan: _GraphPlan, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Cached CSR matrices of the symmetric normalisation and of its transpose.

    Both borrow the plan's index arrays; only the values are new (4 bytes per edge). For a
    symmetric graph the transpose *is* the matrix (``dinv_i dinv_j = dinv_j dinv_i`` bitwise),
    so one object serves both."""
    if plan.gcn is None or plan.gcn[0].dtype != dtype:
        N = plan.num_nodes
        deg = plan.ptr.diff().to(dtype)  # in-degree, as GCNConv
        dinv = deg.pow(-0.5).masked_fill_(deg == 0, 0.0)
        val = dinv.index_select(0, plan.row) * dinv.index_select(0, plan.col)  # [E]
        tp = plan.transpose()
        crow = plan.ptr.to(plan.col.dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            a = _csr(crow, plan.col, val, N, N)
            if plan.symmetric:
                plan.gcn = (a, a)
            else:
                val_t = val.index_select(0, tp.perm)  # [E] in transposed order
                plan.gcn = (a, _csr(tp.ptr.to(tp.col.dtype), tp.col, val_t, N, N))
    return plan.gcn


class _SpMM(torch.autograd.Function):
    """``A @ X`` for a constant CSR ``A``; the backward uses the cached ``A^T`` (torch's own CSR
    backward transposes on every call: 100x slower on ACM P-S-P)."""

    @staticmethod
    def forward(ctx, x: Tensor, a: Tensor, a_t: Tensor) -> Tensor:
        ctx.a_t = a_t
        return torch.sparse.mm(a, x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        return torch.sparse.mm(ctx.a_t, grad.contiguous()), None, None


class MetaPathGCNEncoder(nn.Module):
    r"""Attention-free baseline: one GCN layer per meta-path graph, averaged.

    .. math::
        \mathbf{h}_i = \mathbf{P} \mathbf{x}_i + \mathbf{c}, \qquad
        \mathbf{Z}^{m} = \sigma\left( \hat{\mathbf{D}}_m^{-1/2} \mathbf{A}^m
        \hat{\mathbf{D}}_m^{-1/2} \mathbf{H} \mathbf{W}^{m} + \mathbf{b}^m \right), \qquad
        \mathbf{H}_{out} = \frac{1}{M} \sum_m \mathbf{Z}^m

    with :math:`\hat{\mathbf{D}}_m` the in-degrees of :math:`\mathbf{A}^m` (no self-loops added:
    meta-path graphs carry their own; an isolated node gets only the bias), exactly
    ``GCNConv(add_self_loops=False)``. The normalised matrix and its transpose are cached per
    ``edge_index``. Same arguments as :class:`HANEncoder` where they apply.

    Args:
        in_channels (int): Width of the input features.
        hidden_channels (int): Width of every embedding.
        metapaths (list[str]): Meta-path names; ``forward`` needs exactly these keys.
        num_layers (int, optional): Stacked layers, each on the previous mean. (default: :obj:`1`)
        feat_drop (float, optional): Feature dropout on each layer's input. (default: :obj:`0.0`)
        activation (str, optional): As in :class:`HANEncoder`. (default: :obj:`"elu"`)
    """

    def __init__(self, in_channels: int, hidden_channels: int, metapaths: list[str],
                 num_layers: int = 1, feat_drop: float = 0.0, activation: str = "elu"):
        super().__init__()
        self.metapaths = _check_init(in_channels, hidden_channels, metapaths, num_layers, feat_drop)
        self.in_channels, self.hidden_channels = in_channels, hidden_channels
        self.num_layers, self.feat_drop = num_layers, feat_drop
        self.proj = nn.Linear(in_channels, hidden_channels)
        self.lins = nn.ModuleList(
            nn.ModuleDict({m: nn.Linear(hidden_channels, hidden_channels, bias=False)
                           for m in self.metapaths}) for _ in range(num_layers))
        self.biases = nn.ParameterList(
            nn.Parameter(torch.empty(len(self.metapaths), hidden_channels))
            for _ in range(num_layers))
        self.acts = nn.ModuleList(_activation(activation) for _ in range(num_layers))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        glorot(self.proj.weight)
        zeros(self.proj.bias)
        for lins, bias in zip(self.lins, self.biases):
            for lin in lins.values():
                glorot(lin.weight)
            zeros(bias)

    def forward(self, x: Tensor, edge_index_dict: dict[str, Tensor],
                return_attention_weights: bool = False) -> EncoderOutput:
        """Encode; ``return_attention_weights`` is accepted for interface parity (no attention)."""
        _check_keys(self.metapaths, edge_index_dict)
        x = _feature_dropout(x, self.feat_drop, self.training)
        h = _linear(x, self.proj.weight, self.proj.bias)  # [N, hidden]
        for layer, (lins, bias, act) in enumerate(zip(self.lins, self.biases, self.acts)):
            if layer > 0:
                h = _feature_dropout(h, self.feat_drop, self.training)
            z = {}
            for k, m in enumerate(self.metapaths):
                a, a_t = _gcn_operators(_graph_plan(edge_index_dict[m], h.size(0)), h.dtype)
                z[m] = act(_SpMM.apply(lins[m](h), a, a_t) + bias[k])  # [N, hidden]
            h = torch.stack([z[m] for m in self.metapaths]).mean(0)
        return EncoderOutput(h, z, None, None)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.hidden_channels}, "
                f"metapaths={self.metapaths}, num_layers={self.num_layers})")


# Options that only the attention encoder has: the GCN encoder ignores them, so one config
# (which always carries heads / attn_drop) builds either kind.
_ATTENTION_ONLY = ("heads", "attn_drop", "negative_slope", "semantic_hidden")


def build_encoder(kind: str, in_channels: int, hidden_channels: int, metapaths: list[str],
                  **kwargs) -> HANEncoder | MetaPathGCNEncoder:
    """Build the encoder named by the config: ``"han"`` (:class:`HANEncoder`) or ``"gcn"``
    (:class:`MetaPathGCNEncoder`). ``kwargs`` go to its constructor; for ``"gcn"`` the
    attention-only options (``heads``, ``attn_drop``, ``negative_slope``, ``semantic_hidden``) are
    ignored, any other unknown option raises :class:`ConfigError`.

    Example:
        >>> build_encoder("han", 16, 64, ["pap", "psp"], heads=8)
        HANEncoder(16, 64, metapaths=['pap', 'psp'], heads=8, num_layers=1)
        >>> build_encoder("gcn", 16, 64, ["pap", "psp"], heads=8)
        MetaPathGCNEncoder(16, 64, metapaths=['pap', 'psp'], num_layers=1)
    """
    kinds = {"han": HANEncoder, "gcn": MetaPathGCNEncoder}
    if kind not in kinds:
        raise ConfigError(f"unknown encoder kind {kind!r}; choose 'han' or 'gcn'.")
    if kind == "gcn":
        kwargs = {k: v for k, v in kwargs.items() if k not in _ATTENTION_ONLY}
    try:
        return kinds[kind](in_channels, hidden_channels, metapaths, **kwargs)
    except TypeError as err:  # an option this encoder does not take
        raise ConfigError(f"bad option for the {kind!r} encoder: {err}") from err
