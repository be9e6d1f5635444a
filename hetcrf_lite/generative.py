"""The generative channel: masked feature reconstruction and meta-path edge reconstruction.

HetCRF's generative channel follows the masked graph autoencoders GraphMAE (Hou et al., KDD 2022)
and HGMAE (Tian et al., AAAI 2023): corrupt the input (mask node features, drop meta-path edges),
encode with the shared encoder, decode with a *shallow* decoder, and score the reconstruction with
the scaled cosine error (SCE).

Each loss is split in two steps so a model can share encoder passes between objectives:

* ``corrupt(...)`` builds the corrupted input (masked features / a thinned graph);
* ``loss_from(enc_out, ...)`` scores an :class:`EncoderOutput` already computed on it;
* ``forward(encoder, ...)`` chains both with one encoder call.

Any encoder works that is called as ``encoder(x, edge_index_dict)`` and returns an object with
``h`` ``[N, hidden]``, ``z`` ``{metapath: [N, hidden]}`` and ``semantic_attention`` ``[M]`` or
``None`` (``hetcrf_lite.encoder.EncoderOutput``).

**Choice: where features are masked.** The [MASK] token replaces rows of the tensor handed to the
encoder. Dense features (ACM, DBLP) are masked as they are, with a learnable ``F``-wide token
(GraphMAE). Sparse features (identity features of AMiner and Freebase, sparse bag-of-words) are
masked without densifying when ``token_column=True`` (what :class:`~hetcrf_lite.model.HetCRF`
uses): the input carries one extra, empty column, and a token row becomes the one-hot of that
column (:func:`mask_sparse_features`). The encoder's input layer ``P x + c`` then turns a token
row into ``P[:, F] + c``: the token is a free vector in the projected space (the model class of
GraphMAE's projected token ``P t``), while every other row, feature dropout included, goes
through exactly the encoder's usual math. This beats the two alternatives: densifying (AMiner's
6564 x 6564 identity is 43 M entries, masked, dropped out and projected every step) and masking
after a separate input projection (``input_proj`` with ``mask_channels``, kept for encoders that
cannot take the extra column), which adds a second linear layer and moves feature dropout from
the inputs to the projected rows. Without ``token_column``, sparse features are densified for
masking when ``N * F <= densify_limit`` (the small-graph path). The reconstruction target is
always the features themselves; for sparse ``x`` only the masked rows are densified
(``N_masked x F``), and for an identity not even those (see :class:`FeatureReconstruction`).

**Decoder cost.** The decoders attend and aggregate in the hidden space with the encoder's
:class:`~hetcrf_lite.encoder.MetaPathGATConv` (sparse products, no per-edge messages) and apply
the output projection *after* aggregation, only to the rows scored: a GAT layer with its weight
factored, never an ``N x F`` or ``E x F`` tensor (AMiner: 130 k P-R-P edges x 6564 features
would be 3.4 GiB).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import coalesce, scatter

from .data import one_hot_columns
from .encoder import MetaPathGATConv, SemanticAttention, accept_legacy_semantic_keys
from .errors import ConfigError, DataError
from .sparse import RowIndex, TensorCache, coalesced_plan, csr_plan, sparse_mm

__all__ = [
    "sce_loss",
    "mask_features",
    "with_token_column",
    "mask_sparse_features",
    "MaskSchedule",
    "DecoderGATConv",
    "HANDecoder",
    "FeatureReconstruction",
    "SymmetricSplit",
    "drop_edges",
    "EdgeReconstruction",
]


# ------------------------------------------------------------------------------------------
# Scaled cosine error
# ------------------------------------------------------------------------------------------
def sce_loss(x: Tensor, y: Tensor, gamma: float = 1.0, reduction: str = "mean") -> Tensor:
    r"""Scaled cosine error of GraphMAE, row by row.

    .. math::
        \mathcal{L}_{\mathrm{SCE}} = \frac{1}{|V|} \sum_{i \in V}
        \left(1 - \frac{\mathbf{x}_i^{\top} \mathbf{y}_i}
        {\lVert \mathbf{x}_i \rVert \, \lVert \mathbf{y}_i \rVert}\right)^{\gamma}

    A :math:`\gamma > 1` down-weights rows that are already well reconstructed. An all-zero row
    (DBLP has 39 all-zero author feature rows) has cosine 0 with anything: it contributes a
    constant 1 and no gradient.

    Args:
        x (torch.Tensor): reconstruction ``[R, C]``.
        y (torch.Tensor): target ``[R, C]``.
        gamma (float, optional): the exponent, ``>= 1``. (default: ``1.0``)
        reduction (str, optional): ``"mean"``, ``"sum"`` or ``"none"`` (per row).
            (default: ``"mean"``)

    Introduced in notebook 03.
    """
    if gamma < 1.0:
        raise ConfigError(f"SCE exponent gamma={gamma} must be >= 1 (set gamma_feat/gamma_edge)")
    if x.shape != y.shape:
        raise DataError(f"sce_loss needs equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    cos = (F.normalize(x, dim=-1) * F.normalize(y, dim=-1)).sum(-1)  # [R]
    loss = (1.0 - cos).pow(gamma)  # [R]
    return _reduce(loss, reduction)


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ConfigError(f"reduction={reduction!r}: use 'mean', 'sum' or 'none'")


def _gen_device(generator: torch.Generator | None) -> torch.device:
    """Random draws happen on the generator's device (CPU by default), then move to the data."""
    return torch.device("cpu") if generator is None else generator.device


def _segment_sce(pred: Tensor, target: Tensor, segment: Tensor, num_segments: int,
                 gamma: float) -> Tensor:
    """SCE of sub-rows given as flat values: ``segment[q]`` says which row entry ``q`` belongs to.

    Returns ``[num_segments]``; equals :func:`sce_loss` with ``reduction="none"`` on dense rows
    when every entry of every row is listed.
    """
    dot = scatter(pred * target, segment, 0, num_segments, "sum")  # [S]
    pn = scatter(pred * pred, segment, 0, num_segments, "sum").clamp_min(1e-24).sqrt()  # [S]
    tn = scatter(target * target, segment, 0, num_segments, "sum").sqrt()  # [S]
    cos = dot / (pn.clamp_min(1e-12) * tn.clamp_min(1e-12))  # F.normalize's eps
    return (1.0 - cos).pow(gamma)


# ------------------------------------------------------------------------------------------
# Feature masking
# ------------------------------------------------------------------------------------------
def _as_dense(x: Tensor, densify_limit: int) -> Tensor:
    """Dense view of ``x``; sparse ``x`` is densified only within ``densify_limit`` entries."""
    if not x.is_sparse:
        return x
    n, f = x.shape
    if n * f > densify_limit:
        raise DataError(
            f"sparse features of shape {n} x {f} ({n * f} entries) exceed densify_limit="
            f"{densify_limit}: mask in the projected space instead (pass input_proj and "
            "mask_channels to FeatureReconstruction) or raise densify_limit")
    return x.to_dense()


def mask_features(
    x: Tensor,
    mask_rate: float,
    mask_token: Tensor,
    leave_unchanged: float = 0.0,
    replace_rate: float = 0.1,
    generator: torch.Generator | None = None,
    densify_limit: int = 2**26,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Mask a fraction of the nodes' features as GraphMAE does.

    ``n = floor(mask_rate * N)`` nodes are drawn without replacement. Of them,
    ``floor(leave_unchanged * n)`` keep their features, ``floor(replace_rate * n)`` get the
    features of uniformly drawn nodes, and the rest get the learnable token:

    .. math::
        \tilde{\mathbf{x}}_i = \begin{cases}
        \mathbf{x}_{\mathrm{[MASK]}} & i \in V_{\mathrm{token}} \\
        \mathbf{x}_{\pi(i)} & i \in V_{\mathrm{replace}} \\
        \mathbf{x}_i & \text{otherwise}\end{cases}

    The loss is then taken over every masked node, including the unchanged and replaced ones.

    Args:
        x (torch.Tensor): features ``[N, C]``, dense or sparse COO (densified if
            ``N * C <= densify_limit``, otherwise an error says how to mask after a projection).
        mask_rate (float): fraction of nodes masked, in ``[0, 1)``.
        mask_token (torch.Tensor): the learnable token ``[1, C]`` or ``[C]``.
        leave_unchanged (float, optional): share of masked nodes left as they are.
            (default: ``0.0``)
        replace_rate (float, optional): share of masked nodes given a random node's features.
            (default: ``0.1``)
        generator (torch.Generator, optional): source of randomness. (default: ``None``)
        densify_limit (int, optional): largest ``N * C`` densified for sparse ``x``.
            (default: ``2**26``)

    Returns:
        ``(x_masked [N, C], masked_idx [n], token_idx [n_token])``, index tensors sorted.

    Introduced in notebook 03.
    """
    _check_mask_rates(mask_rate, leave_unchanged, replace_rate)
    x = _as_dense(x, densify_limit)
    token = mask_token.reshape(1, -1)
    if token.shape[1] != x.shape[1]:
        raise ConfigError(f"mask token has {token.shape[1]} channels but x has {x.shape[1]}: "
                          "FeatureReconstruction takes (in_channels=feature width, "
                          "hidden_channels, ...); when masking a projected input, set "
                          "mask_channels to its width")
    masked, token_idx, replaced, donors = _draw_mask(x.shape[0], mask_rate, leave_unchanged,
                                                     replace_rate, generator, x.device)
    out = x.index_put((replaced,), x[donors])  # out of place: x stays intact
    out = out.index_put((token_idx,), token.to(out.dtype).expand(token_idx.numel(), -1))
    return out, masked.sort().values, token_idx.sort().values  # grad of the token rows -> token


def _check_mask_rates(mask_rate: float, leave_unchanged: float, replace_rate: float) -> None:
    if not 0.0 <= mask_rate < 1.0:
        raise ConfigError(f"mask_rate={mask_rate} must lie in [0, 1)")
    if leave_unchanged < 0 or replace_rate < 0 or leave_unchanged + replace_rate > 1.0:
        raise ConfigError(f"leave_unchanged={leave_unchanged} and replace_rate={replace_rate} "
                          "must be >= 0 and sum to at most 1")


def _draw_mask(n_nodes: int, mask_rate: float, leave_unchanged: float, replace_rate: float,
               generator: torch.Generator | None,
               device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """GraphMAE's draws, shared by the dense and the sparse masking so that one seed gives one
    mask whatever the storage: ``(masked [n], token_idx, replaced, donors)``, unsorted."""
    num_mask = int(mask_rate * n_nodes)
    gdev = _gen_device(generator)
    masked = torch.randperm(n_nodes, generator=generator, device=gdev)[:num_mask].to(device)
    n_keep, n_rep = int(leave_unchanged * num_mask), int(replace_rate * num_mask)
    n_tok = num_mask - n_keep - n_rep
    order = torch.randperm(num_mask, generator=generator, device=gdev).to(device)
    token_idx = masked[order[:n_tok]]  # [n_token]
    replaced = masked[order[n_tok:n_tok + n_rep]]  # [n_rep]
    donors = torch.randperm(n_nodes, generator=generator, device=gdev)[:n_rep].to(device)
    return masked, token_idx, replaced, donors


def with_token_column(x: Tensor) -> Tensor:
    """Sparse features ``[N, F]`` with one empty column appended, ``[N, F + 1]``: the [MASK]
    column of :func:`mask_sparse_features` (the encoder then takes ``F + 1`` input channels;
    the clean input never uses the extra column, so clean encodings are unchanged).

    Args:
        x (torch.Tensor): sparse COO features ``[N, F]``.

    Introduced in notebook 03.
    """
    if not x.is_sparse:
        raise DataError("with_token_column pads sparse COO features; dense features are masked "
                        "with a feature-space token (mask_features)")
    x = x.coalesce()
    return torch.sparse_coo_tensor(x.indices(), x.values(), (x.shape[0], x.shape[1] + 1),
                                   check_invariants=False, is_coalesced=True)


def mask_sparse_features(
    x: Tensor,
    mask_rate: float,
    leave_unchanged: float = 0.0,
    replace_rate: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""GraphMAE's masking of sparse features without densifying: the token is a column.

    ``x`` is :func:`with_token_column` of the features: its last column :math:`c` is the [MASK]
    column. The same draws as :func:`mask_features` (same seed, same nodes), but a token row
    becomes the one-hot :math:`\mathbf{e}_c` instead of a dense learnable row:

    .. math::
        \tilde{\mathbf{x}}_i = \begin{cases}
        \mathbf{e}_c & i \in V_{\mathrm{token}} \\
        \mathbf{x}_{\pi(i)} & i \in V_{\mathrm{replace}} \\
        \mathbf{x}_i & \text{otherwise}\end{cases}

    After the encoder's input layer :math:`\mathbf{P}\tilde{\mathbf{x}}_i + \mathbf{c}`, a
    token row is :math:`\mathbf{P}_{:,c} + \mathbf{c}`: the [MASK] token *is* the encoder's
    input-weight column :math:`c` (a [MASK] entry of the input vocabulary, as in BERT), a free
    vector in the projected space like GraphMAE's projected token :math:`\mathbf{P}\mathbf{t}`.
    Every other row goes through exactly the encoder's usual math (feature dropout included).
    ``O(nnz)``, and the output is built coalesced (row-major, columns sorted), so the encoder's
    sparse dropout does not sort it again.

    Args:
        x (torch.Tensor): sparse COO ``[N, C]``, last column empty (the [MASK] column).
        mask_rate (float): fraction of nodes masked, in ``[0, 1)``.
        leave_unchanged (float, optional): share of masked nodes left as they are.
            (default: ``0.0``)
        replace_rate (float, optional): share of masked nodes given a random node's features.
            (default: ``0.1``)
        generator (torch.Generator, optional): source of randomness. (default: ``None``)

    Returns:
        ``(x_masked [N, C] sparse, masked_idx [n], token_idx [n_token])``, index tensors sorted.

    Introduced in notebook 03.
    """
    _check_mask_rates(mask_rate, leave_unchanged, replace_rate)
    if not x.is_sparse:
        raise DataError("mask_sparse_features takes sparse COO features with a [MASK] column "
                        "(with_token_column(x)); mask dense features with mask_features")
    x = x.coalesce()
    n, c = x.shape
    dev = x.device
    val = x.values()
    if bool((x.indices()[1] == c - 1).any()):
        raise DataError(f"the last column ({c - 1}) of x is the [MASK] column and must be empty: "
                        "pass with_token_column(features)")
    masked, token_idx, replaced, donors = _draw_mask(n, mask_rate, leave_unchanged,
                                                     replace_rate, generator, dev)
    # the stored rows plus a virtual row n holding the token entry (column c - 1, value 1); each
    # output row reads one of them: its own, its donor's, or the token row
    rows = RowIndex.build(torch.cat([x.indices(), x.indices().new_tensor([[n], [c - 1]])], 1),
                          n + 1, by=0)
    val_ext = torch.cat([val, val.new_ones(1)])  # [nnz + 1]
    src = torch.arange(n, device=dev).index_put((replaced,), donors).index_fill(0, token_idx, n)
    out_row, pos = rows.gather(src)  # [nnz'] row-major, columns in stored order
    out = torch.sparse_coo_tensor(torch.stack([out_row, rows.col[pos]]), val_ext[pos], (n, c),
                                  check_invariants=False, is_coalesced=True)  # valid by build
    return out, masked.sort().values, token_idx.sort().values


@dataclass(frozen=True)
class MaskSchedule:
    r"""HGMAE's mask-rate schedule, clipped at ``end``.

    .. math::
        r(e) = \min(r_{\mathrm{start}} + e \cdot \Delta r, \; r_{\mathrm{end}})

    Args:
        start (float): rate at epoch 0, in ``[0, 1)``.
        step (float, optional): increase per epoch, ``>= 0``. (default: ``0.0``)
        end (float, optional): ceiling, in ``[start, 1)``; ``None`` means ``start``.
            (default: ``None``)

    Introduced in notebook 03.
    """

    start: float
    step: float = 0.0
    end: float | None = None

    def __post_init__(self) -> None:
        end = self.start if self.end is None else self.end
        if not 0.0 <= self.start < 1.0:
            raise ConfigError(f"mask schedule start={self.start} must lie in [0, 1)")
        if not self.start <= end < 1.0:
            raise ConfigError(f"mask schedule end={end} must lie in [start={self.start}, 1)")
        if self.step < 0:
            raise ConfigError(f"mask schedule step={self.step} must be >= 0")

    def __call__(self, epoch: int) -> float:
        end = self.start if self.end is None else self.end
        return min(self.start + self.step * epoch, end)


# ------------------------------------------------------------------------------------------
# Shallow decoders
# ------------------------------------------------------------------------------------------
class DecoderGATConv(nn.Module):
    r"""One GAT layer that projects after aggregating, for cheap wide outputs.

    Attention and aggregation run in the hidden space (:class:`MetaPathGATConv` of the encoder,
    ``K`` heads of width ``in_channels``, no per-edge messages); the output map
    :math:`\mathbf{W}^k` is applied afterwards, only to the rows requested:

    .. math::
        \alpha^k_{i,j} = \operatorname{softmax}_{j \in \mathcal{N}(i)}\left(
        \mathrm{LeakyReLU}\left(\mathbf{a}^{k\top}_{\mathrm{dst}} \mathbf{V}^k \mathbf{h}_i +
        \mathbf{a}^{k\top}_{\mathrm{src}} \mathbf{V}^k \mathbf{h}_j\right)\right)

    .. math::
        \mathbf{x}'_i = \frac{1}{K} \sum_{k=1}^{K} \mathbf{W}^k
        \sum_{j \in \mathcal{N}(i)} \alpha^k_{i,j} \mathbf{V}^k \mathbf{h}_j + \mathbf{b}

    This is GAT's layer (heads averaged) with its weight factored as
    :math:`\mathbf{W}^k\mathbf{V}^k`, which loses nothing since the weight of a layer from
    ``in_channels`` to a wider output has rank at most ``in_channels`` anyway. Messages stay
    ``in_channels`` wide: for AMiner's one-hot features a GAT with 6564 output channels would
    otherwise aggregate 6564-wide rows. A node without incoming edges outputs the bias.

    Args:
        in_channels (int): width of :math:`\mathbf{h}`.
        out_channels (int): width of the output.
        heads (int, optional): attention heads, averaged. (default: ``1``)
        negative_slope (float, optional): LeakyReLU slope. (default: ``0.2``)
        attn_drop (float, optional): dropout on the attention weights. (default: ``0.0``)
        attention (bool, optional): ``False`` weighs neighbours uniformly (the neighbour mean,
            ``MetaPathGATConv(attention=False)``). (default: ``True``)

    Shapes:
        input ``h [N, in_channels]``, ``edge_index [2, E]``; output ``[R, out_channels]`` for
        ``R`` requested rows (all ``N`` by default).

    Introduced in notebook 03.
    """

    def __init__(self, in_channels: int, out_channels: int, heads: int = 1,
                 negative_slope: float = 0.2, attn_drop: float = 0.0,
                 attention: bool = True) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.heads = in_channels, out_channels, heads
        self.gat = MetaPathGATConv(in_channels, heads * in_channels, heads, concat=True,
                                   negative_slope=negative_slope, dropout=attn_drop, bias=False,
                                   attention=attention)
        self.lin = nn.Linear(heads * in_channels, out_channels)

    def reset_parameters(self) -> None:
        self.gat.reset_parameters()
        self.lin.reset_parameters()

    def aggregate(self, h: Tensor, edge_index: Tensor) -> Tensor:
        """Attention-weighted neighbour sums ``[N, heads * in_channels]`` (before the map W)."""
        return self.gat(h, edge_index)

    def project(self, agg: Tensor) -> Tensor:
        """Apply the (head-averaged) output map to aggregated rows."""
        return self.lin(agg / self.heads)  # mean over heads = one linear map on the concat

    def forward(self, h: Tensor, edge_index: Tensor, index: Tensor | None = None) -> Tensor:
        agg = self.aggregate(h, edge_index)  # [N, heads * C_in]
        return self.project(agg if index is None else agg[index])  # [R, C_out]

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
                f"heads={self.heads})")


class HANDecoder(nn.Module):
    r"""A one-layer HAN decoder: one :class:`DecoderGATConv` per meta-path, fused semantically.

    With :math:`\mathbf{a}^m_i` the aggregated (pre-projection) row of node :math:`i` under
    meta-path :math:`m`, semantic attention is computed in that hidden space:

    .. math::
        w_m = \frac{1}{N} \sum_i \mathbf{q}^{\top} \tanh(\mathbf{W}_s \mathbf{a}^m_i +
        \mathbf{b}_s), \qquad \beta = \operatorname{softmax}(w), \qquad
        \hat{\mathbf{x}}_i = \sum_m \beta_m \mathrm{GAT}_m(\mathbf{h})_i

    (HAN computes :math:`w_m` on the projected outputs; computing it before the projection keeps
    every node's ``F``-wide output unmaterialised.) ``fusion="mean"`` uses
    :math:`\beta_m = 1/M`.

    Args:
        in_channels (int): hidden width.
        out_channels (int): output width (the feature dimension ``F``).
        metapaths (list[str]): meta-path names, the keys of ``edge_index_dict``.
        heads (int, optional): attention heads per meta-path. (default: ``1``)
        fusion (str, optional): ``"semantic"`` or ``"mean"``. (default: ``"semantic"``)
        attn_drop (float, optional): attention dropout. (default: ``0.0``)
        attention (bool, optional): node-level attention; ``False``: the neighbour mean.
            (default: ``True``)

    Introduced in notebook 03.
    """

    def __init__(self, in_channels: int, out_channels: int, metapaths: list[str], heads: int = 1,
                 fusion: str = "semantic", attn_drop: float = 0.0,
                 attention: bool = True) -> None:
        super().__init__()
        if fusion not in ("semantic", "mean"):
            raise ConfigError(f"decoder fusion={fusion!r}: use 'semantic' or 'mean'")
        if not metapaths:
            raise ConfigError("HANDecoder needs at least one meta-path")
        self.metapaths, self.fusion = list(metapaths), fusion
        self.convs = nn.ModuleDict({m: DecoderGATConv(in_channels, out_channels, heads,
                                                      attn_drop=attn_drop, attention=attention)
                                    for m in metapaths})
        self.semantic = SemanticAttention(heads * in_channels, in_channels, init="normal")
        self.semantic.reset_query()  # W keeps nn.Linear's own initialisation
        accept_legacy_semantic_keys(self)

    def weights(self, aggs: list[Tensor]) -> Tensor:
        """The meta-path weights ``[M]`` from the aggregations (semantic attention, or 1/M)."""
        if self.fusion == "semantic":
            return self.semantic.weights(aggs)  # [M]
        return aggs[0].new_full((len(aggs),), 1.0 / len(aggs))  # [M]

    def forward(self, h: Tensor, edge_index_dict: dict[str, Tensor],
                index: Tensor | None = None) -> Tensor:
        aggs = [self.convs[m].aggregate(h, edge_index_dict[m]) for m in self.metapaths]
        beta = self.weights(aggs)  # [M]
        return sum(b * self.convs[m].project(a if index is None else a[index])  # [R, F]
                   for b, m, a in zip(beta, self.metapaths, aggs))


# ------------------------------------------------------------------------------------------
# Masked feature reconstruction
# ------------------------------------------------------------------------------------------
class FeatureReconstruction(nn.Module):
    r"""Masked attribute reconstruction (GraphMAE / HGMAE) with a shallow HAN decoder.

    Mask (see :func:`mask_features`), encode, map to the decoder space, re-mask, decode, score:

    .. math::
        \mathbf{H} = f_E(\tilde{\mathbf{X}}, \{A^m\}), \quad
        \mathbf{H}' = \mathbf{H} \mathbf{W}_{ED}, \quad
        \mathbf{H}'_{V_{\mathrm{mask}}} = \mathbf{0}, \quad
        \hat{\mathbf{X}} = f_D(\mathbf{H}', \{A^m\}), \quad
        \mathcal{L} = \mathrm{SCE}_{\gamma}(\hat{\mathbf{X}}_{V_{\mathrm{mask}}},
        \mathbf{X}_{V_{\mathrm{mask}}})

    Only masked rows are decoded and, for sparse ``x``, only they are densified
    (``N_masked x F``). Where the token lives (see the module docstring): a learnable ``F``-wide
    row for dense ``x``; with ``token_column=True`` an extra input column of sparse ``x``
    (:func:`mask_sparse_features`: nothing densified, every un-masked row encoded exactly as
    the clean input); after ``input_proj`` with ``mask_channels`` wide tokens otherwise.

    **One-hot targets without the F-wide rows.** When the target is an identity
    (:func:`~hetcrf_lite.data.is_identity`; AMiner, Freebase; or any sparse one-hot rows, such
    as a subset of an identity's rows), masked node :math:`i`'s target row is
    :math:`\mathbf{e}_i` (the one-hot of its column). The decoder is a GAT aggregation in the
    hidden space followed by a linear output map (:class:`HANDecoder`), so its output is affine
    in the fused aggregation :math:`\mathbf{g}_i = \Vert_m \beta_m \mathbf{a}^m_i / K` (``K``
    heads averaged): :math:`\hat{\mathbf{x}}_i = \mathbf{W}\mathbf{g}_i + \mathbf{b}` with
    :math:`\mathbf{W} = [\mathbf{W}^1 \cdots \mathbf{W}^M]` ``[F, M K C]`` and
    :math:`\mathbf{b} = \sum_m \beta_m \mathbf{b}^m`. Then, exactly,

    .. math::
        \cos(\hat{\mathbf{x}}_i, \mathbf{e}_i) = \frac{\hat{x}_{i,i}}
        {\lVert \hat{\mathbf{x}}_i \rVert}, \qquad
        \lVert \hat{\mathbf{x}}_i \rVert^2 = \mathbf{g}_i^{\top} (\mathbf{W}^{\top}\mathbf{W})
        \mathbf{g}_i + 2\, \mathbf{b}^{\top}\mathbf{W}\mathbf{g}_i + \lVert\mathbf{b}\rVert^2

    one Gram matrix per step and ``O((M K C)^2)`` per row instead of ``O(F M K C)``: the
    ``N_masked x F`` decoded block (AMiner: 3282 x 6564 at mask rate 0.5) is never formed.

    Args:
        in_channels (int): feature dimension ``F`` (the reconstruction target).
        hidden_channels (int): encoder output width.
        metapaths (list[str]): meta-path names, the keys of ``edge_index_dict``.
        mask_rate (float or MaskSchedule, optional): fraction of nodes masked, or a schedule over
            epochs. (default: ``0.5``)
        leave_unchanged (float, optional): share of masked nodes left unchanged. (default: ``0.0``)
        replace_rate (float, optional): share of masked nodes given random nodes' features.
            (default: ``0.1``)
        gamma (float, optional): SCE exponent. (default: ``2.0``)
        mask_channels (int, optional): width of the token, when masking after an input projection;
            ``None`` means ``in_channels``. (default: ``None``)
        heads (int, optional): decoder attention heads. (default: ``1``)
        fusion (str, optional): decoder fusion, ``"semantic"`` or ``"mean"``.
            (default: ``"semantic"``)
        attn_drop (float, optional): decoder attention dropout. (default: ``0.0``)
        attention (bool, optional): the decoder's node-level attention; ``False``: the
            neighbour mean. (default: ``True``)
        densify_limit (int, optional): largest ``N * F`` densified for masking sparse ``x``
            (without ``token_column``). (default: ``2**26``)
        token_column (bool, optional): mask sparse ``x`` with a [MASK] column
            (:func:`mask_sparse_features`); ``x`` is then :func:`with_token_column` of the
            features (``F + 1`` wide, as the encoder's input) and the module holds no token of
            its own. (default: ``False``)

    Introduced in notebook 03.
    """

    def __init__(self, in_channels: int, hidden_channels: int, metapaths: list[str],
                 mask_rate: float | MaskSchedule = 0.5, leave_unchanged: float = 0.0,
                 replace_rate: float = 0.1, gamma: float = 2.0, mask_channels: int | None = None,
                 heads: int = 1, fusion: str = "semantic", attn_drop: float = 0.0,
                 densify_limit: int = 2**26, token_column: bool = False,
                 attention: bool = True) -> None:
        super().__init__()
        if gamma < 1.0:
            raise ConfigError(f"gamma={gamma}: the SCE exponent must be >= 1")
        self.schedule = (mask_rate if isinstance(mask_rate, MaskSchedule)
                         else MaskSchedule(mask_rate))
        _check_mask_rates(self.schedule.start, leave_unchanged, replace_rate)
        if token_column and mask_channels is not None:
            raise ConfigError("token_column=True makes the token an input column of the encoder; "
                              "mask_channels (a token after an input projection) does not apply")
        self.metapaths = list(metapaths)
        self.in_channels, self.token_column = in_channels, token_column
        self.leave_unchanged, self.replace_rate, self.gamma = leave_unchanged, replace_rate, gamma
        self.densify_limit = densify_limit
        if token_column:
            self.register_parameter("mask_token", None)  # the encoder's input column holds it
        else:
            # GraphMAE initialises the token at zero and learns it
            self.mask_token = nn.Parameter(torch.zeros(1, mask_channels or in_channels))
        self.enc_to_dec = nn.Linear(hidden_channels, hidden_channels, bias=False)
        self.decoder = HANDecoder(hidden_channels, in_channels, metapaths, heads, fusion, attn_drop,
                                  attention)

    def mask_rate(self, epoch: int | None = None) -> float:
        """The scheduled mask rate at ``epoch`` (epoch 0 when ``None``)."""
        return self.schedule(0 if epoch is None else epoch)

    def _rate(self, mask_rate: float | None, epoch: int | None) -> float:
        if epoch is not None and not isinstance(epoch, int):
            raise ConfigError(f"epoch={epoch!r} must be an int; pass a float rate as mask_rate")
        return self.mask_rate(epoch) if mask_rate is None else float(mask_rate)

    def corrupt(self, x: Tensor, mask_rate: float | None = None, epoch: int | None = None,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Mask ``x`` at ``mask_rate``, or at the scheduled rate of ``epoch`` when ``mask_rate``
        is ``None``; see :func:`mask_features` (:func:`mask_sparse_features` with
        ``token_column``)."""
        rate = self._rate(mask_rate, epoch)
        if self.token_column:
            return mask_sparse_features(x, rate, self.leave_unchanged, self.replace_rate,
                                        generator)
        return mask_features(x, rate, self.mask_token, self.leave_unchanged, self.replace_rate,
                             generator, self.densify_limit)

    def loss_from(self, enc_out: Any, x: Tensor, masked_idx: Tensor,
                  edge_index_dict: dict[str, Tensor]) -> Tensor:
        """SCE between decoded and original rows of ``masked_idx``, from an encoder output
        computed on the masked input. ``x`` holds the targets: ``[N, F]``, or the
        :func:`with_token_column` input ``[N, F + 1]`` (its empty [MASK] column is ignored)."""
        if masked_idx.numel() == 0:
            return enc_out.h.sum() * 0.0  # keeps the graph connected for backward()
        h = self.enc_to_dec(enc_out.h)  # [N, hidden]
        h = h.index_fill(0, masked_idx, 0.0)  # re-mask: the decoder must infer masked rows
        padded = x.is_sparse and x.shape[1] == self.in_channels + 1
        cols = one_hot_columns(x, self.in_channels)  # [N] or None
        if cols is not None:  # identity features, or rows of them
            return self._one_hot_loss(h, edge_index_dict, masked_idx, cols[masked_idx])
        x_hat = self.decoder(h, edge_index_dict, index=masked_idx)  # [n, F]
        target = x.index_select(0, masked_idx)  # [n, F], sparse stays sparse
        target = target.to_dense() if target.is_sparse else target
        if padded:
            target = target[:, :self.in_channels]  # drop the (empty) [MASK] column
        return sce_loss(x_hat, target.to(x_hat.dtype), self.gamma)

    def _one_hot_loss(self, h: Tensor, edge_index_dict: dict[str, Tensor], rows: Tensor,
                      cols: Tensor) -> Tensor:
        """SCE of decoded rows ``rows`` against the one-hot targets ``e_{cols}``, through the
        Gram matrix of the decoder's output map (see the class docstring).

        Neither torch nor PyG has this: a plain decoder would form the ``[n, F]`` block (AMiner:
        21 M entries, then as many for its gradient) only to read one entry of each row and its
        norm; both follow from ``W^T W``, ``W^T b`` and ``b``."""
        dec = self.decoder
        convs = [dec.convs[m] for m in dec.metapaths]
        aggs = [conv.aggregate(h, edge_index_dict[m])
                for conv, m in zip(convs, dec.metapaths)]  # M x [N, K C]
        beta = dec.weights(aggs)  # [M]
        g = torch.cat([b * a[rows] / conv.heads
                       for b, a, conv in zip(beta, aggs, convs)], dim=1)  # [n, M K C]
        weight = torch.cat([conv.lin.weight for conv in convs], dim=1)  # [F, M K C]
        bias = sum(b * conv.lin.bias for b, conv in zip(beta, convs))  # [F]
        num = (weight[cols] * g).sum(-1) + bias[cols]  # [n] entry c_i of the decoded row
        gram = weight.t() @ weight  # [M K C, M K C]
        sq = ((g @ gram) * g).sum(-1) + 2.0 * (g @ (weight.t() @ bias)) + bias.dot(bias)  # [n]
        norm = sq.clamp_min(1e-24).sqrt()  # clamp inside: finite gradient at 0
        cos = num / norm.clamp_min(1e-12)  # F.normalize's eps; the target has norm 1
        return (1.0 - cos).pow(self.gamma).mean()

    def forward(self, encoder: Callable[..., Any], x: Tensor, edge_index_dict: dict[str, Tensor],
                mask_rate: float | None = None, epoch: int | None = None,
                generator: torch.Generator | None = None,
                input_proj: Callable[[Tensor], Tensor] | None = None,
                target: Tensor | None = None) -> tuple[Tensor, dict]:
        """Mask, encode with ``encoder``, decode and score.

        The rate is ``mask_rate`` if given, else the schedule's rate at ``epoch``.
        ``input_proj``, when given, maps ``x`` before masking (mask in the projected space).
        ``target``, when given, is what is reconstructed instead of ``x`` (e.g. the identity,
        when ``x`` is a learned embedding table). Returns ``(loss, info)``; ``info`` holds
        ``mask_rate``, ``num_masked``, ``num_token`` and the ``encoder_output`` of the masked
        pass.
        """
        if self.token_column and input_proj is not None:
            raise ConfigError("token_column=True masks the sparse input itself; input_proj "
                              "(masking after a projection) needs token_column=False")
        rate = self._rate(mask_rate, epoch)
        x_in = x if input_proj is None else input_proj(x)
        x_masked, masked_idx, token_idx = self.corrupt(x_in, mask_rate=rate, generator=generator)
        enc_out = encoder(x_masked, edge_index_dict)
        loss = self.loss_from(enc_out, x if target is None else target, masked_idx,
                              edge_index_dict)
        info = {"mask_rate": rate, "num_masked": int(masked_idx.numel()),
                "num_token": int(token_idx.numel()), "encoder_output": enc_out}
        return loss, info


# ------------------------------------------------------------------------------------------
# Meta-path edge reconstruction
# ------------------------------------------------------------------------------------------
class SymmetricSplit:
    """How :func:`drop_edges` thins one symmetric graph: the pair each edge belongs to.

    The pairs are the ``i < j`` edges, numbered ``0 .. P-1`` in their order in ``edge_index``;
    ``pair_id[e]`` is that number for the edge and for its mirror ``(j, i)``, and ``P +`` the
    rank among the self-loops for a self-loop. One draw per pair then thins the graph with a
    single gather, and the kept edges stay in the input's column order (a graph sorted by
    (destination, source) stays sorted: the encoder needs no sort and no separate transposed
    plan for it). Costs 4 bytes per edge (int32), against 8 for the ``[2, P]`` int64 pairs it
    replaces; the pairs and self-loops are rebuilt from the graph when asked for
    (:attr:`pairs`, :attr:`self_loops`). Raises :class:`DataError` unless the ``i < j`` and
    ``i > j`` edges mirror each other exactly.

    Introduced in notebook 03 (edge dropping).
    """

    def __init__(self, edge_index: Tensor) -> None:
        row, col = edge_index
        upper, lower = row < col, row > col  # [E]
        num_pairs = int(upper.sum())
        sym_error = DataError("drop_edges(symmetric=True) needs a symmetric edge_index (as "
                              "meta-path graphs are); pass symmetric=False for a directed graph")
        if num_pairs != int(lower.sum()):
            raise sym_error
        E = row.numel()
        idx = torch.int32 if E < 2**31 - 1 else torch.int64
        pair_id = torch.empty(E, dtype=idx, device=row.device)
        pair_id[upper] = torch.arange(num_pairs, dtype=idx, device=row.device)
        loops = row == col
        num_loops = E - 2 * num_pairs
        pair_id[loops] = torch.arange(num_pairs, num_pairs + num_loops, dtype=idx,
                                      device=row.device)
        if num_pairs:
            # Each mirror edge takes the number of its pair: the pair keys (min, max) of the
            # i < j and of the i > j edges, each sorted, must agree one by one (a symmetric
            # multiset, duplicates included); the t-th mirror in key order gets the t-th pair.
            n = int(edge_index.max()) + 1
            up_key, up_rank = torch.sort(row[upper] * n + col[upper], stable=True)  # [P]
            low_key, low_rank = torch.sort(col[lower] * n + row[lower], stable=True)  # [P]
            if not torch.equal(up_key, low_key):
                raise sym_error
            del up_key, low_key
            mirror_pos = torch.nonzero(lower).squeeze(1)[low_rank]  # [P] positions in E
            pair_id[mirror_pos] = up_rank.to(idx)
        self.edge_index, self.pair_id = edge_index, pair_id
        self.num_pairs, self.num_loops = num_pairs, num_loops

    @property
    def num_edges(self) -> int:
        return int(self.pair_id.numel())

    @property
    def pairs(self) -> Tensor:
        """The ``i < j`` edges ``[2, P]``, in their order in ``edge_index``."""
        return self.edge_index[:, self.edge_index[0] < self.edge_index[1]]

    @property
    def self_loops(self) -> Tensor:
        """The self-loops ``[2, L]``, in their order in ``edge_index``."""
        return self.edge_index[:, self.edge_index[0] == self.edge_index[1]]


def _drop_mask(edge_index: Tensor, drop_rate: float, generator: torch.Generator | None = None,
               keep_self_loops: bool = True, symmetric: bool = True,
               split: SymmetricSplit | None = None) -> Tensor:
    """``[E]`` bool, ``True`` for the edges :func:`drop_edges` keeps (same arguments)."""
    if not 0.0 <= drop_rate < 1.0:
        raise ConfigError(f"edge drop_rate={drop_rate} must lie in [0, 1)")
    if split is not None and not symmetric:
        raise ConfigError("drop_edges: split (pairs, self-loops) applies to symmetric=True only")
    row, col = edge_index
    gdev = _gen_device(generator)

    def draw(count: int) -> Tensor:  # True = keep, one draw per edge (or pair)
        return torch.rand(count, generator=generator, device=gdev).to(row.device) >= drop_rate

    if not symmetric:
        keep = torch.ones_like(row, dtype=torch.bool)
        movable = row != col if keep_self_loops else torch.ones_like(keep)
        keep[movable] = draw(int(movable.sum()))
        return keep
    split = SymmetricSplit(edge_index) if split is None else split
    if not isinstance(split, SymmetricSplit) or split.num_edges != edge_index.shape[1]:
        got = (f"one of {split.num_edges} edges" if isinstance(split, SymmetricSplit)
               else type(split).__name__)
        raise DataError(f"drop_edges: split is {got}, not the split of this edge_index "
                        f"({edge_index.shape[1]} edges): pass SymmetricSplit(edge_index)")
    keep_pair = draw(split.num_pairs)  # the draws of the pairs, then of the self-loops
    keep_loop = (torch.ones(split.num_loops, dtype=torch.bool, device=row.device)
                 if keep_self_loops else draw(split.num_loops))
    return torch.cat([keep_pair, keep_loop]).index_select(0, split.pair_id)  # [E]


def drop_edges(edge_index: Tensor, drop_rate: float, generator: torch.Generator | None = None,
               keep_self_loops: bool = True, symmetric: bool = True,
               split: SymmetricSplit | None = None) -> tuple[Tensor, Tensor]:
    """Drop each edge (each pair, with ``symmetric``) with probability ``drop_rate``.

    Written here instead of ``torch_geometric.utils.dropout_edge`` because that takes no
    generator (runs would not be reproducible) and cannot spare self-loops.

    Choices: self-loops are kept (meta-path graphs carry them, and a node whose every edge was
    dropped would otherwise have no neighbour at all for attention); with ``symmetric`` one
    draw decides the pair ``(i, j), (j, i)``, so the thinned graph stays a symmetric meta-path
    graph. The pairs are the ``i < j`` edges; each mirror edge is matched to its pair once per
    graph (two sorts of the pair keys, which also check the symmetry exactly) and every call is
    then one draw per pair and one gather, ``O(E)``. Matching the pairs is most of an uncached
    call's cost and never changes for a graph: callers that thin the same graph every step pass
    it as ``split`` (:class:`EdgeReconstruction` caches it per meta-path); the result is the
    same.

    Args:
        edge_index (torch.Tensor): ``[2, E]``; symmetric when ``symmetric`` is set.
        drop_rate (float): probability of dropping an edge, in ``[0, 1)``.
        generator (torch.Generator, optional): source of randomness. (default: ``None``)
        keep_self_loops (bool, optional): never drop ``(i, i)``. (default: ``True``)
        symmetric (bool, optional): drop ``(i, j)`` and ``(j, i)`` together. (default: ``True``)
        split (optional): the precomputed pair split of this ``edge_index``,
            ``SymmetricSplit(edge_index)``, as :class:`EdgeReconstruction` caches it
            (``symmetric`` only). (default: ``None``, computed here)

    Returns:
        ``(kept [2, E'], dropped [2, E - E'])``, each in the column order of ``edge_index`` (a
        graph sorted by (destination, source), as meta-path graphs are stored, stays sorted).

    Introduced in notebook 03.
    """
    keep = _drop_mask(edge_index, drop_rate, generator, keep_self_loops, symmetric, split)
    return edge_index[:, keep], edge_index[:, ~keep]


class EdgeReconstruction(nn.Module):
    r"""Meta-path edge reconstruction, each meta-path's loss weighted by semantic attention.

    For meta-path :math:`m`: drop edges (:func:`drop_edges`), encode on the thinned graphs,
    map and decode per meta-path, :math:`\mathbf{D}^m = f^m_D(\mathbf{H}\mathbf{W}_{ED})`, and
    reconstruct the *full* adjacency row by row:

    .. math::
        \hat{A}^m_{i,:} = \mathbf{d}^{m\top}_i \mathbf{D}^{m\top}, \qquad
        \mathcal{L} = \sum_m \beta_m \,
        \frac{1}{N}\sum_i \left(1 - \cos(\hat{A}^m_{i,:}, A^m_{i,:})\right)^{\gamma}

    with :math:`\beta` the encoder's semantic attention on the thinned graphs, detached by
    default (choice: otherwise the loss would steer the attention towards whichever meta-path
    is easiest to reconstruct, rather than letting the encoder's attention weigh the losses).
    Encoders without semantic attention (``semantic_attention is None``) get
    :math:`\beta_m = 1/M`.

    **All rows, exactly, without N x N.** The inner-product decoder lets the row cosine
    factorise, with :math:`\mathcal{N}(i)` the neighbours of :math:`i` in :math:`A^m`:

    .. math::
        \langle \hat{A}_{i,:}, A_{i,:} \rangle = \mathbf{d}_i^{\top}
        \sum_{j \in \mathcal{N}(i)} \mathbf{d}_j, \qquad
        \lVert \hat{A}_{i,:} \rVert^2 = \mathbf{d}_i^{\top} (\mathbf{D}^{\top}\mathbf{D})
        \mathbf{d}_i, \qquad \lVert A_{i,:} \rVert^2 = |\mathcal{N}(i)|

    so scoring every row costs one sparse product and a ``hidden x hidden`` Gram matrix,
    ``O(E h + N h^2)``, and equals the dense ``N x N`` formula (the tests check it against the
    materialised matrix). This runs up to ``dense_threshold`` nodes.

    **Sampled rows beyond (choice).** Past ``dense_threshold`` nodes, ``num_rows`` anchor rows
    are drawn per call; each is scored on its edges plus ``neg_ratio`` times as many uniformly
    drawn non-edges, the SCE taken over those sub-rows (``O(rows * degree)``). The exact form
    above is linear in ``E`` and usually cheaper (on ACM, whose P-S-P rows hold ~1000 edges,
    1024 sampled rows cost more than all rows): raise the threshold unless memory says otherwise.

    Args:
        hidden_channels (int): encoder output width.
        metapaths (list[str]): meta-path names, in the order of the encoder's semantic attention.
        drop_rate (float, optional): fraction of each meta-path's edges dropped. (default: ``0.5``)
        gamma (float, optional): SCE exponent. (default: ``1.0``)
        decoder (str, optional): ``"gat"`` (one :class:`DecoderGATConv` per meta-path on the
            thinned graph) or ``"linear"`` (one linear map per meta-path). (default: ``"gat"``)
        source (str, optional): decode from the fused ``"h"`` or from each meta-path's own
            ``"z"``. (default: ``"h"``)
        heads (int, optional): decoder attention heads. (default: ``1``)
        detach_beta (bool, optional): stop gradients through the weights. (default: ``True``)
        dense_threshold (int, optional): largest ``N`` whose every row is scored (exactly);
            beyond, rows are sampled. (default: ``10000``)
        num_rows (int, optional): anchor rows per call in the sampled form. (default: ``1024``)
        neg_ratio (float, optional): sampled non-edges per edge in the sampled form.
            (default: ``1.0``)
        center (bool, optional): subtract the node mean of the decoded embeddings before the
            inner products. (default: ``True``)
        uniform_weights (bool, optional): weigh the meta-paths' losses by ``1/M`` instead of
            the encoder's beta. (default: ``False``)
        attention (bool, optional): the ``"gat"`` decoder's node-level attention; ``False``:
            the neighbour mean. (default: ``True``)

    Introduced in notebook 03.
    """

    def __init__(self, hidden_channels: int, metapaths: list[str], drop_rate: float = 0.5,
                 gamma: float = 1.0, decoder: str = "gat", source: str = "h", heads: int = 1,
                 detach_beta: bool = True, dense_threshold: int = 10000, num_rows: int = 1024,
                 neg_ratio: float = 1.0, center: bool = True,
                 uniform_weights: bool = False, attention: bool = True) -> None:
        super().__init__()
        if decoder not in ("gat", "linear"):
            raise ConfigError(f"edge decoder={decoder!r}: use 'gat' or 'linear'")
        if source not in ("h", "z"):
            raise ConfigError(f"edge source={source!r}: use 'h' (fused) or 'z' (per meta-path)")
        if gamma < 1.0:
            raise ConfigError(f"gamma={gamma}: the SCE exponent must be >= 1")
        if not 0.0 <= drop_rate < 1.0:
            raise ConfigError(f"edge drop_rate={drop_rate} must lie in [0, 1)")
        if num_rows < 1 or neg_ratio <= 0:
            raise ConfigError(f"num_rows={num_rows} must be >= 1 and neg_ratio={neg_ratio} > 0")
        self.metapaths = list(metapaths)
        self.drop_rate, self.gamma, self.source = drop_rate, gamma, source
        self.decoder_kind, self.detach_beta, self.center = decoder, detach_beta, center
        self.uniform_weights = uniform_weights  # 1/M per meta-path instead of beta
        self.dense_threshold, self.num_rows, self.neg_ratio = dense_threshold, num_rows, neg_ratio
        self.enc_to_dec = nn.Linear(hidden_channels, hidden_channels, bias=False)
        make = ((lambda: DecoderGATConv(hidden_channels, hidden_channels, heads,
                                        attention=attention))
                if decoder == "gat" else (lambda: nn.Linear(hidden_channels, hidden_channels)))
        self.decoders = nn.ModuleDict({m: make() for m in self.metapaths})
        self._target_cache = TensorCache()  # per meta-path name
        self._split_cache = TensorCache()  # drop_edges' pair split per meta-path
        self._ones: Tensor | None = None  # values of the binary adjacencies (_target)

    def corrupt(self, edge_index_dict: dict[str, Tensor], generator: torch.Generator | None = None,
                drop_rate: float | None = None) -> dict[str, Tensor]:
        """The thinned meta-path graphs (see :func:`drop_edges`).

        Each graph's split into ``i < j`` pairs and self-loops is computed once and cached per
        meta-path while the same ``edge_index`` tensor (same object, not modified in place) is
        passed; any other tensor (a subgraph, a copy on another device) is split afresh.
        The cache holds a reference to the graph and 4 bytes per edge. The thinned graphs keep
        the column order of the input (see :func:`drop_edges`)."""
        rate = self.drop_rate if drop_rate is None else drop_rate
        out = {}
        for m in self.metapaths:
            ei = edge_index_dict[m]
            split = self._split_cache.get(m, ei, lambda: SymmetricSplit(ei))
            out[m] = ei[:, _drop_mask(ei, rate, generator, split=split)]  # drop_edges' kept
        return out

    def weights(self, enc_out: Any) -> Tensor:
        """Per-meta-path loss weights ``[M]``: semantic attention, or uniform without it."""
        beta = getattr(enc_out, "semantic_attention", None)
        m = len(self.metapaths)
        if beta is None or self.uniform_weights:
            return enc_out.h.new_full((m,), 1.0 / m)
        if beta.numel() != m:
            raise DataError(f"semantic attention has {beta.numel()} entries for {m} meta-paths")
        return beta.detach() if self.detach_beta else beta

    def decode(self, enc_out: Any, visible_edge_index_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        """Decoded embeddings ``{metapath: [N, hidden]}`` (GAT over the thinned graphs)."""
        out = {}
        shared = self.enc_to_dec(enc_out.h) if self.source == "h" else None  # [N, hidden]
        for m in self.metapaths:
            d = shared if shared is not None else self.enc_to_dec(enc_out.z[m])  # [N, hidden]
            dec = self.decoders[m]
            out[m] = dec(d, visible_edge_index_dict[m]) if self.decoder_kind == "gat" else dec(d)
            if self.center:
                # Meta-path averaging leaves a component shared by every row; inner products
                # would then give the same reconstructed row for every node (choice, measured:
                # edge SCE stuck at the constant-row baseline without it).
                out[m] = out[m] - out[m].mean(0)
        return out

    def loss_from(self, enc_out: Any, edge_index_dict: dict[str, Tensor],
                  visible_edge_index_dict: dict[str, Tensor],
                  generator: torch.Generator | None = None) -> tuple[Tensor, dict]:
        """Weighted SCE of the full adjacencies ``edge_index_dict`` from an encoder output
        computed on ``visible_edge_index_dict``. Returns ``(loss, info)``; ``info`` holds the
        unweighted ``per_metapath`` losses, the ``weights`` and whether ``all_rows`` were
        scored."""
        beta = self.weights(enc_out)  # [M]
        dec = self.decode(enc_out, visible_edge_index_dict)
        n = enc_out.h.shape[0]
        all_rows = n <= self.dense_threshold
        most = max((e.shape[1] for e in edge_index_dict.values()), default=0)
        if self._ones is None or self._ones.numel() < most:  # one buffer for every meta-path
            self._ones = torch.ones(most, device=enc_out.h.device)
        per_mp = torch.stack([  # [M]
            self._full_loss(m, dec[m], edge_index_dict[m]) if all_rows
            else self._sampled_loss(m, dec[m], edge_index_dict[m], generator)
            for m in self.metapaths])
        loss = (beta * per_mp).sum()
        info = {"per_metapath": {m: float(v) for m, v in zip(self.metapaths, per_mp.detach())},
                "weights": beta.detach(), "all_rows": all_rows}
        return loss, info

    def _target(self, name: str, edge_index: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor]:
        """Binary adjacency (rows = ``edge_index[0]``) and its transpose as sparse CSR, and the
        row degrees; cached per meta-path while the same ``edge_index`` tensor is passed.

        Both matrices live on a :class:`~hetcrf_lite.sparse.CSRPlan`: for a meta-path graph as
        :mod:`hetcrf_lite.data` stores it (sorted by (destination, source), no duplicate) the
        encoder's own plan, so only the ones are new (one buffer shared by all meta-paths) and a
        symmetric graph's ``A^T = A`` is the same object; any other graph is coalesced first
        (a duplicate would count twice in ``A @ D``)."""
        def build() -> tuple[Tensor, Tensor, Tensor]:
            plan = coalesced_plan(edge_index, n) or csr_plan(coalesce(edge_index, num_nodes=n), n)
            E = plan.num_edges
            if self._ones is None or self._ones.numel() < E:
                self._ones = torch.ones(E, device=plan.col.device)  # values of every binary A
            tp = plan.transpose()  # rows = sources: the matrix A itself
            adj_t = plan.matrix(self._ones[:E])
            adj = adj_t if plan.symmetric else tp.matrix(self._ones[:E])
            return adj, adj_t, tp.ptr.diff()  # [N] degrees (rows of A)

        return self._target_cache.get(name, edge_index, build, lambda v: v[2].numel() == n)

    def _full_loss(self, name: str, d: Tensor, edge_index: Tensor) -> Tensor:
        adj, adj_t, deg = self._target(name, edge_index, d.shape[0])
        ad = sparse_mm(adj, d, adj_t)  # [N, h] rows sum_j d_j
        num = (d * ad).sum(-1)  # [N] <z_i Z^T, A_i>
        sq = ((d @ (d.t() @ d)) * d).sum(-1)  # [N] ||z_i Z^T||^2 via the Gram matrix
        pn = sq.clamp_min(1e-24).sqrt()  # clamp inside: finite gradient at 0
        tn = deg.to(d.dtype).sqrt()
        cos = num / (pn.clamp_min(1e-12) * tn.clamp_min(1e-12))  # F.normalize's eps
        return (1.0 - cos).pow(self.gamma).mean()

    def _sampled_loss(self, name: str, d: Tensor, edge_index: Tensor,
                      generator: torch.Generator | None) -> Tensor:
        n, dev = d.shape[0], d.device
        adj, _, deg = self._target(name, edge_index, n)
        gdev = _gen_device(generator)
        anchors = torch.randperm(n, generator=generator, device=gdev)[:self.num_rows].to(dev)
        b = torch.arange(anchors.numel(), device=dev)
        # the anchors' edges, read from the cached CSR rows: O(edges of the batch)
        cnt = deg[anchors]  # [B]
        e_seg = torch.repeat_interleave(b, cnt)  # [E_b]
        first = torch.repeat_interleave(adj.crow_indices()[anchors] - (cnt.cumsum(0) - cnt), cnt)
        e_col = adj.col_indices()[first + torch.arange(e_seg.numel(), device=dev)].long()  # [E_b]
        n_neg = torch.ceil(cnt.double() * self.neg_ratio).long().clamp_min(1)  # [B]
        q_seg = torch.repeat_interleave(b, n_neg)
        q_col = torch.randint(n, (q_seg.numel(),), generator=generator, device=gdev).to(dev)
        # keep only true non-edges, each once
        q_key = torch.unique(q_seg * n + q_col)
        q_key = q_key[~torch.isin(q_key, e_seg * n + e_col)]
        seg = torch.cat([e_seg, q_key // n])
        cols = torch.cat([e_col, q_key % n])
        target = torch.cat([d.new_ones(e_seg.numel()), d.new_zeros(q_key.numel())])  # [S]
        pred = (d[anchors[seg]] * d[cols]).sum(-1)  # [S] entries of z_i Z^T
        return _segment_sce(pred, target, seg, anchors.numel(), self.gamma).mean()

    def forward(self, encoder: Callable[..., Any], x: Tensor, edge_index_dict: dict[str, Tensor],
                generator: torch.Generator | None = None) -> tuple[Tensor, dict]:
        """Thin the graphs, encode on them, decode and score. Returns ``(loss, info)``."""
        visible = self.corrupt(edge_index_dict, generator)
        enc_out = encoder(x, visible)
        loss, info = self.loss_from(enc_out, edge_index_dict, visible, generator)
        info["encoder_output"] = enc_out
        info["num_visible_edges"] = {m: int(e.shape[1]) for m, e in visible.items()}
        return loss, info
