"""Wall time and peak memory of ``load_dataset`` on the four HeCo benchmarks.

Each dataset loads in a fresh Python process, so its peak resident set size (``ru_maxrss``) is
its own: the number includes the interpreter and the torch / PyG imports (reported separately
as ``import_rss_mb``). A load here is the default one: files verified against the sha256
manifest, edge lists read, meta-path adjacencies built by sparse products, positives selected.

Usage::

    HETCRF_DATA=/path/to/heco python benchmarks/load_speed.py [--datasets acm dblp]
        [--json PATH] [--check]

Targets: every dataset under 10 s and under 2 GB peak RSS; ``--check`` exits with status 1 when
one is missed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

DATASETS = ("acm", "dblp", "aminer", "freebase")
TARGET_S = 10.0
TARGET_MB = 2048.0
DEFAULT_JSON = Path(__file__).parent / "out" / "load_speed.json"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def worker(name: str) -> dict:
    """Runs in the child: import, load once (cold, files hashed) and once more (warm)."""
    start = time.perf_counter()
    from hetcrf_lite.data import load_dataset

    import_s = time.perf_counter() - start
    import_rss = _rss_mb()
    start = time.perf_counter()
    ds = load_dataset(name, download=False)
    load_s = time.perf_counter() - start
    peak = _rss_mb()
    start = time.perf_counter()
    load_dataset(name, download=False)  # sha256 memo warm, OS file cache warm
    again_s = time.perf_counter() - start
    return {
        "dataset": name,
        "import_s": round(import_s, 3),
        "load_s": round(load_s, 3),
        "second_load_s": round(again_s, 3),
        "import_rss_mb": round(import_rss, 1),
        "peak_rss_mb": round(peak, 1),
        "metapath_edges": {m: int(e.size(1)) for m, e in ds.metapath_adj.items()},
        "positives": int(ds.pos.size(1)),
    }


def run(names: list[str]) -> list[dict]:
    rows = []
    for name in names:
        out = subprocess.run([sys.executable, __file__, "--worker", name], capture_output=True,
                             text=True, check=False)
        if out.returncode != 0:
            sys.exit(f"{name}: worker failed\n{out.stderr}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def table(rows: list[dict]) -> str:
    head = ["dataset", "load s", "2nd load s", "import s", "peak RSS MB", "import RSS MB",
            "meta-path edges", "positives", "target"]
    body = []
    for r in rows:
        ok = r["load_s"] < TARGET_S and r["peak_rss_mb"] < TARGET_MB
        body.append([r["dataset"], f"{r['load_s']:.2f}", f"{r['second_load_s']:.2f}",
                     f"{r['import_s']:.2f}", f"{r['peak_rss_mb']:.0f}",
                     f"{r['import_rss_mb']:.0f}", str(sum(r["metapath_edges"].values())),
                     str(r["positives"]), "ok" if ok else "MISSED"])
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(line, widths))) for line in [head] + body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return
    if not os.environ.get("HETCRF_DATA"):
        sys.exit("set HETCRF_DATA to the folder holding the HeCo datasets")
    rows = run(args.datasets)
    print(table(rows))
    import numpy
    import scipy
    import torch

    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "numpy": numpy.__version__,
                    "scipy": scipy.__version__, "torch": torch.__version__},
        "targets": {"load_s": TARGET_S, "peak_rss_mb": TARGET_MB},
        "results": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    missed = [r for r in rows if r["load_s"] >= TARGET_S or r["peak_rss_mb"] >= TARGET_MB]
    if args.check and missed:
        sys.exit(1)


if __name__ == "__main__":
    main()
