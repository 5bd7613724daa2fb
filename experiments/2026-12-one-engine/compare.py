"""Compares two before_after.sh output folders value by value.

  python experiments/2026-12-one-engine/compare.py BEFORE AFTER [job ...]

metrics.jsonl `train/*` values (timings excluded) and results.json (best step, dev, test, dev
curve, train curve at the steps both have: the old loops also logged step 1).
"""
import json, sys, os
SKIP = ("time", "per_sec", "eta", "seconds", "hours", "energy", "device")
def rows(p):
    return [json.loads(l) for l in open(p)] if os.path.exists(p) else []
a, b = sys.argv[1], sys.argv[2]
for job in sys.argv[3:] or ["w2v2","probe","ctc","lora","distill","hubert","adalora","ladder"]:
    ra, rb = rows(os.path.join(a, job, "metrics.jsonl")), rows(os.path.join(b, job, "metrics.jsonl"))
    out = job + ":"
    if ra:
        n, diff = 0, 0.0
        for x, y in zip(ra, rb):
            for k in x:
                if k.startswith("train/") and k in y and not any(s in k for s in SKIP):
                    n += 1; diff = max(diff, abs(x[k] - y[k]))
        out += f" metrics {len(ra)}/{len(rb)} rows, {n} train values, max abs diff {diff};"
    pa, pb = (os.path.join(d, job, "results.json") for d in (a, b))
    if os.path.exists(pa):
        A, B = json.load(open(pa)), json.load(open(pb))
        same = {k: A[k] == B[k] for k in ("best_step", "dev", "test", "dev_curve")}
        # train_curve: the new one has no step-1 entry; compare the common steps.
        ta = {s: v for s, v in A["train_curve"]}
        tb = {s: v for s, v in B["train_curve"]}
        common = sorted(set(ta) & set(tb))
        same["train_curve(common steps)"] = all(ta[s] == tb[s] for s in common) and bool(common)
        out += f" results {same}, best step {A['best_step']}, test {json.dumps(A['test'])[:60]}"
    print(out)
