"""A graph of your own from the command line: ``--data GRAPH --target TYPE --metapaths ...``.

The graph is the package's synthetic graph saved as a PyG ``HeteroData`` (``to_heterodata``,
``torch.save``), so every number read back can be compared with the dataset it came from.
Commands run through ``hetcrf_lite.cli.main`` (what the console script calls).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch_geometric.data import Data, HeteroData

from hetcrf_lite.cli import main
from hetcrf_lite.data import load_graph, load_graph_dataset, make_splits, to_heterodata
from hetcrf_lite.errors import DataError
from hetcrf_lite.synthetic import make_synthetic_hin
from hetcrf_lite.train import load_run, run_embeddings
from hetcrf_lite.trainer import read_checkpoint
from cli_helpers import run_cli

SPEC = ["--target", "paper", "--metapaths", "PAP", "paper-subject-paper"]


@pytest.fixture(scope="module")
def synthetic():
    return make_synthetic_hin(num_nodes=390)  # 130 per class: the 60-per-class split fits


@pytest.fixture(scope="module")
def graph_file(tmp_path_factory, synthetic) -> Path:
    path = tmp_path_factory.mktemp("graph") / "graph.pt"
    torch.save(to_heterodata(synthetic), path)
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory, graph_file) -> tuple[Path, str]:
    """A short run on the saved graph that stops early (patience 1 at a high lr), so its best
    epoch is not its last: ``(run folder, what train printed)``."""
    out = tmp_path_factory.mktemp("runs") / "mine"
    code, printed, err = run_cli(["train", "--data", str(graph_file), *SPEC, "--epochs", "30",
                                  "--out", str(out), "--eval-runs", "3", "--quiet",
                                  "--threads", "1", "--config", str(_config(out.parent))])
    assert code == 0, err
    return out, printed


def _config(folder: Path) -> Path:
    path = folder / "fast.yaml"
    path.write_text("lr: 0.5\npatience: 1\nhidden_channels: 32\ncluster_every: 5\n")
    return path


# --------------------------------------------------------------------------------------------
# the file: saved, read back safely, the same graph
# --------------------------------------------------------------------------------------------

def test_saved_graph_reads_back_as_the_same_dataset(graph_file, synthetic):
    ds = load_graph_dataset(graph_file, "paper", ["PAP", ["paper", "subject", "paper"]])
    assert torch.equal(ds.labels, synthetic.labels)
    assert sorted(ds.splits) == sorted(synthetic.splits) == [20, 40, 60]
    for rate, parts in synthetic.splits.items():
        for part, idx in parts.items():
            assert torch.equal(ds.splits[rate][part], idx), (rate, part)
    assert list(ds.metapaths) == ["PAP", "PSP"]
    for name in ("PAP", "PSP"):
        assert torch.equal(ds.metapath_adj[name], synthetic.metapath_adj[name])
    assert torch.equal(ds.x, synthetic.x)


def test_graph_without_masks_draws_seeded_splits(tmp_path, synthetic):
    data = to_heterodata(synthetic)
    for key in [k for k in data["paper"].keys() if "_mask_" in k]:
        del data["paper"][key]
    path = tmp_path / "nomasks.pt"
    torch.save(data, path)
    ds = load_graph_dataset(path, "paper", ["PAP"], split_seed=3)
    expected = make_splits(synthetic.labels, (20, 40, 60), 97, 97, seed=3)  # min(1000, 390 // 4)
    assert torch.equal(ds.splits[20]["train"], expected[20]["train"])
    other = load_graph_dataset(path, "paper", ["PAP"], split_seed=4)
    assert not torch.equal(other.splits[20]["train"], ds.splits[20]["train"])
    assert ds.splits[20]["train"].numel() == 60  # 20 per class


def test_graph_saved_as_a_dict_also_loads(tmp_path, synthetic):
    path = tmp_path / "dict.pt"
    torch.save(to_heterodata(synthetic).to_dict(), path)
    assert isinstance(load_graph(path), HeteroData)


def test_crafted_graph_file_runs_no_code(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"paper": Evil()}, path)
    code, out, err = run_cli(["describe", "--data", str(path), *SPEC])
    assert code == 2 and not marker.exists()
    assert "could run code" in err and "Traceback" not in err


def _bad_graphs(tmp: Path, synthetic) -> dict[str, tuple[Path, list[str], str]]:
    """name -> (graph file, extra argv, words the one-line error must hold)."""
    cases = {}

    def save(name, obj):
        path = tmp / f"{name}.pt"
        torch.save(obj, path)
        return path

    text = tmp / "text.pt"
    text.write_text("not a graph\n")
    cases["missing"] = (tmp / "none.pt", SPEC, "does not exist")
    cases["folder"] = (tmp, SPEC, "not a file")
    cases["text"] = (text, SPEC, "not a file written by torch.save")
    cases["homogeneous"] = (save("data", Data(x=torch.ones(3, 2))), SPEC, "HeteroData")
    cases["tensor"] = (save("tensor", torch.ones(3)), SPEC, "not a HeteroData")
    good = save("good", to_heterodata(synthetic))
    cases["unknown target"] = (good, ["--target", "venue", "--metapaths", "VPV"],
                               "'venue' is not a node type")
    cases["bad meta-path"] = (good, ["--target", "paper", "--metapaths", "PXP"],
                              "unknown node type 'X'")
    cases["open meta-path"] = (good, ["--target", "paper", "--metapaths", "PA"], "three")
    plain = to_heterodata(synthetic)
    plain["paper"].train_mask = plain["paper"].train_mask_20
    cases["unrated mask"] = (save("plain", plain), SPEC, "train_mask_<rate>")
    partial = to_heterodata(synthetic)
    del partial["paper"].test_mask_40
    cases["missing mask"] = (save("partial", partial), SPEC, "test_mask_40")
    ints = to_heterodata(synthetic)
    ints["paper"].val_mask_20 = ints["paper"].val_mask_20.long()
    cases["int mask"] = (save("ints", ints), SPEC, "boolean tensor")
    frac = to_heterodata(synthetic)
    frac["paper"].y = frac["paper"].y.float() + 0.5
    cases["fractional labels"] = (save("frac", frac), SPEC, "non-integer")
    nan = to_heterodata(synthetic)
    nan["paper"].x = nan["paper"].x.clone()
    nan["paper"].x[3, 0] = float("nan")
    cases["NaN features"] = (save("nan", nan), SPEC, "NaN")
    return cases


CASES = ["missing", "folder", "text", "homogeneous", "tensor", "unknown target",
         "bad meta-path", "open meta-path", "unrated mask", "missing mask", "int mask",
         "fractional labels", "NaN features"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", ["describe", "train"])
def test_bad_graph_is_a_named_error_exit_2(tmp_path, synthetic, case, command):
    path, extra, words = _bad_graphs(tmp_path, synthetic)[case]
    argv = [command, "--data", str(path), *extra]
    if command == "train":
        argv += ["--epochs", "1", "--out", str(tmp_path / "run"), "--quiet"]
    code, out, err = run_cli(argv)
    assert code == 2, (case, out, err)
    assert err.startswith("hetcrf-lite: error:") and err.count("\n") == 1, err
    assert words in err and "Traceback" not in err


@pytest.mark.parametrize("argv, words", [
    (["describe", "--target", "paper"], "give --data GRAPH too"),
    (["describe"], "needs --dataset NAME or --data GRAPH"),
    (["train", "--dataset", "synthetic", "--data", "g.pt", *SPEC], "not both"),
    (["train", "--data", "g.pt", "--target", "paper", "--quiet"], "needs at least one meta-path"),
])
def test_incomplete_graph_options_exit_2(argv, words):
    code, _, err = run_cli(argv)
    assert code == 2 and words in err, err


# --------------------------------------------------------------------------------------------
# a run folder: trained, evaluated, drawn and reloaded on the same graph
# --------------------------------------------------------------------------------------------

def test_train_records_the_graph_and_its_sha256(run, graph_file):
    import hashlib

    out, printed = run
    record = json.loads((out / "graph.json").read_text())
    assert record["path"] == str(graph_file.absolute())
    assert record["sha256"] == hashlib.sha256(graph_file.read_bytes()).hexdigest()
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["graph"] == str(graph_file.absolute()) and config["target"] == "paper"
    assert config["metapaths"] == ["PAP", "paper-subject-paper"]
    assert np.load(out / "embeddings.npy").shape[0] == 390
    assert "Macro-F1" in printed


def test_evaluate_on_the_run_folder_repeats_trains_numbers(run):
    out, _ = run
    code, printed, err = run_cli(["evaluate", str(out), "--runs", "3", "--threads", "1"])
    assert code == 0, err
    from hetcrf_lite.eval import Results

    trained = str(Results.from_dict(json.loads((out / "metrics.json").read_text())["results"]))

    def rows(text: str) -> list[str]:
        return [ln for ln in text.splitlines() if "|" in ln or ln.startswith("clustering")]

    assert len(rows(trained)) == 5 and rows(printed) == rows(trained)


def test_embed_reproduces_the_runs_embeddings_exactly(run, tmp_path):
    out, _ = run
    history = json.loads((out / "history.json").read_text())
    last = history["epochs"][-1]["epoch"]
    assert history["best_epoch"] < last, "the run must stop after a worse epoch for this test"
    saved = np.load(out / "embeddings.npy")
    model, dataset, config = load_run(out)
    assert np.array_equal(run_embeddings(model, config), saved)
    # the last epoch's parameters (checkpoint["model"]) give other embeddings: the test can fail
    model.load_state_dict(read_checkpoint(out / "checkpoint.pt")["model"])
    assert not np.array_equal(run_embeddings(model, config), saved)
    code, printed, err = run_cli(["embed", str(out), "--out", str(tmp_path / "e.npy"),
                                  "--threads", "1"])
    assert code == 0, err
    assert np.array_equal(np.load(tmp_path / "e.npy"), saved)
    assert "equal to" in printed and "NOT" not in printed


def test_umap_on_the_run_folder(run, tmp_path):
    out, _ = run
    png = tmp_path / "u.png"
    code, _, err = run_cli(["umap", str(out), "--out", str(png), "--threads", "1"])
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_changed_graph_is_refused_and_a_moved_one_found(run, graph_file, tmp_path):
    out, _ = run
    moved = tmp_path / "moved.pt"
    moved.write_bytes(graph_file.read_bytes())
    changed = tmp_path / "changed.pt"
    changed.write_bytes(graph_file.read_bytes() + b"\0")
    code, _, err = run_cli(["embed", str(out), "--data", str(changed)])
    assert code == 2 and "sha256" in err and "the graph changed" in err
    code, _, err = run_cli(["evaluate", str(out), "--data", str(changed), "--runs", "2"])
    assert code == 2 and "sha256" in err
    code, printed, err = run_cli(["embed", str(out), "--data", str(moved), "--threads", "1"])
    assert code == 0 and "equal to" in printed, err


def test_yaml_config_names_the_graph_relative_to_its_folder(tmp_path, graph_file, synthetic):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "g.pt").write_bytes(graph_file.read_bytes())
    path = tmp_path / "mine.yaml"
    path.write_text("graph: data/g.pt\ntarget: paper\nmetapaths: [PAP, [paper, subject, paper]]"
                    "\nepochs: 1\nhidden_channels: 16\n")
    from hetcrf_lite.config import HetCRFConfig
    from hetcrf_lite.train import config_dataset

    config = HetCRFConfig.load(path)
    assert config.graph == str(tmp_path / "data" / "g.pt")
    assert torch.equal(config_dataset(config).labels, synthetic.labels)
    bad = tmp_path / "bad.yaml"
    bad.write_text("target: paper\n")
    code, _, err = run_cli(["train", "--config", str(bad), "--quiet"])
    assert code == 2 and "'target'" in err and "graph: PATH" in err


@pytest.mark.parametrize("command", ["train", "evaluate", "describe", "umap", "embed"])
def test_every_computing_command_takes_threads(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0 and "--threads" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main([command, "x", "--threads", "0"] if command in ("umap", "embed", "evaluate")
             else [command, "--threads", "0"])
    assert exit_.value.code == 2 and "must be >= 1" in capsys.readouterr().err


def test_threads_reach_torch(run):
    out, _ = run
    before = torch.get_num_threads()
    try:
        assert run_cli(["embed", str(out), "--threads", "2"])[0] == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_load_graph_is_a_data_error_subclass_for_except_valueerror(tmp_path):
    with pytest.raises(ValueError):
        load_graph(tmp_path)
    assert issubclass(DataError, ValueError)
