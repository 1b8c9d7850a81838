"""PyTorch CUDA peers of `quick gpu-linear`: one linear layer Y = X·Wᵀ + b, its input gradient dX = dY·W and its weight
gradient, FP32 with TF32 off, as JSON lines (medians of CUDA-event-timed launches).

  torch-dense  cuBLAS: X @ W.T + b, then dY @ W and dY.T @ X (W masked, so the same numbers as the sparse layer)
  torch-csr    cuSPARSE: Yᵀ = W_csr @ Xᵀ (torch.sparse.mm), dXᵀ = Wᵀ_csr @ dYᵀ, and dW at kept places only by
               torch.sparse.sampled_addmm (SDDMM) on W's pattern; the bias as a dense add / row sum

  python3 benchmarks/peers/gpu_linear_peer.py --tokens 16384 --in 2048 --out 8192 --sparsity 0,0.5,0.75,0.9
"""
import argparse, json, statistics, time
import torch

p = argparse.ArgumentParser()
p.add_argument("--tokens", type=int, default=8192)
p.add_argument("--in", dest="inf", type=int, default=768)
p.add_argument("--out", type=int, default=3072)
p.add_argument("--sparsity", default="0,0.5,0.75,0.9")
p.add_argument("--seconds", type=float, default=1.0)
p.add_argument("--impl", default="torch-dense,torch-csr")
p.add_argument("--device", default="cuda", help="cuda, or cpu to check the script where no GPU is")
a = p.parse_args()
if a.device == "cuda" and not torch.cuda.is_available():
    print(json.dumps(dict(op="gpu_linear_peer", accelerator="none")))
    raise SystemExit(0)
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.manual_seed(0)
dev = torch.device(a.device)
name = torch.cuda.get_device_name(0) if a.device == "cuda" else "cpu"
n, k, m = a.tokens, a.inf, a.out
x = torch.randn(n, k, device=dev)
dy = torch.randn(n, m, device=dev)
w0 = torch.randn(m, k, device=dev) / k ** 0.5
b = torch.randn(m, device=dev)


def timed(f, seconds):
    """Median milliseconds of f: CUDA events on a GPU, the wall clock on the CPU."""
    cuda = dev.type == "cuda"
    for _ in range(3):
        f()
    if cuda:
        torch.cuda.synchronize()
    ts, total = [], 0.0
    while total < seconds * 1e3 or len(ts) < 5:
        if cuda:
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record(); f(); e.record(); torch.cuda.synchronize()
            ts.append(s.elapsed_time(e))
        else:
            t0 = time.perf_counter(); f(); ts.append((time.perf_counter() - t0) * 1e3)
        total += ts[-1]
        if len(ts) >= 10000:
            break
    return statistics.median(ts)


for sp in [float(s) for s in a.sparsity.split(",")]:
    keep = torch.rand(m, k, device=dev) >= sp if sp > 0 else torch.ones(m, k, dtype=torch.bool, device=dev)
    w = w0 * keep
    kept = int(keep.sum().item())
    for impl in a.impl.split(","):
        if impl == "torch-dense":
            fwd = lambda: torch.addmm(b, x, w.t())
            def fb():
                torch.addmm(b, x, w.t()); dy @ w; dy.t() @ x; dy.sum(0)
        elif impl == "torch-csr":
            if sp == 0:
                continue
            wc = w.to_sparse_csr()
            wtc = w.t().contiguous().to_sparse_csr()
            pattern = keep.float().to_sparse_csr()
            xt = x.t().contiguous()
            fwd = lambda: torch.sparse.mm(wc, xt) + b[:, None]
            def fb():
                torch.sparse.mm(wc, xt) + b[:, None]
                dyt = dy.t().contiguous()
                torch.sparse.mm(wtc, dyt)
                torch.sparse.sampled_addmm(pattern, dyt, x, beta=0.0)
                dyt.sum(1)
        else:
            raise SystemExit(f"--impl {impl}: expected torch-dense or torch-csr")
        f_ms, fb_ms = timed(fwd, a.seconds), timed(fb, a.seconds)
        macs = n * k * m if impl == "torch-dense" else n * kept  # what the implementation computes
        print(json.dumps(dict(op="gpu_linear_peer", impl=impl, accelerator=dev.type, device=name, torch=torch.__version__,
                              sparsity=sp, tokens=n, **{"in": k}, out=m, kept=kept, fwd_ms=round(f_ms, 4), fwd_bwd_ms=round(fb_ms, 4),
                              fwd_gflops=round(2.0 * macs / f_ms / 1e6, 1), fwd_bwd_gflops=round(6.0 * macs / fb_ms / 1e6, 1))),
              flush=True)
