"""Session 9: is 64 columns what limits the movie graph's embeddings at 60 labels? Validation
Macro-F1 per rate (mean of 5 probe runs) of the neighbour-mean baseline and of its first k
principal components (PCA, no labels), k = 16, 32, 64, 128, 256.
Run from benchmarks/: python logs/method_search/session9/width_probe.py"""
import json, sys
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from own_graph import make_graph
from sklearn.decomposition import PCA
from hetcrf_lite.diagnostics import propagated_features
from hetcrf_lite.tune import validation_only, validation_scores

torch.set_num_threads(1)
out = {}
for graph in ("movies",):
    ds = make_graph(graph)
    val = validation_only(ds)
    prop = propagated_features(ds)
    rows = {"all %d columns" % prop.shape[1]: validation_scores(torch.as_tensor(prop), val, 5)}
    for k in (16, 32, 64, 128, 256):
        z = PCA(n_components=k, random_state=0).fit_transform(prop)
        rows[f"PCA {k}"] = validation_scores(torch.as_tensor(z, dtype=torch.float32), val, 5)
    for name, r in rows.items():
        print(graph, f"{name:18s}", " / ".join(f"{r[k]:.1f}" for k in sorted(r)), flush=True)
    out[graph] = rows
Path(__file__).with_suffix(".json").write_text(json.dumps(out, indent=1))
