"""Diagnostic harness: python diag.py DATASETKEY name key=val ... (config overrides)"""
import sys, time, json, torch, numpy as np, yaml
torch.set_num_threads(1)
from hetcrf_lite.synthetic import make_synthetic_hin
from hetcrf_lite.config import default_config
from hetcrf_lite.train import fit
from hetcrf_lite.eval import evaluate_classification
from sklearn.neighbors import NearestNeighbors

DS = {
 "default": lambda: make_synthetic_hin(),
 "h1": lambda: make_synthetic_hin(num_nodes=3000, num_classes=5, neighbour_types=("author","venue","term"), homophily=(0.8,0.6,0.4), feature_mode="none", seed=11),
 "h2": lambda: make_synthetic_hin(num_nodes=2000, num_classes=4, homophily=(0.7,0.9), feature_mode="dense", seed=12),
}
def knn_agree(e, y, k=10):
    e = e / (np.linalg.norm(e, axis=1, keepdims=True) + 1e-12)
    nn = NearestNeighbors(n_neighbors=k+1, metric="cosine").fit(e)
    idx = nn.kneighbors(e, return_distance=False)[:, 1:]
    return float((y[idx] == y[:, None]).mean())
def f1(e, ds):
    r = evaluate_classification(e, ds.labels, ds.splits, ds.num_classes, 0.01, runs=5)
    return [round(r[k].summary()["macro_f1"][0], 1) for k in sorted(r)]

key, name = sys.argv[1], sys.argv[2]
kw = {}
for a in sys.argv[3:]:
    k, v = a.split("=", 1); kw[k] = yaml.safe_load(v)
ds = DS[key]()
betas = []
grads = []
def hook(m, e, r):
    d = r.get("diagnostics", {})
    if "grad_cos" in d: grads.append((e, round(d["grad_cos"],3), round(d["grad_norm_cl"]/max(d["grad_norm_gen"],1e-12),2)))
    b = m.encode().semantic_attention
    if b is not None: betas.append([round(float(x), 3) for x in b])
t = time.time()
seeds = kw.pop("seeds", [0])
for seed in (seeds if isinstance(seeds, list) else [seeds]):
    betas.clear(); grads.clear()
    cfg = default_config("synthetic", seed=seed, **kw)
    model, hist = fit(ds, cfg, progress=False, on_epoch_end=hook)
    y = ds.labels.numpy()
    out = {}
    modes = ["encoder", "contrastive", "concat"] if cfg.use_contrastive else ["encoder"]
    for mode in modes:
        e = model.embed(mode).numpy()
        out[mode] = (f1(e, ds), round(knn_agree(e, y), 3))
    enc = model.encode()
    zs = {m: f1(z.numpy(), ds)[0] for m, z in enc.z.items()}
    lastp = {k: round(sum(r["parts"][k] for r in hist["epochs"][-5:]) / 5, 4) for k in hist["epochs"][-1]["parts"]}
    cb = getattr(model, "_cl_beta", None); cb = None if cb is None else [round(float(x),3) for x in cb]
    print(f"{key} {name} s{seed} {kw} {time.time()-t:.0f}s loss={lastp} clb={cb} beta@10/40/end={betas[min(10,len(betas)-1)] if betas else None}/{betas[min(40,len(betas)-1)] if betas else None}/{betas[-1] if betas else None} Z={zs} " + " ".join(f"{m}:{v}" for m, v in out.items()) + (f" grads(e,cos,cl/gen)={grads[::4]}" if grads else ""), flush=True)
