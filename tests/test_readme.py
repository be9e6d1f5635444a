"""Numbers the README quotes from deterministic runs match what the code prints now.

The demo table is read from the README (the fenced block after the ``make-demo-output``
marker), and the command from the Makefile's ``demo`` target, so a change of the method's
defaults needs only the README updated. At one thread, with the pinned versions, the run
repeats bit for bit (docs/reliability.md, section 4), so the lines must match exactly.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- make-demo-output"


def readme_demo_block() -> list[str]:
    text = (ROOT / "README.md").read_text()
    assert MARKER in text, "README.md lost the make-demo-output marker before the demo table"
    after = text.split(MARKER, 1)[1]
    match = re.search(r"```\n(.*?)```", after, re.S)
    assert match, "no fenced block after the make-demo-output marker"
    return match.group(1).rstrip("\n").splitlines()


def test_readme_block_is_a_demo_table():
    block = readme_demo_block()
    assert block[0].split() == ["rate", "|", "Macro-F1", "|", "Micro-F1", "|", "AUC"]
    assert [ln.split("|")[0].strip() for ln in block[2:5]] == ["20", "40", "60"]
    assert block[-1].startswith("clustering")


def test_make_demo_prints_the_readme_table(demo_run):
    argv, done, _ = demo_run
    assert "--threads" in argv and argv[argv.index("--threads") + 1] == "1"
    printed = done.stdout.splitlines()
    block = readme_demo_block()
    start = next((i for i, ln in enumerate(printed) if ln == block[0]), None)
    assert start is not None, f"no table header in the demo output:\n{done.stdout}"
    got = printed[start:start + len(block)]
    assert got == block, ("README.md's demo table differs from what `make demo` prints now; "
                          "if the change is intended, paste this into README.md:\n"
                          + "\n".join(got))


def test_raw_feature_baseline_matches_the_readme():
    import torch

    from hetcrf_lite.eval import evaluate_embeddings
    from hetcrf_lite.synthetic import make_synthetic_hin

    text = (ROOT / "README.md").read_text()
    match = re.search(r"raw features of the same graph scores (\d+\.\d) Macro-F1 at 20 labels",
                      " ".join(text.split()))
    assert match, "README.md no longer quotes the raw-feature baseline"
    ds = make_synthetic_hin()
    x = ds.x.to_dense() if ds.x.is_sparse else ds.x
    res = evaluate_embeddings(x.to(torch.float32), ds, runs=10, clustering=False)  # notebook 07
    assert f"{res.classification[20].summary()['macro_f1'][0]:.1f}" == match.group(1)


def test_held_out_graph_numbers_match_their_runs():
    """The README's paragraph on graphs nobody tuned on quotes docs/own_graph.json (movies) and
    docs/own_graph_shops.json and docs/own_graph_papers.json: defaults, tuned and the
    neighbour-mean baseline, per rate."""
    readme = (ROOT / "README.md").read_text()
    text = " ".join(readme.split("**On graphs nobody tuned on**")[1].split("**The paper's")[0]
                    .split())

    def cells(row: dict) -> str:
        row = row.get("mean", row)
        return " / ".join(f"{row[r]:.2f}" for r in ("20", "40", "60"))

    movies = json.loads((ROOT / "docs" / "own_graph.json").read_text())["rows"]
    shops = json.loads((ROOT / "docs" / "own_graph_shops.json").read_text())["rows"]
    papers = json.loads((ROOT / "docs" / "own_graph_papers.json").read_text())["rows"]
    for row in (movies["defaults"], movies["tuned"], movies["propagated features"],
                shops["tuned"], shops["propagated features"], papers["defaults"],
                papers["tuned"], papers["propagated features"]):
        assert cells(row) in text
