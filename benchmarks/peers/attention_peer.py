"""PyTorch peer for causal attention at the GPT benchmark's shape: the unfused attention of ../shared/peers/torch_peer.py's
Block (q·kᵀ/√E, masked_fill with −∞ above the diagonal, softmax, ·v), forward and forward+backward, 2 threads.
Prints one JSON line with median milliseconds."""
import argparse, json, math, time, statistics
import torch
p = argparse.ArgumentParser()
for k, v in dict(batch=8, heads=6, ctx=256, head_dim=64, threads=2).items(): p.add_argument("--" + k.replace("_", "-"), type=int, default=v)
p.add_argument("--seconds", type=float, default=2.0)
a = p.parse_args(); torch.set_num_threads(a.threads); torch.manual_seed(0)
B, H, T, E = a.batch, a.heads, a.ctx, a.head_dim
q, k, v = (torch.randn(B, H, T, E, requires_grad=True) for _ in range(3)); g = torch.randn(B, H, T, E)
mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
def attn():
    att = (q @ k.transpose(-2, -1)) / math.sqrt(E)
    return att.masked_fill(mask, float("-inf")).softmax(-1) @ v
def med(f):
    for _ in range(2): f()
    ts, t0 = [], time.perf_counter()
    while time.perf_counter() - t0 < a.seconds or len(ts) < 5:
        s = time.perf_counter(); f(); ts.append(time.perf_counter() - s)
    return statistics.median(ts) * 1e3
def fwd():
    with torch.no_grad(): attn()
def fb():
    q.grad = k.grad = v.grad = None; attn().backward(g)
print(json.dumps(dict(peer="torch", op="attention", batch=B, heads=H, ctx=T, head_dim=E, fwd_ms=med(fwd), fwd_bwd_ms=med(fb))))
