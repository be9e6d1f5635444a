"""Where does training lose the classes? Diagnostics on the held-out movie graph (issue 12).

    python benchmarks/embedding_scale.py            # about 10 min on one core
    python benchmarks/embedding_scale.py --quick    # one seed, fewer graphs: a smoke run

Validation Macro-F1 only (each rate's validation nodes stand in for the test nodes,
:func:`~hetcrf_lite.tune.validation_only`), mean over the three label rates; no test label is
read. Two tables:

1. **Which objective moves H and the contrastive view** on :func:`own_graph.make_graph` (the
   config ``hetcrf-lite tune`` picked there: ``HetCRFConfig(lr=0.0032)``): the encoder output H
   and the contrastive embedding at epochs 0 (untrained), 10, 25 and 50, for the full model and
   with feature reconstruction, edge reconstruction or the contrastive channel switched off.
2. **Per-dimension scale**: the same trained embeddings scored as they are (the field's
   protocol, a logistic-regression probe on the raw embedding) and standardised (each column
   centred and divided by its standard deviation over the graph's nodes: no label is used), on
   the movie graph (``HetCRFConfig()``, 200 epochs), the three synthetic graphs of
   ``benchmarks/channels.py`` (the shipped synthetic config) and, when ``make reproduce`` left
   them in ``runs/reproduce/``, the saved AMiner and Freebase embeddings. Also the share of an
   embedding's squared norm that is common to all nodes (``|mean|^2 / mean |e|^2``): 1 means every
   node has the same vector.

Writes ``benchmarks/logs/method_search/embedding_scale.json`` (config, seeds, versions).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
CURVE_AT = (0, 10, 25, 50)
VARIANTS = {"full model": {}, "no feature reconstruction": {"use_feat_recon": False},
            "no edge reconstruction": {"use_edge_recon": False},
            "no contrastive channel": {"use_contrastive": False}}


def standardise(emb: np.ndarray) -> np.ndarray:
    """Each column centred and scaled to unit standard deviation over the nodes, as
    ``embed_norm: standardise`` does (:func:`hetcrf_lite.model.standardise_columns`, in float64;
    a constant column stays 0)."""
    from hetcrf_lite.model import standardise_columns

    return standardise_columns(torch.as_tensor(np.asarray(emb), dtype=torch.float64)).numpy()


def common_share(emb: np.ndarray) -> float:
    """``|mean e|^2 / mean |e|^2``: the part of the squared norm shared by every node."""
    return float(np.sum(emb.mean(0) ** 2) / np.mean(np.sum(emb ** 2, axis=1)))


def val_score(emb, val_dataset, eval_runs: int, lr: float | None = None) -> float:
    from hetcrf_lite.tune import validation_scores

    scores = validation_scores(torch.as_tensor(np.asarray(emb), dtype=torch.float32),
                               val_dataset, eval_runs, lr)
    return float(np.mean(list(scores.values())))


def objective_curves(seeds: list[int], eval_runs: int) -> dict:
    """Table 1: H and the contrastive view along training, per switched-off objective."""
    from hetcrf_lite.config import HetCRFConfig
    from hetcrf_lite.train import build_trainer
    from hetcrf_lite.tune import validation_only
    from own_graph import make_graph

    ds = make_graph()
    val = validation_only(ds)
    out = {}
    for name, changes in VARIANTS.items():
        per_seed = {}
        for seed in seeds:
            cfg = HetCRFConfig(lr=0.0032, epochs=max(CURVE_AT), patience=1000, seed=seed,
                               **changes)
            trainer = build_trainer(ds, cfg, progress=False)
            rows = []

            def probe(model, epoch: int) -> None:
                h, c = model.embed("encoder").cpu(), model.embed("contrastive").cpu()  # no_grad
                rows.append({"epoch": epoch, "H": val_score(h, val, eval_runs),
                             "contrastive": val_score(c, val, eval_runs)})

            probe(trainer.model, 0)
            trainer.on_epoch_end = (lambda m, ep, rec: probe(m, ep + 1)
                                    if ep + 1 in CURVE_AT else None)
            trainer.fit()
            per_seed[str(seed)] = rows
        out[name] = {"changes": changes, "per_seed": per_seed}
        print(f"{name:28s}", " ".join(
            f"e{r['epoch']}: H {np.mean([s[i]['H'] for s in per_seed.values()]):.1f} "
            f"C {np.mean([s[i]['contrastive'] for s in per_seed.values()]):.1f}"
            for i, r in enumerate(next(iter(per_seed.values())))), flush=True)
    return out


def scale_rows(graphs: list[str], seeds: list[int], eval_runs: int) -> dict:
    """Table 2: raw vs standardised embeddings of trained models and saved runs."""
    from channels import GRAPHS
    from hetcrf_lite.config import HetCRFConfig, default_config
    from hetcrf_lite.data import load_dataset
    from hetcrf_lite.synthetic import make_synthetic_hin
    from hetcrf_lite.train import fit
    from hetcrf_lite.tune import validation_only
    from own_graph import make_graph

    out = {}

    def row(name: str, seed: int, embs: dict[str, np.ndarray], val, lr) -> None:
        for mode, e in embs.items():
            out.setdefault(f"{name} / {mode}", {})[str(seed)] = {
                "raw": val_score(e, val, eval_runs, lr),
                "standardised": val_score(standardise(e), val, eval_runs, lr),
                "common_share": common_share(e)}

    for name in graphs:
        ds = make_graph() if name == "movies" else make_synthetic_hin(**GRAPHS[name])
        cfg = HetCRFConfig() if name == "movies" else default_config("synthetic")
        val = validation_only(ds)
        for seed in seeds:
            model, _ = fit(ds, cfg.replace(seed=seed), progress=False)
            row(name, seed, {m: model.embed(m).cpu().numpy()
                             for m in ("encoder", "contrastive", "concat")}, val, None)
    for name in ("freebase", "aminer"):
        saved = [ROOT / "runs" / "reproduce" / f"{name}-seed{s}" / "embeddings.npy" for s in seeds]
        if not all(p.is_file() for p in saved):
            continue
        ds = load_dataset(name)
        cfg = default_config(name)
        val = validation_only(ds)
        for seed, path in zip(seeds, saved):
            row(f"{name} (make reproduce)", seed, {cfg.embed: np.load(path)}, val, cfg.eval_lr)
    for key, per_seed in out.items():
        mean = {k: float(np.mean([s[k] for s in per_seed.values()]))
                for k in ("raw", "standardised", "common_share")}
        per_seed["mean"] = mean
        print(f"{key:42s} raw {mean['raw']:6.2f}  standardised {mean['standardised']:6.2f}  "
              f"common share {mean['common_share']:.3f}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    from hetcrf_lite.utils import environment_info

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--eval-runs", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="seed 0, the movie graph only")
    p.add_argument("--json", type=Path,
                   default=ROOT / "benchmarks" / "logs" / "method_search" / "embedding_scale.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = [0] if args.quick else args.seeds
    graphs = ["movies"] if args.quick else ["movies", "default", "heldout_a", "heldout_b"]
    t0 = time.perf_counter()
    result = {"command": "python benchmarks/embedding_scale.py " + " ".join(argv or sys.argv[1:]),
              "seeds": seeds, "eval_runs": args.eval_runs,
              "objective_curves": objective_curves(seeds, args.eval_runs),
              "scale": scale_rows(graphs, seeds, args.eval_runs),
              "seconds": time.perf_counter() - t0, "env": environment_info()}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
