"""Session 10 (validation only): the movie graph's wide encoders peak at the first probe
(epoch 5, wide_probe.py); how do the untrained encoder (epoch 0) and epochs 1-5 score?
Run from benchmarks/: python logs/method_search/session10/early_probe.py 512"""
import json, sys, time
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from own_graph import make_graph
from hetcrf_lite.config import HetCRFConfig
from hetcrf_lite.train import build_trainer
from hetcrf_lite.tune import validation_only, validation_scores

torch.set_num_threads(1)
AT = [1, 2, 3, 5]
W = int(sys.argv[1])
graph = sys.argv[2] if len(sys.argv) > 2 else "movies"
ds = make_graph(graph); val = validation_only(ds)
MODES = ("encoder", "concat")
res = {}
for seed in (0, 1, 2):
    cfg = HetCRFConfig(lr=0.0032, epochs=max(AT), patience=1000, seed=seed, hidden_channels=W)
    tr = build_trainer(ds, cfg, progress=False)
    rows = [{"epoch": 0, **{m: validation_scores(tr.model.embed(m).cpu(), val, 5) for m in MODES}}]
    def probe(m, ep, rec=None):
        if ep + 1 in AT:
            rows.append({"epoch": ep + 1, **{k: validation_scores(m.embed(k).cpu(), val, 5) for k in MODES}})
    tr.on_epoch_end = probe
    t0 = time.time(); tr.fit(); res[seed] = rows
    print(graph, W, seed, f"{time.time()-t0:.0f}s", flush=True)
for i, r in enumerate(res[0]):
    line = [f"{m} " + "/".join(f"{np.mean([res[s][i][m][k] for s in res]):.1f}" for k in r[m]) for m in MODES]
    print(f"  {graph} hidden{W} e{r['epoch']}: " + " | ".join(line), flush=True)
Path(__file__).with_name(f"early_probe_{graph}_{W}.json").write_text(json.dumps(res, default=float, indent=1))
