"""One dataclass holds every HetCRF setting; YAML in, YAML out, validated.

Every channel and strategy of the method is a field, so "generative only", "contrastive only",
"no augmentation", "meta-path positives only" and "raw-feature views" are configurations, not
code forks. Defaults follow HeCo's public configs where the paper is silent (hidden 64, lr 8e-4,
tau 0.8, lambda 0.5); each **(choice)** of docs/method.md is a field here.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
import types
import typing
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"

RESUME_SAFE_FIELDS = ("epochs", "lr", "weight_decay", "patience", "min_epochs",
                      "grad_balance_every", "eval_lr", "device")
"""Fields ``--resume --override FIELD=VALUE`` may change: how long and how fast to optimise,
when to stop, what to log, where to run and how to evaluate. Everything else (the model, the
data, the objective, the seed) defines the run, so a change needs a fresh run folder."""

ADDED_FIELDS: dict[str, Any] = {"semantic_fusion": "attention", "embed_norm": "none",
                                 "node_attention": "gat", "schema_exclude_self": False}
"""Fields added after results were recorded, each with the value under which the code computes
exactly what it did before the field existed. :meth:`HetCRFConfig.identity` leaves such a field
out while it holds that value, so that adding a field keeps earlier run records, ``make
reproduce`` rows and benchmark caches valid."""

NONFINITE_FIELDS: frozenset[str] = frozenset()
"""Float fields where ``inf`` means something (none yet); every other float must be finite."""

MAX_CONFIG_BYTES = 1 << 20  # a config is a few kB; a bigger "config" is the wrong file


@dataclass
class HetCRFConfig:
    # --- data --------------------------------------------------------------------------------
    dataset: str = "synthetic"  # acm | dblp | aminer | freebase | synthetic
    seed: int = 0  # fixes parameters, masks, samples, K-means: same seed, same embeddings on CPU
    pos_num: int | None = None  # meta-path positives per anchor; None = the dataset's default
    pos_score: Literal["count", "normalised"] = "count"  # HeCo paper | HeCo's ACM script
    # A graph of your own instead of a built-in dataset (hetcrf_lite.data.load_graph_dataset):
    # a HeteroData saved with torch.save, read with weights_only=True. `dataset` then only names
    # it. A relative path in a YAML file is taken from that file's folder.
    graph: str | None = None
    target: str | None = None  # the labelled node type of `graph` (labels: data[target].y)
    metapaths: list[str | list[str]] | None = None  # e.g. [PAP, PSP] or [[paper, author, paper]]
    split_seed: int = 0  # seed of the 20/40/60 splits drawn when `graph` stores no split masks
    # --- shared encoder ----------------------------------------------------------------------
    encoder: Literal["han", "gcn"] = "han"  # gcn: one GCN per meta-path, mean fusion
    hidden_channels: int = 64  # HeCo's width; the speed targets assume it
    heads: int = 1  # attention heads of the node-level GAT (HeCo uses 1)
    # How the HAN encoder fuses its meta-path embeddings: attention (HAN's semantic attention,
    # beta learned) | mean (beta = 1/M: cannot collapse; docs/method.md, notebook 09)
    semantic_fusion: Literal["attention", "mean"] = "attention"
    # How every GAT layer (the encoder's, both decoders') weighs a node's meta-path neighbours:
    # gat (HAN's node-level attention) | mean (uniform: the neighbour mean). On dense noisy
    # features the attention collapses onto one neighbour per node (docs/method.md, notebook 09)
    node_attention: Literal["gat", "mean"] = "gat"
    feat_drop: float = 0.3  # dropout on the input features
    attn_drop: float = 0.5  # dropout on node-level attention weights
    # Input of a featureless target type (identity features: AMiner, Freebase), an ablation:
    # identity (one-hot ids, the default) | embedding (a trainable N x hidden_channels table,
    # N(0, 1) init, replaces the one-hot input) | random (fixed N(0, 1) codes N x hidden_channels
    # drawn from `seed`, the same values the embedding starts from). Feature reconstruction
    # still targets the node ids under `embedding`, and the codes themselves under `random`
    # (docs/method.md). Other values than identity need identity target features.
    feature_init: Literal["identity", "embedding", "random"] = "identity"
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
    # Each meta-path's edge loss weighted by beta (detached, default) or uniform (1/M). Uniform
    # steadies the generative channel alone on the synthetic graph (Macro-F1 62-96 over seeds
    # 0-4 -> 85-96) but not the full model (docs/method.md, "How the channels share the encoder").
    edge_loss_weights: Literal["beta", "uniform"] = "beta"
    edge_dense_threshold: int = 10000  # dense N x N reconstruction up to this many nodes (choice)
    # One encoder pass on masked features AND dropped edges, both reconstruction losses from it
    # (HGMAE encodes them apart): 2 encoder passes per step instead of 3. No effect unless both
    # reconstructions are on (use_* true, w_* > 0).
    shared_generative_pass: bool = False
    # --- contrastive channel ------------------------------------------------------------------
    use_contrastive: bool = True
    w_cl: float = 1.0
    views: Literal["embedding", "raw"] = "embedding"  # raw: views from masked raw features
    raw_feat_mask: float = 0.3  # feature-mask rate of the raw-feature views
    second_stage: Literal["after_views", "before_views"] = "after_views"  # (choice)
    second_stage_depth: int = 1  # GCN layers of the second stage; 0 disables it
    # How the channels share the encoder (docs/method.md, notebook 09). With a generative loss
    # on, cl_encoder_grad false stops the contrastive gradient at the encoder output: InfoNCE
    # between these views rewards clique meta-paths (P-S-P: a subject code makes both views
    # agree), and through the shared encoder it drags beta onto them. Alone it trains the encoder.
    cl_encoder_grad: bool = False
    cl_beta_grad: bool = True  # False: the contrastive loss sees beta detached (Z^m still train)
    gen_beta_grad: bool = True  # False: the generative losses see beta detached
    # encoder: views from H | own: the channel's own semantic attention on Z^m
    cl_fusion: Literal["encoder", "own"] = "encoder"
    # Second-stage GCN over the meta-path graphs: mean (1/M each) | beta (the views' fusion
    # weights, detached unless cl_beta_grad and cl_encoder_grad let them train)
    second_stage_fusion: Literal["mean", "beta"] = "beta"
    # the channels' gradients on the encoder
    channel_balance: Literal["none", "norm", "pcgrad"] = "none"
    channel_grad_every: int = 0  # log the channels' gradient cosine and norms every k epochs
    center_views: bool = True  # subtract the node mean of each view before projecting (choice)
    tau: float = 0.8
    lam: float = 0.5  # weight of the direction with anchors in the fusion view (1 - lam: schema)
    negatives: Literal["all", "debiased", "drop_same_cluster"] = "all"  # all: the paper
    tau_plus: float = 0.1  # class prior of debiased InfoNCE
    schema_sample: dict[str, int] | None = None  # neighbours sampled per type; None = all
    # Leave node i out of its schema neighbours' means (SchemaView.exclude_self): a neighbour
    # with one target node (59% of AMiner's paper-author edges) otherwise hands i its own
    # embedding, a shortcut between the two views. Off: the plain mean of the method page.
    schema_exclude_self: bool = False
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
    embed: Literal["concat", "encoder", "contrastive"] = "concat"  # (choice)
    # standardise: every column of that embedding z-scored over the nodes (no label read). Where
    # an embedding is mostly one vector shared by all nodes, its scale hides the classes from a
    # linear probe (docs/method.md, "Where the movie graph loses the classes"); tune tries both.
    embed_norm: Literal["none", "standardise"] = "none"
    # --- training -----------------------------------------------------------------------------
    lr: float = 8e-4
    weight_decay: float = 0.0
    # cosine: cosine annealing to 0 over `epochs`
    lr_schedule: Literal["constant", "cosine"] = "constant"
    epochs: int = 200
    patience: int = 20  # early stopping on the training loss
    min_epochs: int = 0
    batch_size: int | None = None  # None = full batch; else seeds per subgraph step (minibatch.py)
    num_sampled_negatives: int = 0  # extra random negatives per mini-batch
    # Subgraph mini-batches (hetcrf_lite.minibatch): meta-path neighbours drawn per seed and
    # meta-path at each hop (-1: all); one hop, 2 each: see docs/performance.md (choice)
    fanout: list[int] = field(default_factory=lambda: [2])
    grad_balance_every: int = 1  # log gradient_balance every k epochs (0 = never)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    eval_lr: float | None = None  # logistic-regression lr; None = 0.05 on ACM, else 0.01

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first impossible field and the fix.

        First every field is checked against its annotation (:func:`check_types`), and
        converted where that is lossless (``"1e-3"`` to ``0.001``, ``3.0`` to ``3``)."""
        check_types(self)

        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ConfigError(f"config field '{name}' = {getattr(self, name)!r}: {rule}")

        for check in (self._validate_ranges, self._validate_graph, self._validate_sampling,
                      self._validate_channels):
            check(need)

    def _validate_ranges(self, need) -> None:
        """Numbers: sizes, rates, weights, the learning rate and the seeds."""
        for name in ("hidden_channels", "heads", "epochs", "cluster_every", "cluster_k"):
            need(getattr(self, name) > 0, name, "must be a positive integer")  # an int already
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
                     "num_sampled_negatives", "grad_balance_every", "second_stage_depth",
                     "channel_grad_every"):
            need(getattr(self, name) >= 0, name, "must be >= 0")
        need(self.lr > 0, "lr", "must be > 0")
        need(0 <= self.seed < 2**32, "seed", "must lie in [0, 2**32 - 1] (NumPy's seed range)")
        need(0 <= self.split_seed < 2**32, "split_seed", "must lie in [0, 2**32 - 1]")

    def _validate_sampling(self, need) -> None:
        """Positives, mini-batches, fan-out, clusters and the edge decoder's threshold."""
        need(self.pos_num is None or (isinstance(self.pos_num, int) and self.pos_num >= 1),
             "pos_num", "must be an integer >= 1 (the anchor counts as one) or None")
        need(self.batch_size is None or (isinstance(self.batch_size, int) and self.batch_size >= 2),
             "batch_size", "must be None (full batch) or an integer >= 2")
        need(len(self.fanout) >= 1 and all(k >= 1 or k == -1 for k in self.fanout), "fanout",
             "must be a non-empty list of integers >= 1 or -1 (all neighbours), one per hop")
        need(self.num_clusters is None or self.num_clusters == "auto"
             or (isinstance(self.num_clusters, int) and self.num_clusters >= 2),
             "num_clusters", "must be None (= number of classes), 'auto' or an integer >= 2")
        need(self.edge_dense_threshold >= 0, "edge_dense_threshold", "must be >= 0")

    def _validate_channels(self, need) -> None:
        """At least one loss is on, and the embedding asked for exists."""
        need(self.eval_lr is None or self.eval_lr > 0, "eval_lr", "must be > 0 or None")
        active = [self.use_feat_recon and self.w_feat > 0, self.use_edge_recon and self.w_edge > 0,
                  self.use_contrastive and self.w_cl > 0]
        need(any(active), "use_contrastive",
             "every channel is off or weighted 0: enable at least one loss")
        need(self.embed != "contrastive" or self.use_contrastive, "embed",
             "'contrastive' needs use_contrastive: true")

    def _validate_graph(self, need) -> None:
        """``graph`` needs ``target`` and ``metapaths``; without it they mean nothing."""
        if self.graph is None:
            for name in ("target", "metapaths"):
                need(getattr(self, name) is None, name, "describes a graph of your own: set "
                     "graph: PATH too (the built-in datasets fix their own)")
            return
        need(bool(self.graph.strip()), "graph", "must be the path of a saved HeteroData")
        need(self.target is not None and bool(self.target.strip()), "target",
             f"graph {self.graph!r} needs target: the labelled node type (--target TYPE)")
        need(bool(self.metapaths), "metapaths",
             f"graph {self.graph!r} needs at least one meta-path, e.g. [PAP] (--metapaths PAP)")

    # ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """:meth:`to_dict` without the :data:`ADDED_FIELDS` that hold their neutral value: what
        hashes of configs (run records, result rows, caches) are computed from."""
        return {k: v for k, v in self.to_dict().items()
                if k not in ADDED_FIELDS or v != ADDED_FIELDS[k]}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "HetCRFConfig":
        if not isinstance(values, dict):
            raise ConfigError(f"a config is a mapping of field: value, got a "
                              f"{type(values).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = [k for k in values if k not in known]
        if unknown:
            raise ConfigError(f"unknown config field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**values)

    def replace(self, **changes: Any) -> "HetCRFConfig":
        """A validated copy with ``changes`` applied (unknown names rejected)."""
        return HetCRFConfig.from_dict({**self.to_dict(), **changes})

    def save(self, path: str | os.PathLike) -> None:
        """Write YAML atomically (temporary file, then rename); mode ``0644`` under the usual
        umask. Raises :class:`~hetcrf_lite.errors.OutputError` when it cannot be written."""
        from .files import atomic_write_bytes

        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        atomic_write_bytes(path, lambda fh: fh.write(text.encode()))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "HetCRFConfig":
        """Read a YAML config; every problem (missing, unreadable, not UTF-8, malformed YAML,
        duplicate keys, unknown fields, wrong types) is a :class:`ConfigError`."""
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        if not path.is_file():
            raise ConfigError(f"config file {path} is not a regular file; give a YAML file")
        try:
            with open(path, "rb") as fh:
                raw = fh.read(MAX_CONFIG_BYTES + 1)
        except OSError as err:
            raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from err
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {path} is larger than {MAX_CONFIG_BYTES} bytes; "
                              "is it the right file?")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(f"config file {path} is not UTF-8 text (bad byte at offset "
                              f"{err.start}); save it as UTF-8") from err
        values = parse_yaml(text, str(path))
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(f"config file {path} must hold a mapping of field: value")
        graph = values.get("graph")
        if isinstance(graph, str) and graph.strip() and not Path(graph).expanduser().is_absolute():
            values["graph"] = str(path.parent.absolute() / graph)  # from the file's folder
        return cls.from_dict(values)


def default_config(dataset: str, **changes: Any) -> HetCRFConfig:
    """The shipped config for ``dataset`` (``configs/<dataset>.yaml``), with ``changes`` applied.

    Introduced in notebook 03."""
    path = CONFIG_DIR / f"{dataset}.yaml"
    if not path.is_file():
        shipped = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"no shipped config for dataset '{dataset}'; shipped: {shipped}. "
                          "Pass --config FILE for your own.")
    cfg = HetCRFConfig.load(path)
    return cfg.replace(**changes) if changes else cfg


def config_differences(a: HetCRFConfig, b: HetCRFConfig) -> dict[str, tuple[Any, Any]]:
    """``{field: (a's value, b's value)}`` for every field that differs."""
    da, db = a.to_dict(), b.to_dict()
    return {k: (da[k], db.get(k)) for k in da if da[k] != db.get(k)}


def show_differences(diffs: dict[str, tuple[Any, Any]], first: str = "checkpoint",
                     second: str = "given", most: int | None = None) -> str:
    """:func:`config_differences` as one line of a message, ``field (first a, second b)``; with
    ``most``, only that many fields and how many more."""
    shown = [f"{k} ({first} {a!r}, {second} {b!r})" for k, (a, b) in diffs.items()]
    more = 0 if most is None else max(0, len(shown) - most)
    return ", ".join(shown[:most]) + (f" and {more} more" if more else "")


# --------------------------------------------------------------------------------------------
# YAML: safe, strict about duplicate keys
# --------------------------------------------------------------------------------------------

class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no tags run code) that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            line = key_node.start_mark.line + 1
            if first is not None:
                raise ConfigError(f"{key_node.start_mark.name}: key {key!r} is given twice "
                                  f"(lines {first} and {line}); keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, where: str = "<string>") -> Any:
    """``yaml.safe_load`` that refuses duplicate keys; a syntax error is a :class:`ConfigError`
    naming ``where`` and the line."""
    try:
        loader = _StrictLoader(text)
        loader.name = where
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{where} is not valid YAML{at}: {problem}") from err
    except RecursionError as err:
        raise ConfigError(f"{where} nests too deeply to be a config") from err


def parse_override(text: str) -> tuple[str, Any]:
    """``"lr=1e-3"`` to ``("lr", "1e-3")``: the value is read as YAML (``5`` an int, ``null``
    None, ``[2, 2]`` a list); :func:`check_types` converts it for the field."""
    name, sep, value = str(text).partition("=")
    name = name.strip()
    if not sep or not name:
        raise ConfigError(f"--override {text!r}: write FIELD=VALUE, e.g. --override lr=1e-3")
    return name, parse_yaml(value, f"--override {name}") if value.strip() else None


# --------------------------------------------------------------------------------------------
# Types: every field checked against its annotation
# --------------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def check_types(config: Any) -> None:
    """Check (and losslessly convert) every field of the dataclass ``config`` against its
    annotation; raise :class:`ConfigError` naming the field, its value and the expected type.

    Generic over ``bool``, ``int``, ``float``, ``str``, ``Literal[...]``, ``X | None``,
    ``X | Y``, ``list[X]`` and ``dict[K, V]``, so a new field is covered by its annotation:

    * ``float`` takes numbers and numeric strings (``"1e-3"``: YAML reads ``1e-3`` as a string);
      it must be finite unless the field is in :data:`NONFINITE_FIELDS`;
    * ``int`` takes integral numbers only (``3`` or ``3.0``; not ``3.5``, ``"3"`` or a boolean);
    * ``bool`` takes ``true``/``false`` only (``"no"`` and ``1`` are errors);
    * ``str`` takes strings only.
    """
    for name, tp in _field_types(type(config)).items():
        value = getattr(config, name)
        setattr(config, name, _coerce(name, value, tp))


_NONE = type(None)


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple):
        plural = {"an integer": "integers", "a finite number": "finite numbers",
                  "a string": "strings", "true or false": "booleans"}
        item = _describe(args[0]) if args else "values"
        return f"a list of {plural.get(item, item)}"
    if origin is dict:
        return (f"a mapping of {_describe(args[0])} to {_describe(args[1])}" if args
                else "a mapping")
    names = {bool: "true or false", int: "an integer", float: "a finite number",
             str: "a string", _NONE: "null"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _is_exact(value: Any, tp: Any) -> bool:
    """Whether ``value`` already has type ``tp`` (the member of a union it is meant for)."""
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    origin = typing.get_origin(tp) or tp
    return isinstance(origin, type) and isinstance(value, origin)


def _coerce(name: str, value: Any, tp: Any) -> Any:
    def bad(extra: str = "") -> ConfigError:
        return ConfigError(f"config field '{name}' = {value!r}: must be {_describe(tp)}{extra}")

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        return _coerce_union(name, value, args, bad)
    if tp is _NONE:
        if value is None:
            return None
        raise bad()
    if origin is Literal:
        if any(type(value) is type(a) and value == a for a in args):
            return value
        raise bad()
    if tp is bool:
        if isinstance(value, bool):
            return value
        if type(value).__name__ == "bool_":  # numpy.bool_
            return bool(value)
        raise bad(" (write true or false, unquoted)")
    if tp is int:
        return _as_int(value, bad)
    if tp is float:
        return _as_float(name, value, bad)
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad()
    if origin in (list, tuple, dict):
        return _coerce_container(name, value, origin, args, bad)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise bad()
    return value


def _coerce_union(name: str, value: Any, args: tuple, bad) -> Any:
    """``value`` as the first member of a union that takes it, exact type matches first."""
    if value is None:
        if _NONE in args:
            return None
        raise bad()
    members = [a for a in args if a is not _NONE]
    ordered = ([a for a in members if _is_exact(value, a)]
               + [a for a in members if not _is_exact(value, a)])
    for member in ordered:
        try:
            return _coerce(name, value, member)
        except ConfigError:
            continue
    raise bad()


def _coerce_container(name: str, value: Any, origin: Any, args: tuple, bad) -> Any:
    """``value`` as a ``list[...]`` (a tuple annotation too) or ``dict[..., ...]``, item by
    item."""
    if origin is dict:
        if not isinstance(value, dict):
            raise bad()
        if not args:
            return dict(value)
        key_t, val_t = args
        return {_coerce(f"{name} key", k, key_t): _coerce(f"{name}[{k!r}]", v, val_t)
                for k, v in value.items()}
    if not isinstance(value, (list, tuple)):
        raise bad()
    if not args:
        return list(value)
    return [_coerce(f"{name}[{i}]", v, args[0]) for i, v in enumerate(value)]


def _as_int(value: Any, bad) -> int:
    if isinstance(value, bool):
        raise bad(" (not true/false)")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        v = float(value)
        if math.isfinite(v) and v == int(v):
            return int(v)
        raise bad(" (an integral value)")
    raise bad()


def _as_float(name: str, value: Any, bad) -> float:
    if isinstance(value, bool):
        raise bad(" (not true/false)")
    if not isinstance(value, (str, numbers.Real)):
        raise bad()
    try:
        v = float(value.strip() if isinstance(value, str) else value)
    except (ValueError, OverflowError):  # not a number, or an int beyond float range
        raise bad() from None
    if math.isnan(v) or (math.isinf(v) and name not in NONFINITE_FIELDS):
        raise bad(" (NaN and infinity mean nothing here)")
    return v
