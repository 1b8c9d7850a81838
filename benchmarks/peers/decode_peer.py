"""PyTorch peer for batch-1 decoding through a GPT's linear layers (GPT-2 Small by default: 12 blocks of
768→2304, 768→768, 768→3072, 3072→768 with biases), dense, no autograd, 2 threads; one JSON line: the median time
per token. The same work as `quick decode --sparsity 0` (benchmarks/Spdf.Benchmarks)."""
import argparse, json, time, statistics
import torch
p = argparse.ArgumentParser(); p.add_argument("--layers", type=int, default=12); p.add_argument("--embd", type=int, default=768)
p.add_argument("--seconds", type=float, default=2.0); p.add_argument("--threads", type=int, default=2)
a = p.parse_args(); torch.set_num_threads(a.threads); torch.manual_seed(0)
c = a.embd
layers = [torch.nn.Linear(i, o) for _ in range(a.layers) for (i, o) in ((c, 3 * c), (c, c), (c, 4 * c), (4 * c, c))]
x1, x4 = torch.randn(1, c), torch.randn(1, 4 * c)
def token():
    for l in layers: l(x1 if l.in_features == c else x4)
with torch.no_grad():
    for _ in range(3): token()
    ts, t0 = [], time.perf_counter()
    while time.perf_counter() - t0 < a.seconds or len(ts) < 5:
        s = time.perf_counter(); token(); ts.append(time.perf_counter() - s)
ms = statistics.median(ts) * 1e3
mb = sum(l.weight.numel() for l in layers) * 4 / 1048576
print(json.dumps(dict(peer="torch", op="decode", layers=a.layers, embd=c, ms_per_token=ms, tok_s=1000 / ms, weight_mb=mb, gb_s=mb / 1024 / (ms / 1e3))))
