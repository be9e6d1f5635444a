"""Session 10 (validation only): validation Macro-F1 (mean over seeds 0-2, per rate) of the
encoder H and the concat embedding along training, for one variant of the defaults at lr 3.2e-3
on a graph of benchmarks/own_graph.py.
Run from benchmarks/: [AT="3 5 8"] python logs/method_search/session10/variant_probe.py NAME GRAPH k=v ...
(the probe epochs AT default to 3 5 10 15 25 40 60)"""
import json, sys, time
from pathlib import Path
import numpy as np, torch, yaml
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from own_graph import make_graph
from hetcrf_lite.config import HetCRFConfig
from hetcrf_lite.train import build_trainer
from hetcrf_lite.tune import validation_only, validation_scores

torch.set_num_threads(1)
AT = [int(a) for a in __import__("os").environ.get("AT", "3 5 10 15 25 40 60").split()]
name, graph = sys.argv[1], sys.argv[2]
sets = {k: yaml.safe_load(v) for k, v in (a.split("=", 1) for a in sys.argv[3:])}
ds = make_graph(graph); val = validation_only(ds)
MODES = ("encoder", "concat")
res = {}
for seed in (0, 1, 2):
    cfg = HetCRFConfig(**{"lr": 0.0032, "epochs": max(AT), "patience": 1000, "seed": seed, **sets})
    tr = build_trainer(ds, cfg, progress=False)
    rows = []
    def probe(m, ep, rec=None):
        if ep + 1 in AT:
            rows.append({"epoch": ep + 1, **{k: validation_scores(m.embed(k).cpu(), val, 5) for k in MODES}})
    tr.on_epoch_end = probe
    t0 = time.time(); tr.fit(); res[seed] = rows
    print(name, graph, seed, f"{time.time()-t0:.0f}s", flush=True)
for i, r in enumerate(res[0]):
    line = [f"{m} " + "/".join(f"{np.mean([res[s][i][m][k] for s in res]):.1f}" for k in r[m]) for m in MODES]
    print(f"  {name} {graph} e{r['epoch']}: " + " | ".join(line), flush=True)
Path(__file__).with_name(f"variant_{name}_{graph}.json").write_text(
    json.dumps({"settings": sets, "runs": res}, default=float, indent=1))
