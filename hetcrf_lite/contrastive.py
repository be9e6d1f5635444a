"""The contrastive channel: embedding-space views, second-stage GCN, InfoNCE, gradient balance.

HetCRF builds both contrastive views from the shared encoder's output, never by corrupting the
(sparse) raw features:

* the **fusion view** is the encoder's semantic-attention fusion ``H`` (:class:`FusionView`);
* the **schema view** is HeCo's network-schema view fed with encoder embeddings
  (:class:`SchemaView`).

Each view then passes a second-stage GCN over the meta-path graphs (:class:`SecondStageGCN`) and a
projection head (:class:`ProjectionHead`), and :func:`infonce` contrasts them with multi-positive
InfoNCE in both directions (:func:`infonce_minibatch` for anchor batches).
:func:`gradient_balance` measures how the InfoNCE gradient splits between positives and negatives.

Positive sets are a ``[2, P]`` index ``(anchor, positive)``, free of duplicate pairs.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter, softmax

from .encoder import SemanticAttention, accept_legacy_semantic_keys
from .errors import ConfigError, DataError
from .infonce_fused import fused_infonce, fused_tau_ok
from .sparse import gcn_operators, gcn_propagate, sample_neighbors

__all__ = [
    "FusionView",
    "SchemaView",
    "SecondStageGCN",
    "ProjectionHead",
    "infonce_reference",
    "infonce",
    "infonce_minibatch",
    "gradient_balance",
]


# ------------------------------------------------------------------------------------------
# Views
# ------------------------------------------------------------------------------------------
class FusionView(nn.Module):
    r"""The fusion view: the encoder's semantic-attention fusion, unchanged.

    .. math::
        \mathbf{V}^{\mathrm{fus}} = \mathbf{H} = \sum_m \beta_m \mathbf{Z}^m

    A parameter-free module so a model can hold both views the same way. Accepts an encoder
    output (anything with ``.h``) or the tensor ``H`` itself.

    Introduced in notebook 04.
    """

    def forward(self, enc_out: Any) -> Tensor:
        return enc_out if isinstance(enc_out, Tensor) else enc_out.h


class SchemaView(nn.Module):
    r"""HeCo's network-schema view, fed with encoder embeddings.

    For each neighbour type :math:`t` (author, subject, ...) with relation edges
    ``target -> t``, a neighbour :math:`u` is the type-specific projection of the mean
    embedding of the target nodes it touches:

    .. math::
        \mathbf{n}_u = \mathbf{W}_t \frac{1}{|\mathcal{T}(u)|}
        \sum_{i \in \mathcal{T}(u)} \mathbf{h}_i + \mathbf{b}_t

    Intra-type attention over the (sampled) neighbours :math:`\mathcal{N}_t(i)`:

    .. math::
        \alpha^t_{i,u} = \operatorname{softmax}_{u \in \mathcal{N}_t(i)}
        \left(\mathrm{LeakyReLU}(\mathbf{a}_t^{\top} [\mathbf{h}_i \,\|\, \mathbf{n}_u])\right),
        \qquad \mathbf{e}^t_i = \mathrm{ELU}\Big(\sum_{u} \alpha^t_{i,u} \mathbf{n}_u\Big)

    Inter-type (semantic) attention combines the types:

    .. math::
        w_t = \frac{1}{N}\sum_i \mathbf{q}^{\top}\tanh(\mathbf{W}\mathbf{e}^t_i + \mathbf{b}),
        \qquad \gamma = \operatorname{softmax}(w), \qquad
        \mathbf{V}^{\mathrm{sch}}_i = \sum_t \gamma_t \mathbf{e}^t_i

    Everything is sparse (scatter over relation edges). A node with no neighbour of type
    :math:`t` gets :math:`\mathbf{e}^t_i = \mathbf{0}`. With ``exclude_self`` the mean seen by
    node :math:`i` leaves :math:`i` out, :math:`\mathcal{T}(u) \setminus \{i\}` (zero when
    :math:`u` touches only :math:`i`): an author with a single paper would otherwise hand the
    paper its own embedding back, a shortcut between the two views.

    Args:
        hidden_channels (int): embedding width (input and output).
        relations (dict[str, torch.Tensor] or list[str]): ``{t: edge_index [2, E_t]}`` with the
            target id in row 0 and the neighbour id in row 1, held by the module (moved by
            ``.to()``, not saved in ``state_dict``); or only the type names, the edges then
            being passed to ``forward`` as ``rel_index``.
        sample (dict[str, int], optional): neighbours kept per node and type at each forward
            (HeCo: ACM author 7, subject 1; DBLP paper 6; AMiner author 3, reference 8; Freebase
            director 1, actor 18, writer 2); a type not listed keeps all. (default: ``None``)
        num_nodes (int, optional): number of target nodes, checked against ``h``.
            (default: ``None``)
        exclude_self (bool, optional): leave node :math:`i` out of its neighbours' means.
            (default: ``False``, the plain mean of the method page)
        attn_drop (float, optional): dropout on intra-type attention weights. (default: ``0.0``)
        negative_slope (float, optional): LeakyReLU slope. (default: ``0.2``)

    Shapes:
        input ``h [N, hidden]``, ``rel_index {t: [2, E_t]}`` (row 0 target id, row 1 neighbour
        id); output ``[N, hidden]``.

    Introduced in notebook 04.
    """

    def __init__(self, hidden_channels: int, relations: dict[str, Tensor] | list[str],
                 sample: dict[str, int] | None = None, num_nodes: int | None = None,
                 exclude_self: bool = False, attn_drop: float = 0.0,
                 negative_slope: float = 0.2) -> None:
        super().__init__()
        self.exclude_self = exclude_self
        neighbor_types = list(relations)
        if not neighbor_types:
            raise ConfigError("SchemaView needs at least one neighbour type")
        self.num_nodes = num_nodes
        self._stored: dict[str, str] = {}  # type -> buffer name
        self._stored_sizes: dict[str, int] = {}  # known once: no device sync per forward
        if isinstance(relations, dict):
            for i, (t, ei) in enumerate(relations.items()):
                self.register_buffer(f"_rel{i}", ei, persistent=False)
                self._stored[t] = f"_rel{i}"
                self._stored_sizes[t] = int(ei[1].max()) + 1 if ei.numel() else 0
        unknown = set(sample or {}) - set(neighbor_types)
        if unknown:
            raise ConfigError(f"schema_sample names unknown neighbour types {sorted(unknown)}; "
                              f"known: {list(neighbor_types)}")
        self.hidden_channels, self.neighbor_types = hidden_channels, list(neighbor_types)
        self.sample = dict(sample or {})
        self.negative_slope = negative_slope
        self.proj = nn.ModuleDict({t: nn.Linear(hidden_channels, hidden_channels)
                                   for t in self.neighbor_types})
        self.att = nn.ParameterDict({t: nn.Parameter(torch.empty(2, hidden_channels))
                                     for t in self.neighbor_types})
        self.semantic = SemanticAttention(hidden_channels, hidden_channels, init="normal")
        accept_legacy_semantic_keys(self)
        self.attn_drop = nn.Dropout(attn_drop)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for t in self.neighbor_types:
            # zero bias: encoder embeddings can be small at init, and a random bias would then
            # make every neighbour (and every node's view) the same vector
            nn.init.xavier_uniform_(self.proj[t].weight)
            nn.init.zeros_(self.proj[t].bias)
            nn.init.xavier_uniform_(self.att[t])
        self.semantic.reset_parameters()

    def forward(self, h: Tensor, rel_index: dict[str, Tensor] | None = None,
                num_neighbors: dict[str, int] | None = None,
                generator: torch.Generator | None = None, return_attention: bool = False
                ) -> Tensor | tuple[Tensor, dict]:
        """Schema-view embeddings ``[N, hidden]``; with ``return_attention`` also
        ``{"intra": {t: (edge_index [2, E_t'], alpha [E_t'])}, "inter": gamma [T]}``.

        ``rel_index`` defaults to the relations given at construction; ``num_neighbors``
        (``{t: count}``) to the largest neighbour id + 1 (neighbours beyond it touch no
        target and would get no representation anyway)."""
        n = h.shape[0]
        if self.num_nodes is not None and n != self.num_nodes:
            raise DataError(f"SchemaView built for {self.num_nodes} target nodes, got {n}")
        if rel_index is None:
            rel_index = {t: getattr(self, b) for t, b in self._stored.items()}
            num_neighbors = {**self._stored_sizes, **(num_neighbors or {})}
        per_type, intra = [], {}
        for t in self.neighbor_types:
            if t not in rel_index:
                raise DataError(f"SchemaView: no relation edges for neighbour type '{t}'; "
                                f"got {sorted(rel_index)}: pass rel_index or build the view "
                                "with the relation edges")
            rel = rel_index[t]
            n_t = (num_neighbors or {}).get(t)
            if n_t is None:
                n_t = int(rel[1].max()) + 1 if rel.numel() else 0
            # neighbour sums over ALL its edges; then the (sampled) edges to aggregate
            sums = scatter(h[rel[0]], rel[1], 0, n_t, "sum")  # [N_t, hidden]
            cnt = torch.bincount(rel[1], minlength=n_t).to(h.dtype)  # [N_t]
            if t in self.sample:
                rel = sample_neighbors(rel, self.sample[t], n, generator)
            tgt, src = rel
            if self.exclude_self:
                mean = (sums[src] - h[tgt]) / (cnt[src] - 1).clamp_min(1).unsqueeze(-1)
            else:
                mean = sums[src] / cnt[src].clamp_min(1).unsqueeze(-1)  # [E_t, hidden]
            nb = self.proj[t](mean)  # [E_t, hidden] the neighbour of each edge, projected
            a = self.att[t]
            logit = F.leaky_relu(h[tgt] @ a[0] + nb @ a[1], self.negative_slope)  # [E_t]
            alpha = self.attn_drop(softmax(logit, tgt, num_nodes=n))  # [E_t]
            per_type.append(F.elu(scatter(alpha.unsqueeze(-1) * nb, tgt, 0, n, "sum")))
            intra[t] = (rel, alpha.detach())
        out, gamma = self.semantic(per_type)  # [N, hidden], [T]
        if return_attention:
            return out, {"intra": intra, "inter": gamma.detach()}
        return out


# ------------------------------------------------------------------------------------------
# Second stage and projection head
# ------------------------------------------------------------------------------------------
class SecondStageGCN(nn.Module):
    r"""The contrastive channel's second aggregation: GCN layers over the meta-path graphs.

    Layer :math:`\ell` runs one symmetric-normalised GCN layer per meta-path and averages them;
    meta-path graphs already carry self-loops, so none are added:

    .. math::
        \mathbf{X}^{(\ell+1)} = \sigma\left(\frac{1}{M}\sum_{m=1}^{M}
        \mathbf{D}_m^{-1/2}\mathbf{A}^m\mathbf{D}_m^{-1/2}\mathbf{X}^{(\ell)}\mathbf{W}^{(\ell)}_m
        + \mathbf{b}^{(\ell)}_m\right)

    with :math:`\sigma` = ELU between layers and none after the last. ``num_layers=0`` is the
    identity. Deeper stacks over-smooth (all rows converge). Without ``metapaths`` the weights
    are shared by all meta-paths (:math:`\mathbf{W}_m = \mathbf{W}`, :math:`\mathbf{b}_m =
    \mathbf{b}`: one GCN layer on the averaged normalised adjacency) and the graphs are those
    of ``edge_index_dict``. The normalised adjacency is cached on each graph's plan
    (:func:`~hetcrf_lite.sparse.gcn_operators`).

    Args:
        channels (int): input and output width.
        num_layers (int, optional): depth ``L``, ``>= 0``. (default: ``1``)
        metapaths (list[str], optional): meta-path names, keys of ``edge_index_dict``, for
            per-meta-path weights; ``None`` shares them. (default: ``None``)
        bias (bool, optional): learn :math:`\mathbf{b}_m`. (default: ``True``)

    Introduced in notebook 04.
    """

    def __init__(self, channels: int, num_layers: int = 1, metapaths: list[str] | None = None,
                 bias: bool = True) -> None:
        super().__init__()
        if not isinstance(num_layers, int) or num_layers < 0:
            raise ConfigError(f"second_stage_depth={num_layers!r} must be an int >= 0 "
                              "(0 disables it)")
        self.channels, self.num_layers = channels, num_layers
        self.metapaths = None if metapaths is None else list(metapaths)
        keys = ["shared"] if self.metapaths is None else self.metapaths
        self.lins = nn.ModuleList(
            nn.ModuleDict({k: nn.Linear(channels, channels, bias=False) for k in keys})
            for _ in range(num_layers))
        self.biases = nn.ParameterList(
            nn.Parameter(torch.zeros(len(keys), channels)) for _ in range(num_layers)
        ) if bias else None

    def normalized_adjacency(self, name: str, edge_index: Tensor, num_nodes: int
                             ) -> tuple[Tensor, Tensor]:
        """:math:`D^{-1/2} A D^{-1/2}` (rows = destinations, in-degrees as ``GCNConv``) and its
        transpose, sparse CSR: :func:`~hetcrf_lite.sparse.gcn_operators`, cached on the graph's
        plan (shared with the encoder). ``name`` is kept for callers that pass it."""
        return gcn_operators(edge_index, num_nodes, torch.get_default_dtype())  # gcn_norm's dtype

    def forward(self, x: Tensor, edge_index_dict: dict[str, Tensor],
                weights: Tensor | None = None, chunk_rows: int | None = None) -> Tensor:
        """``weights`` ``[M]`` weigh the meta-paths (``None``: their mean); ``chunk_rows``
        (no-grad inference) propagates over chunks of that many destination nodes without
        caching the operators (:func:`~hetcrf_lite.sparse.gcn_propagate`)."""
        names = list(edge_index_dict) if self.metapaths is None else self.metapaths
        for layer in range(self.num_layers):
            out = 0
            xw = self.lins[layer]["shared"](x) if self.metapaths is None else None  # [N, C]
            for k, m in enumerate(names):
                xm = xw if xw is not None else self.lins[layer][m](x)  # [N, C]
                msg = gcn_propagate(edge_index_dict[m], xm, torch.get_default_dtype(),
                                    chunk_rows)  # [N, C]
                if self.biases is not None:
                    msg = msg + self.biases[layer][0 if xw is not None else k]
                out = out + (msg if weights is None else weights[k] * msg)
            x = out / len(names) if weights is None else out
            if layer < self.num_layers - 1:
                x = F.elu(x)
        return x

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.channels}, metapaths={self.metapaths}, "
                f"num_layers={self.num_layers})")


class ProjectionHead(nn.Sequential):
    r"""HeCo's projection head: :math:`\mathbf{W}_2\,\mathrm{ELU}(\mathbf{W}_1\mathbf{x}+
    \mathbf{b}_1)+\mathbf{b}_2`, biases initialised at zero.

    Args:
        in_channels (int): input width.
        hidden_channels (int, optional): inner width; ``None`` means ``in_channels``.
            (default: ``None``)
        out_channels (int, optional): output width; ``None`` means ``in_channels``.
            (default: ``None``)

    Introduced in notebook 04 (the projection before InfoNCE).
    """

    def __init__(self, in_channels: int, hidden_channels: int | None = None,
                 out_channels: int | None = None) -> None:
        hidden = hidden_channels or in_channels
        super().__init__(nn.Linear(in_channels, hidden), nn.ELU(),
                         nn.Linear(hidden, out_channels or in_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """HeCo's Xavier-normal weights (gain 1.414), with zero biases so that small inputs are
        not all mapped to the same direction at initialisation."""
        for lin in (self[0], self[2]):
            nn.init.xavier_normal_(lin.weight, gain=1.414)
            nn.init.zeros_(lin.bias)


# ------------------------------------------------------------------------------------------
# InfoNCE
# ------------------------------------------------------------------------------------------
def _segment_logsumexp(values: Tensor, segment: Tensor, num_segments: int) -> Tensor:
    """log sum exp of ``values`` per segment; ``-inf`` for empty segments.

    By hand because ``torch_geometric.utils.scatter`` has no logsumexp reduction; the max shift
    is detached (it cancels in the value and its gradient).
    """
    top = scatter(values.detach(), segment, 0, num_segments, "max")  # [S]
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    total = scatter((values - top[segment]).exp(), segment, 0, num_segments, "sum")  # [S]
    return total.log() + top


def _check_infonce_args(tau: float, lam: float, pos: Tensor) -> None:
    if tau <= 0:
        raise ConfigError(f"tau={tau} must be > 0 (it divides the similarities)")
    if not 0.0 <= lam <= 1.0:
        raise ConfigError(f"lam={lam} must lie in [0, 1] (weight of the first direction)")
    if pos.dim() != 2 or pos.shape[0] != 2:
        raise DataError(f"positives must be a [2, P] index, got shape {tuple(pos.shape)}")


def _dense_pos_mask(pos: Tensor, rows: int, cols: int, row_of: Tensor | None = None) -> Tensor:
    """Boolean ``[rows, cols]`` positive mask (the dense path only)."""
    r = pos[0] if row_of is None else row_of[pos[0]]
    keep = r >= 0
    mask = torch.zeros(rows, cols, dtype=torch.bool, device=pos.device)
    mask[r[keep], pos[1][keep]] = True
    return mask


def _one_way(logits: Tensor, pos_mask: Tensor, pos: Tensor, negatives: str,
             cluster: Tensor | None, tau_plus: float, tau: float) -> Tensor:
    """Per-anchor multi-positive InfoNCE for one direction, ``logits [N, N] = s / tau``."""
    n = logits.shape[0]
    pos_lse = _segment_logsumexp(logits[pos[0], pos[1]], pos[0], n)  # [N]
    if negatives == "all":
        return torch.logsumexp(logits, dim=1) - pos_lse
    if negatives == "drop_same_cluster":
        drop = (cluster.view(-1, 1) == cluster.view(1, -1)) & ~pos_mask  # [N, N]
        return torch.logsumexp(logits.masked_fill(drop, float("-inf")), dim=1) - pos_lse
    # debiased (Chuang et al. 2020), shifted by the largest possible logit 1/tau: no overflow
    e = (logits - 1.0 / tau).exp()  # [N, N]
    pos_sum = (pos_lse - 1.0 / tau).exp()  # [N]
    n_pos = pos_mask.sum(1)  # [N]
    n_neg = (n - n_pos).to(e.dtype)
    neg_sum = e.masked_fill(pos_mask, 0.0).sum(1)  # [N]
    ng = (neg_sum - tau_plus * n_neg * pos_sum / n_pos.clamp_min(1)) / (1.0 - tau_plus)
    ng = torch.maximum(ng, n_neg * math.exp(-2.0 / tau))  # floor e^{-1/tau} per negative
    return (pos_sum + ng).log() - pos_sum.log()


def infonce_reference(z1: Tensor, z2: Tensor, pos: Tensor, tau: float, lam: float = 0.5,
                      negatives: str = "all", cluster: Tensor | None = None,
                      tau_plus: float = 0.1, has_pos: Tensor | None = None) -> Tensor:
    """:func:`infonce` by autograd on the dense logits: every ``negatives`` mode, any ``tau``
    (max-shifted log-sum-exps); the reference the fused path is tested against. ``has_pos``
    (``[N]`` bool, anchors with a positive) is computed when not given.

    Introduced in notebook 04."""
    n = z1.shape[0]
    if has_pos is None:
        has_pos = torch.bincount(pos[0], minlength=n) > 0
    cluster = None if cluster is None else cluster.to(z1.device)
    logits = F.normalize(z1, dim=1) @ F.normalize(z2, dim=1).t() / tau  # [N, N] dense path
    pos_mask = (_dense_pos_mask(pos, n, n) if negatives != "all" else None)
    l12 = _one_way(logits, pos_mask, pos, negatives, cluster, tau_plus, tau)[has_pos].mean()
    l21 = _one_way(logits.t(), pos_mask, pos, negatives, cluster, tau_plus, tau)[has_pos].mean()
    return lam * l12 + (1.0 - lam) * l21


def infonce(z1: Tensor, z2: Tensor, pos: Tensor, tau: float, lam: float = 0.5,
            negatives: str = "all", cluster: Tensor | None = None,
            tau_plus: float = 0.1, backend: str = "auto") -> Tensor:
    r"""Two-way multi-positive InfoNCE with cosine similarity (HeCo's contrastive loss).

    With :math:`s_{ij} = \cos(\mathbf{z}^1_i, \mathbf{z}^2_j)`:

    .. math::
        \mathcal{L}^{1\to 2}_i = -\log\frac{\sum_{p \in \mathrm{Pos}(i)} e^{s_{ip}/\tau}}
        {\sum_{j=1}^{N} e^{s_{ij}/\tau}}, \qquad
        \mathcal{L} = \lambda\,\overline{\mathcal{L}^{1\to 2}} +
        (1-\lambda)\,\overline{\mathcal{L}^{2\to 1}}

    where :math:`\mathcal{L}^{2\to 1}` uses :math:`s^{\top}` (anchor in view 2) with the same
    :math:`\mathrm{Pos}(i)`, and the bars average over anchors with at least one positive.

    ``negatives`` changes the denominator:

    * ``"all"``: every node (the paper);
    * ``"debiased"`` (Chuang et al., 2020): with :math:`P_i = \sum_{p} e^{s_{ip}/\tau}`,
      :math:`Q = N - |\mathrm{Pos}(i)|` negatives and class prior :math:`\tau^+`, the negative
      sum becomes :math:`\max\big(\frac{\sum_{j \notin \mathrm{Pos}(i)} e^{s_{ij}/\tau} -
      \tau^+ Q\,P_i/|\mathrm{Pos}(i)|}{1-\tau^+},\; Q e^{-1/\tau}\big)`; ``tau_plus=0`` is plain;
    * ``"drop_same_cluster"``: non-positive members of the anchor's cluster (``cluster [N]``)
      leave the denominator (likely false negatives).

    **Dense path.** This builds the ``N x N`` similarity. With ``negatives="all"`` (the default
    and every shipped config) a fused autograd function computes both directions from one
    ``N x N`` buffer of exponentials, reused in place for the gradient
    (:func:`~hetcrf_lite.infonce_fused.fused_infonce`:
    ``4 N^2`` bytes in float32, 172 MB at AMiner's 6564 nodes, instead of about five such
    buffers under plain autograd); fine up to roughly 20 k nodes (1.6 GB at 20 k), beyond, use
    :func:`infonce_minibatch`. Its exponentials are not max-shifted, so for a temperature
    with :math:`e^{-2/\tau}` too close to underflow (float32: ``tau < 0.046``) and for the
    other ``negatives`` modes the plain autograd formula runs instead (same value).

    Args:
        z1 (torch.Tensor): first view ``[N, C]``.
        z2 (torch.Tensor): second view ``[N, C]``.
        pos (torch.Tensor): positives ``[2, P]`` (anchor, positive), no duplicate pairs.
        tau (float): temperature, ``> 0``.
        lam (float, optional): weight of the ``1 -> 2`` direction, in ``[0, 1]``.
            (default: ``0.5``)
        negatives (str, optional): ``"all"``, ``"debiased"`` or ``"drop_same_cluster"``.
            (default: ``"all"``)
        cluster (torch.Tensor, optional): ``[N]`` cluster ids, for ``"drop_same_cluster"``.
            (default: ``None``)
        tau_plus (float, optional): class prior of ``"debiased"``, in ``[0, 1)``.
            (default: ``0.1``)
        backend (str, optional): ``"reference"`` (:func:`infonce_reference`, autograd),
            ``"fused"`` (raises :class:`ConfigError` where it does not apply) or ``"auto"``
            (fused where it applies, measured faster on CPU: docs/performance.md).
            (default: ``"auto"``)

    Introduced in notebook 04; its gradient is the subject of notebook 05.
    """
    _check_infonce_args(tau, lam, pos)
    if negatives not in ("all", "debiased", "drop_same_cluster"):
        raise ConfigError(f"negatives={negatives!r}: use 'all', 'debiased' or "
                          "'drop_same_cluster'")
    if negatives == "drop_same_cluster" and (cluster is None or cluster.numel() != z1.shape[0]):
        raise DataError("negatives='drop_same_cluster' needs cluster ids, a [N] long tensor")
    if negatives == "debiased" and not 0.0 <= tau_plus < 1.0:
        raise ConfigError(f"tau_plus={tau_plus} must lie in [0, 1)")
    has_pos = torch.bincount(pos[0], minlength=z1.shape[0]) > 0  # [N]
    if not bool(has_pos.any()):
        raise DataError("no anchor has a positive: pass a non-empty [2, P] positive index")
    fused_ok = negatives == "all" and fused_tau_ok(tau, z1.dtype)
    if backend not in ("reference", "fused", "auto"):
        raise ConfigError(f"InfoNCE backend={backend!r}: use 'reference', 'fused' or 'auto'")
    if backend == "fused" and not fused_ok:
        raise ConfigError(f"the fused InfoNCE needs negatives='all' and a temperature it can "
                          f"exponentiate unshifted (got negatives={negatives!r}, tau={tau})")
    if fused_ok and backend != "reference":
        return fused_infonce(F.normalize(z1, dim=1), F.normalize(z2, dim=1),
                             pos.to(z1.device), has_pos.to(z1.device), tau, lam)
    return infonce_reference(z1, z2, pos, tau, lam, negatives, cluster, tau_plus, has_pos)


def infonce_minibatch(z1: Tensor, z2: Tensor, pos: Tensor, anchors: Tensor, tau: float,
                      lam: float = 0.5, num_sampled_negatives: int = 0,
                      generator: torch.Generator | None = None) -> Tensor:
    r"""Two-way multi-positive InfoNCE over a batch of anchors, never ``N x N``.

    The candidate set :math:`C` is the batch, the positives of its anchors (gathered by index,
    wherever they are) and ``num_sampled_negatives`` uniformly drawn nodes. Each anchor
    :math:`i` is contrasted with every candidate:

    .. math::
        \mathcal{L}^{1\to 2}_i = -\log\frac{\sum_{p \in \mathrm{Pos}(i)} e^{s_{ip}/\tau}}
        {\sum_{j \in C} e^{s_{ij}/\tau}}

    and symmetrically for :math:`2 \to 1`; cost ``B x |C|``. With all nodes as anchors and no
    sampling, :math:`C` is every node and this equals :func:`infonce`.

    Args:
        z1 (torch.Tensor): first view ``[N, C]``.
        z2 (torch.Tensor): second view ``[N, C]``.
        pos (torch.Tensor): positives ``[2, P]``, no duplicate pairs.
        anchors (torch.Tensor): distinct anchor ids ``[B]``.
        tau (float): temperature, ``> 0``.
        lam (float, optional): weight of the ``1 -> 2`` direction. (default: ``0.5``)
        num_sampled_negatives (int, optional): extra uniformly drawn candidates. (default: ``0``)
        generator (torch.Generator, optional): source of randomness. (default: ``None``)

    Not taught in a notebook: the mini-batch form of the InfoNCE of notebook 04, for graphs too
    large for ``N x N``.
    """
    _check_infonce_args(tau, lam, pos)
    n, dev = z1.shape[0], z1.device
    row_of = torch.full((n,), -1, dtype=torch.long, device=dev)
    row_of[anchors] = torch.arange(anchors.numel(), device=dev)
    if int((row_of >= 0).sum()) != anchors.numel():
        raise DataError("infonce_minibatch: anchors must be distinct node ids")
    sel = row_of[pos[0]] >= 0
    pa, pp = pos[0][sel], pos[1][sel]  # positives of the batch
    parts = [anchors, pp]
    if num_sampled_negatives > 0:
        gdev = torch.device("cpu") if generator is None else generator.device
        parts.append(torch.randint(n, (num_sampled_negatives,), generator=generator,
                                   device=gdev).to(dev))
    cand = torch.unique(torch.cat(parts))  # [C]
    col_of = torch.full((n,), -1, dtype=torch.long, device=dev)
    col_of[cand] = torch.arange(cand.numel(), device=dev)
    r, c = row_of[pa], col_of[pp]  # [P_b]
    has_pos = torch.bincount(r, minlength=anchors.numel()) > 0  # [B]
    if not bool(has_pos.any()):
        raise DataError("no anchor of the batch has a positive")
    losses = []
    for za, zc in ((z1, z2), (z2, z1)):
        logits = F.normalize(za[anchors], dim=1) @ F.normalize(zc[cand], dim=1).t() / tau  # [B, C]
        pos_lse = _segment_logsumexp(logits[r, c], r, anchors.numel())  # [B]
        losses.append((torch.logsumexp(logits, dim=1) - pos_lse)[has_pos].mean())
    return lam * losses[0] + (1.0 - lam) * losses[1]


# ------------------------------------------------------------------------------------------
# Gradient balance
# ------------------------------------------------------------------------------------------
def gradient_balance(z1: Tensor, z2: Tensor, pos: Tensor, tau: float,
                     anchors: Tensor | None = None) -> dict[str, Any]:
    r"""How the one-way (``1 -> 2``) InfoNCE gradient splits over positives and negatives.

    The similarity :math:`s_{ij} = \cos(\mathbf{z}^1_i, \mathbf{z}^2_j)` is made a leaf and
    :math:`G = \partial (\sum_i \mathcal{L}_i) / \partial s` taken by autograd. With
    :math:`p_{ij}` the softmax over all candidates and :math:`q_{ip}` the softmax over
    :math:`\mathrm{Pos}(i)` alone:

    .. math::
        G_{ip} = -\frac{q_{ip} - p_{ip}}{\tau} \;(p \in \mathrm{Pos}(i)), \qquad
        G_{ij} = \frac{p_{ij}}{\tau} \;(j \notin \mathrm{Pos}(i))

    so :math:`\sum_p |G_{ip}| = \sum_{j} |G_{ij}|` over negatives for *every* anchor: their ratio
    is identically 1 and is not a measurement (``pos_grad_sum`` / ``neg_grad_sum`` are returned
    for the unit test only). What is measured, per anchor:

    * ``pos_mass``: :math:`\sum_p p_{ip}` (how solved the task is);
    * ``grad_per_pos``: mean :math:`|G_{ip}|` over positives, against ``neg_grad_mean`` and
      ``neg_grad_max`` over negatives;
    * ``top1pct_neg_share``: share of :math:`\sum_j |G_{ij}|` carried by the top 1% of the
      negatives (at least one): hard, possibly false, negatives;
    * ``anchor_grad_pos_norm`` / ``anchor_grad_neg_norm``: norms of
      :math:`\sum_{p} G_{ip}\,\partial s_{ip}/\partial \mathbf{z}^1_i` and of the same sum over
      negatives (vectors, so their norms differ).

    **Dense path.** Builds ``B x N`` similarities for ``B`` anchors (all nodes by default):
    pass ``anchors`` to bound the cost. Anchors without positives are skipped.

    Args:
        z1 (torch.Tensor): anchor view ``[N, C]``.
        z2 (torch.Tensor): candidate view ``[N, C]``.
        pos (torch.Tensor): positives ``[2, P]``.
        tau (float): temperature, ``> 0``.
        anchors (torch.Tensor, optional): anchor ids ``[B]``. (default: ``None``, all nodes)

    Returns:
        A dict of ``[B']`` tensors (``anchors``, ``num_pos``, the metrics above,
        ``pos_grad_sum``, ``neg_grad_sum``) and ``summary``: ``{metric_mean, metric_median}``.

    Introduced in notebook 05.
    """
    _check_infonce_args(tau, 0.5, pos)
    n, dev = z1.shape[0], z1.device
    anchors = torch.arange(n, device=dev) if anchors is None else anchors
    row_of = torch.full((n,), -1, dtype=torch.long, device=dev)
    row_of[anchors] = torch.arange(anchors.numel(), device=dev)
    pos_mask = _dense_pos_mask(pos, anchors.numel(), n, row_of)  # [B, N]
    keep = pos_mask.any(1)
    if not bool(keep.any()):
        raise DataError("gradient_balance: no anchor has a positive")
    anchors, pos_mask = anchors[keep], pos_mask[keep]
    with torch.enable_grad():
        za = z1.detach()[anchors].clone().requires_grad_(True)  # [B, C]
        s = F.normalize(za, dim=1) @ F.normalize(z2.detach(), dim=1).t()  # [B, N]
        s_leaf = s.detach().requires_grad_(True)
        logits = s_leaf / tau
        pos_lse = torch.logsumexp(logits.masked_fill(~pos_mask, float("-inf")), dim=1)
        loss = (torch.logsumexp(logits, dim=1) - pos_lse).sum()
        (g,) = torch.autograd.grad(loss, s_leaf)  # [B, N]
        neg_mask = ~pos_mask
        # the anchor-embedding gradient, split by pushing masked upstream gradients through s
        (g_pos,) = torch.autograd.grad(s, za, g * pos_mask, retain_graph=True)  # [B, C]
        (g_neg,) = torch.autograd.grad(s, za, g * neg_mask)  # [B, C]
    p = torch.softmax(logits.detach(), dim=1)  # [B, N]
    a = g.abs()
    num_pos = pos_mask.sum(1)
    num_neg = neg_mask.sum(1)
    a_neg = a.masked_fill(pos_mask, 0.0)  # [B, N]
    neg_sum = a_neg.sum(1)
    top_k = (num_neg // 100).clamp_min(1)  # top 1%, at least one, per anchor
    top = a_neg.topk(int(top_k.max()), dim=1).values  # [B, k_max], cheaper than a full sort
    top_sum = top.cumsum(1).gather(1, (top_k - 1)[:, None])
    out: dict[str, Any] = {
        "anchors": anchors,
        "num_pos": num_pos,
        "pos_mass": (p * pos_mask).sum(1),
        "grad_per_pos": (a * pos_mask).sum(1) / num_pos,
        "neg_grad_mean": neg_sum / num_neg.clamp_min(1),
        "neg_grad_max": a_neg.max(1).values,
        "top1pct_neg_share": top_sum.squeeze(1) / neg_sum.clamp_min(1e-30),
        "anchor_grad_pos_norm": g_pos.norm(dim=1),
        "anchor_grad_neg_norm": g_neg.norm(dim=1),
        "pos_grad_sum": (a * pos_mask).sum(1),
        "neg_grad_sum": neg_sum,
    }
    out["summary"] = _balance_summary(out)
    return out


def _balance_summary(out: dict[str, Any]) -> dict[str, float]:
    """Mean and median over anchors of each metric of :func:`gradient_balance`."""
    metrics = ("pos_mass", "grad_per_pos", "neg_grad_mean", "neg_grad_max", "top1pct_neg_share",
               "anchor_grad_pos_norm", "anchor_grad_neg_norm", "num_pos")
    return {f"{k}_{stat}": float(getattr(out[k].double(), stat)())
            for k in metrics for stat in ("mean", "median")}
