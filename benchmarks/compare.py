"""Side-by-side runs of Spdf's quick benchmarks and their PyTorch peers, interleaved to share the machine's noise.

  /usr/bin/python3 benchmarks/compare.py linear [--rounds 3] [--seconds 2]
  /usr/bin/python3 benchmarks/compare.py attention [--rounds 3]
  /usr/bin/python3 benchmarks/compare.py gemm [--rounds 3]
  /usr/bin/python3 benchmarks/compare.py sparse [--rounds 3]   (our compressed layer at 50/75/90% against our dense and PyTorch's)
  /usr/bin/python3 benchmarks/compare.py gpt [--rounds 3] [--seconds 5]   (training step, ours dense/75%/90% vs PyTorch dense/masked)
  /usr/bin/python3 benchmarks/compare.py decode [--rounds 3]   (batch-1 decode through GPT-2 Small's layers: ours dense and 75% vs PyTorch dense)

Each round runs ours, then the peer, for every case; the table shows medians over rounds and the ratio peer/ours
(> 1 means Spdf is faster). Needs Debian's python3-torch (apt-get install -y python3-torch) and a Release build:
  dotnet build -c Release benchmarks/Spdf.Benchmarks
"""
import argparse, json, os, statistics, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OURS = ["dotnet", os.path.join(HERE, "Spdf.Benchmarks", "bin", "Release", "net10.0", "Spdf.Benchmarks.dll"), "quick"]
PEER_ENV = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
TORCH_PEER = os.path.join(ROOT, "..", "shared", "peers", "torch_peer.py")

def run(cmd, env=None):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    rows = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    for o in rows:
        # Debian's python3-torch without libopenblas0-pthread runs on the reference BLAS (~2 GFLOP/s): no peer at all.
        if o.get("peer") == "torch" and o.get("op") == "linear" and o.get("fwd_gflops", 100) < 20:
            print(f"warning: PyTorch's dense linear ran at {o['fwd_gflops']:.1f} GFLOP/s: it is on the reference BLAS, "
                  "not OpenBLAS (apt-get install -y libopenblas0-pthread)", file=sys.stderr)
    return rows

def linear_cases():
    return [(2048, 768, 3072), (2048, 384, 1536), (2048, 768, 768), (2048, 768, 8192)]

def main():
    p = argparse.ArgumentParser(); p.add_argument("what", choices=["linear", "attention", "gemm", "sparse", "gpt", "memory", "decode"])
    p.add_argument("--rounds", type=int, default=3); p.add_argument("--seconds", type=float, default=2.0)
    a = p.parse_args(); s = str(a.seconds)
    rows = {}
    for r in range(a.rounds):
        if a.what == "linear":
            for n, k, m in linear_cases():
                o = run(OURS + ["linear", "--tokens", str(n), "--in", str(k), "--out", str(m), "--sparsity", "0", "--seconds", s])[0]
                t = run(["/usr/bin/python3", TORCH_PEER, "linear", "--tokens", str(n), "--in", str(k), "--out", str(m), "--sparsity", "0", "--seconds", s], PEER_ENV)[0]
                rows.setdefault(f"linear {n}x{k}x{m} fwd", []).append((o["fwd_ms"], t["fwd_ms"]))
                rows.setdefault(f"linear {n}x{k}x{m} fwd+bwd", []).append((o["fwd_bwd_ms"], t["fwd_bwd_ms"]))
        elif a.what == "decode":
            ours = run(OURS + ["decode", "--preset", "gpt2-small", "--sparsity", "0,0.75", "--seconds", s])
            t = run(["/usr/bin/python3", os.path.join(HERE, "peers", "decode_peer.py"), "--seconds", s], PEER_ENV)[0]
            dense, sparse = ours
            rows.setdefault("decode GPT-2 Small layers, dense, ms/token", []).append((dense["ms_per_token"], t["ms_per_token"]))
            rows.setdefault("decode GPT-2 Small layers, 75% sparse, ms/token (peer: PyTorch dense)", []).append((sparse["ms_per_token"], t["ms_per_token"]))
            # The sparse decode against the better dense baseline of the two, in the same round.
            best = min(dense["ms_per_token"], t["ms_per_token"])
            rows.setdefault("  75% sparse vs the faster dense decode (ours or PyTorch's), speed-up", []).append((sparse["ms_per_token"], best))
            rows.setdefault("  our dense decode, GB/s of weights read", []).append((dense["weight_mb"] / 1024 / (dense["ms_per_token"] / 1e3), None))
        elif a.what == "attention":
            o = run(OURS + ["attention", "--batch", "8", "--heads", "6", "--ctx", "256", "--head-dim", "64", "--seconds", s])[0]
            t = run(["/usr/bin/python3", os.path.join(HERE, "peers", "attention_peer.py"), "--seconds", s], PEER_ENV)[0]
            rows.setdefault("attention B8 H6 T256 E64 fwd", []).append((o["fwd_ms"], t["fwd_ms"]))
            rows.setdefault("attention B8 H6 T256 E64 fwd+bwd", []).append((o["fwd_bwd_ms"], t["fwd_bwd_ms"]))
        elif a.what == "gpt":
            shape = ["--layers", "6", "--embd", "384", "--heads", "6", "--ctx", "256", "--batch", "8", "--vocab", "8192"]
            ours = run(OURS + ["gpt"] + shape + ["--sparsity", "0,0.75,0.9", "--seconds", s])
            t = run(["/usr/bin/python3", TORCH_PEER, "gpt"] + shape + ["--sparsity", "0.75", "--seconds", s], PEER_ENV)[0]
            for o in ours:
                tag = "dense" if o["sparsity"] == 0 else f"{o['sparsity']:.0%} sparse (PyTorch: masked at 75%)"
                rows.setdefault(f"gpt step L6 D384 T256 B8 V8192 {tag}, ms", []).append((o["ms"], t["dense_ms"] if o["sparsity"] == 0 else t["masked_ms"]))
                rows.setdefault(f"  Spdf peak working set, MB, {tag}", []).append((o["peak_mb"], None))
                if o["sparsity"] > 0: print(f"round {r + 1}: {o['sparsity']:.0%} kernels chosen: {o['kernel']}", file=sys.stderr)
        elif a.what == "sparse":
            ours = run(OURS + ["linear", "--tokens", "2048", "--in", "768", "--out", "3072", "--sparsity", "0,0.5,0.75,0.9", "--seconds", s])
            t = run(["/usr/bin/python3", TORCH_PEER, "linear", "--tokens", "2048", "--in", "768", "--out", "3072", "--sparsity", "0.75", "--seconds", s], PEER_ENV)[0]
            dense = ours[0]
            for o in ours:
                tag = "dense" if o["sparsity"] == 0 else f"{o['sparsity']:.0%} sparse ({o['kernel']})"
                # peer column: PyTorch dense; ratio > 1 means this Spdf row is faster than PyTorch dense
                rows.setdefault(f"linear 2048x768x3072 {tag} fwd", []).append((o["fwd_ms"], t["fwd_ms"]))
                rows.setdefault(f"linear 2048x768x3072 {tag} fwd+bwd", []).append((o["fwd_bwd_ms"], t["fwd_bwd_ms"]))
                if o["sparsity"] > 0:
                    rows.setdefault(f"  Spdf dense / Spdf {tag}, fwd+bwd (speed-up)", []).append((o["fwd_bwd_ms"], dense["fwd_bwd_ms"]))
                    # The fastest run of each: the least disturbed by neighbours on a shared machine (medians carry their load).
                    rows.setdefault(f"  Spdf dense / Spdf {tag}, fwd+bwd fastest runs (speed-up)", []).append((o["fwd_bwd_min_ms"], dense["fwd_bwd_min_ms"]))
            rows.setdefault("linear 2048x768x3072 75% PyTorch CSR fwd (peer column) vs Spdf 75% fwd", []).append((ours[2]["fwd_ms"], t["csr_fwd_ms"]))
            kept = run(OURS + ["linear", "--tokens", "2048", "--in", "768", "--out", "3072", "--sparsity", "0.75", "--storage", "dense", "--seconds", s])[0]
            rows.setdefault("  Spdf dense / Spdf 75% sparse with dense weight storage, fwd+bwd (speed-up)", []).append((kept["fwd_bwd_ms"], dense["fwd_bwd_ms"]))
        elif a.what == "memory":
            # Peak resident memory of training steps (set-up excluded), dense against 75% sparse with each weight storage:
            # the peer column holds the dense model's figure, so the ratio column is dense / sparse.
            for label, shape in [("L12 D768 T128 B2 V8192 (weight-dominated)", ["--layers", "12", "--embd", "768", "--heads", "12", "--ctx", "128", "--batch", "2", "--vocab", "8192"]),
                                 ("L6 D384 T256 B8 V8192 (activation-dominated)", ["--layers", "6", "--embd", "384", "--heads", "6", "--ctx", "256", "--batch", "8", "--vocab", "8192"])]:
                dense, compressed = run(OURS + ["gpt"] + shape + ["--sparsity", "0,0.75", "--seconds", s])
                kept = run(OURS + ["gpt"] + shape + ["--sparsity", "0.75", "--storage", "dense", "--seconds", s])[0]
                rows.setdefault(f"gpt step {label}: dense peak MB", []).append((dense["peak_mb"], None))
                rows.setdefault(f"  {label}: 75% compressed storage peak MB (dense / sparse)", []).append((compressed["peak_mb"], dense["peak_mb"]))
                rows.setdefault(f"  {label}: 75% dense weight storage peak MB (dense / sparse)", []).append((kept["peak_mb"], dense["peak_mb"]))
                rows.setdefault(f"  {label}: step ms, 75% compressed storage (dense / sparse)", []).append((compressed["ms"], dense["ms"]))
        else:
            for o in run(OURS + ["gemm", "--seconds", s]):
                rows.setdefault(f"gemm 2048^3 {o['layout']} Spdf % of measured FMA peak", []).append((o["pct_peak"], None))
                rows.setdefault(f"gemm 2048^3 {o['layout']} GFLOP/s", []).append((o["gflops"], o["gflops"]))
            t = run(["/usr/bin/python3", os.path.join(HERE, "peers", "gemm_peer.py"), "--seconds", s], PEER_ENV)
            for x in t: rows.setdefault(f"gemm 2048^3 {x['layout']} GFLOP/s", []).append((None, x["gflops"]))
        print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
    print(f"| case | Spdf (median) | PyTorch (median) | PyTorch/Spdf |")
    print(f"| --- | ---: | ---: | ---: |")
    for name, vals in rows.items():
        ours = [v[0] for v in vals if v[0] is not None]; peer = [v[1] for v in vals if v[1] is not None]
        mo = statistics.median(ours) if ours else float("nan"); mp = statistics.median(peer) if peer else float("nan")
        print(f"| {name} | {mo:.2f} | {'–' if peer == [] else f'{mp:.2f}'} | {'–' if peer == [] else f'{mp / mo:.2f}'} |")

main()
