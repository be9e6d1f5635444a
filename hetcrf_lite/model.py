"""HetCRF: one shared encoder, a generative and a contrastive channel, augmented positives.

.. math::
    \\mathcal{L} = w_{feat}\\,\\mathrm{SCE}_{feat} + w_{edge}\\,\\mathrm{SCE}_{edge}
                 + w_{cl}\\,\\mathrm{InfoNCE}

Each training step runs the shared encoder once per corruption it needs: on masked features
(feature reconstruction), on meta-path graphs with dropped edges (edge reconstruction) and on the
clean input (contrastive views). Every channel and strategy is a config switch
(:class:`~hetcrf_lite.config.HetCRFConfig`), never a code fork.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn
from torch_geometric.utils import subgraph as pyg_subgraph

from .augment import ClusterAugmenter, coalesce_pairs, estimate_num_clusters
from .config import HetCRFConfig
from .contrastive import (ProjectionHead, SchemaView, SecondStageGCN, gradient_balance, infonce,
                          infonce_minibatch)
from .data import HINDataset, is_identity
from .encoder import EncoderOutput, SemanticAttention, build_encoder
from .errors import ConfigError
from .generative import (EdgeReconstruction, FeatureReconstruction, MaskSchedule,
                         with_token_column)
from .metapaths import metapath_positives
from .memory import check_full_batch_fits
from .utils import resolve_device


def self_positives(num_nodes: int, device: torch.device | None = None) -> Tensor:
    """The positive set of plain InfoNCE: every anchor is its own (cross-view) positive."""
    idx = torch.arange(num_nodes, device=device)
    return torch.stack([idx, idx])  # [2, N]


def standardise_columns(x: Tensor) -> Tensor:
    r"""Each column of ``x`` ``[N, D]`` z-scored over the rows,
    :math:`(x_{:,j} - \mu_j) / \sigma_j` with the population :math:`\sigma_j` (scikit-learn's
    ``StandardScaler``); a column that is constant up to float rounding becomes 0. Written in
    torch (two reductions) so that it runs on the model's device without a NumPy round trip."""
    mean = x.mean(0)
    std = x.std(0, unbiased=False)
    constant = std <= 1e-6 * mean.abs().clamp_min(1e-12)
    return (x - mean) / torch.where(constant, torch.ones_like(std), std)


def normalise_embedding(emb: Tensor, norm: str) -> Tensor:
    """``emb`` as it is (``norm="none"``) or :func:`standardise_columns` (``"standardise"``)."""
    if norm == "none":
        return emb
    if norm != "standardise":
        raise ConfigError(f"embed_norm={norm!r}: use none or standardise")
    return standardise_columns(emb)


def compose_embedding(h: Tensor, contrast: Tensor | None, mode: str, norm: str) -> Tensor:
    """The final embedding from the encoder output ``h`` and the contrastive embedding
    (``None`` without the contrastive channel): ``concat`` [H, contrastive], ``encoder`` H or
    ``contrastive``, normalised as ``norm`` says (:func:`normalise_embedding`)."""
    if mode == "encoder" or contrast is None:
        out = h
    else:
        out = contrast if mode == "contrastive" else torch.cat([h, contrast], dim=1)
    return normalise_embedding(out, norm)


def balance_gradients(g_gen: Tensor, g_cl: Tensor, mode: str) -> Tensor:
    r"""Combine the two channels' gradients on the shared encoder (flattened vectors).

    ``norm`` rescales the contrastive one to the generative one's length,
    :math:`g = g_{gen} + g_{cl} \lVert g_{gen}\rVert / \lVert g_{cl}\rVert`; ``pcgrad``
    (Yu et al. 2020) removes from each the component along the other when they conflict
    (:math:`g_{gen} \cdot g_{cl} < 0`), :math:`g_a \leftarrow g_a - \frac{\min(0,\,
    g_a \cdot g_b)}{\lVert g_b\rVert^2} g_b`, and adds the two; ``none`` adds them."""
    if mode == "none":
        return g_gen + g_cl
    if mode == "norm":
        return g_gen + g_cl * (g_gen.norm() / g_cl.norm().clamp_min(1e-30))
    if mode != "pcgrad":
        raise ConfigError(f"channel_balance={mode!r}: use none, norm or pcgrad")
    dot = torch.dot(g_gen, g_cl).clamp_max(0)
    return (g_gen - dot / g_cl.pow(2).sum().clamp_min(1e-30) * g_cl
            + g_cl - dot / g_gen.pow(2).sum().clamp_min(1e-30) * g_gen)


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block ``module`` is in eval mode; its previous mode is restored afterwards."""
    was = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was)


def _flat_grad(loss: Tensor, params: list[Tensor]) -> Tensor:
    """``d loss / d params`` flattened into one vector (zeros where a parameter is unused)."""
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                      for g, p in zip(grads, params)])


@dataclass
class GraphTensors:
    r"""The per-graph inputs of a HetCRF step, on the model's device.

    :meth:`HetCRF.full_graph` gives those of the graph the model was built on;
    :meth:`HetCRF.subgraph` those of an induced subgraph of it (the mini-batch step of
    :mod:`hetcrf_lite.minibatch`). A step is ``model.training_step(epoch, graph)``: the
    parameters stay in the model, so a step on a subgraph trains it, and the model itself is never
    modified to point at another graph.

    Attributes:
        num_nodes (int): target nodes :math:`N`.
        x (Tensor): the encoder input ``[N, F]`` (dense or sparse); for ``feature_init``
            ``embedding`` the model's parameter table, or rows of it (the gradient reaches them).
        feat_target (Tensor or None): the feature-reconstruction target when it is not ``x``.
        edge_index_dict (dict[str, Tensor]): meta-path graphs ``{metapath: [2, E]}``.
        base_pos (Tensor): ``[2, P]`` meta-path (or self) positives.
        relations (dict[str, Tensor] or None): schema-view relation edges ``{t: [2, E_t]}``;
            ``None``: those the schema view holds (the full graph).
        cluster_labels (Tensor or None): ``[N]`` K-means labels of the cluster positives.
        extra_pos (Tensor or None): ``[2, P_extra]`` cluster positives.
        node_ids (Tensor or None): full-graph ids of the target nodes of a subgraph, in its
            order; ``None`` for the full graph.
    """

    num_nodes: int
    x: Tensor
    feat_target: Tensor | None
    edge_index_dict: dict[str, Tensor]
    base_pos: Tensor
    relations: dict[str, Tensor] | None = None
    cluster_labels: Tensor | None = None
    extra_pos: Tensor | None = None
    node_ids: Tensor | None = None


class HetCRF(nn.Module):
    r"""The HetCRF model bound to one dataset (graph tensors live on the model's device).

    Args:
        dataset (HINDataset): the graph, its meta-paths and meta-path positives.
        config (HetCRFConfig): every hyper-parameter and switch.

    Introduced in notebook 04.
    """

    def __init__(self, dataset: HINDataset, config: HetCRFConfig) -> None:
        super().__init__()
        check_full_batch_fits(dataset, config)  # refuses N x N work that cannot fit, names batch_size
        self.config = config
        self.device_ = resolve_device(config.device)
        self.dataset = dataset
        self.metapath_names = list(dataset.metapaths)
        self.num_nodes = dataset.num_nodes
        # the encoder's clean input; the reconstruction target when it differs from it
        self.x, self._feat_target, token_column = self._input_features(dataset, config)
        self.edge_index_dict = {k: v.to(self.device_) for k, v in dataset.metapath_adj.items()}
        self.generator = torch.Generator().manual_seed(config.seed)  # masks, drops, samples
        self.encoder = build_encoder(config.encoder, in_channels=self.x.shape[1],
                                     hidden_channels=config.hidden_channels,
                                     metapaths=self.metapath_names, heads=config.heads,
                                     feat_drop=config.feat_drop, attn_drop=config.attn_drop,
                                     semantic_fusion=config.semantic_fusion,
                                     node_attention=config.node_attention)
        if token_column:
            with torch.no_grad():  # the [MASK] input column starts at zero, as GraphMAE's token
                self.encoder.proj.weight[:, -1] = 0.0
        self._build_generative(config, token_column)
        if config.use_contrastive:
            self._build_contrastive(dataset, config)
        self.base_pos = self._base_positives(dataset).to(self.device_)
        self.augmenter = None
        if config.use_contrastive and config.cluster_aug:
            k = config.num_clusters if config.num_clusters is not None else dataset.num_classes
            self.augmenter = ClusterAugmenter(num_clusters=k, refresh_every=config.cluster_every,
                                              q=config.cluster_q, k=config.cluster_k,
                                              warm_start=config.cluster_warm_start,
                                              ema=config.cluster_ema, seed=config.seed)
        # (z_fusion, z_schema, positives) of the last contrastive step, for gradient_balance_summary
        self._last_views: tuple[Tensor, Tensor, Tensor] | None = None
        self._balance_anchors: dict[int, Tensor] = {}  # per graph size
        self.diagnostics: dict[str, Any] = {}  # this step's beta, channel gradients (history)
        self.to(self.device_)

    def _build_generative(self, config: HetCRFConfig, token_column: bool) -> None:
        """The feature and edge reconstructions that are switched on, and the mask schedule."""
        hidden = config.hidden_channels
        target = self.x if self._feat_target is None else self._feat_target
        self.feat_recon = (FeatureReconstruction(target.shape[1] - int(token_column), hidden,
                                                 self.metapath_names, gamma=config.gamma_feat,
                                                 leave_unchanged=config.leave_unchanged,
                                                 replace_rate=config.replace_rate,
                                                 mask_channels=(hidden if config.feature_init ==
                                                                "embedding" else None),
                                                 token_column=token_column,
                                                 attention=config.node_attention == "gat")
                           if config.use_feat_recon else None)
        self.mask_schedule = MaskSchedule(config.mask_rate, config.mask_rate_step,
                                          config.mask_rate_end)
        self.edge_recon = (EdgeReconstruction(hidden, self.metapath_names,
                                              drop_rate=config.edge_drop, gamma=config.gamma_edge,
                                              dense_threshold=config.edge_dense_threshold,
                                              uniform_weights=config.edge_loss_weights == "uniform",
                                              attention=config.node_attention == "gat")
                           if config.use_edge_recon else None)

    def _build_contrastive(self, dataset: HINDataset, config: HetCRFConfig) -> None:
        """Schema view (holding the full graph's relation edges), second stage, projection head;
        the contrastive channel's own semantic attention and the raw-feature projection when
        the config asks for them."""
        hidden = config.hidden_channels
        relations = {t: dataset.neighbors(t).to(self.device_) for t in dataset.neighbor_types}
        self.schema_view = SchemaView(hidden, relations, sample=config.schema_sample,
                                      exclude_self=config.schema_exclude_self)
        self.second_stage = SecondStageGCN(hidden, config.second_stage_depth)
        self.projection = ProjectionHead(hidden, hidden)
        if config.cl_fusion == "own":
            self.cl_semantic = SemanticAttention(hidden)
        if config.views == "raw":
            # Ablation: the schema view is fed raw (masked) features, as HeCo does.
            self.raw_projection = nn.Linear(self.x.shape[1], hidden)

    # --------------------------------------------------------------------------------------------
    def full_graph(self) -> GraphTensors:
        """The :class:`GraphTensors` of the graph the model was built on, with the current
        cluster labels and positives."""
        aug = self.augmenter
        return GraphTensors(num_nodes=self.num_nodes, x=self.x, feat_target=self._feat_target,
                            edge_index_dict=self.edge_index_dict, base_pos=self.base_pos,
                            cluster_labels=None if aug is None else aug.labels,
                            extra_pos=None if aug is None else aug.extra)

    def subgraph(self, sub: HINDataset, node_ids: Tensor) -> GraphTensors:
        """The :class:`GraphTensors` of ``sub``, an induced subgraph of the model's graph.

        The encoder input is rebuilt from ``sub``'s features as ``__init__`` builds it (for
        ``feature_init`` ``embedding`` / ``random``: rows ``node_ids`` of the table, so the
        gradient reaches those rows); the meta-path graphs and schema relations are ``sub``'s;
        the base positives and the cluster labels and extra positives are restricted to the
        set (pairs with both ends in it, relabelled). A step on the result,
        ``training_step(epoch, graph)``, trains the shared parameters; the subgraph of
        ``arange(N)`` gives the full-graph step exactly.

        Args:
            sub (HINDataset): the sub-dataset (:func:`hetcrf_lite.minibatch.induced_subgraph`).
            node_ids (Tensor): ``[|S|]`` distinct full-graph ids of its target nodes, in its order.

        Raises:
            ConfigError: ``node_ids`` does not match ``sub``'s target nodes.
        """
        if node_ids.numel() != sub.num_nodes:
            raise ConfigError(f"subgraph: {node_ids.numel()} node_ids for a subgraph of "
                              f"{sub.num_nodes} target nodes")
        dev, n_full = self.device_, self.num_nodes
        ids = node_ids.to(dev, torch.long)

        def restrict(pairs: Tensor) -> Tensor:  # [2, P] pairs inside the set, relabelled
            return pyg_subgraph(ids.to(pairs.device), pairs, relabel_nodes=True,
                                num_nodes=n_full)[0]

        if self.config.feature_init != "identity":  # x is a per-node table: slice its rows
            x = self.x.index_select(0, ids)  # [|S|, hidden]
            target = None if self._feat_target is None else sub.x.to(dev)  # identity rows
        else:
            x, target, _ = self._input_features(sub, self.config)
        aug = self.augmenter
        labelled = aug is not None and aug.labels is not None
        return GraphTensors(
            num_nodes=sub.num_nodes, x=x, feat_target=target,
            edge_index_dict={k: v.to(dev) for k, v in sub.metapath_adj.items()},
            base_pos=restrict(self.base_pos),
            relations={t: sub.neighbors(t).to(dev) for t in sub.neighbor_types},
            cluster_labels=aug.labels[ids.to(aug.labels.device)] if labelled else None,
            extra_pos=restrict(aug.extra) if labelled else None, node_ids=ids)

    def _input_features(self, dataset: HINDataset,
                        config: HetCRFConfig) -> tuple[Tensor, Tensor | None, bool]:
        """``(x, target, token_column)``: the encoder's clean input, the feature-reconstruction
        target when it is not ``x`` (``None`` otherwise), and whether ``x`` carries a [MASK]
        column (:func:`~hetcrf_lite.generative.with_token_column`).

        ``feature_init``: ``identity`` keeps the dataset's features; sparse ones (identity
        features, sparse bag-of-words) get the [MASK] column when feature reconstruction is on,
        so masking never densifies them. ``embedding`` is the table of an
        ``nn.Embedding(N, hidden_channels)`` (its ``N(0, 1)`` init, seeded by ``seed``), held as
        the parameter ``x`` since every row is looked up every step; the target stays the node
        ids. ``random`` is the same draw, fixed, and is its own target."""
        x = dataset.x.to(self.device_)
        if config.feature_init == "identity":
            token_column = bool(x.is_sparse and config.use_feat_recon and config.w_feat > 0)
            return (with_token_column(x) if token_column else x), None, token_column
        if not is_identity(dataset.x):
            raise ConfigError(
                f"feature_init={config.feature_init!r} replaces identity (one-hot) features, but "
                f"dataset {dataset.name!r} has {'sparse' if x.is_sparse else 'dense'} target "
                f"features of shape {tuple(x.shape)}: keep feature_init: identity there; the "
                "ablation is for featureless target types (aminer, freebase, "
                "make_synthetic_hin(feature_mode='none'))")
        g = torch.Generator().manual_seed(config.seed)
        codes = torch.randn(dataset.num_nodes, config.hidden_channels, generator=g)  # [N, hidden]
        codes = codes.to(self.device_)
        if config.feature_init == "embedding":
            return nn.Parameter(codes), x, False
        return codes, None, False

    def _shared_generative_losses(self, epoch: int, g: GraphTensors) -> tuple[Tensor, Tensor]:
        """Feature and edge reconstruction losses from ONE encoder pass on masked features and
        dropped edges (``shared_generative_pass``), through the channels' own ``corrupt`` /
        ``loss_from``. The draws come in the separate passes' order (mask, then drops); the
        feature decoder aggregates over the full meta-path graphs and the edge decoder over the
        thinned ones, as with separate passes: only the encoder's input changes."""
        x_masked, masked_idx, _ = self.feat_recon.corrupt(g.x, self.mask_schedule(epoch),
                                                          generator=self.generator)
        visible = self.edge_recon.corrupt(g.edge_index_dict, self.generator)
        enc = self.encoder(x_masked, visible)
        target = g.x if g.feat_target is None else g.feat_target
        feat = self.feat_recon.loss_from(enc, target, masked_idx, g.edge_index_dict)
        edge, _ = self.edge_recon.loss_from(enc, g.edge_index_dict, visible, self.generator)
        return feat, edge

    def _base_positives(self, dataset: HINDataset) -> Tensor:
        cfg = self.config
        if not cfg.metapath_positives:
            return self_positives(self.num_nodes)
        if cfg.pos_num is None and dataset.pos is not None:
            return dataset.pos
        if cfg.pos_num is None:
            raise ConfigError(f"dataset {dataset.name} carries no positive sets; set pos_num")
        return metapath_positives(dataset.metapath_adj, self.num_nodes, cfg.pos_num,
                                  score=cfg.pos_score)

    def positives(self, graph: GraphTensors | None = None) -> Tensor:
        """The current positive sets of ``graph`` (default: the full graph): meta-path (or self)
        positives plus cluster extras."""
        if graph is None or graph.node_ids is None:  # the augmenter caches the full graph's
            return self.base_pos if self.augmenter is None else \
                self.augmenter.positives(self.base_pos)
        if graph.extra_pos is None:
            return graph.base_pos
        pairs = torch.cat([graph.base_pos, graph.extra_pos.to(graph.base_pos.device)], dim=1)
        return coalesce_pairs(pairs, graph.num_nodes)

    def _sparse_dropout(self, x: Tensor, rate: float) -> Tensor:
        """Feature masking of the raw-feature views (dense or sparse input)."""
        if rate == 0 or not self.training:
            return x
        if x.is_sparse:
            x = x.coalesce()
            keep = (torch.rand(x.values().shape, generator=self.generator) >= rate).to(x.device)
            return torch.sparse_coo_tensor(x.indices()[:, keep], x.values()[keep], x.shape)
        keep = torch.rand(x.shape[1], generator=self.generator).to(x.device) >= rate
        return x * keep  # column masking, as GRACE/HeCo-style feature masking

    # --------------------------------------------------------------------------------------------
    def _contrastive_input(self, enc: EncoderOutput) -> tuple[Tensor, Tensor | None]:
        """``(h, beta)`` the contrastive channel starts from: the encoder's fusion, or its own
        (``cl_fusion: own``), detached as ``cl_encoder_grad`` and ``cl_beta_grad`` say."""
        cfg = self.config
        zs = [enc.z[m] for m in self.metapath_names]
        if any(self._reconstructions_on()) and not cfg.cl_encoder_grad:  # the encoder belongs to the generative channel
            zs = [z.detach() for z in zs]
            enc = enc._replace(h=enc.h.detach(), semantic_attention=None
                               if enc.semantic_attention is None
                               else enc.semantic_attention.detach())
        if cfg.cl_fusion == "own":
            return self.cl_semantic(zs)
        beta = enc.semantic_attention
        if beta is None or cfg.cl_beta_grad:
            return enc.h, beta
        beta = beta.detach()
        return (beta.view(-1, 1, 1) * torch.stack(zs)).sum(0), beta  # [N, hidden]

    def views(self, enc: EncoderOutput, graph: GraphTensors | None = None
              ) -> tuple[Tensor, Tensor]:
        """Fusion and schema views of ``graph`` (default: the full graph), after the
        second-stage GCN (before the projection head)."""
        cfg = self.config
        g = graph if graph is not None else self.full_graph()
        h, beta = self._contrastive_input(enc)
        self._cl_beta = None if beta is None else beta.detach()
        weights = beta if cfg.second_stage_fusion == "beta" else None  # None: the mean
        schema_in = h
        if cfg.views == "raw":
            raw = self._sparse_dropout(g.x, cfg.raw_feat_mask)
            base = (torch.sparse.mm(raw, self.raw_projection.weight.t()) + self.raw_projection.bias
                    if raw.is_sparse else self.raw_projection(raw))
            schema_in = torch.nn.functional.elu(base)

        def schema_view(h: Tensor) -> Tensor:
            return self.schema_view(h, g.relations, generator=self.generator)

        if cfg.second_stage == "before_views":
            fusion = self.second_stage(h, g.edge_index_dict, weights)
            return fusion, schema_view(schema_in if cfg.views == "raw" else fusion)
        fusion = self.second_stage(h, g.edge_index_dict, weights)
        schema = self.second_stage(schema_view(schema_in), g.edge_index_dict, weights)
        return fusion, schema

    def contrastive_loss(self, enc: EncoderOutput, graph: GraphTensors | None = None) -> Tensor:
        """InfoNCE between the projected fusion and schema views of ``graph`` (default: the
        full graph), on its positives; on ``batch_size`` random anchors when that is set."""
        cfg = self.config
        g = graph if graph is not None else self.full_graph()
        fusion, schema = self.views(enc, g)
        if self.config.center_views:
            # Averaging over dense meta-path graphs (twice) leaves a large component shared by
            # every node; cosine similarity would see only it. Centering removes it (choice).
            fusion, schema = fusion - fusion.mean(0), schema - schema.mean(0)
        z_f, z_s = self.projection(fusion), self.projection(schema)
        pos = self.positives(g)
        self._last_views = (z_f.detach(), z_s.detach(), pos)
        cluster = g.cluster_labels if cfg.negatives == "drop_same_cluster" else None
        # before the first refresh there are no clusters to drop
        unclustered = cfg.negatives == "drop_same_cluster" and cluster is None
        negatives = "all" if unclustered else cfg.negatives
        if cfg.batch_size is not None and cfg.batch_size < g.num_nodes:
            anchors = torch.randperm(g.num_nodes, generator=self.generator)[: cfg.batch_size]
            return infonce_minibatch(z_f, z_s, pos, anchors.to(z_f.device), tau=cfg.tau,
                                     lam=cfg.lam, num_sampled_negatives=cfg.num_sampled_negatives,
                                     generator=self.generator)
        return infonce(z_f, z_s, pos, tau=cfg.tau, lam=cfg.lam, negatives=negatives,
                       cluster=cluster, tau_plus=cfg.tau_plus)

    def _reconstructions_on(self) -> tuple[bool, bool]:
        """Whether feature and edge reconstruction contribute to the loss."""
        cfg = self.config
        return (self.feat_recon is not None and cfg.w_feat > 0,
                self.edge_recon is not None and cfg.w_edge > 0)

    def _generative_losses(self, epoch: int, g: GraphTensors) -> dict[str, Tensor]:
        """The unweighted reconstruction losses that are on: ``{"feat": ..., "edge": ...}``."""
        cfg = self.config
        feat_on, edge_on = self._reconstructions_on()
        gen: dict[str, Tensor] = {}
        if feat_on and edge_on and cfg.shared_generative_pass:
            gen["feat"], gen["edge"] = self._shared_generative_losses(epoch, g)
            return gen
        if feat_on:
            gen["feat"], _ = self.feat_recon(self.encoder, g.x, g.edge_index_dict,
                                             self.mask_schedule(epoch), generator=self.generator,
                                             target=g.feat_target)
        if edge_on:
            gen["edge"], _ = self.edge_recon(self.encoder, g.x, g.edge_index_dict,
                                             generator=self.generator)
        return gen

    def _set_beta_detached(self, flag: bool) -> None:
        """Fuse with constant beta (the generative passes of ``gen_beta_grad: false``)."""
        for module in self.encoder.modules():
            if isinstance(module, SemanticAttention):
                module.detach_weights = flag

    # --------------------------------------------------------------------------------------------
    def training_step(self, epoch: int, graph: GraphTensors | None = None
                      ) -> tuple[Tensor, dict[str, float]]:
        """One optimisation step's loss and its weighted parts, on ``graph`` (default: the full
        graph; :meth:`subgraph` for a mini-batch step)."""
        cfg = self.config
        g = graph if graph is not None else self.full_graph()
        self._set_beta_detached(not cfg.gen_beta_grad)
        try:
            gen = self._generative_losses(epoch, g)
        finally:
            self._set_beta_detached(False)
        gen_total = sum((w * gen[n] for n, w in (("feat", cfg.w_feat), ("edge", cfg.w_edge))
                         if n in gen), torch.zeros((), device=self.device_))
        parts = {name: float(loss.detach()) for name, loss in gen.items()}  # feat, then edge
        self.diagnostics = {}
        cl_total = None
        if cfg.use_contrastive and cfg.w_cl > 0:
            enc = self.encoder(g.x, g.edge_index_dict)
            loss = self.contrastive_loss(enc, g)
            cl_total = cfg.w_cl * loss
            parts["infonce"] = float(loss.detach())
            if enc.semantic_attention is not None:
                self.diagnostics["beta"] = enc.semantic_attention.detach().tolist()
            if cfg.cl_fusion == "own":
                self.diagnostics["cl_beta"] = self._cl_beta.tolist()
        total = gen_total if cl_total is None else gen_total + cl_total
        every = cfg.channel_grad_every
        measure = bool(every) and epoch % every == 0
        if (gen and cl_total is not None) and (measure or cfg.channel_balance != "none"):
            total = total + self._balance_channels(gen_total, cl_total, measure)
        return total, parts

    def _balance_channels(self, gen_loss: Tensor, cl_loss: Tensor, log: bool) -> Tensor:
        """Each channel's gradient on the shared encoder; logs their cosine and norms, and
        returns a zero-valued term whose gradient turns ``g_gen + g_cl`` into the balanced
        combination of ``channel_balance`` (``none``: unchanged)."""
        params = [p for p in self.encoder.parameters() if p.requires_grad]
        g_gen = _flat_grad(gen_loss, params)
        g_cl = _flat_grad(cl_loss, params)
        n_gen, n_cl = g_gen.norm(), g_cl.norm()
        cos = torch.dot(g_gen, g_cl) / (n_gen * n_cl).clamp_min(1e-30)
        if log:
            self.diagnostics.update(grad_cos=float(cos), grad_norm_gen=float(n_gen),
                                    grad_norm_cl=float(n_cl))
        if self.config.channel_balance == "none":
            return gen_loss.new_zeros(())
        g = balance_gradients(g_gen, g_cl, self.config.channel_balance)
        delta = (g - g_gen - g_cl).detach()
        flat = torch.cat([p.reshape(-1) for p in params])
        return torch.dot(flat - flat.detach(), delta)  # value 0, gradient delta

    # --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self) -> EncoderOutput:
        """The encoder on the clean graph, in eval mode."""
        with eval_mode(self):
            return self.encoder(self.x, self.edge_index_dict)

    @torch.no_grad()
    def contrastive_embedding(self, enc: EncoderOutput | None = None) -> Tensor:
        """The fusion view after the second stage (HeCo's downstream view), in eval mode."""
        with eval_mode(self):
            enc = enc if enc is not None else self.encoder(self.x, self.edge_index_dict)
            return self.views(enc)[0]

    @torch.no_grad()
    def embed(self, mode: str | None = None, norm: str | None = None) -> Tensor:
        """Final embedding: ``concat`` [H, contrastive], ``encoder`` H or ``contrastive``
        (``mode``, default ``config.embed``), as it is (``norm="none"``) or with its columns
        standardised (``"standardise"``, :func:`standardise_columns`; default
        ``config.embed_norm``)."""
        mode = mode or self.config.embed
        enc = self.encode()
        contrast = (self.contrastive_embedding(enc)
                    if mode != "encoder" and self.config.use_contrastive else None)
        return compose_embedding(enc.h, contrast, mode, norm or self.config.embed_norm)

    # --------------------------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int,
                       embedding: Callable[[], Tensor] | None = None) -> bool:
        """Refresh the cluster positives every T epochs (warm-started K-means).

        ``embedding`` computes the full graph's contrastive embedding that K-means clusters
        (default: :meth:`contrastive_embedding`; the mini-batch trainer passes its layer-wise
        inference, the same values in bounded memory). Returns whether the positive sets
        changed: the loss before and after a refresh measure different objectives, so
        :class:`~hetcrf_lite.trainer.Trainer` re-baselines early stopping.
        """
        if self.augmenter is None:
            return False
        embedding = embedding if embedding is not None else self.contrastive_embedding
        if self.augmenter.num_clusters == "auto" and epoch == 0:
            k, _ = estimate_num_clusters(embedding().cpu().numpy(), seed=self.config.seed)
            self.augmenter.num_clusters = k
        if self.augmenter.due(epoch):
            return self.augmenter.maybe_refresh(epoch, embedding())
        return False

    def gradient_balance_summary(self) -> dict[str, float]:
        """Summary of :func:`gradient_balance` on the last step's projected views and the
        positives they were trained with (of the full graph or of the step's subgraph)."""
        if self._last_views is None:
            return {}
        z_f, z_s, pos = self._last_views
        n = z_f.shape[0]
        # A fixed seeded subset of anchors: the full measurement costs seconds per epoch on CPU.
        if n not in self._balance_anchors:
            g = torch.Generator().manual_seed(self.config.seed + 1)
            self._balance_anchors[n] = torch.randperm(n, generator=g)[:min(n, 512)].sort().values
        anchors = self._balance_anchors[n].to(z_f.device)
        summary = gradient_balance(z_f, z_s, pos, tau=self.config.tau,
                                   anchors=anchors)["summary"]
        return {k: float(v) for k, v in summary.items()}

    def refresh_log(self) -> list[dict[str, Any]]:
        return [] if self.augmenter is None else list(self.augmenter.history)

    def extra_state(self) -> dict[str, Any]:
        """Non-parameter state a resume needs: the sampling generator and cluster positives."""
        return {"generator": self.generator.get_state(),
                "augmenter": None if self.augmenter is None else self.augmenter.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        if self.augmenter is not None and state.get("augmenter") is not None:
            self.augmenter.load_state_dict(state["augmenter"])
