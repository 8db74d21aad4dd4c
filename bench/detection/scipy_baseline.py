"""The scipy baseline of infergate's drift detection benchmark
(bench/detection): per-feature two-sample Kolmogorov-Smirnov p-values by
scipy.stats.ks_2samp, default method (exact for these sample sizes).

Usage: python3 scipy_baseline.py IN.json OUT.json

IN holds the reference columns and the windows, every array little-endian
float32, base64-encoded, values already rounded to float32 by the writer:

  {"features": d,
   "references": [{"rows": r, "columns": "<b64 of d*r float32, column-major>"}, ...],
   "windows": [{"reference": k, "rows": n, "columns": "<b64 of d*n float32, column-major>"}, ...]}

OUT is {"p_values": [[p per feature] per window], "seconds": s}. The
decision (drift when any feature's p < 0.05/d) is left to the reader, which
also scores the windows for power at matched false-alarm rates.
"""
import base64
import json
import sys
import time
import warnings

import numpy as np
from scipy import stats


def columns(b64, d, n):
    a = np.frombuffer(base64.b64decode(b64), dtype="<f4").astype(np.float64)
    return a.reshape(d, n)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: scipy_baseline.py IN.json OUT.json")
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    d = spec["features"]
    start = time.perf_counter()
    refs = [columns(r["columns"], d, r["rows"]) for r in spec["references"]]
    out = []
    # ks_2samp warns when the exact method falls back to the asymptotic one;
    # that is part of the baseline's behaviour, not an error.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for w in spec["windows"]:
            ref = refs[w["reference"]]
            cols = columns(w["columns"], d, w["rows"])
            out.append([float(stats.ks_2samp(ref[j], cols[j]).pvalue) for j in range(d)])
    with open(sys.argv[2], "w") as f:
        json.dump({"p_values": out, "seconds": time.perf_counter() - start}, f)


if __name__ == "__main__":
    main()
