"""Session 11 probe: which part of HAN costs the generative channel on a graph-B-like dev graph.

    python benchmarks/logs/method_search/session11/probe.py > .../probe.log
Validation only (test nodes replaced by validation nodes), see README.md beside this file.
"""
import json
import sys
from concurrent.futures import ProcessPoolExecutor

DEV = {"dev_b": dict(num_nodes=2400, num_classes=4, homophily=(0.75, 0.85),
                     feature_mode="dense", seed=101)}
GEN = {"use_contrastive": False}
VARIANTS = {
    "han (shipped)": {},
    "han untrained": {"epochs": 1, "lr": 1e-12},
    "han no dropout": {"attn_drop": 0.0, "feat_drop": 0.0},
    "han mean fusion": {"semantic_fusion": "mean"},
    "han edge recon only": {"use_feat_recon": False},
    "han feature recon only": {"use_edge_recon": False},
    "gcn": {"encoder": "gcn"},
}


def one(args):
    graph, name, seed = args
    import torch
    torch.set_num_threads(1)
    from hetcrf_lite.config import default_config
    from hetcrf_lite.synthetic import make_synthetic_hin
    from hetcrf_lite.train import fit
    from hetcrf_lite.tune import validation_only, validation_scores
    ds = validation_only(make_synthetic_hin(**DEV[graph]))
    changes = {**GEN, **VARIANTS[name], "seed": seed, "grad_balance_every": 0}
    model, _ = fit(ds, default_config("synthetic", **changes), progress=False)
    scores = validation_scores(model.embed("encoder"), ds, eval_runs=10)
    beta = model.encode().semantic_attention
    return graph, name, seed, scores, None if beta is None else [round(b, 3) for b in beta.tolist()]


if __name__ == "__main__":
    jobs = [(g, n, s) for g in DEV for n in VARIANTS for s in (0, 1, 2)]
    with ProcessPoolExecutor(2) as pool:
        for graph, name, seed, scores, beta in pool.map(one, jobs):
            print(json.dumps({"graph": graph, "variant": name, "seed": seed, "val": scores,
                              "beta": beta}), flush=True)
