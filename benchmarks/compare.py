"""Side-by-side runs of Spdf's quick benchmarks and their PyTorch peers, interleaved to share the machine's noise.

  /usr/bin/python3 benchmarks/compare.py linear [--rounds 3] [--seconds 2]
  /usr/bin/python3 benchmarks/compare.py attention [--rounds 3]
  /usr/bin/python3 benchmarks/compare.py gemm [--rounds 3]

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
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]

def linear_cases():
    return [(2048, 768, 3072), (2048, 384, 1536), (2048, 768, 768), (2048, 768, 8192)]

def main():
    p = argparse.ArgumentParser(); p.add_argument("what", choices=["linear", "attention", "gemm"])
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
        elif a.what == "attention":
            o = run(OURS + ["attention", "--batch", "8", "--heads", "6", "--ctx", "256", "--head-dim", "64", "--seconds", s])[0]
            t = run(["/usr/bin/python3", os.path.join(HERE, "peers", "attention_peer.py"), "--seconds", s], PEER_ENV)[0]
            rows.setdefault("attention B8 H6 T256 E64 fwd", []).append((o["fwd_ms"], t["fwd_ms"]))
            rows.setdefault("attention B8 H6 T256 E64 fwd+bwd", []).append((o["fwd_bwd_ms"], t["fwd_bwd_ms"]))
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
        print(f"| {name} | {mo:.2f} | {mp:.2f} | {mp / mo:.2f} |")

main()
