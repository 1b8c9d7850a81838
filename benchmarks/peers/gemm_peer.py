"""PyTorch/OpenBLAS peer for a square GEMM (2048³ by default) in the layouts a linear layer needs, 2 threads; JSON lines."""
import argparse, json, time, statistics
import torch
p = argparse.ArgumentParser(); p.add_argument("--size", type=int, default=2048); p.add_argument("--seconds", type=float, default=2.0)
p.add_argument("--threads", type=int, default=2)
a = p.parse_args(); torch.set_num_threads(a.threads); torch.manual_seed(0)
n = a.size; x = torch.randn(n, n); y = torch.randn(n, n)
for name, f in [("nn", lambda: x @ y), ("nt", lambda: x @ y.t()), ("tn", lambda: x.t() @ y)]:
    for _ in range(2): f()
    ts, t0 = [], time.perf_counter()
    while time.perf_counter() - t0 < a.seconds or len(ts) < 5:
        s = time.perf_counter(); f(); ts.append(time.perf_counter() - s)
    ms = statistics.median(ts) * 1e3
    print(json.dumps(dict(peer="torch", op="gemm", layout=name, m=n, n=n, k=n, ms=ms, gflops=2 * n ** 3 / ms / 1e6)))
