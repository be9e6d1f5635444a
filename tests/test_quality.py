"""The method learns: HetCRF beats raw features on the synthetic default (issue: done-when).

Each case trains the shipped synthetic config end to end (about 10-20 s on one core); on the
default graph that training is ``make demo`` itself (the session's ``demo_run``).
"""
import numpy as np
import pytest

from hetcrf_lite.config import default_config
from hetcrf_lite.eval import evaluate_embeddings
from hetcrf_lite.synthetic import make_synthetic_hin
from hetcrf_lite.train import fit


def macro_f1(emb, dataset) -> float:
    results = evaluate_embeddings(emb, dataset, runs=5, rates=(20,), clustering=False)
    return results.classification[20].summary()["macro_f1"][0]


@pytest.fixture(scope="module")
def sparse_default():
    return make_synthetic_hin()


def test_hetcrf_beats_raw_features_by_15_points(sparse_default, demo_run):
    _, _, out = demo_run
    raw = macro_f1(sparse_default.x.numpy(), sparse_default)
    ours = macro_f1(np.load(out / "embeddings.npy"), sparse_default)
    assert ours >= raw + 15, (ours, raw)


def test_featureless_graph_far_above_chance():
    ds = make_synthetic_hin(feature_mode="none")
    model, _ = fit(ds, default_config("synthetic"), progress=False)
    chance = 100 / ds.num_classes
    assert macro_f1(model.embed().cpu().numpy(), ds) >= chance + 25
