"""Ablations of HetCRF: each a table (mean ± std over seeds) and a figure under figures/.

    HETCRF_DATA=/path/to/heco python benchmarks/ablations.py                  # all, acm + aminer
    python benchmarks/ablations.py --only depth --datasets synthetic --seeds 0 1 2 --epochs 40

Every variant is a configuration of the shipped config (no code forks). Reported: Macro-F1 at
20 labels per class (``--eval-runs`` logistic-regression runs), NMI, and for the depth ablation
the mean pairwise cosine similarity of the embeddings (over-smoothing). The gradient-balance
ablation reports the method page's quantities averaged over the logged epochs.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

ABLATIONS: dict[str, dict[str, dict]] = {
    "augmentation": {
        "none": dict(metapath_positives=False, cluster_aug=False),
        "meta-path only": dict(cluster_aug=False),
        "meta-path + clustering": dict(),
    },
    "views": {"raw features (masked)": dict(views="raw"), "encoder embeddings": dict()},
    "channels": {
        "generative only": dict(use_contrastive=False),
        "contrastive only": dict(use_feat_recon=False, use_edge_recon=False),
        "both": dict(),
    },
    "depth": {f"depth {d}": dict(second_stage_depth=d) for d in (0, 1, 2, 3)},
    "loss_weights": {f"w_feat={a} w_edge={b}": dict(w_feat=a, w_edge=b)
                     for a in (0.1, 1.0) for b in (0.1, 1.0)},
    "num_clusters": {},  # filled per dataset: true class count, +-1, +-2
    "encoder": {"HAN (attention)": dict(), "GCN per meta-path (no attention)": dict(encoder="gcn")},
    "negatives": {"all": dict(), "debiased": dict(negatives="debiased"),
                  "drop same cluster": dict(negatives="drop_same_cluster")},
    "gradient_balance": {"no augmentation": dict(metapath_positives=False, cluster_aug=False,
                                                 grad_balance_every=1),
                         "augmented": dict(grad_balance_every=1)},
}
BALANCE_KEYS = ("pos_mass_mean", "grad_per_pos_mean", "neg_grad_mean_mean", "neg_grad_max_mean",
                "top1pct_neg_share_mean", "anchor_grad_pos_norm_mean", "anchor_grad_neg_norm_mean")


def variants(name: str, num_classes: int) -> dict[str, dict]:
    if name == "num_clusters":
        return {f"S={num_classes + d}": dict(num_clusters=num_classes + d)
                for d in (-2, -1, 0, 1, 2) if num_classes + d >= 2}
    return ABLATIONS[name]


def load(name: str):
    if name == "synthetic":
        from hetcrf_lite.synthetic import make_synthetic_hin
        return make_synthetic_hin()
    from hetcrf_lite.data import load_dataset
    return load_dataset(name)


def mean_pairwise_cosine(emb: np.ndarray, sample: int = 2000, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(emb), size=min(sample, len(emb)), replace=False)
    z = emb[idx] / np.maximum(np.linalg.norm(emb[idx], axis=1, keepdims=True), 1e-12)
    sim = z @ z.T
    n = len(z)
    return float((sim.sum() - n) / (n * (n - 1)))


def run_variant(dataset, changes: dict, seed: int, epochs: int | None, eval_runs: int) -> dict:
    from hetcrf_lite.config import default_config
    from hetcrf_lite.eval import evaluate_embeddings
    from hetcrf_lite.train import fit

    base = {"seed": seed, "grad_balance_every": 0}
    if epochs is not None:
        base["epochs"] = epochs
    config = default_config(dataset.name, **{**base, **changes})
    model, history = fit(dataset, config, progress=False)
    emb = model.embed().cpu().numpy()
    res = evaluate_embeddings(emb, dataset, runs=eval_runs, rates=(20,), clustering_runs=3)
    row = {"macro_f1": res.classification[20].summary()["macro_f1"][0],
           "nmi": res.clustering.summary()["nmi"][0], "epochs": len(history["epochs"]),
           "mean_cosine": mean_pairwise_cosine(emb, seed=seed)}
    logged = [r["gradient_balance"] for r in history["epochs"] if r.get("gradient_balance")]
    if logged:
        row["balance"] = {k: float(np.mean([r[k] for r in logged])) for k in BALANCE_KEYS}
    return row


def figure(name: str, table: dict[str, dict[str, list[dict]]], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(table)
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 3.2), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        labels = list(table[ds])
        means = [np.mean([r["macro_f1"] for r in table[ds][v]]) for v in labels]
        stds = [np.std([r["macro_f1"] for r in table[ds][v]]) for v in labels]
        ax.bar(range(len(labels)), means, yerr=stds, color="tab:blue", capsize=3)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
        ax.set_ylim(max(0, min(means) - 15), min(100, max(means) + 5))
        ax.set_title(f"{ds}: {name}", fontsize=9)
        ax.set_ylabel("Macro-F1 @20 (%)")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(ABLATIONS), default=list(ABLATIONS))
    parser.add_argument("--datasets", nargs="+", default=["acm", "aminer"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="reduce for a quicker run")
    parser.add_argument("--eval-runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "out" / "ablations.json"))
    parser.add_argument("--figures", default=str(ROOT / "figures"))
    args = parser.parse_args()
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    from tqdm.auto import tqdm

    data = {ds: load(ds) for ds in args.datasets}
    results: dict = {"args": vars(args), "ablations": {}}
    for name in args.only:
        table: dict = {}
        jobs = [(ds, v, ch, s) for ds in args.datasets
                for v, ch in variants(name, data[ds].num_classes).items() for s in args.seeds]
        for ds, v, ch, s in tqdm(jobs, desc=name, file=sys.stdout):
            t0 = time.perf_counter()
            row = run_variant(data[ds], ch, s, args.epochs, args.eval_runs)
            row["seconds"] = time.perf_counter() - t0
            table.setdefault(ds, {}).setdefault(v, []).append(row)
        results["ablations"][name] = table
        print(f"\n== {name} (Macro-F1 @20, NMI; mean ± std over seeds {args.seeds}) ==")
        for ds, rows in table.items():
            for v, rs in rows.items():
                f1 = [r["macro_f1"] for r in rs]
                extra = ""
                if name == "depth":
                    extra = f"  mean cosine {np.mean([r['mean_cosine'] for r in rs]):.3f}"
                if name == "gradient_balance":
                    bal = {k: np.mean([r["balance"][k] for r in rs]) for k in BALANCE_KEYS}
                    extra = "  " + "  ".join(f"{k[:-5]}={val:.3g}" for k, val in bal.items())
                print(f"{ds:9s} {v:34s} {np.mean(f1):6.2f} ± {np.std(f1):5.2f}   NMI "
                      f"{np.mean([r['nmi'] for r in rs]):6.2f}{extra}")
        figure(name, table, Path(args.figures) / f"ablation_{name}.png")
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
