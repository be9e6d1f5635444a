"""Session 11: node-level attention on the two own graphs (benchmarks/own_graph.py), untrained and
after 30 epochs of HetCRFConfig(): effective neighbours against the degree.

    python benchmarks/logs/method_search/session11/attention_own.py   # from the repository root
"""
import sys, torch
sys.path.insert(0, "benchmarks")
import own_graph
from hetcrf_lite.config import HetCRFConfig
from hetcrf_lite.train import fit
from hetcrf_lite.diagnostics import effective_neighbours
torch.set_num_threads(2)
for g in ("movies", "shops"):
    ds = own_graph.make_graph(g)
    for name, ep in (("untrained", 1), ("HetCRFConfig(), 30 epochs", 30)):
        cfg = HetCRFConfig(dataset=g, epochs=ep, lr=1e-12 if ep == 1 else 8e-4, grad_balance_every=0)
        m, _ = fit(ds, cfg, progress=False)
        m.eval()
        with torch.no_grad():
            out = m.encoder(m.x, m.edge_index_dict, return_attention_weights=True)
        eff = {k: round(float(effective_neighbours(a, ds.metapath_adj[k], ds.num_nodes).mean()), 1) for k, a in out.node_attention.items()}
        deg = {k: round(float(torch.bincount(e[1]).float().mean()), 1) for k, e in ds.metapath_adj.items()}
        print(g, name, "effective", eff, "degree", deg, flush=True)
