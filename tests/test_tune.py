"""benchmarks/tune.py: validation-only scoring (no test index is read) and the training curve."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from hetcrf_lite.synthetic import make_synthetic_hin

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import tune  # noqa: E402


@pytest.fixture(scope="module")
def hin():
    return make_synthetic_hin(num_nodes=240, num_classes=3, rates=(20,), seed=1)


def test_validation_only_never_passes_test_nodes(hin):
    val = tune.validation_only(hin)
    for rate, split in val.splits.items():
        assert torch.equal(split["test"], hin.splits[rate]["val"])
        assert torch.equal(split["train"], hin.splits[rate]["train"])
    assert not torch.equal(val.splits[20]["test"], hin.splits[20]["test"])


def test_score_records_a_curve_every_n_epochs(hin):
    rows = tune.score(hin, {"epochs": 4, "hidden_channels": 16, "heads": 1}, seed=0,
                      eval_runs=2, embed_modes=["concat", "encoder"], curve_every=2)
    assert set(rows) == {"concat", "encoder"}
    for row in rows.values():
        assert [c["epoch"] for c in row["curve"]] == [2, 4]
        assert all(set(c["val_macro_f1"]) == {20} for c in row["curve"])
        assert row["epochs"] == 4 and 0 <= row["best_epoch"] < 4
    # here the loss falls every epoch, so the lowest-loss parameters are the last ones and the
    # final score is the epoch-4 probe's number (probing did not disturb training)
    assert rows["concat"]["best_epoch"] == 3
    assert rows["concat"]["curve"][-1]["val_macro_f1"] == rows["concat"]["val_macro_f1"]


def test_curve_summary_means_over_rates_then_seeds():
    seed0 = [{"epoch": 10, "val_macro_f1": {20: 60.0, 40: 70.0}},
             {"epoch": 20, "val_macro_f1": {20: 80.0, 40: 80.0}}]
    seed1 = [{"epoch": 10, "val_macro_f1": {20: 50.0, 40: 50.0}}]  # stopped early
    out = tune.curve_summary([seed0, seed1])
    assert out == [{"epoch": 10, "score": 57.5, "by_seed": [65.0, 50.0]}]
    assert tune.curve_summary([seed0]) == [{"epoch": 10, "score": 65.0, "by_seed": [65.0]},
                                          {"epoch": 20, "score": 80.0, "by_seed": [80.0]}]


def test_plot_curves_writes_a_png_and_refuses_curveless_results(tmp_path):
    curve = tune.curve_summary([[{"epoch": 10, "val_macro_f1": {20: 60.0}},
                                 {"epoch": 20, "val_macro_f1": {20: 70.0}}]])
    result = {"dataset": "acm", "fixed": {"epochs": 20}, "seeds": [0],
              "rows": [{"point": {}, "curve": curve}]}
    tune.plot_curves(result, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit, match="--curve-every"):
        tune.plot_curves({**result, "rows": [{"point": {}, "curve": []}]}, tmp_path / "x.png")


def test_merge_results_labels_lines_by_the_settings_they_differ_in():
    a = {"fixed": {"epochs": 500}, "seeds": [0], "rows": [{"point": {}, "curve": []}]}
    b = {"fixed": {"epochs": 500, "lr": 0.003}, "seeds": [0], "rows": [{"point": {}, "curve": []}]}
    merged = tune.merge_results([a, b], "freebase")
    assert [r["point"] for r in merged["rows"]] == [{"lr": "config default"}, {"lr": 0.003}]
    assert merged["fixed"] == {"epochs": 500} and merged["dataset"] == "freebase"
