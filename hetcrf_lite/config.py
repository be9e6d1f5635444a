"""One dataclass holds every HetCRF setting; YAML in, YAML out, validated.

Every channel and strategy of the method is a field, so "generative only", "contrastive only",
"no augmentation", "meta-path positives only" and "raw-feature views" are configurations, not
code forks. Defaults follow HeCo's public configs where the paper is silent (hidden 64, lr 8e-4,
tau 0.8, lambda 0.5); each **(choice)** of docs/method.md is a field here.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class HetCRFConfig:
    # --- data --------------------------------------------------------------------------------
    dataset: str = "synthetic"  # acm | dblp | aminer | freebase | synthetic
    seed: int = 0  # fixes parameters, masks, samples, K-means: same seed, same embeddings on CPU
    pos_num: int | None = None  # meta-path positives per anchor; None = the dataset's default
    pos_score: str = "count"  # count (HeCo paper) | normalised (HeCo's ACM script)
    # --- shared encoder ----------------------------------------------------------------------
    encoder: str = "han"  # han | gcn (non-attention: one GCN per meta-path, mean fusion)
    hidden_channels: int = 64  # HeCo's width; the speed targets assume it
    heads: int = 1  # attention heads of the node-level GAT (HeCo uses 1)
    feat_drop: float = 0.3  # dropout on the input features
    attn_drop: float = 0.5  # dropout on node-level attention weights
    # Input of a featureless target type (identity features: AMiner, Freebase), an ablation:
    # identity (one-hot ids, the default) | embedding (a trainable N x hidden_channels table,
    # N(0, 1) init, replaces the one-hot input) | random (fixed N(0, 1) codes N x hidden_channels
    # drawn from `seed`, the same values the embedding starts from). Feature reconstruction
    # still targets the node ids under `embedding`, and the codes themselves under `random`
    # (docs/method.md). Other values than identity need identity target features.
    feature_init: str = "identity"
    # --- generative channel -------------------------------------------------------------------
    use_feat_recon: bool = True  # masked attribute reconstruction
    w_feat: float = 1.0
    mask_rate: float = 0.5  # start of the mask-rate schedule
    mask_rate_step: float = 0.0  # HGMAE-style schedule: rate = min(start + step*epoch, end)
    mask_rate_end: float = 0.5
    leave_unchanged: float = 0.0  # share of masked nodes that keep their features
    replace_rate: float = 0.1  # share of masked nodes given another node's features
    gamma_feat: float = 2.0  # SCE exponent: >1 down-weights easy rows
    use_edge_recon: bool = True  # meta-path edge reconstruction
    w_edge: float = 0.5
    edge_drop: float = 0.5  # fraction of each meta-path's edges dropped before encoding
    gamma_edge: float = 1.0
    edge_source: str = "h"  # h (fused H decodes every A^m) | z (Z^m decodes its own A^m)
    edge_dense_threshold: int = 10000  # dense N x N reconstruction up to this many nodes (choice)
    # One encoder pass on masked features AND dropped edges, both reconstruction losses from it
    # (HGMAE encodes them apart): 2 encoder passes per step instead of 3. No effect unless both
    # reconstructions are on (use_* true, w_* > 0).
    shared_generative_pass: bool = False
    # --- contrastive channel ------------------------------------------------------------------
    use_contrastive: bool = True
    w_cl: float = 1.0
    views: str = "embedding"  # embedding (HetCRF) | raw (views from masked raw features: ablation)
    raw_feat_mask: float = 0.3  # feature-mask rate of the raw-feature views
    second_stage: str = "after_views"  # after_views | before_views (choice, see docs/method.md)
    second_stage_depth: int = 1  # GCN layers of the second stage; 0 disables it
    gen_beta_grad: bool = True  # False: the generative losses see beta detached
    cl_encoder_grad: bool = True  # False: contrastive views from the encoder output, detached
    cl_beta_grad: bool = True  # False: the contrastive loss sees beta detached (generative sets it)
    cl_fusion: str = "encoder"  # encoder (views from H) | own (own semantic attention over Z^m)
    second_stage_fusion: str = "mean"  # mean | attention (the views' fusion weights)
    channel_balance: str = "none"  # none | norm | pcgrad: the channels' gradients on the encoder
    channel_grad_every: int = 0  # log the channels' gradient cosine and norms every k epochs
    center_views: bool = True  # subtract the node mean of each view before projecting (choice)
    tau: float = 0.8
    lam: float = 0.5  # weight of the direction with anchors in the fusion view (1 - lam: schema)
    negatives: str = "all"  # all (paper) | debiased | drop_same_cluster
    tau_plus: float = 0.1  # class prior of debiased InfoNCE
    schema_sample: dict[str, int] | None = None  # neighbours sampled per type; None = all
    # --- positive augmentation ----------------------------------------------------------------
    metapath_positives: bool = True  # False: the anchor is its only positive
    cluster_aug: bool = True  # K-means key-deviated-node positives
    num_clusters: int | str | None = None  # None = number of classes; "auto" = silhouette
    cluster_every: int = 10  # T: refresh period in epochs
    cluster_q: float = 0.2  # top-q fraction of each cluster (by distance) is "key deviated"
    cluster_k: int = 5  # extra positives per key deviated node
    cluster_warm_start: bool = True
    cluster_ema: float = 0.0  # momentum on centroids between refreshes (0 = none)
    # --- embedding for downstream tasks -------------------------------------------------------
    embed: str = "concat"  # concat | encoder | contrastive (choice)
    # --- training -----------------------------------------------------------------------------
    lr: float = 8e-4
    attention_detach_z: bool = False  # beta scored on detached Z^m: the encoder cannot game it
    attention_lr_scale: float = 1.0  # semantic attention's lr = lr * this (see model.param_groups)
    weight_decay: float = 0.0
    lr_schedule: str = "constant"  # constant | cosine (cosine annealing to 0 over `epochs`)
    epochs: int = 200
    patience: int = 20  # early stopping on the training loss
    min_epochs: int = 0
    batch_size: int | None = None  # None = full batch; else seeds per subgraph step (minibatch.py)
    num_sampled_negatives: int = 0  # extra random negatives per mini-batch
    # Subgraph mini-batches (hetcrf_lite.minibatch): meta-path neighbours drawn per seed and
    # meta-path at each hop (-1: all); one hop, 2 each: see docs/performance.md (choice)
    fanout: list[int] = field(default_factory=lambda: [2])
    grad_balance_every: int = 1  # log gradient_balance every k epochs (0 = never)
    device: str = "auto"  # auto | cpu | cuda
    eval_lr: float | None = None  # logistic-regression lr; None = 0.05 on ACM, else 0.01

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first impossible field and the fix."""

        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ConfigError(f"config field '{name}' = {getattr(self, name)!r}: {rule}")

        choices = {
            "encoder": ("han", "gcn"),
            "views": ("embedding", "raw"),
            "second_stage": ("after_views", "before_views"),
            "negatives": ("all", "debiased", "drop_same_cluster"),
            "embed": ("concat", "encoder", "contrastive"),
            "pos_score": ("count", "normalised"),
            "device": ("auto", "cpu", "cuda"),
            "lr_schedule": ("constant", "cosine"),
            "feature_init": ("identity", "embedding", "random"),
        }
        for name, allowed in choices.items():
            need(getattr(self, name) in allowed, name, f"must be one of {', '.join(allowed)}")
        for name in ("hidden_channels", "heads", "epochs", "cluster_every", "cluster_k"):
            need(isinstance(getattr(self, name), int) and getattr(self, name) > 0, name,
                 "must be a positive integer")
        need(self.hidden_channels % self.heads == 0, "hidden_channels",
             f"must be divisible by heads={self.heads}")
        for name in ("mask_rate", "mask_rate_end", "edge_drop", "raw_feat_mask", "feat_drop",
                     "attn_drop"):
            need(0.0 <= getattr(self, name) < 1.0, name, "must lie in [0, 1)")
        for name in ("leave_unchanged", "replace_rate", "lam", "cluster_ema", "tau_plus"):
            need(0.0 <= getattr(self, name) <= 1.0, name, "must lie in [0, 1]")
        need(self.leave_unchanged + self.replace_rate <= 1.0, "replace_rate",
             "leave_unchanged + replace_rate must not exceed 1")
        need(0.0 < self.cluster_q <= 1.0, "cluster_q", "must lie in (0, 1]")
        need(self.mask_rate_step >= 0, "mask_rate_step", "must be >= 0")
        need(self.tau > 0, "tau", "must be > 0 (it divides the similarities)")
        for name in ("gamma_feat", "gamma_edge"):
            need(getattr(self, name) >= 1.0, name, "the SCE exponent must be >= 1")
        for name in ("w_feat", "w_edge", "w_cl", "weight_decay", "patience", "min_epochs",
                     "num_sampled_negatives", "grad_balance_every", "second_stage_depth"):
            need(getattr(self, name) >= 0, name, "must be >= 0")
        need(self.lr > 0, "lr", "must be > 0")
        need(self.pos_num is None or (isinstance(self.pos_num, int) and self.pos_num >= 1),
             "pos_num", "must be an integer >= 1 (the anchor counts as one) or None")
        need(self.batch_size is None or (isinstance(self.batch_size, int) and self.batch_size >= 2),
             "batch_size", "must be None (full batch) or an integer >= 2")
        need(isinstance(self.fanout, list) and len(self.fanout) >= 1 and all(
            isinstance(k, int) and (k >= 1 or k == -1) for k in self.fanout), "fanout",
             "must be a non-empty list of integers >= 1 or -1 (all neighbours), one per hop")
        need(self.num_clusters is None or self.num_clusters == "auto"
             or (isinstance(self.num_clusters, int) and self.num_clusters >= 2),
             "num_clusters", "must be None (= number of classes), 'auto' or an integer >= 2")
        need(self.edge_dense_threshold >= 0, "edge_dense_threshold", "must be >= 0")
        need(isinstance(self.shared_generative_pass, bool), "shared_generative_pass",
             "must be true or false")
        need(self.eval_lr is None or self.eval_lr > 0, "eval_lr", "must be > 0 or None")
        active = [self.use_feat_recon and self.w_feat > 0, self.use_edge_recon and self.w_edge > 0,
                  self.use_contrastive and self.w_cl > 0]
        need(any(active), "use_contrastive",
             "every channel is off or weighted 0: enable at least one loss")
        if self.embed == "contrastive":
            need(self.use_contrastive, "embed", "'contrastive' needs use_contrastive: true")

    # ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "HetCRFConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**values)

    def replace(self, **changes: Any) -> "HetCRFConfig":
        """A validated copy with ``changes`` applied (unknown names rejected)."""
        merged = self.to_dict()
        merged.update(changes)
        return HetCRFConfig.from_dict(merged)

    def save(self, path: str | os.PathLike) -> None:
        """Write YAML atomically (temporary file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".cfg-", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            yaml.safe_dump(self.to_dict(), fh, sort_keys=False)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "HetCRFConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        with open(path) as fh:
            values = yaml.safe_load(fh) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"config file {path} must hold a mapping of field: value")
        return cls.from_dict(values)


def default_config(dataset: str, **changes: Any) -> HetCRFConfig:
    """The shipped config for ``dataset`` (``configs/<dataset>.yaml``), with ``changes`` applied."""
    path = CONFIG_DIR / f"{dataset}.yaml"
    if not path.is_file():
        shipped = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"no shipped config for dataset '{dataset}'; shipped: {shipped}. "
                          "Pass --config FILE for your own.")
    cfg = HetCRFConfig.load(path)
    return cfg.replace(**changes) if changes else cfg
