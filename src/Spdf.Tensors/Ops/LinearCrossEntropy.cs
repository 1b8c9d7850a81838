using System.Numerics.Tensors;
using Spdf.Tensors.Autograd;
using Spdf.Tensors.Kernels.Cpu;

namespace Spdf.Tensors;

public static partial class Functional
{
    /// <summary>Tokens per chunk of <see cref="LinearCrossEntropy"/> when the caller gives none: about 16 MB of logits
    /// at a time (512 rows at a vocabulary of 8,192), so that a chunk stays in a server's L3 between its products.</summary>
    public static int LinearCrossEntropyChunk(int vocab) => Math.Clamp((4 << 20) / Math.Max(1, vocab) / 16 * 16, 16, 4096);

    /// <summary>
    /// <c>CrossEntropy(x · wᵀ, targets)</c> (a tied LM head and its loss) without ever holding the <c>[N, V]</c> logits:
    /// the rows go <paramref name="chunk"/> at a time through the product, the log-sum-exp and, when a gradient will be
    /// needed, the gradient of the logits, <c>(softmax − onehot) / count</c>, which at once gives that chunk's share of
    /// <c>dx = dlogits · w</c> and <c>dw += dlogitsᵀ · x</c>; the backward pass only scales those by the incoming
    /// gradient. Peak memory is one chunk of logits (and dw) instead of the logits and their gradient; the result equals
    /// the unfused composition within float rounding (dw sums its chunks in order). <paramref name="x"/> is <c>[N, C]</c>
    /// (or <c>[..., C]</c>), <paramref name="w"/> <c>[V, C]</c>, <paramref name="targets"/> <c>[N]</c>; targets equal to
    /// <paramref name="ignoreIndex"/> are skipped as in <see cref="CrossEntropy"/>. The fused kernels of Liger and of
    /// Apple's cut cross-entropy do the same on GPUs.
    /// </summary>
    /// <exception cref="ArgumentException">Shapes do not fit, a chunk is not positive, or a target is outside <c>[0, V)</c>
    /// and not the ignore index.</exception>
    public static Tensor LinearCrossEntropy(Tensor x, Tensor w, IntTensor targets, int ignoreIndex = IgnoreIndex, int chunk = 0)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(w);
        ArgumentNullException.ThrowIfNull(targets);
        if (w.Rank != 2) throw new ArgumentException($"LinearCrossEntropy: the weight must be [V, C]; got {w.Shape}.", nameof(w));
        int v = w.Shape[0], c = w.Shape[1];
        if (x.Rank < 1 || x.Shape[-1] != c)
            throw new ArgumentException($"LinearCrossEntropy: x's last dimension ({(x.Rank < 1 ? 0 : x.Shape[-1])}, shape {x.Shape}) differs from the weight's {c} columns (shape {w.Shape}).", nameof(x));
        int n = x.Numel / c;
        if (targets.Numel != n)
            throw new ArgumentException($"LinearCrossEntropy: {n} rows of x (shape {x.Shape}) but {targets.Numel} targets (shape {targets.Shape}).", nameof(targets));
        if (chunk < 0) throw new ArgumentException($"LinearCrossEntropy: chunk is {chunk}; expected a positive number of rows (0: automatic).", nameof(chunk));
        if (chunk == 0) chunk = LinearCrossEntropyChunk(v);
        var t = targets.Data;
        int count = CountTargets(t, v, ignoreIndex, "LinearCrossEntropy");
        bool grads = GradMode.IsEnabled && (x.RequiresGrad || w.RequiresGrad) && count > 0;
        var xs = x.Storage.AsSpan(0, n * c);
        var ws = w.Storage.AsSpan(0, v * c);
        int rows = Math.Min(chunk, Math.Max(1, n));
        var logits = GradientPool.Rent(rows * v, clear: false);
        var dx = grads ? GradientPool.Rent(n * c, clear: false) : null;
        var dw = grads ? GradientPool.Rent(v * c, clear: true) : null;
        var rowLoss = new double[rows];
        double total = 0;
        float scale = count == 0 ? 0f : 1f / count;
        try
        {
            for (int r0 = 0; r0 < n; r0 += rows)
            {
                int nc = Math.Min(rows, n - r0);
                var lg = logits.AsSpan(0, nc * v);
                Gemm.MatMul(xs.Slice(r0 * c, nc * c), false, ws, true, lg, nc, v, c);
                Parallel.For(0, nc, new ParallelOptions { MaxDegreeOfParallelism = nc * (long)v < 1 << 16 ? 1 : Environment.ProcessorCount }, i =>
                {
                    int target = t[r0 + i];
                    var row = logits.AsSpan(i * v, v);
                    if (target == ignoreIndex)
                    {
                        rowLoss[i] = 0;
                        if (grads) row.Clear();
                        return;
                    }
                    if (!grads)
                    {
                        rowLoss[i] = LogSumExp(row) - row[target];
                        return;
                    }
                    // One exponential per logit: e^(x − max) in place with its sum, then scaled to softmax / count.
                    float max = TensorPrimitives.Max(row), picked = row[target];
                    float sum = VectorMath.ExpShiftedSum(row, max);
                    rowLoss[i] = max + MathF.Log(sum) - picked;
                    TensorPrimitives.Multiply(row, scale / sum, row);
                    row[target] -= scale;                       // − onehot / count
                });
                for (int i = 0; i < nc; i++) total += rowLoss[i];
                if (!grads) continue;
                Gemm.MatMul(lg, false, ws, false, dx.AsSpan(r0 * c, nc * c), nc, c, v);               // dx = dlogits · w
                Gemm.MatMul(lg, true, xs.Slice(r0 * c, nc * c), false, dw, v, c, nc, accumulate: true); // dw += dlogitsᵀ · x
            }
        }
        finally { GradientPool.Return(logits); }
        float loss = count == 0 ? 0f : (float)(total / count);
        bool consumed = false;
        return AutogradEngine.Record(Tensor.Scalar(loss), "LinearCrossEntropy", [x, w], g =>
        {
            if (!grads) return [new Tensor(GradientPool.Rent(x.Numel, clear: true), x.Shape), new Tensor(GradientPool.Rent(w.Numel, clear: true), w.Shape)];
            // The gradients were computed with the loss and are handed over once (the engine may recycle them).
            if (consumed) throw new InvalidOperationException("LinearCrossEntropy computes its gradients with the loss and hands them over once; a second backward pass through it (retainGraph) is not supported. Compute the loss again.");
            consumed = true;
            float s = g.Storage[0];
            if (s != 1f)
            {
                TensorPrimitives.Multiply(dx.AsSpan(0, n * c), s, dx.AsSpan(0, n * c));
                TensorPrimitives.Multiply(dw.AsSpan(0, v * c), s, dw.AsSpan(0, v * c));
            }
            return [new Tensor(dx!, x.Shape), new Tensor(dw!, w.Shape)];
        });
    }
}
