"""hetcrf_lite.tune: ``hetcrf-lite tune`` (budgeted, validation labels only) and the grid of
``benchmarks/tune.py`` (validation-only scoring, the training curve), on tiny graphs."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import sys
from pathlib import Path

import pytest
import torch

from hetcrf_lite import tune

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import tune as grid  # noqa: E402  benchmarks/tune.py: the grid built on hetcrf_lite.tune

sys.path.pop(0)
from hetcrf_lite.cli import main
from hetcrf_lite.config import HetCRFConfig, default_config
from hetcrf_lite.data import load_graph_dataset, to_heterodata
from hetcrf_lite.errors import ConfigError, NoValidationLabelsError
from hetcrf_lite.synthetic import make_synthetic_hin
from hetcrf_lite.train import fit
from cli_helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]
SPEC = ["--target", "paper", "--metapaths", "PAP", "PSP"]
SMALL = {"hidden_channels": 16, "heads": 1, "epochs": 4, "cluster_every": 2}


@pytest.fixture(scope="module")
def hin():
    return make_synthetic_hin(num_nodes=240, num_classes=3, rates=(20,), seed=1)


@pytest.fixture(scope="module")
def small_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "small.yaml"
    HetCRFConfig(**SMALL).save(path)
    return path


# --------------------------------------------------------------------------------------------
# hetcrf-lite tune
# --------------------------------------------------------------------------------------------

def test_tune_on_the_builtin_graph_tries_the_shipped_config_first_and_keeps_the_budget(tmp_path):
    """A budget too small for two candidates runs exactly one: the shipped config; tune.json
    and best.yaml are written and ``train --config best.yaml`` accepts the file."""
    out = tmp_path / "tune"
    code, printed, err = run_cli(["tune", "--dataset", "synthetic", "--epochs", "2", "--seeds",
                                  "0", "--budget", "0.005", "--eval-runs", "1", "--threads",
                                  "1", "--out", str(out)])
    assert code == 0, err
    result = json.loads((out / "tune.json").read_text())
    shipped = default_config("synthetic")
    assert [(r["why"], r["lr"], r["tau"]) for r in result["rows"]] == [
        ("starting config", shipped.lr, shipped.tau)]
    assert "budget" in result["skipped"] and result["budget_s"] == pytest.approx(0.3)
    assert set(result["rows"][0]["runs"]["0"]["curve"][0]["val_macro_f1"]) == {
        m + s for m in tune.EMBED_MODES for s in ("", "+std")}
    assert set(result["baselines"]) == {"raw features", "propagated features"}
    assert result["env"]["torch"] == torch.__version__ and result["seed"] == [0]
    assert re.search(r"about 1 of at most \d+ candidates fit", printed)
    assert "best first" in printed and "propagated features:" in printed
    best = HetCRFConfig.load(out / "best.yaml")
    assert best.dataset == "synthetic" and best.epochs <= 2
    code, _, err = run_cli(["train", "--config", str(out / "best.yaml"), "--out",
                            str(tmp_path / "run"), "--eval-runs", "1", "--quiet", "--threads",
                            "1"])
    assert code == 0, err
    assert (tmp_path / "run" / "embeddings.npy").is_file()


def test_tune_on_an_own_graph_file_writes_a_best_yaml_that_reproduces_its_score(
        tmp_path, hin, small_config):
    """Several candidates on a saved graph; ``train --config best.yaml`` accepts the result, and
    the model it trains scores on validation exactly what tune reported (the epoch count read
    off the curve is the model a run of that many epochs returns)."""
    graph = tmp_path / "graph.pt"
    torch.save(to_heterodata(hin), graph)
    out = tmp_path / "tune"
    code, printed, err = run_cli(["tune", "--data", str(graph), *SPEC, "--config",
                                  str(small_config), "--seeds", "0", "--budget", "0.5",
                                  "--eval-runs", "2", "--threads", "1", "--out", str(out),
                                  "--quiet"])
    assert code == 0, err
    result = json.loads((out / "tune.json").read_text())
    assert len(result["rows"]) >= 2
    first = next(r for r in result["rows"] if r["why"] == "starting config")
    assert first["lr"] == HetCRFConfig().lr
    scores = [r["best"]["score"] for r in result["rows"] if "best" in r]
    assert scores == sorted(scores, reverse=True)  # best first
    best = HetCRFConfig.load(out / "best.yaml")
    assert best.graph == str(graph.absolute()) and best.metapaths == ["PAP", "PSP"]
    top = result["rows"][result["best_index"]]["best"]
    assert (best.epochs, best.embed, best.embed_norm) == (top["epochs"], top["embed"],
                                                          top["embed_norm"])
    dataset = load_graph_dataset(graph, "paper", ["PAP", "PSP"])
    model, _ = fit(dataset, best, progress=False)
    again = tune.validation_scores(model.embed(), tune.validation_only(dataset), 2)
    assert {str(k): v for k, v in again.items()} == pytest.approx(top["by_seed"]["0"])
    code, _, err = run_cli(["train", "--config", str(out / "best.yaml"), "--out",
                            str(tmp_path / "run"), "--eval-runs", "1", "--quiet", "--threads",
                            "1"])
    assert code == 0, err


def test_no_test_label_is_read(hin):
    """Scores and baselines are the same when the labels of the test-only nodes are permuted."""
    base = HetCRFConfig(**{**SMALL, "epochs": 2})
    first = tune.tune(hin, base, seeds=[0], budget_s=0.01, eval_runs=2, progress=False,
                      log=lambda _: None)
    split = hin.splits[20]
    seen = torch.cat([split["train"], split["val"]])
    test_only = split["test"][~torch.isin(split["test"], seen)]
    labels = hin.labels.clone()
    shuffled = labels[test_only][torch.randperm(len(test_only),
                                                generator=torch.Generator().manual_seed(0))]
    assert not torch.equal(shuffled, labels[test_only])
    labels[test_only] = shuffled
    second = tune.tune(dataclasses.replace(hin, labels=labels), base, seeds=[0], budget_s=0.01,
                       eval_runs=2, progress=False, log=lambda _: None)
    assert len(first["rows"]) == len(second["rows"]) == 1
    assert first["rows"][0]["points"] == second["rows"][0]["points"]
    assert first["baselines"] == second["baselines"]


def test_a_graph_without_labels_is_refused_with_what_to_do(tmp_path, hin):
    data = to_heterodata(hin)
    for key in [k for k in data["paper"].keys() if "_mask_" in k]:
        del data["paper"][key]
    data["paper"].y = torch.full_like(data["paper"].y, -1)
    graph = tmp_path / "unlabelled.pt"
    torch.save(data, graph)
    code, _, err = run_cli(["tune", "--data", str(graph), *SPEC, "--seeds", "0", "--out",
                            str(tmp_path / "t")])
    assert code == 2 and "Traceback" not in err
    assert "tuning needs validation labels" in err and "hetcrf-lite train" in err
    one_class = dataclasses.replace(hin, labels=torch.zeros_like(hin.labels))
    with pytest.raises(NoValidationLabelsError, match="1 class"):
        tune.check_tunable(one_class)
    no_val = dataclasses.replace(hin, splits={20: {**hin.splits[20],
                                                   "val": hin.splits[20]["val"][:0]}})
    with pytest.raises(NoValidationLabelsError, match="no validation nodes"):
        tune.check_tunable(no_val)


@pytest.mark.parametrize("argv", [["--budget", "0"], ["--budget", "-1"], ["--seeds"],
                                  ["--seeds", "x"]])
def test_bad_options_are_usage_errors(argv):
    with contextlib.redirect_stderr(io.StringIO()) as err, pytest.raises(SystemExit) as exit_:
        main(["tune", "--dataset", "synthetic", *argv])
    assert exit_.value.code == 2 and "Traceback" not in err.getvalue()


def test_bad_arguments_of_the_function_are_named_errors(hin):
    base = HetCRFConfig(**SMALL)
    for kwargs, match in (({"seeds": []}, "at least one seed"), ({"seeds": [0, 0]}, "repeat"),
                          ({"budget_s": 0}, "positive")):
        with pytest.raises(ConfigError, match=match):
            tune.tune(hin, base, **kwargs, progress=False, log=lambda _: None)


def test_search_order_starts_at_the_config_and_follows_what_won():
    base = HetCRFConfig(lr=1e-3, tau=0.8)
    rows: list[dict] = []
    order = tune.candidates(base, rows)

    def result(lr, tau, why, score):
        rows.append({"lr": lr, "tau": tau, "why": why, "best": {"score": score}})

    assert next(order) == (1e-3, 0.8, "starting config")
    result(1e-3, 0.8, "starting config", 50.0)
    assert next(order) == (4e-3, 0.8, "lr x4")
    result(4e-3, 0.8, "lr x4", 60.0)
    assert next(order) == (0.016, 0.8, "lr x16")  # x4 won: further up
    result(0.016, 0.8, "lr x16", 55.0)
    assert next(order) == (4e-3, 0.48, "tau x0.6")  # at the best lr
    result(4e-3, 0.48, "tau x0.6", 40.0)
    assert next(order) == (4e-3, 1.33333, "tau /0.6")  # x0.6 lost: the other way
    result(4e-3, 1.33333, "tau /0.6", 45.0)
    assert [c[2] for c in order] == ["lr x2", "lr /2"]
    assert len(rows) + 2 <= tune.MAX_CANDIDATES
    down = tune.candidates(base, [])
    next(down), next(down)
    assert next(down)[2] == "lr /4"  # x4 untried or lost: down


def _curve(*scores):
    return [{"epoch": i + 1, "val_macro_f1": {"concat": {20: s - 1, 40: s + 1},
                                             "encoder": {20: s - 5, 40: s - 5}}}
            for i, s in enumerate(scores)]


def test_past_peak_needs_the_last_probes_all_far_below_the_best():
    assert tune.CUT_PROBES == 2 and tune.CUT_DROP == 2.0
    assert not tune._past_peak(_curve(80, 70))  # too short to judge
    assert not tune._past_peak(_curve(80, 79, 70))  # one probe within 2 points of the peak
    assert tune._past_peak(_curve(80, 78, 77.5))
    assert not tune._past_peak(_curve(70, 75, 74))  # still near its best: rising or flat
    assert tune._past_peak(_curve(60, 80, 75, 70, 71))


def test_a_training_past_its_peak_is_cut_and_later_seeds_train_only_that_far(hin, monkeypatch):
    """Validation scores that fall from the first probe on: seed 0 stops at its third probe
    (epoch 5 of 40), seed 1 trains 5 epochs, and no point past epoch 5 is scored."""
    calls = []
    modes = len(tune._modes(HetCRFConfig(**SMALL)))

    def falling(emb, val_dataset, eval_runs, lr=None):
        calls.append(1)
        return {20: 80.0 - 3.0 * ((len(calls) - 1) // modes)}

    monkeypatch.setattr(tune, "validation_scores", falling)
    config = HetCRFConfig(**{**SMALL, "epochs": 40, "patience": 100})
    assert sorted(tune._probe_epochs(config))[:3] == [1, 2, 5]
    bar = type("Bar", (), {"set_postfix_str": lambda *a: None, "update": lambda *a: None})()
    row = tune._run_candidate(hin, tune.validation_only(hin), config, "test", [0, 1], 1, bar)
    assert row["runs"][0]["cut"] == 5 and row["runs"][0]["epochs_trained"] == 5
    assert "on_epoch_end" in row["runs"][0]["stopped"]
    assert row["runs"][1]["epochs_trained"] <= 5 and row["runs"][1]["limit"] == 5
    assert {p["epochs"] for p in row["points"]} == {1, 2, 5}
    assert row["best"]["epochs"] == 1
    lines = []
    tune._log_candidate(row, lines.append)
    assert "cut at 5 epochs" in lines[0]


def test_a_flat_validation_curve_is_not_cut(hin, monkeypatch):
    # per probe: noise, but never CUT_DROP below the best so far (71.5)
    per_probe = [70.0, 71.5, 69.6, 70.4, 69.8, 71.0, 69.7]
    modes = len(tune._modes(HetCRFConfig(**SMALL)))
    calls = []

    def flat(*args, **kwargs):
        calls.append(1)
        return {20: per_probe[(len(calls) - 1) // modes]}

    monkeypatch.setattr(tune, "validation_scores", flat)
    config = HetCRFConfig(**{**SMALL, "epochs": 12, "patience": 100})
    assert len(tune._probe_epochs(config)) == len(per_probe)
    run = tune._train_probed(hin, config, tune.validation_only(hin), 1,
                             tune._probe_epochs(config), cut=True)
    assert run["epochs_trained"] == 12 and "cut" not in run


def test_when_few_candidates_fit_each_trains_fewer_epochs():
    """One second per epoch, no set-up or probe cost, 3 seeds: a 600 s budget holds MIN_FIT
    (4) candidates of 50 epochs; a large budget keeps the config's 200; a tiny one stops at the
    floor (20, or the config's epochs when fewer)."""
    est = {"setup_s": 0.0, "epoch_s": 1.0, "probe_s": 0.0}
    base = HetCRFConfig(epochs=200)
    assert tune.MIN_FIT == 4 and tune.EPOCHS_FLOOR == 20
    assert tune.candidate_seconds(est, base, 3) == 600.0
    assert tune.epochs_that_fit(est, base, 3, 600.0) == 50
    assert tune.epochs_that_fit(est, base, 3, 4 * 600.0) == 200
    assert tune.epochs_that_fit(est, base, 3, 10.0) == 20
    assert tune.epochs_that_fit(est, HetCRFConfig(epochs=8), 3, 10.0) == 8
    probed = {**est, "probe_s": 2.0}  # probes cost too: fewer epochs fit
    assert tune.epochs_that_fit(probed, base, 3, 600.0) < 50


def test_a_small_budget_shortens_every_candidate_and_says_so(hin, monkeypatch):
    # scores faked (the shortening is under test, not the probe): no 60-epoch candidate of
    # even this tiny graph fits 4 times in 0.2 s, so every candidate trains the floor's 20
    monkeypatch.setattr(tune, "validation_scores", lambda *a, **k: {20: 50.0})
    lines: list[str] = []
    base = HetCRFConfig(**{**SMALL, "epochs": 60, "patience": 100})
    result = tune.tune(hin, base, seeds=[0], budget_s=0.2, eval_runs=1, progress=False,
                       log=lines.append)
    cap = result["epochs_cap"]
    assert cap == tune.EPOCHS_FLOOR
    assert all(run["epochs_trained"] <= cap for r in result["rows"]
               for run in r.get("runs", {}).values())
    assert any(f"at most {cap} epochs" in line for line in lines)
    assert f"at most {cap} epochs" in tune.format_table(result)
    assert result["best_config"].epochs <= cap


def test_nothing_below_the_top_layer_imports_tune():
    for path in (ROOT / "hetcrf_lite").glob("*.py"):
        if path.stem not in ("tune", "cli"):
            assert not re.search(r"from \.tune |from \.+ import tune|hetcrf_lite\.tune",
                                 path.read_text()), path


# --------------------------------------------------------------------------------------------
# the grid (benchmarks/tune.py): validation-only scoring and the curve
# --------------------------------------------------------------------------------------------

def test_validation_only_never_passes_test_nodes(hin):
    val = tune.validation_only(hin)
    for rate, split in val.splits.items():
        assert torch.equal(split["test"], hin.splits[rate]["val"])
        assert torch.equal(split["train"], hin.splits[rate]["train"])
    assert not torch.equal(val.splits[20]["test"], hin.splits[20]["test"])


def test_score_records_a_curve_every_n_epochs(hin):
    rows = grid.score(hin, {"epochs": 4, "hidden_channels": 16, "heads": 1}, seed=0,
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


def test_a_curve_point_is_the_score_of_a_run_that_long(hin):
    """The epoch-4 probe of a 6-epoch run scores what a 4-epoch run returns (how the shipped
    epoch budgets are read off the curve), not the parameters of the longer run at that point."""
    point = {"hidden_channels": 16, "heads": 1, "lr": 0.0008}  # its loss rises at epoch 4
    long = grid.score(hin, {**point, "epochs": 6}, seed=0, eval_runs=2,
                      embed_modes=["concat"], curve_every=2)["concat"]
    short = grid.score(hin, {**point, "epochs": 4}, seed=0, eval_runs=2,
                       embed_modes=["concat"])["concat"]
    assert short["best_epoch"] < 3  # so a 4-epoch run returns an earlier epoch's parameters
    assert long["curve"][1]["epoch"] == 4
    assert long["curve"][1]["val_macro_f1"] == short["val_macro_f1"]


def test_embed_labels_round_trip_and_unknown_ones_are_refused():
    for mode in tune.EMBED_MODES:
        for norm in tune.EMBED_NORMS:
            assert tune.parse_embed_label(tune.embed_label(mode, norm)) == (mode, norm)
    assert tune.embed_label("concat", "none") == "concat"  # the names older logs used
    for bad in ("concat+l2", "umap", "concat+"):
        with pytest.raises(ConfigError, match="use one of"):
            tune.parse_embed_label(bad)


def test_the_grid_scores_standardised_embeddings_of_the_same_model(hin):
    """``concat+std`` is the same trained model's concatenation with standardised columns:
    it equals scoring ``standardise_columns`` of the raw one, and its row names the setting
    that ``best.yaml`` needs (``embed_norm``)."""
    from hetcrf_lite.model import standardise_columns

    changes = {"epochs": 2, "hidden_channels": 16, "heads": 1}
    rows = grid.score(hin, changes, seed=0, eval_runs=2, embed_modes=["concat", "concat+std"])
    model, _ = fit(hin, default_config("synthetic").replace(grad_balance_every=0, seed=0,
                                                           **changes), progress=False)
    by_hand = tune.validation_scores(standardise_columns(model.embed("concat", "none")),
                                     tune.validation_only(hin), 2)
    assert rows["concat+std"]["val_macro_f1"] == pytest.approx(by_hand)
    assert rows["concat+std"]["val_macro_f1"] != rows["concat"]["val_macro_f1"]
    points = grid._grid_rows({}, [rows], ["concat", "concat+std"])
    assert [p["point"] for p in points] == [{"embed": "concat"},
                                            {"embed": "concat", "embed_norm": "standardise"}]


def test_curve_summary_means_over_rates_then_seeds():
    seed0 = [{"epoch": 10, "val_macro_f1": {20: 60.0, 40: 70.0}},
             {"epoch": 20, "val_macro_f1": {20: 80.0, 40: 80.0}}]
    seed1 = [{"epoch": 10, "val_macro_f1": {20: 50.0, 40: 50.0}}]  # stopped early
    out = grid.curve_summary([seed0, seed1])
    assert out == [{"epoch": 10, "score": 57.5, "by_seed": [65.0, 50.0]}]
    assert grid.curve_summary([seed0]) == [{"epoch": 10, "score": 65.0, "by_seed": [65.0]},
                                          {"epoch": 20, "score": 80.0, "by_seed": [80.0]}]


def test_plot_curves_writes_a_png_and_refuses_curveless_results(tmp_path):
    curve = grid.curve_summary([[{"epoch": 10, "val_macro_f1": {20: 60.0}},
                                 {"epoch": 20, "val_macro_f1": {20: 70.0}}]])
    result = {"dataset": "acm", "fixed": {"epochs": 20}, "seeds": [0],
              "rows": [{"point": {}, "curve": curve}]}
    grid.plot_curves(result, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ConfigError, match="--curve-every"):
        grid.plot_curves({**result, "rows": [{"point": {}, "curve": []}]}, tmp_path / "x.png")


def test_merge_results_labels_lines_by_the_settings_they_differ_in():
    a = {"fixed": {"epochs": 500}, "seeds": [0], "rows": [{"point": {}, "curve": []}]}
    b = {"fixed": {"epochs": 500, "lr": 0.003}, "seeds": [0], "rows": [{"point": {}, "curve": []}]}
    merged = grid.merge_results([a, b], "freebase")
    assert [r["point"] for r in merged["rows"]] == [{"lr": "config default"}, {"lr": 0.003}]
    assert merged["fixed"] == {"epochs": 500} and merged["dataset"] == "freebase"


def test_the_benchmark_script_runs_the_grid(tmp_path):
    """benchmarks/tune.py holds the grid, built on the package's validation-only scoring;
    --replot through it draws saved curves."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import tune as script  # benchmarks/tune.py
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert script.score is grid.score and script.validation_only is tune.validation_only
    curve = grid.curve_summary([[{"epoch": 5, "val_macro_f1": {20: 60.0}},
                                 {"epoch": 10, "val_macro_f1": {20: 70.0}}]])
    saved = tmp_path / "acm-tune.json"
    saved.write_text(json.dumps({"fixed": {}, "seeds": [0], "rows": [{"point": {},
                                                                      "curve": curve}]}))
    with contextlib.redirect_stdout(io.StringIO()):
        code = script.main(["--dataset", "acm", "--replot", str(saved), "--figure",
                            str(tmp_path / "c.png")])
    assert code == 0 and (tmp_path / "c.png").is_file()
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert script.main(["--dataset", "acm", "--grid", "lr"]) == 2
    assert "KEY=V1,V2" in err.getvalue()
