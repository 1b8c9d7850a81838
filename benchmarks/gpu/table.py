"""The markdown table of a GPU benchmark run (benchmarks/gpu/run.sh): Spdf's kernels against cuBLAS dense FP32 and
cuSPARSE CSR, per shape and sparsity, with the issue's targets as ratios. Usage: python3 benchmarks/gpu/table.py DIR"""
import json, sys, pathlib

d = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/gpu/out")


def lines(name):
    p = d / name
    return [json.loads(l) for l in p.read_text().splitlines() if l.strip().startswith("{")] if p.exists() else []


spdf = [r for r in lines("spdf.jsonl") if r.get("accelerator") not in (None, "none")]
peer = [r for r in lines("peer.jsonl") if r.get("accelerator") not in (None, "none")]
key = lambda r: (r["tokens"], r["in"], r["out"])
dense = {key(r): r for r in peer if r["impl"] == "torch-dense" and r["sparsity"] == 0}
csr = {key(r) + (r["sparsity"],): r for r in peer if r["impl"] == "torch-csr"}
ours_dense = {key(r): r for r in spdf if r["sparsity"] == 0}
if spdf:
    print(f"Device: {spdf[0]['device']}.\n")
print("| tokens × in → out | sparsity | activations | Spdf fwd ms | Spdf fwd+bwd ms | cuBLAS fwd / fwd+bwd ms | cuSPARSE fwd / fwd+bwd ms "
      "| vs cuBLAS fwd / fwd+bwd | vs cuSPARSE fwd+bwd | Spdf fwd+bwd GFLOP/s (share of FP32 peak) | max rel. err |")
print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for r in sorted(spdf, key=lambda r: key(r) + (r["sparsity"], r.get("activations", "fp32"))):
    k = key(r)
    cb = dense.get(k)
    cs = csr.get(k + (r["sparsity"],))
    fmt = lambda x: f"{x:.3f}"
    cb_s = f"{fmt(cb['fwd_ms'])} / {fmt(cb['fwd_bwd_ms'])}" if cb else "–"
    cs_s = f"{fmt(cs['fwd_ms'])} / {fmt(cs['fwd_bwd_ms'])}" if cs else "–"
    vs_cb = f"{cb['fwd_ms'] / r['fwd_ms']:.2f}× / {cb['fwd_bwd_ms'] / r['fwd_bwd_ms']:.2f}×" if cb else "–"
    vs_cs = f"{cs['fwd_bwd_ms'] / r['fwd_bwd_ms']:.2f}×" if cs else "–"
    share = r.get("fwd_bwd_peak_share")
    gf = f"{r['fwd_bwd_gflops']:,.0f}" + (f" ({100 * share:.0f}%)" if share is not None else "")
    print(f"| {k[0]} × {k[1]} → {k[2]} | {r['sparsity']} | {r.get('activations', 'fp32')} | {fmt(r['fwd_ms'])} | {fmt(r['fwd_bwd_ms'])} | {cb_s} | {cs_s} "
          f"| {vs_cb} | {vs_cs} | {gf} | {r['max_rel_err']:.1e} |")
print()
for k, r in sorted(ours_dense.items()):
    cb = dense.get(k)
    if cb:
        print(f"- {k[0]} × {k[1]} → {k[2]}: Spdf's SGEMM runs the dense layer at {cb['fwd_ms'] / r['fwd_ms']:.0%} of cuBLAS's speed forward, "
              f"{cb['fwd_bwd_ms'] / r['fwd_bwd_ms']:.0%} forward and backward.")
