"""``hetcrf-lite`` CLI: help, train -> run folder, evaluate, describe, umap, clear errors.

Every command is called through ``hetcrf_lite.cli.main([...])`` (what the console script runs),
on the built-in synthetic graph, with 3 training epochs so the whole file stays fast.
"""
import contextlib
import io
import json

import numpy as np
import pytest
import torch
import yaml

from hetcrf_lite.cli import main
from hetcrf_lite.eval import Results

RUN_FILES = ("embeddings.npy", "history.json", "config.yaml", "metrics.json", "loss.png")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One short training run shared by the tests: ``(run folder, what train printed)``."""
    out = tmp_path_factory.mktemp("cli") / "run"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["train", "--dataset", "synthetic", "--epochs", "3", "--out", str(out),
                     "--eval-runs", "2", "--quiet"])
    assert code == 0
    return out, stdout.getvalue()


def test_help_shows_the_examples(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "evaluate", "describe", "umap"):
        assert command in out
    assert "hetcrf-lite train --dataset synthetic --out runs/demo" in out
    assert "hetcrf-lite umap runs/acm" in out


def test_train_help_names_the_run_files(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "hetcrf-lite train --dataset acm" in out
    assert all(name in out for name in RUN_FILES)


def test_train_writes_the_run_folder(run):
    out, printed = run
    for name in RUN_FILES:
        assert (out / name).is_file(), f"train did not write {name}"
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]  # atomic writes
    emb = np.load(out / "embeddings.npy")
    assert emb.shape == (1500, 128) and emb.dtype == np.float32  # concat: [H, contrastive]
    assert np.isfinite(emb).all()
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history["epochs"]] == [0, 1, 2]
    assert yaml.safe_load((out / "config.yaml").read_text())["epochs"] == 3
    assert (out / "loss.png").read_bytes()[:8] == PNG_MAGIC
    assert "Macro-F1" in printed and f"run folder: {out}" in printed


def test_train_with_batch_size_trains_on_subgraphs(tmp_path):
    out = tmp_path / "mb"
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["train", "--dataset", "synthetic", "--epochs", "1", "--batch-size", "512",
                     "--out", str(out), "--eval-runs", "2", "--quiet"])
    assert code == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["batch_size"] == 512
    history = json.loads((out / "history.json").read_text())
    assert history["epochs"][0]["steps"] == 3  # ceil(1500 / 512) subgraph steps
    assert np.load(out / "embeddings.npy").shape == (1500, 128)


def test_metrics_record_seed_config_and_versions(run):
    out, _ = run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["seed"] == 0
    assert metrics["config"]["dataset"] == "synthetic" and metrics["config"]["epochs"] == 3
    assert metrics["env"]["torch"] == torch.__version__
    assert {"python", "numpy", "scikit_learn", "torch_geometric"} <= set(metrics["env"])
    assert metrics["epochs"] == 3 and metrics["stopped"] == "reached 3 epochs"
    clf = metrics["results"]["classification"]
    assert set(clf) == {"20", "40", "60"}
    assert all(len(clf[r]["runs"]["macro_f1"]) == 2 for r in clf)  # --eval-runs 2


def test_evaluate_prints_the_table_and_writes_json(run, tmp_path, capsys):
    out, _ = run
    target = tmp_path / "sub" / "metrics.json"
    code = main(["evaluate", str(out / "embeddings.npy"), "--dataset", "synthetic",
                 "--runs", "2", "--json", str(target)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Results (synthetic)" in printed and "Macro-F1" in printed and "NMI" in printed
    for rate in ("20", "40", "60"):
        assert any(line.strip().startswith(rate) for line in printed.splitlines())
    saved = Results.from_json(target)
    assert sorted(saved.classification) == [20, 40, 60]
    assert saved.meta["runs"] == 2 and saved.meta["num_nodes"] == 1500
    # Same embeddings, protocol and seed as the evaluation inside `train`: the same numbers.
    at_train = json.loads((out / "metrics.json").read_text())["results"]["classification"]
    for rate, res in saved.classification.items():
        np.testing.assert_allclose(res.macro_f1, at_train[str(rate)]["runs"]["macro_f1"])


def test_describe_prints_the_statistics(capsys):
    assert main(["describe", "--dataset", "synthetic"]) == 0
    out = capsys.readouterr().out
    assert "synthetic: target 'paper', 1500 nodes, 3 classes" in out
    for word in ("PAP", "PSP", "author", "subject", "positives:", "splits:"):
        assert word in out


def test_umap_writes_a_png(run, capsys):
    out, _ = run
    assert main(["umap", str(out)]) == 0
    png = out / "umap.png"
    assert png.is_file() and png.read_bytes()[:8] == PNG_MAGIC
    assert f"wrote {png}" in capsys.readouterr().out
    assert -1.0 <= json.loads((out / "umap.json").read_text())["silhouette_cosine"] <= 1.0


def test_umap_of_a_folder_that_is_no_run_is_a_clear_error(tmp_path, capsys):
    assert main(["umap", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hetcrf-lite: error:") and "embeddings.npy is missing" in err
    assert "Traceback" not in err


def test_missing_config_file_exits_2_with_a_message(tmp_path, capsys):
    missing = tmp_path / "missing.yaml"
    assert main(["train", "--config", str(missing), "--quiet"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("hetcrf-lite: error:")
    assert f"config file {missing} does not exist" in captured.err
    assert "Traceback" not in captured.err
    assert captured.out == ""


def test_bad_config_field_exits_2_naming_the_field(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("dataset: synthetic\nlr: -1.0\n")
    assert main(["train", "--config", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "'lr'" in err and "must be > 0" in err


def test_evaluate_embeddings_of_the_wrong_length_exits_2(tmp_path, capsys):
    short = tmp_path / "short.npy"
    np.save(short, np.zeros((10, 4), dtype=np.float32))
    assert main(["evaluate", str(short), "--dataset", "synthetic", "--runs", "2"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("hetcrf-lite: error:")
    assert "10 rows" in captured.err and "(1500,)" in captured.err  # both sizes named
    assert "Traceback" not in captured.err and captured.out == ""


def test_unknown_dataset_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--dataset", "cora", "--quiet"])
    assert exit_.value.code == 2
    assert "invalid choice: 'cora'" in capsys.readouterr().err


def test_evaluate_missing_embeddings_file_exits_2(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "none.npy"), "--dataset", "synthetic"]) == 2
    assert "none.npy" in capsys.readouterr().err
