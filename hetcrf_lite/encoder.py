"""The shared encoder of HetCRF: HAN (per-meta-path graph attention, then semantic attention).

Introduced in notebook 02. Every meta-path turns the heterogeneous graph into a homogeneous graph
over the target nodes; the encoder runs one multi-head GAT layer per meta-path (node-level,
"structural" attention, :class:`MetaPathGATConv`) and fuses the M results with semantic attention
(:class:`SemanticAttention`; Wang et al., "Heterogeneous Graph Attention Network", WWW 2019).
:class:`MetaPathGCNEncoder` is the attention-free baseline with the same interface.

:class:`MetaPathGATConv` has two backends computing the same function: ``"reference"``
(:func:`gat_aggregate`: PyG's ``softmax`` over the incoming edges and one sparse product per
head, the few lines of notebook 02) and ``"fused"`` (:mod:`hetcrf_lite.gat_fused`: no per-edge
tensor, a hand-written backward; tested equal to the reference). ``"auto"`` picks per device the
one measured faster at the shipped settings (``benchmarks/encoder_speed.py``,
docs/performance.md): fused on CPU, reference on CUDA.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn.inits import glorot, zeros
from torch_geometric.utils import softmax

from .errors import ConfigError, MetaPathError
from .gat_fused import fused_gat_aggregate
from .sparse import check_edge_index, csr_plan, csr_tensor, gcn_propagate, row_chunks

__all__ = [
    "EncoderOutput",
    "BACKENDS",
    "resolve_backend",
    "gat_aggregate",
    "MetaPathGATConv",
    "SemanticAttention",
    "MeanFusion",
    "accept_legacy_semantic_keys",
    "HANEncoder",
    "MetaPathGCNEncoder",
    "build_encoder",
]

BACKENDS = ("reference", "fused", "auto")
# What "auto" picks per device type: the backend measured faster at the shipped settings (1 head)
# by benchmarks/encoder_speed.py (docs/performance.md). CPU: fused. CUDA: reference, not measured
# on a GPU yet; on an H200 the fused kernel's block loop ran 7x slower than HANConv, whose
# edge-parallel layout the reference shares.
AUTO_BACKEND = {"cpu": "fused", "cuda": "reference"}


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend that ``backend`` means on ``device``: itself, or :data:`AUTO_BACKEND`'s choice
    for ``"auto"`` (the reference on device types not listed there).

    Introduced in notebook 02."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown encoder backend {backend!r}; choose one of {BACKENDS}.")
    return AUTO_BACKEND.get(device.type, "reference") if backend == "auto" else backend


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

    Introduced in notebook 02.
    """

    h: Tensor
    z: dict[str, Tensor]
    node_attention: dict[str, Tensor] | None
    semantic_attention: Tensor | None



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
        return csr_tensor(x.crow_indices(), x.col_indices(), F.dropout(x.values(), p, True),
                          *x.shape)
    return F.dropout(x, p, True)


def gat_aggregate(wx: Tensor, s_src: Tensor, s_dst: Tensor, edge_index: Tensor,
                  negative_slope: float = 0.2, dropout: float = 0.0,
                  num_dst: int | None = None) -> tuple[Tensor, Tensor]:
    r"""GAT aggregation, the reference: :math:`\mathbf{out}_i = \sum_{j \in \mathcal{N}(i)}
    \alpha_{ij} \mathbf{w}_j` per head, with PyG's ``softmax`` over the incoming edges and one
    sparse product per head.

    Introduced in notebook 02 (its from-scratch layer, with a sparse product per head in place of
    the ``[E, heads, C]`` message). The backend ``"reference"`` of :class:`MetaPathGATConv`, and
    what the fused backend (:func:`~hetcrf_lite.gat_fused.fused_gat_aggregate`) is tested against.

    Args:
        wx (torch.Tensor): projected features :math:`\mathbf{W}\mathbf{x}`, ``[N, H, C]``.
        s_src (torch.Tensor): source scores :math:`\mathbf{a}_s^\top \mathbf{W}\mathbf{x}_j`,
            ``[N, H]``.
        s_dst (torch.Tensor): destination scores, ``[N, H]``.
        edge_index (torch.Tensor): ``[2, E]``, row 0 source, row 1 destination.
        negative_slope (float, optional): LeakyReLU slope. (default: :obj:`0.2`)
        dropout (float, optional): dropout on the attention weights (pass 0 in evaluation). The
            keep mask is drawn head-major, ``[H, E]``, as the fused backend draws it, so both
            backends drop the same weights on a graph sorted by destination that fits one block.
            (default: :obj:`0.0`)
        num_dst (int, optional): number of destinations, ``0 .. num_dst - 1``, the rows of
            ``s_dst`` and of the output: a chunk of destinations in chunked inference, its
            edges' destinations renumbered from 0. :obj:`None` means ``N``. (default: :obj:`None`)

    Returns:
        ``out`` ``[num_dst, H, C]`` and the attention ``[E, H]`` before dropout (not
        differentiable).
    """
    N, H, _ = wx.shape
    rows = N if num_dst is None else num_dst
    check_edge_index(edge_index, N)
    src, dst = edge_index.long()
    logit = F.leaky_relu(s_src[src] + s_dst[dst], negative_slope)  # [E, H]
    alpha = softmax(logit, dst, num_nodes=rows)  # [E, H], sums to 1 over each destination's edges
    weight = alpha
    if dropout > 0:
        keep = torch.rand(H, alpha.size(0), dtype=wx.dtype, device=wx.device).ge_(dropout)  # [H, E]
        weight = alpha * keep.t() / (1.0 - dropout)
    index = torch.stack([dst, src])  # rows = destinations
    out = [torch.sparse.mm(torch.sparse_coo_tensor(index, weight[:, h], (rows, N),
                                                   check_invariants=False), wx[:, h])
           for h in range(H)]  # H x [N, C]
    return torch.stack(out, dim=1), alpha.detach()


class MetaPathGATConv(nn.Module):
    r"""Multi-head graph attention over one meta-path graph (node-level attention of HAN).

    Introduced in notebook 02. Same function as PyG's :class:`~torch_geometric.nn.conv.GATConv`
    with ``add_self_loops=False`` (meta-path graphs carry their own self-loops; a node without
    incoming edges gets only the bias, never NaN), but ``out_channels`` is the total width, as in
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
    :math:`\sigma` = ELU after it, as HAN does. The logits need only the per-node scalars
    :math:`s_{src} = \mathbf{a}_s^\top \mathbf{W}\mathbf{x}` and :math:`s_{dst}`; the aggregation
    runs on the chosen backend: :func:`gat_aggregate` (``"reference"``) or
    :func:`~hetcrf_lite.gat_fused.fused_gat_aggregate` (``"fused"``), see :func:`resolve_backend`.

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
        chunk_size (int, optional): Edges per block of the fused backend's edge loop (a speed
            knob, not a result knob); :obj:`None` picks by device: 32768 on CPU, 4194304 on CUDA.
            (default: :obj:`None`)
        backend (str, optional): ``"reference"``, ``"fused"`` or ``"auto"`` (per device, see
            :func:`resolve_backend`). (default: :obj:`"auto"`)
        attention (bool, optional): Learn the attention. With :obj:`False` every logit is 0, so
            :math:`\alpha_{ij} = 1 / |\mathcal{N}(i)|`: the layer is :math:`\mathbf{W}` times
            the in-neighbour mean (HAN without node-level attention); no attention vectors.
            (default: :obj:`True`)

    Shapes:
        - **input:** node features :math:`(N, F_{in})` dense or sparse,
          edge indices :math:`(2, E)` (row 0 source, row 1 destination)
        - **output:** node features :math:`(N, F_{out})`, and with
          ``return_attention_weights=True`` also the attention weights :math:`(E, H)` aligned with
          the columns of ``edge_index`` (before dropout; not differentiable).
    """

    def __init__(self, in_channels: int, out_channels: int, heads: int = 1, concat: bool = True,
                 negative_slope: float = 0.2, dropout: float = 0.0, bias: bool = True,
                 chunk_size: int | None = None, backend: str = "auto", attention: bool = True):
        super().__init__()
        _check_conv_args(in_channels, out_channels, heads, concat, dropout, chunk_size)
        resolve_backend(backend, torch.device("cpu"))  # rejects an unknown name now
        self.in_channels, self.out_channels, self.heads = in_channels, out_channels, heads
        self.concat, self.negative_slope, self.dropout = concat, negative_slope, dropout
        self.chunk_size, self.backend, self.attention = chunk_size, backend, attention
        self.head_dim = out_channels // heads if concat else out_channels
        self.lin = nn.Linear(in_channels, heads * self.head_dim, bias=False)
        shape = (1, heads, self.head_dim)
        self.att_src = nn.Parameter(torch.empty(shape)) if attention else None
        self.att_dst = nn.Parameter(torch.empty(shape)) if attention else None
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        glorot(self.lin.weight)
        glorot(self.att_src)
        glorot(self.att_dst)
        zeros(self.bias)

    def forward(self, x: Tensor, edge_index: Tensor, return_attention_weights: bool = False,
                chunk_rows: int | None = None) -> Tensor | tuple[Tensor, Tensor]:
        """The layer's output; with ``chunk_rows`` (evaluation only, no attention weights) the
        projections of all nodes are computed once and the reference :func:`gat_aggregate` runs
        on chunks of ``chunk_rows`` destinations, holding one chunk's edges at a time (the
        layer-wise inference of :mod:`hetcrf_lite.minibatch`)."""
        H, C = self.heads, self.head_dim
        wx = _linear(x, self.lin.weight).view(-1, H, C)  # [N, H, C]
        if self.attention:
            s_src = (wx * self.att_src).sum(-1)  # [N, H]
            s_dst = (wx * self.att_dst).sum(-1)  # [N, H]
        else:  # all logits 0: the softmax over a node's in-edges is 1 / in-degree
            s_src = s_dst = wx.new_zeros(wx.shape[:2])
        drop = self.dropout if self.training else 0.0
        if chunk_rows is not None:
            plan, alpha = csr_plan(edge_index, wx.size(0)), None
            out = torch.cat([self._chunk(wx, s_src, s_dst[n0:n1], plan.rows(n0, n1))
                             for n0, n1 in row_chunks(wx.size(0), chunk_rows)])
        elif resolve_backend(self.backend, wx.device) == "fused":
            out, alpha = fused_gat_aggregate(wx, s_src, s_dst, edge_index, self.negative_slope,
                                             drop, return_attention_weights, self.chunk_size)
        else:
            out, alpha = gat_aggregate(wx, s_src, s_dst, edge_index, self.negative_slope, drop)
        out = out.reshape(-1, H * C) if self.concat else out.mean(dim=1)  # [N, out_channels]
        if self.bias is not None:
            out = out + self.bias
        return (out, alpha) if return_attention_weights else out

    def _chunk(self, wx: Tensor, s_src: Tensor, s_dst: Tensor,
               rows: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        """:func:`gat_aggregate` into one chunk of destinations (``rows`` of
        :meth:`~hetcrf_lite.sparse.CSRPlan.rows`, ``s_dst`` the chunk's rows)."""
        _, src, dst = rows
        edges = torch.stack([src.long(), dst.long()])  # [2, E_chunk], destinations from 0
        return gat_aggregate(wx, s_src, s_dst, edges, self.negative_slope,
                             num_dst=s_dst.size(0))[0]

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
                f"heads={self.heads}, backend={self.backend!r})")


def _check_conv_args(in_channels: int, out_channels: int, heads: int, concat: bool,
                     dropout: float, chunk_size: int | None) -> None:
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


class SemanticAttention(nn.Module):
    r"""Semantic-level attention of HAN: a softmax over meta-paths (or types), shared by all nodes.

    Introduced in notebook 02 (and used again in notebook 04 by the schema view's inter-type
    attention, and by the feature decoder). The one implementation of HAN's semantic attention
    in the package:

    .. math::
        w_m = \frac{1}{N} \sum_{i=1}^{N} \mathbf{q}^{\top}
        \tanh\left(\mathbf{W} \mathbf{z}^{m}_i + \mathbf{b}\right), \qquad
        \beta_m = \frac{\exp(w_m)}{\sum_{m'} \exp(w_{m'})}, \qquad
        \mathbf{H} = \sum_{m=1}^{M} \beta_m \mathbf{Z}^{m} .

    Args:
        in_channels (int): Width of each embedding :math:`\mathbf{z}^m_i`.
        hidden_channels (int, optional): Width of the attention projection :math:`\mathbf{W}`
            (HAN's default). (default: :obj:`128`)
        init (str, optional): ``"glorot"`` (HAN's: Glorot :math:`\mathbf{W}` and
            :math:`\mathbf{q}`, zero :math:`\mathbf{b}`, drawn at construction) or ``"normal"``
            (HeCo's: ``nn.Linear``'s default :math:`\mathbf{W}`, :math:`\mathbf{q} \sim
            \mathcal{N}(0, 1/\text{hidden})`, drawn by the owner through
            :meth:`reset_parameters` or :meth:`reset_query`, so the owner fixes the order of its
            random draws). (default: :obj:`"glorot"`)

    Chunked inference (``forward(zs, chunk_rows)``, :mod:`hetcrf_lite.minibatch`) accumulates
    :math:`\sum_i \tanh(\mathbf{W}\mathbf{z}_i + \mathbf{b})` over row chunks and calls
    :meth:`weights_from_sums`.

    Shapes:
        - **input:** :math:`(M, N, F)` stacked embeddings (or a list of :math:`(N, F)`)
        - **output:** :math:`(N, F)` fused embedding and :math:`(M,)` weights :math:`\beta`
    """

    def __init__(self, in_channels: int, hidden_channels: int = 128, init: str = "glorot"):
        super().__init__()
        if init not in ("glorot", "normal"):
            raise ConfigError(f"semantic attention init={init!r}: use 'glorot' or 'normal'")
        self.init = init
        self.detach_weights = False  # fuse with a constant beta (HetCRF's gen_beta_grad: false)
        self.lin = nn.Linear(in_channels, hidden_channels)
        self.q = nn.Parameter(torch.empty(1, hidden_channels))
        if init == "glorot":
            self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.init == "glorot":
            glorot(self.lin.weight)
            zeros(self.lin.bias)
            glorot(self.q)
        else:
            self.lin.reset_parameters()
            self.reset_query()

    def reset_query(self) -> None:
        """Draw :math:`\\mathbf{q}` alone from its initial distribution."""
        if self.init == "glorot":
            glorot(self.q)
        else:
            nn.init.normal_(self.q, std=self.q.size(1) ** -0.5)

    def weights_from_sums(self, sums: Tensor, num_nodes: int) -> Tensor:
        """``beta`` ``[M]`` from per-type sums of :math:`\\tanh(\\mathbf{W}\\mathbf{z}_i +
        \\mathbf{b})` over the ``num_nodes`` rows (``[M, hidden]``)."""
        beta = torch.softmax((sums / num_nodes * self.q).sum(-1), dim=0)  # [M]
        return beta.detach() if self.detach_weights else beta

    def weights(self, zs: Tensor | list[Tensor]) -> Tensor:
        """The weights ``beta`` ``[M]`` alone, from stacked ``[M, N, F]`` or a list of ``[N, F]``.

        The summation order follows each owner's original code, so that saved runs reproduce
        bitwise (``tests/test_golden.py``); the values agree to rounding: HAN's init averages
        over nodes first, then takes the product with :math:`\mathbf{q}`; HeCo's takes the
        product per node first, over the stacked tensor or per list entry as given."""
        if self.init == "glorot":
            z = torch.stack(list(zs)) if not isinstance(zs, Tensor) else zs  # [M, N, F]
            w = (torch.tanh(self.lin(z)).mean(dim=1) * self.q).sum(-1)  # [M]
        elif isinstance(zs, Tensor):
            w = (torch.tanh(self.lin(zs)) @ self.q[0]).mean(dim=1)  # [M]
        else:
            w = torch.stack([(torch.tanh(self.lin(z)) @ self.q[0]).mean() for z in zs])  # [M]
        beta = torch.softmax(w, dim=0)  # [M]
        return beta.detach() if self.detach_weights else beta

    def forward(self, zs: Tensor | list[Tensor],
                chunk_rows: int | None = None) -> tuple[Tensor, Tensor]:
        """``(H, beta)``; with ``chunk_rows`` (no-grad inference) the scores are summed over
        chunks of rows (:meth:`weights_from_sums`) and ``H`` accumulated without stacking."""
        if chunk_rows is not None:
            n = zs[0].size(0)
            sums = torch.stack([sum(torch.tanh(self.lin(z[a:b])).sum(0)
                                    for a, b in row_chunks(n, chunk_rows)) for z in zs])
            beta = self.weights_from_sums(sums, n)  # [M]
            h = torch.zeros_like(zs[0])
            for b, z in zip(beta.tolist(), zs):
                h.add_(z, alpha=b)
            return h, beta
        z = torch.stack(list(zs)) if not isinstance(zs, Tensor) else zs  # [M, N, F]
        beta = self.weights(z)
        return (beta.view(-1, 1, 1) * z).sum(0), beta


class MeanFusion(nn.Module):
    r"""Semantic fusion without attention: :math:`\mathbf{H} = \frac{1}{M} \sum_m \mathbf{Z}^m`.

    Not taught in a notebook: the ablation of docs/method.md ("A beta that cannot collapse").
    Notebook 09 shows that in self-supervised training the softmax of :class:`SemanticAttention`
    over meta-paths is bistable (whichever meta-path gets ahead in the first epochs takes all the
    weight, also the one with the lower homophily); a constant :math:`\beta_m = 1/M` cannot
    collapse. Same interface as :class:`SemanticAttention`, so the losses that read
    :math:`\beta` see the constant.
    """

    def forward(self, zs: Tensor | list[Tensor],
                chunk_rows: int | None = None) -> tuple[Tensor, Tensor]:
        """``(H, beta)``; ``chunk_rows`` is accepted for interface parity (nothing to chunk)."""
        z = torch.stack(list(zs)) if not isinstance(zs, Tensor) else zs  # [M, N, F]
        return z.mean(0), self.weights(z)

    def weights(self, zs: Tensor | list[Tensor]) -> Tensor:
        """``beta`` ``[M]``, every entry ``1/M``."""
        return torch.full((len(zs),), 1.0 / len(zs), device=zs[0].device, dtype=zs[0].dtype)


def accept_legacy_semantic_keys(module: nn.Module) -> None:
    """Let ``module`` load state dicts saved before its semantic attention became a
    :class:`SemanticAttention` named ``semantic`` (keys ``sem_lin.*`` and a ``[F]`` ``sem_q``).

    Introduced in notebook 04 (the schema view); used by the feature decoder too."""
    def rename(state_dict: dict, prefix: str, *_: object) -> None:
        for key in [k for k in state_dict if k.startswith(prefix + "sem_")]:
            value = state_dict.pop(key)
            name = key[len(prefix) + 4:]  # "lin.weight", "lin.bias" or "q"
            state_dict[prefix + "semantic." + name] = value.view(1, -1) if name == "q" else value

    module._register_load_state_dict_pre_hook(rename)


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


def _encode_input(encoder: nn.Module, x: Tensor, edge_index_dict: dict[str, Tensor]) -> Tensor:
    """The first steps of both encoders: check the graph keys, feature dropout, input projection."""
    _check_keys(encoder.metapaths, edge_index_dict)
    x = _feature_dropout(x, encoder.feat_drop, encoder.training)
    return _linear(x, encoder.proj.weight, encoder.proj.bias)  # [N, hidden]


class HANEncoder(nn.Module):
    r"""HAN encoder: input projection, a :class:`MetaPathGATConv` per meta-path, semantic attention.

    Introduced in notebook 02.

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
            by it (HAN used 8 heads of 8 channels; HeCo and ``HetCRFConfig.heads`` use 1).
            (default: :obj:`1`)
        num_layers (int, optional): Stacked HAN layers. (default: :obj:`1`)
        feat_drop (float, optional): Feature dropout. (default: :obj:`0.0`)
        attn_drop (float, optional): Dropout on the node-level attention. (default: :obj:`0.0`)
        negative_slope (float, optional): LeakyReLU slope of the attention. (default: :obj:`0.2`)
        semantic_hidden (int, optional): Width of the semantic attention projection (HAN).
            (default: :obj:`128`)
        semantic_fusion (str, optional): ``"attention"`` (HAN's :class:`SemanticAttention`) or
            ``"mean"`` (:class:`MeanFusion`, :math:`\beta_m = 1/M`). (default: :obj:`"attention"`)
        node_attention (str, optional): ``"gat"`` (HAN's node-level attention) or ``"mean"``
            (:class:`MetaPathGATConv` with ``attention=False``: :math:`\alpha_{ij}` = 1 / degree,
            HAN without node-level attention). (default: :obj:`"gat"`)
        activation (str, optional): ``"elu"``, ``"prelu"``, ``"relu"`` or ``"identity"``.
            (default: :obj:`"elu"`)
        backend (str, optional): aggregation backend of every :class:`MetaPathGATConv`:
            ``"reference"``, ``"fused"`` or ``"auto"`` (:func:`resolve_backend`).
            (default: :obj:`"auto"`)

    Shapes:
        - **input:** features :math:`(N, F_{in})` dense or sparse COO; ``{metapath: (2, E_m)}``
        - **output:** :class:`EncoderOutput` (``h`` and each ``z`` of shape
          :math:`(N, \text{hidden})`, ``semantic_attention`` :math:`(M,)`)
    """

    def __init__(self, in_channels: int, hidden_channels: int, metapaths: list[str], heads: int = 1,
                 num_layers: int = 1, feat_drop: float = 0.0, attn_drop: float = 0.0,
                 negative_slope: float = 0.2, semantic_hidden: int = 128, activation: str = "elu",
                 backend: str = "auto", semantic_fusion: str = "attention",
                 node_attention: str = "gat"):
        super().__init__()
        self.metapaths = _check_init(in_channels, hidden_channels, metapaths, num_layers, feat_drop)
        if semantic_fusion not in ("attention", "mean"):
            raise ConfigError(f"semantic_fusion={semantic_fusion!r}: use 'attention' or 'mean'")
        if node_attention not in ("gat", "mean"):
            raise ConfigError(f"node_attention={node_attention!r}: use 'gat' or 'mean'")
        if hidden_channels % heads != 0:
            raise ConfigError(f"hidden_channels={hidden_channels} is not divisible by "
                              f"heads={heads}; pick heads that divide it (64 = 8 heads x 8).")
        self.in_channels, self.hidden_channels, self.heads = in_channels, hidden_channels, heads
        self.num_layers, self.feat_drop = num_layers, feat_drop
        self.proj = nn.Linear(in_channels, hidden_channels)
        self.convs = nn.ModuleList(
            nn.ModuleDict({m: MetaPathGATConv(hidden_channels, hidden_channels, heads,
                                              negative_slope=negative_slope, dropout=attn_drop,
                                              backend=backend,
                                              attention=node_attention == "gat")
                           for m in self.metapaths})
            for _ in range(num_layers))
        self.acts = nn.ModuleList(_activation(activation) for _ in range(num_layers))
        self.semantic = nn.ModuleList(SemanticAttention(hidden_channels, semantic_hidden)
                                      if semantic_fusion == "attention" else MeanFusion()
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
                return_attention_weights: bool = False,
                chunk_rows: int | None = None) -> EncoderOutput:
        """Encode; ``return_attention_weights=True`` also fills ``node_attention`` (costs an
        ``[E, heads]`` tensor per meta-path). ``chunk_rows`` (no-grad inference, without
        attention weights) runs every layer over chunks of that many destination nodes
        (:meth:`MetaPathGATConv.forward`, :meth:`SemanticAttention.forward`): the layer-wise
        inference of :mod:`hetcrf_lite.minibatch`."""
        h = _encode_input(self, x, edge_index_dict)  # [N, hidden]
        for layer, (convs, act, semantic) in enumerate(zip(self.convs, self.acts, self.semantic)):
            h = _feature_dropout(h, self.feat_drop, self.training and layer > 0)
            z, att = {}, {}
            for m in self.metapaths:
                res = convs[m](h, edge_index_dict[m], return_attention_weights, chunk_rows)
                out, att[m] = res if return_attention_weights else (res, None)
                z[m] = act(out)  # [N, hidden]
            h, beta = semantic([z[m] for m in self.metapaths], chunk_rows)
        return EncoderOutput(h, z, att if return_attention_weights else None, beta)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.hidden_channels}, "
                f"metapaths={self.metapaths}, heads={self.heads}, num_layers={self.num_layers})")


# ---------------------------------------------------------------------------------------------
# GCN baseline.
# ---------------------------------------------------------------------------------------------


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

    Not taught in a notebook: the attention-free ablation baseline, with the interface of the HAN
    encoder of notebook 02.
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
                return_attention_weights: bool = False,
                chunk_rows: int | None = None) -> EncoderOutput:
        """Encode; ``return_attention_weights`` is accepted for interface parity (no attention);
        ``chunk_rows`` as for :class:`HANEncoder` (:func:`~hetcrf_lite.sparse.gcn_propagate`)."""
        h = _encode_input(self, x, edge_index_dict)  # [N, hidden]
        for layer, (lins, bias, act) in enumerate(zip(self.lins, self.biases, self.acts)):
            h = _feature_dropout(h, self.feat_drop, self.training and layer > 0)
            z = {m: act(gcn_propagate(edge_index_dict[m], lins[m](h), h.dtype, chunk_rows)
                        + bias[k]) for k, m in enumerate(self.metapaths)}  # [N, hidden] each
            h = torch.stack([z[m] for m in self.metapaths]).mean(0)
        return EncoderOutput(h, z, None, None)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.hidden_channels}, "
                f"metapaths={self.metapaths}, num_layers={self.num_layers})")


# Options that only the attention encoder has: the GCN encoder ignores them, so one config
# (which always carries heads / attn_drop) builds either kind.
_ATTENTION_ONLY = ("heads", "attn_drop", "negative_slope", "semantic_hidden", "backend",
                   "semantic_fusion", "node_attention")


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

    Not taught in a notebook: how the model of notebook 07 builds the configured encoder.
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
