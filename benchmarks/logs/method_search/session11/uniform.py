"""Session 11 probe 2: HAN with its node-level attention held uniform (the neighbour mean).

Both aggregation backends receive zero attention logits, so every logit is 0 and the softmax is
1 / degree: HAN's layer becomes W^m times the in-neighbour mean; semantic attention unchanged.
Validation only; see README.md beside this file.
"""
import json
import sys
from pathlib import Path
from concurrent.futures import ProcessPoolExecutor

GRAPHS = {"dev_b": dict(num_nodes=2400, num_classes=4, homophily=(0.75, 0.85),
                        feature_mode="dense", seed=101),
          "default": {},
          "dev_a": dict(num_nodes=2400, num_classes=4, neighbour_types=("author", "venue", "term"),
                        homophily=(0.75, 0.55, 0.45), feature_mode="none", seed=102)}
VARIANTS = {"full": {}, "generative": {"use_contrastive": False},
            "contrastive": {"use_feat_recon": False, "use_edge_recon": False}}


def one(args):
    graph, variant, uniform, seed = args
    import torch
    torch.set_num_threads(1)
    from hetcrf_lite import encoder
    from hetcrf_lite.config import default_config
    from hetcrf_lite.synthetic import make_synthetic_hin
    from hetcrf_lite.train import fit
    from hetcrf_lite.tune import validation_only, validation_scores
    if uniform:  # both aggregation backends get zero logits: softmax = 1 / in-degree
        for name in ("gat_aggregate", "fused_gat_aggregate"):
            def wrap(orig):
                def agg(wx, s_src, s_dst, *a, **k):
                    return orig(wx, torch.zeros_like(s_src), torch.zeros_like(s_dst), *a, **k)
                return agg
            setattr(encoder, name, wrap(getattr(encoder, name)))
    ds = validation_only(make_synthetic_hin(**GRAPHS[graph]))
    cfg = default_config("synthetic", **VARIANTS[variant], seed=seed, grad_balance_every=0)
    model, _ = fit(ds, cfg, progress=False)
    scores = validation_scores(model.embed(), ds, eval_runs=10)
    beta = model.encode().semantic_attention
    return dict(graph=graph, variant=variant, uniform=uniform, seed=seed, val=scores,
                mean=sum(scores.values()) / len(scores), beta=[round(b, 3) for b in beta.tolist()])


if __name__ == "__main__":
    graphs = sys.argv[1:] or list(GRAPHS)
    jobs = [(g, v, u, s) for g in graphs for v in VARIANTS for u in (False, True) for s in (0, 1, 2)]
    log = Path(__file__).with_suffix(".log")  # resume: skip the runs already logged
    done = {(r["graph"], r["variant"], r["uniform"], r["seed"])
            for r in map(json.loads, log.read_text().splitlines())} if log.is_file() else set()
    jobs = [j for j in jobs if j not in done]
    with ProcessPoolExecutor(2, max_tasks_per_child=1) as pool:  # the patch stays in its process
        for row in pool.map(one, jobs):
            print(json.dumps(row), flush=True)
