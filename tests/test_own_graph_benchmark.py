"""benchmarks/own_graph.py: the held-out movie graph, the verdict rule, and docs/own_graph.json
(the committed run) read against its own rows."""
import json
import sys
from pathlib import Path

import pytest

from graph_helpers import edge_homophily

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import own_graph  # noqa: E402


def rows(defaults: float, tuned: float, raw: float = 60.0, prop: float = 70.0) -> dict:
    rates = ("20", "40", "60")
    return {"raw features": dict.fromkeys(rates, raw),
            "propagated features": dict.fromkeys(rates, prop),
            "defaults": {"mean": dict.fromkeys(rates, defaults)},
            "tuned": {"mean": dict.fromkeys(rates, tuned)}}


def test_verdict_needs_one_point_over_the_better_baseline_at_every_rate():
    assert not own_graph.verdict(rows(70.5, 70.9))["met"]  # above, but by less than a point
    v = own_graph.verdict(rows(69.0, 71.0))
    assert v["met"] and not v["defaults"]["met"] and v["tuned"]["met"]
    assert v["defaults"]["margin"]["20"] == pytest.approx(-1.0)
    r = rows(75.0, 75.0)
    r["defaults"]["mean"]["60"] = r["tuned"]["mean"]["60"] = 70.5  # one rate short
    assert not own_graph.verdict(r)["met"]
    assert own_graph.verdict(rows(75.0, 60.0, raw=74.5, prop=10.0))["defaults"]["met"] is False


def test_the_graph_is_the_documented_one():
    ds = own_graph.make_graph()
    assert (ds.name, ds.target, ds.num_nodes, ds.num_classes) == ("movies", "movie", 3000, 3)
    assert sorted(ds.metapath_adj) == ["MAM", "MDM"]
    homophily = edge_homophily(ds)
    assert homophily["MDM"] > 0.7 > 0.5 > homophily["MAM"]  # directors say more than actors


def test_the_second_graph_is_the_documented_one():
    ds = own_graph.make_graph("shops")
    assert (ds.name, ds.target, ds.num_nodes, ds.num_classes) == ("shops", "product", 2400, 4)
    assert sorted(ds.metapath_adj) == ["PBP", "PSP"]
    homophily = edge_homophily(ds)
    assert homophily["PBP"] > 0.7 > homophily["PSP"]  # brands say more than shops


def test_the_third_graph_has_no_target_features():
    """``--graph papers``: the paper's regime, identity features on the target (as AMiner's)."""
    from hetcrf_lite.data import is_identity

    ds = own_graph.make_graph("papers")
    assert (ds.name, ds.target, ds.num_nodes, ds.num_classes) == ("papers", "paper", 3000, 4)
    assert sorted(ds.metapath_adj) == ["PAP", "PRP"]
    assert ds.x.is_sparse and is_identity(ds.x)
    homophily = edge_homophily(ds)
    assert homophily["PAP"] > homophily["PRP"] > 1 / ds.num_classes  # authors say more


@pytest.mark.parametrize("name", ["own_graph.json", "own_graph_shops.json",
                                  "own_graph_papers.json"])
def test_committed_run_verdict_agrees_with_its_rows(name):
    path = ROOT / "docs" / name
    result = json.loads(path.read_text())
    r = result["rows"]
    assert result["seeds"] == [0, 1, 2] and result["budget_min"] == 10.0
    for name in ("defaults", "tuned"):
        assert sorted(r[name]["per_seed"]) == ["0", "1", "2"]
        for rate in ("20", "40", "60"):
            seeds = [s[rate] for s in r[name]["per_seed"].values()]
            assert r[name]["mean"][rate] == pytest.approx(sum(seeds) / 3)
            best = max(r["raw features"][rate], r["propagated features"][rate])
            assert result["verdict"][name]["margin"][rate] == pytest.approx(
                r[name]["mean"][rate] - best)
    assert result["verdict"]["met"] == any(result["verdict"][n]["met"]
                                           for n in ("defaults", "tuned"))


@pytest.mark.parametrize("name, section", [
    ("own_graph.json", "### A graph nobody tuned on"),
    ("own_graph_shops.json", "### A second graph, fixed after the search changed"),
    ("own_graph_papers.json", "### A third graph, in the paper's regime")])
def test_method_page_quotes_the_committed_run(name, section):
    """docs/method.md's table of each held-out graph shows its JSON's numbers."""
    rows = json.loads((ROOT / "docs" / name).read_text())["rows"]
    page = (ROOT / "docs" / "method.md").read_text().split(section)[1].split("\n### ")[0]
    for label, name in (("LR on raw features", "raw features"),
                        ("raw + meta-path neighbour means", "propagated features"),
                        ("`HetCRFConfig()`", "defaults"), ("`hetcrf-lite tune` pick", "tuned")):
        cells = rows[name].get("mean", rows[name])
        line = next(ln for ln in page.splitlines() if ln.startswith("| ") and label in ln)
        assert line.endswith(" | ".join(f"{cells[r]:.2f}" for r in ("20", "40", "60")) + " |")


def test_embedding_scale_measures_against_independent_references():
    """benchmarks/embedding_scale.py: standardise matches the by-hand column z-score (a constant
    column stays 0); the common share is 1 for identical rows, 0 for centred ones, and grows with
    a shared offset."""
    import numpy as np

    import embedding_scale as es

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(200, 8)) * np.arange(1, 9) + 5.0
    assert np.allclose(es.standardise(emb), (emb - emb.mean(0)) / emb.std(0), atol=1e-8)
    assert np.allclose(es.standardise(np.full((20, 3), 7.0)), 0.0)
    assert es.common_share(np.tile(rng.normal(size=8), (50, 1))) == pytest.approx(1.0)
    centred = emb - emb.mean(0)
    assert es.common_share(centred) == pytest.approx(0.0, abs=1e-12)
    assert es.common_share(centred + 1.0) < es.common_share(centred + 10.0) < 1.0


def test_embedding_scale_json_is_a_run_of_the_script():
    """The committed diagnostics (quoted in docs/method.md) hold every table the script writes,
    with the movie graph's rows and the seeds it says."""
    path = ROOT / "benchmarks" / "logs" / "method_search" / "embedding_scale.json"
    result = json.loads(path.read_text())
    assert result["command"].startswith("python benchmarks/embedding_scale.py")
    import embedding_scale as es

    assert set(result["objective_curves"]) == set(es.VARIANTS)
    for rows_ in result["objective_curves"].values():
        assert set(rows_["per_seed"]) == {str(s) for s in result["seeds"]}
    page = (ROOT / "docs" / "method.md").read_text()
    for key in ("movies / contrastive", "heldout_b / concat"):
        mean = result["scale"][key]["mean"]
        assert f"{mean['raw']:.1f} -> {mean['standardised']:.1f}" in page, key


def test_method_page_quotes_the_wide_encoder_probe():
    """docs/method.md's "Wider encoders" numbers are means over seeds 0-2 of the committed
    session 10 probe JSONs (validation only), and the rule it applies holds: no width reaches
    the baseline + 1 at 60 labels."""
    import numpy as np

    logs = ROOT / "benchmarks" / "logs" / "method_search" / "session10"
    page = " ".join((ROOT / "docs" / "method.md").read_text().split())

    def mean_at(runs, epoch, mode):
        rows = [next(r for r in runs[s] if r["epoch"] == epoch) for s in ("0", "1", "2")]
        return [float(np.mean([r[mode][rate] for r in rows])) for rate in ("20", "40", "60")]

    def quoted(cells):
        return " / ".join(f"{c:.1f}" for c in cells)

    wide = json.loads((logs / "wide_probe_512.json").read_text())
    baseline = [wide["baselines"]["propagated features"][r] for r in ("20", "40", "60")]
    peak = mean_at(wide["lr3.2e-3 hidden512"], 5, "encoder")
    untrained = mean_at(json.loads((logs / "early_probe_movies_512.json").read_text()), 0,
                        "encoder")
    assert (f"H at {quoted(peak)} against the baseline's {quoted(baseline)} "
            f"(untrained: {quoted(untrained)})") in page
    best_60 = 0.0
    for name in ("wide_probe_512.json", "wide_probe_1024.json", "variant_w512_lr1.6e-3_movies.json",
                 "variant_w512_lr8e-4_movies.json"):
        result = json.loads((logs / name).read_text())
        runs = result.get("runs") or next(v for k, v in result.items() if k != "baselines")
        for epoch in {r["epoch"] for r in runs["0"]}:
            for mode in runs["0"][0]:
                if mode != "epoch":
                    best_60 = max(best_60, mean_at(runs, epoch, mode)[2])
    assert best_60 == pytest.approx(peak[2]) and best_60 < baseline[2] + 1
