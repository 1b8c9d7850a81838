#!/usr/bin/env bash
# The prepared GPU benchmark, run once on the GPU machine from the repository root (nothing is built there):
#   Spdf's kernels (the publish of benchmarks/gpu/publish.sh) and PyTorch's cuBLAS / cuSPARSE peers, on GPT-3 XL's MLP
#   shapes (2048 -> 8192 and 8192 -> 2048, 16,384 tokens) and GPT-2 Small's (768 -> 3072, 8,192 tokens), sparsity
#   0 / 0.5 / 0.75 / 0.9. JSON lines go to $OUT (or benchmarks/gpu/out): spdf.jsonl, peer.jsonl, and device.txt.
# Every step has its own timeout, so one failure leaves the others' figures. Then, here:
#   python3 benchmarks/gpu/table.py benchmarks/gpu/out   (the markdown table for docs/benchmarks.md)
set -u
cd "$(dirname "$0")/../.."
out=${OUT:-benchmarks/gpu/out}
mkdir -p "$out"
bin=benchmarks/gpu/publish/Spdf.Gpu.Benchmarks
[ -x "$bin" ] || chmod +x "$bin" 2>/dev/null || true
# The compressed single file unpacks its native parts on first start; keep that out of a possibly read-only home.
export DOTNET_BUNDLE_EXTRACT_BASE_DIR="${TMPDIR:-/tmp}/spdf-gpu-bundle"
secs=${GPU_SECONDS:-1}
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } > "$out/device.txt" 2>&1
for shape in "16384 2048 8192" "16384 8192 2048" "8192 768 3072"; do
  set -- $shape
  echo "shape tokens=$1 in=$2 out=$3" >&2
  timeout 240 "$bin" quick gpu-linear --tokens "$1" --in "$2" --out "$3" --sparsity 0,0.5,0.75,0.9 --activations fp32,bf16 --seconds "$secs" >> "$out/spdf.jsonl" 2>> "$out/spdf.err" \
    || echo "spdf $shape: exit $?" >> "$out/spdf.err"
  timeout 180 python3 benchmarks/peers/gpu_linear_peer.py --tokens "$1" --in "$2" --out "$3" --sparsity 0,0.5,0.75,0.9 --seconds "$secs" >> "$out/peer.jsonl" 2>> "$out/peer.err" \
    || echo "peer $shape: exit $?" >> "$out/peer.err"
done
wc -l "$out"/*.jsonl >&2
