"""Session 11: how peaked is HAN's node-level attention? Effective neighbours (exp of the entropy
of each node's attention) against the degree, untrained and after training (seed 0): the
generative channel's 80 epochs on a synthetic graph, or a benchmark's shipped config for 40
epochs; with the validation scores of H and of each Z^m.

    python benchmarks/logs/method_search/session11/attention.py dev_b|default|dev_a|acm
"""
import torch
from torch_geometric.utils import scatter

from hetcrf_lite.config import default_config
from hetcrf_lite.synthetic import make_synthetic_hin
from hetcrf_lite.train import fit
from hetcrf_lite.tune import validation_only, validation_scores

torch.set_num_threads(2)
import sys
GRAPHS = {"dev_b": dict(num_nodes=2400, num_classes=4, homophily=(0.75, 0.85),
                        feature_mode="dense", seed=101),
          "default": {},  # the course graph, not held out
          "dev_a": dict(num_nodes=2400, num_classes=4, neighbour_types=("author", "venue", "term"),
                        homophily=(0.75, 0.55, 0.45), feature_mode="none", seed=102)}
graph = sys.argv[1] if len(sys.argv) > 1 else "dev_b"
print("graph", graph)
if graph in GRAPHS:  # the generative channel of the shipped synthetic config
    ds = validation_only(make_synthetic_hin(**GRAPHS[graph]))
    runs = [("untrained", {"epochs": 1, "lr": 1e-12}), ("generative 80 epochs", {})]
    base = dict(name="synthetic", use_contrastive=False)
else:  # a benchmark (HETCRF_DATA): its shipped config, full model, 40 epochs
    from hetcrf_lite.data import load_dataset
    ds = validation_only(load_dataset(graph))
    runs = [("untrained", {"epochs": 1, "lr": 1e-12}), ("shipped, 40 epochs", {"epochs": 40})]
    base = dict(name=graph)
for name, changes in runs:
    model, _ = fit(ds, default_config(base["name"], seed=0, grad_balance_every=0,
                                      **{k: v for k, v in base.items() if k != "name"},
                                      **changes), progress=False)
    model.eval()
    with torch.no_grad():
        out = model.encoder(model.x, model.edge_index_dict, return_attention_weights=True)
    att = out.node_attention
    for m, a in att.items():
        ei = ds.metapath_adj[m]
        a = a[:, 0]
        ent = scatter(-(a * a.clamp_min(1e-12).log()), ei[1], dim=0, dim_size=ds.num_nodes)
        deg = scatter(torch.ones_like(a), ei[1], dim=0, dim_size=ds.num_nodes)
        amax = scatter(a, ei[1], dim=0, dim_size=ds.num_nodes, reduce="max")
        self_share = a[ei[0] == ei[1]].mean()
        print(f"{name:22s} {m}: degree {deg.mean():.1f}, effective neighbours "
              f"{ent.exp().mean():.1f}, max weight {amax.mean():.3f}, on the self-loop "
              f"{self_share:.3f}")
    print(f"{name:22s} H val:", {k: round(v, 1) for k, v in validation_scores(
        model.embed("encoder"), ds, eval_runs=10).items()})
    print(f"{name:22s} Z val:", {m: round(sum(validation_scores(z, ds, eval_runs=10).values()) / 3, 1)
                                  for m, z in out.z.items()})
