import json
import math
import os

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, roc_auc_score

from hetcrf_lite.errors import ConfigError, DataError
from hetcrf_lite.eval import (
    ClassificationResult,
    ClusteringResult,
    Results,
    _auc_batched,
    _f1_scores,
    _first_best,
    evaluate_classification,
    evaluate_classification_loop,
    evaluate_clustering,
    evaluate_embeddings,
)
from hetcrf_lite.synthetic import make_synthetic_hin


def _blobs(n=300, d=16, c=3, signal=0.5, seed=0):
    """Embeddings with class-dependent means: ``signal`` sets how separable they are."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % c
    emb = signal * torch.randn(c, d, generator=g)[y] + torch.randn(n, d, generator=g)
    perm = torch.randperm(n, generator=g)
    split = {"train": perm[:30], "val": perm[30:150], "test": perm[150:]}
    return emb, y, split


def test_vectorised_matches_loop_to_1e6_and_picks_same_steps():
    emb, y, split = _blobs()
    ref = evaluate_classification_loop(emb, y, split, 3, lr=0.05, runs=4, iters=40,
                                       dtype=torch.float64)
    fast = evaluate_classification(emb, y, {20: split}, 3, lr=0.05, rates=(20,), runs=4,
                                   iters=40, dtype=torch.float64)[20]
    assert fast.macro_step == ref.macro_step and fast.micro_step == ref.micro_step
    for key in ("macro_f1", "micro_f1", "auc"):
        np.testing.assert_allclose(getattr(fast, key), getattr(ref, key), rtol=0, atol=1e-6)
    # The weak signal makes runs differ: the test would not pass by everything being equal.
    assert len(set(ref.macro_step)) > 1 and np.std(ref.macro_f1) > 0.5


def test_run_r_is_seeded_by_seed_plus_r():
    emb, y, split = _blobs()
    three = evaluate_classification(emb, y, {20: split}, 3, 0.05, rates=(20,), runs=3, iters=30)
    last = evaluate_classification(emb, y, {20: split}, 3, 0.05, rates=(20,), runs=1, iters=30,
                                   seed=2)
    assert three[20].macro_f1[2] == last[20].macro_f1[0]
    assert three[20].auc[2] == last[20].auc[0]


def test_batched_f1_matches_sklearn_including_absent_classes():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (40,), generator=g)  # class 3 never true
    pred = torch.randint(0, 4, (6, 5, 40), generator=g)
    pred[0, 0] = 0  # a class-collapsed step
    macro, micro = _f1_scores(pred, y, num_classes=4)
    for t in range(6):
        for r in range(5):
            p = pred[t, r].numpy()
            assert macro[t, r].item() == pytest.approx(f1_score(y, p, average="macro"), abs=1e-12)
            assert micro[t, r].item() == pytest.approx(f1_score(y, p, average="micro"), abs=1e-12)


def test_batched_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 50)
    logits = rng.integers(0, 3, (4, 50, 3)).astype(float)  # many tied scores
    proba = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    ref = [roc_auc_score(y, p, multi_class="ovr") for p in proba]
    np.testing.assert_allclose(_auc_batched(y, proba, 3), ref, atol=1e-12)
    assert np.isnan(_auc_batched(np.zeros(50, int), proba, 3)).all()  # AUC undefined


def test_first_best_takes_the_earliest_tie():
    scores = torch.tensor([[0.5, 0.9], [0.7, 0.1], [0.7 + 1e-14, 0.9], [0.6, 0.2]],
                          dtype=torch.float64)
    assert _first_best(scores).tolist() == [1, 0]


def test_separable_embeddings_score_100():
    emb, y, split = _blobs(signal=20.0)
    res = evaluate_classification(emb, y, {20: split}, 3, 0.05, rates=(20,), runs=3, iters=50)
    s = res[20].summary()
    assert s["macro_f1"][0] > 99 and s["micro_f1"][0] > 99 and s["auc"][0] > 99.9


def test_normalize_ignores_row_scale():
    emb, y, split = _blobs()
    scale = torch.rand(emb.shape[0], 1, generator=torch.Generator().manual_seed(1)) * 10 + 0.1
    a = evaluate_classification(emb, y, {20: split}, 3, 0.05, rates=(20,), runs=2, iters=20,
                                normalize=True, dtype=torch.float64)
    b = evaluate_classification(emb * scale, y, {20: split}, 3, 0.05, rates=(20,), runs=2,
                                iters=20, normalize=True, dtype=torch.float64)
    np.testing.assert_allclose(a[20].macro_f1, b[20].macro_f1, atol=1e-9)


def test_clustering_separable_and_random():
    emb, y, _ = _blobs(signal=30.0)
    good = evaluate_clustering(emb, y, 3, runs=2).summary()
    assert good["nmi"][0] > 99 and good["ari"][0] > 99
    noise = torch.randn(300, 16, generator=torch.Generator().manual_seed(5))
    bad = evaluate_clustering(noise, y, 3, runs=2).summary()
    assert bad["nmi"][0] < 5 and abs(bad["ari"][0]) < 5


def test_clustering_leaves_unlabelled_nodes_out():
    emb, y, _ = _blobs(signal=30.0)
    y = y.clone()
    y[:100] = -1
    emb = emb.clone()
    emb[:100] = 1e3  # far-away unlabelled nodes would take a cluster of their own
    assert evaluate_clustering(emb, y, 3, runs=1).summary()["nmi"][0] > 99


def _results() -> Results:
    clf = {20: ClassificationResult([80.0, 82.0], [81.0, 83.0], [90.0, math.nan], [3, 4], [5, 6])}
    return Results(classification=clf, clustering=ClusteringResult([50.0, 52.0], [40.0, 42.0]),
                   meta={"dataset": "toy", "lr": 0.01})


def test_results_table_and_json_round_trip(tmp_path):
    res = _results()
    text = str(res)
    assert "Results (toy)" in text and "81.00 ± 1.00" in text and "NMI 51.00 ± 1.00" in text
    path = tmp_path / "sub" / "res.json"
    res.save_json(path)
    assert os.listdir(path.parent) == ["res.json"]  # the temporary file is gone
    back = Results.from_json(path)
    assert back.classification[20].macro_step == [3, 4]
    assert math.isnan(back.classification[20].auc[1])
    assert json.dumps(back.to_dict(), sort_keys=True) == json.dumps(res.to_dict(), sort_keys=True)
    assert res.to_dict()["classification"]["20"]["summary"]["macro_f1"] == {"mean": 81.0,
                                                                           "std": 1.0}


def test_evaluate_embeddings_uses_dataset_defaults():
    ds = make_synthetic_hin(num_nodes=450, rates=(10, 20), num_val=100, num_test=100, seed=0)
    emb = torch.randn(450, 8, generator=torch.Generator().manual_seed(0))
    emb[:, :3] += 3 * torch.nn.functional.one_hot(ds.labels, 3)
    res = evaluate_embeddings(emb, ds, runs=2, iters=20, clustering_runs=1)
    assert sorted(res.classification) == [10, 20] and res.meta["lr"] == 0.01
    assert res.classification[20].summary()["micro_f1"][0] > 80 and res.clustering is not None
    ds.name = "acm"
    assert evaluate_embeddings(emb, ds, runs=1, iters=5, clustering=False).meta["lr"] == 0.05


@pytest.mark.parametrize("mutate, match", [
    (lambda e, y, s: (e.index_fill(0, torch.tensor([7]), math.nan), y, s), "NaN or Inf"),
    (lambda e, y, s: (e, y[:-1], s), "one label per embedded node"),
    (lambda e, y, s: (e, y, {**s, "test": torch.tensor([0, 300])}), "index 300 outside"),
    (lambda e, y, s: (e, y, {"train": s["train"], "val": s["val"]}), "no 'test' index"),
    (lambda e, y, s: (e, y.index_fill(0, s["train"][:1], -1), s), "unlabelled nodes are -1"),
    (lambda e, y, s: (e[:, 0], y, s), "2-D float tensor"),
])
def test_bad_inputs_raise_data_error(mutate, match):
    emb, y, split = _blobs()
    emb, y, split = mutate(emb, y, split)
    with pytest.raises(DataError, match=match):
        evaluate_classification(emb, y, {20: split}, 3, 0.05, rates=(20,), runs=1, iters=2)
    with pytest.raises(DataError, match=match):
        evaluate_classification_loop(emb, y, split, 3, 0.05, runs=1, iters=2)


def test_bad_settings_raise():
    emb, y, split = _blobs()
    with pytest.raises(DataError, match="no split for rates"):
        evaluate_classification(emb, y, {20: split}, 3, 0.05, rates=(40,))
    with pytest.raises(ConfigError, match="at least 2"):
        evaluate_classification(emb, y, {20: split}, 1, 0.05, rates=(20,))
    with pytest.raises(ConfigError, match="must be positive"):
        evaluate_classification_loop(emb, y, split, 3, 0.0)
    with pytest.raises(ConfigError, match="at least 1"):
        evaluate_classification(emb, y, {20: split}, 3, 0.05, rates=(20,), runs=0)


def test_evaluation_works_inside_no_grad_with_the_same_numbers():
    """A user who computes embeddings under torch.no_grad() and evaluates in the same block
    gets the numbers of an evaluation outside it (the probes need gradients of their own)."""
    emb, y, split = _blobs()
    args = dict(runs=3, iters=20)
    outside = evaluate_classification(emb, y, {20: split}, 3, 0.01, rates=[20], **args)
    loop_out = evaluate_classification_loop(emb, y, split, 3, 0.01, **args)
    with torch.no_grad():
        inside = evaluate_classification(emb, y, {20: split}, 3, 0.01, rates=[20], **args)
        loop_in = evaluate_classification_loop(emb, y, split, 3, 0.01, **args)
        assert not torch.is_grad_enabled()  # the caller's mode is left as it was
    assert inside[20].macro_f1 == outside[20].macro_f1
    assert loop_in.macro_f1 == loop_out.macro_f1
