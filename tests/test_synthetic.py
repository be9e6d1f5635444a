import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.preprocessing import StandardScaler

from hetcrf_lite.data import HINDataset
from hetcrf_lite.errors import ConfigError, DataError
from hetcrf_lite.metapaths import is_valid_topk, metapath_scores
from hetcrf_lite.synthetic import NeighbourType, bayes_oracle, make_synthetic_hin

from graph_helpers import edge_homophily


@pytest.fixture(scope="module")
def ds() -> HINDataset:
    return make_synthetic_hin(seed=0)


def _csr(edge_index: torch.Tensor, n: int) -> sp.csr_matrix:
    e = edge_index.numpy()
    return sp.csr_matrix((np.ones(e.shape[1]), (e[1], e[0])), shape=(n, n))


def _mean_adj(edge_index: torch.Tensor, n: int) -> sp.csr_matrix:
    a = _csr(edge_index, n)
    return (sp.diags(1.0 / np.asarray(a.sum(axis=1)).ravel()) @ a).tocsr()


def _probe_macro_f1(x, ds: HINDataset, rate: int) -> float:
    """Macro-F1 of a scikit-learn logistic regression on the dataset's split at ``rate``."""
    split, y = ds.splits[rate], ds.labels.numpy()
    tr, te = split["train"].numpy(), split["test"].numpy()
    if not sp.issparse(x):
        x = StandardScaler().fit(x[tr]).transform(x)
    clf = LogisticRegression(max_iter=3000).fit(x[tr], y[tr])
    return f1_score(y[te], clf.predict(x[te]), average="macro")


def test_fields_and_naming(ds):
    assert ds.name == "synthetic" and ds.target == "paper" and ds.num_nodes == 1500
    assert ds.metapaths == {"PAP": ["paper", "author", "paper"],
                            "PSP": ["paper", "subject", "paper"]}
    assert set(ds.data.edge_types) == {("paper", "to", "author"), ("author", "rev_to", "paper"),
                                       ("paper", "to", "subject"), ("subject", "rev_to", "paper")}
    for t in ("author", "subject"):
        fwd, rev = ds.data["paper", "to", t].edge_index, ds.data[t, "rev_to", "paper"].edge_index
        assert torch.equal(fwd.flip(0), rev)
        assert ds.data[t].x.is_sparse and ds.data[t].x.shape == (ds.data[t].num_nodes,) * 2
    assert ds.x.shape == (1500, 500) and ds.x.dtype == torch.float32 and not ds.x.is_sparse
    torch.testing.assert_close(ds.x.sum(dim=1), torch.ones(1500))  # row-normalised bag of words
    assert (ds.x > 0).float().mean() < 0.1  # sparse in values
    assert torch.bincount(ds.labels).tolist() == [500, 500, 500]
    assert torch.equal(ds.data["paper"].y, ds.labels)


def test_metapath_graphs_follow_the_conventions(ds):
    n = ds.num_nodes
    for name, ei in ds.metapath_adj.items():
        t = ds.metapaths[name][1]
        b = sp.csr_matrix((np.ones(ds.data["paper", "to", t].edge_index.shape[1]),
                           tuple(ds.data["paper", "to", t].edge_index.numpy())),
                          shape=(n, ds.data[t].num_nodes))
        counts = (b @ b.T).tocsr()
        src, dst = ei.numpy()
        key = dst.astype(np.int64) * n + src
        assert np.all(np.diff(key) > 0)  # sorted by (destination, source), no duplicates
        a = _csr(ei, n)
        assert (a != a.T).nnz == 0  # symmetric
        assert np.all(a.diagonal() == 1)  # self-loops everywhere
        assert a.nnz == counts.nnz  # binarised B B^T, nothing more
        np.testing.assert_array_equal(ds.metapath_counts[name].numpy(),
                                      np.asarray(counts[dst, src]).ravel())
        assert 10 <= ei.shape[1] / n <= 40  # mean meta-path degree in the intended range


def test_positives_and_splits(ds):
    pos = ds.pos
    assert is_valid_topk(pos, metapath_scores(ds.metapath_adj, ds.num_nodes), 5)
    anchors_with_self = pos[0][pos[0] == pos[1]]
    assert torch.equal(anchors_with_self, torch.arange(ds.num_nodes))  # the anchor is always in
    assert torch.all(torch.diff(pos[0]) >= 0)
    for rate, split in ds.splits.items():
        assert torch.bincount(ds.labels[split["train"]]).tolist() == [rate] * 3
        assert len(split["val"]) == len(split["test"]) == (1500 - 3 * 60) // 2
        parts = torch.cat([split["train"], split["val"], split["test"]])
        assert parts.unique().numel() == parts.numel()


def test_same_seed_same_tensors_other_seed_differs():
    a, b, c = (make_synthetic_hin(num_nodes=600, seed=s, rates=(10,)) for s in (3, 3, 4))
    for attr in ("labels", "pos", "x"):
        assert torch.equal(getattr(a, attr), getattr(b, attr))
    for name in a.metapath_adj:
        assert torch.equal(a.metapath_adj[name], b.metapath_adj[name])
        assert torch.equal(a.metapath_counts[name], b.metapath_counts[name])
    assert all(torch.equal(a.splits[10][k], b.splits[10][k]) for k in ("train", "val", "test"))
    assert not torch.equal(a.metapath_adj["PAP"], c.metapath_adj["PAP"])


def test_planted_homophily_per_type():
    ds = make_synthetic_hin(num_nodes=3000, homophily=(0.9, 0.0), seed=1)
    y = ds.labels
    for t, h in (("author", 0.9), ("subject", 0.0)):
        src, dst = ds.data["paper", "to", t].edge_index
        same = (ds.data[t].affinity[dst] == y[src]).float().mean().item()
        assert same == pytest.approx(h + (1 - h) / 3, abs=0.03)
    # Class purity of the meta-path graphs follows the types' homophily.
    purity = edge_homophily(ds)
    assert purity["PAP"] > 0.8 and purity["PSP"] == pytest.approx(1 / 3, abs=0.05)


def test_default_homophily_halves_per_type():
    ds = make_synthetic_hin(neighbour_types=("author", "subject", "venue"), seed=0)
    assert list(ds.metapaths) == ["PAP", "PSP", "PVP"]
    purity = list(edge_homophily(ds).values())
    assert purity[0] > purity[1] > purity[2] > 1 / 3


def test_neighbour_type_objects_and_name_collisions():
    spec = NeighbourType("author", links=2.0, targets_per_node=5.0, homophily=0.7)
    ds = make_synthetic_hin(num_nodes=600, neighbour_types=(spec, "actor"), rates=(10,), seed=0)
    assert list(ds.metapaths) == ["paper-author-paper", "paper-actor-paper"]  # both would be PAP
    assert ds.data["author"].num_nodes == 240  # 600 * 2 / 5


@pytest.mark.parametrize("mode", ["sparse", "dense"])
def test_structure_beats_raw_features_by_20_points(mode):
    ds = make_synthetic_hin(feature_mode=mode, seed=0)
    x = ds.x.numpy()
    # Structure-aware baseline: features averaged over each meta-path's neighbours, concatenated.
    agg = np.hstack([_mean_adj(ei, ds.num_nodes) @ x for ei in ds.metapath_adj.values()])
    raw = np.mean([_probe_macro_f1(x, ds, r) for r in ds.splits])
    structure = np.mean([_probe_macro_f1(agg, ds, r) for r in ds.splits])
    assert structure - raw >= 0.20, (raw, structure)
    assert structure >= 0.65


def test_no_features_chance_but_structure_far_above():
    ds = make_synthetic_hin(feature_mode="none", seed=0)
    n = ds.num_nodes
    x = ds.x
    assert x.is_sparse and x.shape == (n, n) and x._nnz() == n  # identity, never dense
    raw = _probe_macro_f1(sp.identity(n, format="csr"), ds, 20)
    # Structure baseline: a random projection smoothed three times over each meta-path graph
    # (a cheap spectral embedding, in the spirit of SGC / FastRP).
    proj = np.random.default_rng(0).standard_normal((n, 64))
    feats = []
    for ei in ds.metapath_adj.values():
        a, z = _mean_adj(ei, n), proj
        for _ in range(3):
            z = a @ z
        feats.append(z)
    structure = _probe_macro_f1(np.hstack(feats), ds, 20)
    assert raw <= 0.40  # unseen one-hot ids: the probe can only guess
    assert structure >= 0.60, structure


def test_sparse_storage_matches_dense():
    a = make_synthetic_hin(num_nodes=600, rates=(10,), seed=2)
    b = make_synthetic_hin(num_nodes=600, rates=(10,), seed=2, sparse_storage=True)
    assert b.x.is_sparse and b.x.is_coalesced()
    torch.testing.assert_close(b.x.to_dense(), a.x, rtol=0, atol=0)


def test_large_graph_keeps_degree_and_skips_positives():
    ds = make_synthetic_hin(num_nodes=20000, feature_mode="none", build_positives=False, seed=0)
    assert ds.pos is None
    for ei in ds.metapath_adj.values():
        assert 10 <= ei.shape[1] / ds.num_nodes <= 40  # degree does not grow with N
    assert len(ds.splits[20]["val"]) == 1000 and len(ds.splits[20]["test"]) == 1000


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_classes=1), "at least 2"),
    (dict(homophily=1.5), r"in \[0, 1\]"),
    (dict(homophily=(0.8,)), "one per type"),
    (dict(feature_mode="bag"), "unknown feature_mode"),
    (dict(feature_mode="none", num_features=10), "leave num_features=None"),
    (dict(feature_signal=2.0), "share of topic words"),
    (dict(neighbour_types=("author", "author")), "distinct"),
    (dict(neighbour_types=("paper",)), "differ from the target"),
    (dict(neighbour_types=()), "non-empty"),
    (dict(num_nodes=100), "raise num_nodes"),
    (dict(num_val=2000), "must be positive and fit"),
    (dict(pos_num=0), "at least itself"),
])
def test_bad_arguments_raise_config_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        make_synthetic_hin(**kwargs)


def test_docstring_example_holds():
    import doctest

    import hetcrf_lite.synthetic as module

    result = doctest.testmod(module)
    assert result.attempted >= 2 and result.failed == 0


# --------------------------------------------------------------------------- the Bayes oracle
# Weak homophily and features, so the posteriors are far from 0 and 1 and the checks have teeth.
_UNCERTAIN = {"sparse": dict(feature_mode="sparse", feature_signal=0.1),
              "dense": dict(feature_mode="dense", feature_signal=0.6),
              "none": dict(feature_mode="none")}


@pytest.mark.parametrize("mode", list(_UNCERTAIN))
def test_bayes_oracle_is_calibrated(mode):
    """An exact posterior is calibrated: among nodes given confidence p, a share p is right. A
    wrong term (a link rule or word mixture other than the generator's) breaks that."""
    ds = make_synthetic_hin(num_nodes=3000, homophily=(0.25, 0.15), seed=5, **_UNCERTAIN[mode])
    post = bayes_oracle(ds)
    assert post.shape == (3000, 3)
    assert torch.allclose(post.sum(1), torch.ones(3000, dtype=post.dtype))
    conf, pred = post.max(1)
    right = (pred == ds.labels).double()
    assert 0.45 < right.mean() < 0.97  # uncertain enough for the checks below to mean something
    assert abs(conf.mean() - right.mean()) < 0.02
    for lo, hi in [(0.4, 0.7), (0.7, 0.9)]:  # calibration within confidence bins
        inside = (conf >= lo) & (conf < hi)
        assert inside.sum() >= 200
        assert abs(right[inside].mean() - conf[inside].mean()) < 0.05, (lo, hi)


# One source of class information at a time: the features only (homophily 0), or one meta-path.
@pytest.mark.parametrize("mode, homophily", [("sparse", (0.0, 0.0)), ("dense", (0.0, 0.0)),
                                             ("none", (0.6, 0.0)), ("none", (0.0, 0.6))])
def test_bayes_oracle_beats_a_probe_trained_on_every_other_label(mode, homophily):
    """The oracle is a ceiling: a logistic regression on the features and their meta-path
    neighbour means, trained on every non-test node, does not beat it (within test noise). With
    the class signal in one source only, an oracle that missed that source would sit at chance
    (1/3) while the probe is well above it."""
    ds = make_synthetic_hin(num_nodes=3000, homophily=homophily, seed=6, **_UNCERTAIN[mode])
    n, y = ds.num_nodes, ds.labels.numpy()
    x = sp.identity(n, format="csr") if mode == "none" else sp.csr_matrix(ds.x.numpy())
    agg = sp.hstack([x] + [_mean_adj(ei, n) @ x for ei in ds.metapath_adj.values()]).tocsr()
    test = ds.splits[20]["test"].numpy()
    train = np.setdiff1d(np.arange(n), test)
    probe = LogisticRegression(max_iter=3000).fit(agg[train], y[train]).predict(agg[test])
    oracle = bayes_oracle(ds).argmax(1).numpy()[test]
    probe_acc, oracle_acc = (probe == y[test]).mean(), (oracle == y[test]).mean()
    assert probe_acc > 0.45, probe_acc
    assert oracle_acc >= probe_acc - 0.01, (oracle_acc, probe_acc)


def test_bayes_oracle_sharpens_with_homophily():
    accs = [(bayes_oracle(d).argmax(1) == d.labels).double().mean().item()
            for d in (make_synthetic_hin(feature_mode="none", homophily=(h, h / 2), seed=1)
                      for h in (0.2, 0.5, 0.9))]
    assert accs[0] < accs[1] < accs[2], accs


def test_bayes_oracle_needs_a_planted_graph(ds):
    data = ds.data.clone()
    del data[ds.target].planted_loglik
    other = HINDataset(name="mine", data=data, target=ds.target, labels=ds.labels,
                       num_classes=ds.num_classes, splits=ds.splits, metapaths=ds.metapaths,
                       metapath_adj=ds.metapath_adj)
    with pytest.raises(DataError, match="no planted model"):
        bayes_oracle(other)
