"""A synthetic heterogeneous graph with planted classes: the library's built-in default data.

:func:`make_synthetic_hin` builds a small ACM-like network (target ``"paper"`` nodes linked to
``"author"`` and ``"subject"`` nodes, or any neighbour types you name) whose class signal lives
mostly in the *structure*, not in the features, the way HetCRF's "sparse semantics" setting
assumes. Because the truth is planted, a notebook can check a claim against it: semantic attention
should prefer the homophilous neighbour type, a linear probe on raw features should be weak, one on
meta-path-aggregated features strong.

How the classes are planted:

* every target node gets a class (balanced) and every neighbour node a class *affinity*;
* each target node draws links to neighbours of each type; with probability ``h_t`` (the type's
  homophily) a draw picks a uniformly random neighbour with the target's own class, otherwise any
  neighbour of that type;
* types differ in informativeness: by default the first type has homophily ``homophily`` and each
  further type half the previous one (``0.95, 0.475, 0.2375``), so semantic attention has something to
  learn.

Naming: relations are stored in both directions as ``(target, "to", t)`` and
``(t, "rev_to", target)`` (what ``torch_geometric.transforms.ToUndirected`` would add); meta-paths
are named by the initials of their node types (``PAP``, ``PSP``) and given as node-type lists.
Graphs follow :mod:`hetcrf_lite.data`'s sparse conventions; nothing here builds an N x N dense
array, and the generator is vectorised numpy throughout: 100k target nodes take 1-2 s, 1M take
15-30 s and 2-4.5 GB peak memory on a busy 2-core machine (``build_positives=False`` and
``sparse_storage=True`` keep the low end).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch_geometric.data import HeteroData

from .data import HINDataset, identity_features, make_splits
from .errors import ConfigError, DataError
from .metapaths import metapath_adjacency, metapath_name, metapath_positives

__all__ = ["NeighbourType", "make_synthetic_hin", "bayes_oracle", "FEATURE_MODES"]

FEATURE_MODES = ("sparse", "dense", "none")


@dataclass(frozen=True)
class NeighbourType:
    r"""How target nodes link to one neighbour type.

    The expected meta-path degree of ``T-t-T`` is about ``links * targets_per_node`` (each of a
    target's ``links`` neighbours is shared with ``targets_per_node`` targets on average), so these
    two numbers, not the graph size, fix how dense the meta-path graph is: the generator scales to
    millions of nodes with the same mean degree.

    Args:
        name (str): node type name, e.g. ``"author"``.
        links (float, optional): mean number of neighbours of this type per target node; each
            target draws ``1 + Poisson(links - 1)``. (default: :obj:`3.0`)
        targets_per_node (float, optional): mean number of target nodes per neighbour node; the
            type has ``round(N * links / targets_per_node)`` nodes. (default: :obj:`7.0`)
        homophily (float, optional): probability that a link goes to a neighbour of the target's
            own class; :obj:`None` takes it from ``make_synthetic_hin``'s ``homophily`` rule.
            (default: :obj:`None`)
    """

    name: str
    links: float = 3.0
    targets_per_node: float = 7.0
    homophily: float | None = None


# Shapes of familiar neighbour types. ACM has 3.3 authors per paper and one of 60 subjects per
# paper; its authors have only 1.9 papers each, so its P-A-P graph is thin. Here authors get
# 7 papers on average, for a mean P-A-P degree of about 20, like P-S-P's cliques of about 25.
_PRESETS = {
    "author": NeighbourType("author", links=3.0, targets_per_node=7.0),
    "subject": NeighbourType("subject", links=1.0, targets_per_node=25.0),
    "venue": NeighbourType("venue", links=1.0, targets_per_node=30.0),
    "term": NeighbourType("term", links=4.0, targets_per_node=5.0),
}

# Per-mode defaults (num_features, feature_signal), calibrated so that a logistic regression on
# raw features scores 20-35 Macro-F1 points below one on meta-path-averaged features
# (tests/test_synthetic.py checks it).
_FEATURE_DEFAULTS = {"sparse": (500, 0.08), "dense": (64, 0.8)}
_WORDS_PER_NODE = 30


def make_synthetic_hin(
    num_nodes: int = 1500,
    num_classes: int = 3,
    neighbour_types: Sequence[str | NeighbourType] = ("author", "subject"),
    homophily: float | Sequence[float] = 0.95,
    feature_mode: str = "sparse",
    num_features: int | None = None,
    feature_signal: float | None = None,
    target: str = "paper",
    rates: Sequence[int] = (20, 40, 60),
    num_val: int | None = None,
    num_test: int | None = None,
    pos_num: int = 5,
    build_positives: bool = True,
    sparse_storage: bool = False,
    seed: int = 0,
    name: str = "synthetic",
) -> HINDataset:
    r"""Generate a heterogeneous information network with planted classes.

    Target node :math:`i` of class :math:`y_i` draws each link to a neighbour of type :math:`t`
    from

    .. math::
        P(j) = h_t \, \frac{\mathbb{1}[a_j = y_i]}{|\{k : a_k = y_i\}|}
             + (1 - h_t) \frac{1}{n_t},

    with :math:`a_j` the class affinity of neighbour :math:`j` and :math:`h_t` the type's homophily.
    Meta-path adjacencies are :math:`A^t = \mathrm{bin}(B_t B_t^\top)`, with :math:`B_t` the
    target-to-type incidence matrix (every target has at least one link, so the product's
    diagonal gives every node its self-loop); counts hold :math:`(B_t B_t^\top)_{ij}`, the number
    of path instances.

    Features (target type; every other type gets identity features, sparse COO):

    * ``"sparse"``: bag of words, :math:`30` word draws per node over ``num_features`` words; a
      share ``feature_signal`` of the draws comes from a small block of class topic words, the
      rest from a Zipf background shared by all classes; binary, then row-normalised (L1) as HeCo's
      loaders do. Held as a dense float tensor (like HeCo's ACM ``p_feat``) unless
      ``sparse_storage=True``, which keeps it sparse COO (for million-node graphs).
    * ``"dense"``: :math:`x_i = s \, \mu_{y_i} + \epsilon_i`, unit-norm class means scaled by
      ``feature_signal`` :math:`s`, standard normal noise.
    * ``"none"``: identity features, sparse COO ``[N, N]`` (never dense), like AMiner/Freebase.

    Meta-path graphs, their counts and the positive sets come from
    :func:`~hetcrf_lite.metapaths.metapath_adjacency` and
    :func:`~hetcrf_lite.metapaths.metapath_positives` (count score), the splits from
    :func:`~hetcrf_lite.data.make_splits` (seeded with ``seed``; ``rate`` training nodes per
    class, then validation and test among the other nodes, drawn per rate): the synthetic data
    goes through the same code as the benchmarks.

    Args:
        num_nodes (int, optional): number of target nodes :math:`N`. (default: :obj:`1500`)
        num_classes (int, optional): number of classes, at least 2. (default: :obj:`3`)
        neighbour_types (sequence, optional): neighbour node types, as names (``"author"``,
            ``"subject"``, ``"venue"``, ``"term"`` have presets, others get
            ``NeighbourType(name, 2, 10)``) or :class:`NeighbourType` objects.
            (default: :obj:`("author", "subject")`)
        homophily (float or sequence, optional): a float :math:`h` gives type :math:`k` the
            homophily :math:`h / 2^k`; a sequence gives one value per type. A
            :class:`NeighbourType` with its own ``homophily`` overrides both. (default: :obj:`0.95`)
        feature_mode (str, optional): ``"sparse"``, ``"dense"`` or ``"none"``.
            (default: :obj:`"sparse"`)
        num_features (int, optional): feature width; :obj:`None` gives 500 (sparse) or 64 (dense);
            must stay :obj:`None` for ``"none"``. (default: :obj:`None`)
        feature_signal (float, optional): class signal in the features: the topic-word share in
            ``[0, 1]`` (sparse, default 0.08) or the class-mean norm (dense, default 0.8).
            (default: :obj:`None`)
        target (str, optional): name of the target node type. (default: :obj:`"paper"`)
        rates (sequence of int, optional): training nodes per class of each split.
            (default: :obj:`(20, 40, 60)`)
        num_val (int, optional): validation size; :obj:`None` gives 1000 as in the benchmarks, or
            half of the nodes outside the largest training set when fewer remain.
            (default: :obj:`None`)
        num_test (int, optional): test size, same rule. (default: :obj:`None`)
        pos_num (int, optional): positive-set size, anchor included: the anchor plus the
            nodes joined to it by the most meta-paths, ties to the lowest index. (default: :obj:`5`)
        build_positives (bool, optional): set :obj:`False` to skip the positive sets
            (``pos=None``) on very large graphs. (default: :obj:`True`)
        sparse_storage (bool, optional): keep ``"sparse"`` features as sparse COO.
            (default: :obj:`False`)
        seed (int, optional): seed; the same seed gives identical tensors. (default: :obj:`0`)
        name (str, optional): dataset name. (default: :obj:`"synthetic"`)

    Returns:
        HINDataset: with every field filled; ``data[t].affinity`` holds each neighbour node's
        planted class and ``data[target].y`` the labels.

    Example:
        >>> ds = make_synthetic_hin(seed=0)
        >>> ds.metapaths
        {'PAP': ['paper', 'author', 'paper'], 'PSP': ['paper', 'subject', 'paper']}
        >>> ds.num_nodes, ds.num_classes, tuple(ds.x.shape)
        (1500, 3, (1500, 500))

    Introduced in notebook 01.
    """
    types = _resolve_types(neighbour_types, homophily, target)
    _check_args(num_nodes, num_classes, feature_mode, num_features, feature_signal, rates, pos_num)
    rng = np.random.default_rng(seed)
    n = num_nodes

    labels = rng.permutation(np.arange(n) % num_classes)  # [N], balanced classes
    data = HeteroData()
    data[target].num_nodes = n
    data[target].y = torch.from_numpy(labels.astype(np.int64))

    loglik = np.zeros((n, num_classes))  # [N, C] log P(node's draws | class), see bayes_oracle
    for t in types:
        n_t = max(num_classes, int(round(n * t.links / t.targets_per_node)))
        affinity, inc = _draw_links(labels, num_classes, n_t, t.links, t.homophily, rng, loglik)
        coo = inc.tocoo()  # inc: [N, n_t] binary
        pairs = torch.from_numpy(np.stack([coo.row, coo.col]).astype(np.int64))  # [2, E_t]
        data[t.name].num_nodes = n_t
        data[t.name].x = identity_features(n_t)
        data[t.name].affinity = torch.from_numpy(affinity.astype(np.int64))
        data[target, "to", t.name].edge_index = pairs
        data[t.name, "rev_to", target].edge_index = pairs.flip(0)

    data[target].x = _features(labels, num_classes, feature_mode, num_features, feature_signal,
                               sparse_storage, rng, loglik)
    data[target].planted_loglik = torch.from_numpy(loglik)  # [N, C] float64

    metapaths = _metapath_names(target, [t.name for t in types])
    adj, counts = {}, {}
    for mp_name, mp_types in metapaths.items():
        adj[mp_name], counts[mp_name] = metapath_adjacency(data, mp_types)  # sparse B @ B.T
    pos = metapath_positives(adj, n, pos_num) if build_positives else None
    splits = _splits(labels, num_classes, rates, num_val, num_test, seed)

    return HINDataset(
        name=name, data=data, target=target, labels=torch.from_numpy(labels.astype(np.int64)),
        num_classes=num_classes, splits=splits, metapaths=metapaths, metapath_adj=adj,
        metapath_counts=counts, pos=pos,
    )


def bayes_oracle(ds: HINDataset) -> torch.Tensor:
    r"""Posterior class probabilities of every target node under the planted model: ``[N, C]``.

    The generator knows what no method sees: every neighbour's class affinity, the homophilies,
    the feature model, and each node's raw draws (links and words before repeats are merged).
    From them the posterior of node :math:`i` is exact (uniform prior, as the classes are
    balanced):

    .. math::
        P(y_i = c \mid \text{draws}_i) \propto \prod_{\text{link draws}} P(j \mid c)
        \prod_{\text{feature draws}} P(w \mid c),

    with :math:`P(j \mid c)` the link rule of :func:`make_synthetic_hin` and :math:`P(w \mid c)`
    the word mixture (sparse), or :math:`\mathcal{N}(x_i; s\mu_c, I)` (dense). Given the planted
    parameters, the rest of the graph says nothing more about :math:`y_i` (up to the exact class
    balance), so the accuracy of ``bayes_oracle(ds).argmax(1)`` is the most any classifier of
    the graph and its features can reach in expectation: the graph's ceiling. A benchmark bar
    above it cannot be met by any method.

    Raises:
        DataError: ``ds`` was not made by :func:`make_synthetic_hin` (no planted likelihood).

    Introduced in notebook 09.
    """
    store = ds.data[ds.target]
    if "planted_loglik" not in store:
        raise DataError(f"dataset {ds.name!r} has no planted model: only graphs made by "
                        "make_synthetic_hin know their Bayes oracle")
    return torch.softmax(store.planted_loglik, dim=1)


# --------------------------------------------------------------------------- argument checks
def _resolve_types(neighbour_types, homophily, target: str) -> list[NeighbourType]:
    if isinstance(neighbour_types, (str, NeighbourType)) or len(neighbour_types) == 0:
        raise ConfigError("neighbour_types must be a non-empty sequence of names or "
                          f"NeighbourType objects, got {neighbour_types!r}")
    specs = [t if isinstance(t, NeighbourType) else _PRESETS.get(t, NeighbourType(t, 2.0, 10.0))
             for t in neighbour_types]
    names = [t.name for t in specs]
    if len(set(names)) != len(names) or target in names:
        raise ConfigError(f"neighbour type names must be distinct and differ from the target "
                          f"{target!r}, got {names}")
    if isinstance(homophily, Real):
        default_h = [float(homophily) / 2**k for k in range(len(specs))]
    else:
        default_h = [float(h) for h in homophily]
        if len(default_h) != len(specs):
            raise ConfigError(f"homophily has {len(default_h)} values for {len(specs)} neighbour "
                              "types; give one per type or a single float")
    out = []
    for t, h in zip(specs, default_h):
        h = t.homophily if t.homophily is not None else h
        if not 0.0 <= h <= 1.0:
            raise ConfigError(f"homophily of {t.name!r} is {h}; it is a probability in [0, 1]")
        if t.links < 1 or t.targets_per_node <= 0:
            raise ConfigError(f"{t.name!r}: links must be >= 1 and targets_per_node > 0, got "
                              f"{t.links} and {t.targets_per_node}")
        out.append(NeighbourType(t.name, float(t.links), float(t.targets_per_node), h))
    return out


def _check_args(n, num_classes, mode, num_features, signal, rates, pos_num) -> None:
    if num_classes < 2:
        raise ConfigError(f"num_classes is {num_classes}; classification needs at least 2")
    if mode not in FEATURE_MODES:
        raise ConfigError(f"unknown feature_mode {mode!r}; choose one of {FEATURE_MODES}")
    if mode == "none" and num_features is not None:
        raise ConfigError("feature_mode='none' gives identity features of width num_nodes; "
                          "leave num_features=None")
    if num_features is not None and num_features < 1:
        raise ConfigError(f"num_features is {num_features}; it must be positive")
    if signal is not None and not (isinstance(signal, Real) and math.isfinite(signal)):
        raise ConfigError(f"feature_signal is {signal!r}; it must be a finite number or None")
    if mode == "sparse" and signal is not None and not 0.0 <= signal <= 1.0:
        raise ConfigError(f"feature_signal is {signal}; in 'sparse' mode it is the share of "
                          "topic words, in [0, 1]")
    if mode == "dense" and signal is not None and signal < 0:
        raise ConfigError(f"feature_signal is {signal}; the class-mean norm must be >= 0")
    if len(rates) == 0 or min(rates) < 1:
        raise ConfigError(f"rates must be positive training sizes per class, got {list(rates)}")
    if pos_num < 1:
        raise ConfigError(f"pos_num is {pos_num}; each anchor needs at least itself")
    # Every class needs its largest training share plus at least one val and one test node.
    if n // num_classes < max(rates) + 1:
        raise ConfigError(f"{n} nodes over {num_classes} classes leave fewer than "
                          f"max(rates) + 1 = {max(rates) + 1} nodes per class; raise num_nodes "
                          "or lower rates")


# --------------------------------------------------------------------------- structure
def _draw_links(labels: np.ndarray, num_classes: int, n_t: int, links: float, h: float,
                rng: np.random.Generator, loglik: np.ndarray) -> tuple[np.ndarray, sp.csr_matrix]:
    """Planted links to one neighbour type; returns affinities [n_t] and the [N, n_t] incidence,
    and adds each node's log-likelihood of its draws under every class to ``loglik`` [N, C]."""
    n = labels.shape[0]
    affinity = rng.permutation(np.arange(n_t) % num_classes)  # [n_t], balanced affinities
    deg = 1 + rng.poisson(links - 1.0, size=n)  # [N], at least one link each
    src = np.repeat(np.arange(n), deg)  # [L]
    cls = labels[src]
    # Members of each class, contiguous: class c owns members[start[c] : start[c] + size[c]].
    members = np.argsort(affinity, kind="stable")
    size = np.bincount(affinity, minlength=num_classes)
    start = np.cumsum(size) - size
    same = members[start[cls] + (rng.random(src.shape[0]) * size[cls]).astype(np.int64)]
    anyone = rng.integers(0, n_t, size=src.shape[0])
    dst = np.where(rng.random(src.shape[0]) < h, same, anyone)  # [L]
    # P(draw = j | class c) = h 1[a_j = c] / size_c + (1 - h) / n_t, for every j and c: [n_t, C]
    p_link = h * (affinity[:, None] == np.arange(num_classes)) / size + (1.0 - h) / n_t
    with np.errstate(divide="ignore"):  # h = 1: a link to another class has probability 0
        log_link = np.log(p_link)
    loglik += np.add.reduceat(log_link[dst], np.cumsum(deg) - deg, axis=0)  # src is sorted
    inc = sp.csr_matrix((np.ones(src.shape[0], dtype=np.float32), (src, dst)), shape=(n, n_t))
    inc.sum_duplicates()
    inc.data[:] = 1.0  # a repeated draw is one link
    return affinity, inc


def _metapath_names(target: str, neighbours: list[str]) -> dict[str, list[str]]:
    """``{"PAP": [target, "author", target], ...}``; dashed full names if initials collide."""
    paths = [[target, t, target] for t in neighbours]
    names = [metapath_name(p) for p in paths]
    if len(set(names)) < len(names):  # e.g. "author" and "actor" would both give PAP
        names = ["-".join(p) for p in paths]
    return dict(zip(names, paths))


# --------------------------------------------------------------------------- features
def _features(labels, num_classes, mode, num_features, signal, sparse_storage, rng,
              loglik: np.ndarray) -> torch.Tensor:
    """Target features; adds their log-likelihood under every class to ``loglik`` [N, C]."""
    n = labels.shape[0]
    if mode == "none":
        return identity_features(n)
    default_f, default_s = _FEATURE_DEFAULTS[mode]
    f = num_features or default_f
    s = default_s if signal is None else signal
    if mode == "dense":
        means = rng.standard_normal((num_classes, f))
        means *= s / np.linalg.norm(means, axis=1, keepdims=True)  # [C, F], norm s each
        x = means[labels] + rng.standard_normal((n, f))  # [N, F]
        loglik += x @ means.T - 0.5 * (means**2).sum(1)  # log N(x; mu_c, I) up to a constant
        return torch.from_numpy(x.astype(np.float32))
    if f < 2 * num_classes:
        raise ConfigError(f"num_features={f} is too small for {num_classes} topic blocks; use "
                          f"at least {2 * num_classes}")
    # Bag of words: a Zipf background over the whole vocabulary, plus topic words; class c's
    # topics are a block of `block` words, together half the vocabulary at most.
    block = max(1, f // (2 * num_classes))
    topic_base = rng.permutation(f)[: block * num_classes].reshape(num_classes, block)  # [C, block]
    zipf = 1.0 / np.arange(1, f + 1)
    word_of_rank = rng.permutation(f)  # frequent words are not the low ids
    size = (n, _WORDS_PER_NODE)
    background = word_of_rank[rng.choice(f, size=size, p=zipf / zipf.sum())]  # [N, W]
    topic = topic_base[labels[:, None], rng.integers(0, block, size=size)]  # [N, W]
    word = np.where(rng.random(size) < s, topic, background)  # [N, W]
    # P(draw = w | class c) = s 1[w in topics_c] / block + (1 - s) zipf(rank of w): [F, C]
    p_word = np.zeros((f, num_classes))
    p_word[word_of_rank] = ((1.0 - s) * zipf / zipf.sum())[:, None]
    p_word[topic_base.T, np.arange(num_classes)] += s / block
    with np.errstate(divide="ignore"):  # s = 1: a word outside a class's topics is impossible
        log_word = np.log(p_word)
    for k in range(_WORDS_PER_NODE):  # one column at a time: [N, C], not [N, W, C]
        loglik += log_word[word[:, k]]
    # Binary bag of words: sort each node's draws so repeats sit side by side, keep the first.
    # Row-wise work on [N, W] is several times faster than deduplicating a scipy matrix.
    word.sort(axis=1)
    first = np.ones(size, dtype=bool)
    first[:, 1:] = word[:, 1:] != word[:, :-1]
    distinct = first.sum(axis=1)  # [N], at least 1
    row = np.repeat(np.arange(n), distinct)  # [nnz]
    col = word[first]  # [nnz], row-major: rows ascending, words ascending within a row
    val = (1.0 / distinct)[row].astype(np.float32)  # rows sum to 1
    if sparse_storage:
        idx = torch.from_numpy(np.stack([row, col]).astype(np.int64))  # [2, nnz], coalesced order
        return torch.sparse_coo_tensor(idx, torch.from_numpy(val), (n, f), is_coalesced=True,
                                       check_invariants=True)
    bow = np.zeros((n, f), dtype=np.float32)
    bow[row, col] = val
    return torch.from_numpy(bow)  # [N, F]


# --------------------------------------------------------------------------- splits
def _splits(labels: np.ndarray, num_classes: int, rates: Sequence[int], num_val: int | None,
            num_test: int | None, seed: int) -> dict[int, dict[str, torch.Tensor]]:
    """:func:`~hetcrf_lite.data.make_splits` with sizes that always fit: by default 1000
    validation and 1000 test nodes, or half each of the nodes outside the largest training set."""
    room = labels.shape[0] - num_classes * max(rates)
    default = min(1000, room // 2)
    nv = default if num_val is None else num_val
    nt = default if num_test is None else num_test
    if nv < 1 or nt < 1 or nv + nt > room:
        raise ConfigError(f"num_val={nv} and num_test={nt} must be positive and fit in the "
                          f"{room} nodes outside the largest training set")
    return make_splits(labels, rates=[int(r) for r in rates], num_val=nv, num_test=nt, seed=seed)
