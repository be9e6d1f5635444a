"""Do the two channels help each other? Full model vs each channel alone on synthetic graphs.

    python benchmarks/channels.py                      # 3 graphs x 5 seeds x 3 variants
    python benchmarks/channels.py --seeds 0 --graphs default --set cl_encoder_grad=true

For each graph (the course's default and two held-out settings, issue 12) and seed, trains the
shipped synthetic config three times: both channels ("full"), the generative channel alone and
the contrastive channel alone, and scores each run's default embedding with the field's
protocol (Macro-F1 at 20/40/60 labels per class, 50 probe runs, test split). Also logged: the
encoder's semantic attention beta at the end and the kNN class agreement (k = 10, cosine) of the
default embedding. ``--set`` applies config changes to every run (to compare designs).

Prints a table and the issue's criteria (full >= better single channel + 2 at every rate, seed
std <= 2, on the default graph beta favours PAP and kNN agreement >= 0.8), writes JSON (default
``docs/channels.json``). Each finished run is cached under ``benchmarks/out/channels_cache/`` by
a hash of its config, graph and seed, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RATES = (20, 40, 60)
MARGIN, MAX_STD, MIN_KNN = 2.0, 2.0, 0.8

# The held-out settings: nobody tunes on them.
GRAPHS = {
    "default": {},
    "heldout_a": dict(num_nodes=3000, num_classes=5, neighbour_types=("author", "venue", "term"),
                      homophily=(0.8, 0.6, 0.4), feature_mode="none", seed=11),
    "heldout_b": dict(num_nodes=2000, num_classes=4, homophily=(0.7, 0.9),
                      feature_mode="dense", seed=12),
}
VARIANTS = {
    "full": {},
    "generative": {"use_contrastive": False},
    "contrastive": {"use_feat_recon": False, "use_edge_recon": False},
}


def make_graph(name: str):
    from hetcrf_lite.synthetic import make_synthetic_hin

    return make_synthetic_hin(**GRAPHS[name])


def run_config(variant: str, seed: int, changes: dict):
    """The shipped synthetic config with ``changes``, the variant's switches and ``seed``."""
    from hetcrf_lite.config import default_config

    return default_config("synthetic", **{**changes, **VARIANTS[variant], "seed": seed,
                                          "grad_balance_every": 0})


def run_key(graph: str, config) -> str:
    """Cache key: the graph's settings and the fully resolved config (so a changed default
    invalidates the cache)."""
    blob = json.dumps([graph, GRAPHS[graph], config.identity()], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def one_run(graph: str, variant: str, seed: int, changes: dict, cache: str) -> dict:
    """Train and score one (graph, variant, seed); cached by :func:`run_key`."""
    config = run_config(variant, seed, changes)
    path = Path(cache) / f"{run_key(graph, config)}.json"
    if path.is_file():
        return json.loads(path.read_text())
    import torch

    torch.set_num_threads(1)
    from hetcrf_lite.diagnostics import knn_class_agreement
    from hetcrf_lite.eval import evaluate_classification
    from hetcrf_lite.train import fit

    dataset = make_graph(graph)
    start = time.perf_counter()
    model, _ = fit(dataset, config, progress=False)
    emb = model.embed()
    res = evaluate_classification(emb, dataset.labels, dataset.splits, dataset.num_classes,
                                  0.01, rates=RATES, runs=50)
    beta = model.encode().semantic_attention
    row = {"graph": graph, "variant": variant, "seed": seed, "changes": changes,
           "macro_f1": {str(r): res[r].summary()["macro_f1"][0] for r in RATES},
           "beta": None if beta is None else dict(zip(model.metapath_names, beta.tolist())),
           "knn": knn_class_agreement(emb, dataset.labels),
           "seconds": time.perf_counter() - start, "config": config.to_dict()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(row))
    tmp.replace(path)
    return row


def summarise(rows: list[dict]) -> dict:
    """Mean and std (over seeds) per graph and variant, and the issue's criteria per graph."""
    table: dict = {}
    for row in rows:
        cell = table.setdefault(row["graph"], {}).setdefault(row["variant"], {"runs": []})
        cell["runs"].append(row)
    criteria = {}
    for graph, variants in table.items():
        for cell in variants.values():
            f1 = np.array([[r["macro_f1"][str(q)] for q in RATES] for r in cell["runs"]])
            cell["mean"] = dict(zip(map(str, RATES), f1.mean(0).round(2).tolist()))
            cell["std"] = dict(zip(map(str, RATES), f1.std(0).round(2).tolist()))
            cell["knn"] = float(np.mean([r["knn"] for r in cell["runs"]]))
            betas = [r["beta"] for r in cell["runs"] if r["beta"]]
            cell["beta"] = ({k: float(np.mean([b[k] for b in betas])) for k in betas[0]}
                            if betas else None)
        if {"full", "generative", "contrastive"} <= set(variants):
            criteria[graph] = check(graph, variants)
    return {"table": table, "criteria": criteria}


def check(graph: str, variants: dict) -> dict:
    full = variants["full"]
    margins = {q: full["mean"][q] - max(variants["generative"]["mean"][q],
                                        variants["contrastive"]["mean"][q])
               for q in map(str, RATES)}
    out = {"margin": margins, "margin_ok": all(m >= MARGIN for m in margins.values()),
           "std_ok": all(s <= MAX_STD for s in full["std"].values())}
    if graph == "default":
        beta = full["beta"] or {}
        out["beta_pap_ok"] = bool(beta) and beta.get("PAP", 0) > beta.get("PSP", 1)
        out["knn_ok"] = full["knn"] >= MIN_KNN
    return out


def print_report(summary: dict) -> None:
    print(f"{'graph':10s} {'variant':12s} " + " ".join(f"{'MF1@' + str(q):>14s}" for q in RATES)
          + f" {'kNN':>6s}  beta")
    for graph, variants in summary["table"].items():
        for variant, cell in variants.items():
            f1 = " ".join(f"{cell['mean'][str(q)]:7.2f} ± {cell['std'][str(q)]:4.2f}"
                          for q in RATES)
            beta = ("-" if not cell["beta"] else
                    " ".join(f"{k} {v:.2f}" for k, v in cell["beta"].items()))
            print(f"{graph:10s} {variant:12s} {f1} {cell['knn']:6.3f}  {beta}")
    for graph, crit in summary["criteria"].items():
        margins = " / ".join(f"{m:+.2f}" for m in crit["margin"].values())
        flags = ", ".join(f"{k}={v}" for k, v in crit.items() if k.endswith("_ok"))
        print(f"{graph}: full - better single channel = {margins}; {flags}")


def main(argv: list[str] | None = None) -> int:
    import yaml

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graphs", nargs="+", default=list(GRAPHS), choices=list(GRAPHS))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--cache", default=str(ROOT / "benchmarks" / "out" / "channels_cache"))
    ap.add_argument("--json", default=str(ROOT / "docs" / "channels.json"))
    args = ap.parse_args(argv)
    changes = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    jobs = [(g, v, s, changes, args.cache) for g in args.graphs for s in args.seeds
            for v in args.variants]
    jobs.sort(key=lambda j: j[0] != "heldout_a")  # the slowest graph first
    from tqdm.auto import tqdm

    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(tqdm(pool.map(one_run, *zip(*jobs)), total=len(jobs), desc="channels"))
    summary = summarise(rows)
    print_report(summary)
    from hetcrf_lite.files import atomic_write_bytes

    meta = {"command": "python benchmarks/channels.py " + " ".join(sys.argv[1:] if argv is None
                                                                   else argv),
            "changes": changes, "seeds": args.seeds, "graphs": {g: GRAPHS[g] for g in args.graphs},
            "wall_seconds": time.perf_counter() - start}
    text = json.dumps({"meta": meta, **summary}, indent=1, default=str)
    atomic_write_bytes(Path(args.json), lambda fh: fh.write(text.encode()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
