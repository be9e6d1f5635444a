"""Session 10 (validation only), from session 9's movie_probe.py: wider encoders on the movie
graph of benchmarks/own_graph.py (README.md beside it states the question and the rule).
Run from benchmarks/: python logs/method_search/session10/wide_probe.py 512 1024"""
import json, sys, time
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from own_graph import make_graph
from sklearn.preprocessing import StandardScaler
from hetcrf_lite.config import HetCRFConfig
from hetcrf_lite.train import build_trainer
from hetcrf_lite.tune import validation_only, validation_scores, baseline_scores

torch.set_num_threads(1)
AT = [5, 10, 15, 25]
VARIANTS = {f"lr3.2e-3 hidden{W}": {"hidden_channels": W} for W in map(int, sys.argv[1:])}
ds = make_graph(); val = validation_only(ds)
out = {"baselines": baseline_scores(ds, 5)}
print(out["baselines"], flush=True)
for name, ch in VARIANTS.items():
    res = {}
    for seed in (0, 1, 2):
        cfg = HetCRFConfig(lr=0.0032, epochs=max(AT), patience=1000, seed=seed, **ch)
        tr = build_trainer(ds, cfg, progress=False)
        rows = []
        def probe(m, ep, rec=None):
            if ep + 1 not in AT: return
            r = {}
            for mode in ("encoder", "contrastive", "concat"):
                e = m.embed(mode).cpu()
                r[mode] = validation_scores(e, val, 5)
                r[mode + "+std"] = validation_scores(
                    torch.as_tensor(StandardScaler().fit_transform(e.numpy()), dtype=torch.float32), val, 5)
            rows.append({"epoch": ep + 1, **r})
        tr.on_epoch_end = probe
        t0 = time.time(); tr.fit()
        res[seed] = rows
        print(name, seed, f"{time.time()-t0:.0f}s", flush=True)
    out[name] = res
    for i, e in enumerate(AT):
        line = []
        for mode in res[0][i]:
            if mode == "epoch": continue
            per_rate = {r: np.mean([res[s][i][mode][r] for s in res]) for r in res[0][i][mode]}
            line.append(f"{mode} " + "/".join(f"{v:.1f}" for v in per_rate.values()))
        print(f"  {name} e{e}: " + " | ".join(line), flush=True)
    Path(__file__).with_name("wide_probe_" + "_".join(sys.argv[1:]) + ".json").write_text(json.dumps(out, default=float, indent=1))
