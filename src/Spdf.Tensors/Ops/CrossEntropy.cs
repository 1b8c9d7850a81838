using System.Numerics.Tensors;
using Spdf.Tensors.Autograd;

namespace Spdf.Tensors;

public static partial class Functional
{
    /// <summary>The target that <see cref="CrossEntropy"/> skips by default: -100, as PyTorch's <c>ignore_index</c> (padding, prompt positions).</summary>
    public const int IgnoreIndex = -100;

    /// <summary>
    /// Mean cross-entropy of <paramref name="logits"/> <c>[N, V]</c> (or <c>[..., V]</c>, flattened) against integer
    /// <paramref name="targets"/> <c>[N]</c> (<c>torch.nn.functional.cross_entropy</c>, reduction "mean"). Targets equal to
    /// <paramref name="ignoreIndex"/> contribute nothing and are not counted; if every target is ignored the loss is 0.
    /// Fused log-softmax and negative log-likelihood: the backward is <c>(softmax − onehot) / count</c>.
    /// </summary>
    /// <exception cref="ArgumentException">Row counts differ, or a target is outside <c>[0, V)</c> and not the ignore index.</exception>
    public static Tensor CrossEntropy(Tensor logits, IntTensor targets, int ignoreIndex = IgnoreIndex)
    {
        ArgumentNullException.ThrowIfNull(logits);
        ArgumentNullException.ThrowIfNull(targets);
        if (logits.Rank < 1) throw new ArgumentException($"CrossEntropy: logits must have rank ≥ 1; got {logits.Shape}.", nameof(logits));
        int v = logits.Shape[-1];
        int n = logits.Shape.Product(0, logits.Rank - 1);
        if (targets.Numel != n)
            throw new ArgumentException($"CrossEntropy: {n} rows of logits (shape {logits.Shape}) but {targets.Numel} targets (shape {targets.Shape}).", nameof(targets));
        var t = targets.Data;
        int count = CountTargets(t, v, ignoreIndex, "CrossEntropy");
        // Per row: log-sum-exp with the max subtracted, in two vectorised passes; rows in parallel, each into its own slot.
        var lse = new float[n];
        var rowLoss = new double[n];
        Parallel.For(0, n, new ParallelOptions { MaxDegreeOfParallelism = n * (long)v < 1 << 16 ? 1 : Environment.ProcessorCount }, i =>
        {
            if (t[i] == ignoreIndex) return;
            var row = logits.Storage.AsSpan(i * v, v);
            lse[i] = LogSumExp(row);
            rowLoss[i] = lse[i] - row[t[i]];
        });
        double total = 0;
        for (int i = 0; i < n; i++) if (t[i] != ignoreIndex) total += rowLoss[i];
        float loss = count == 0 ? 0f : (float)(total / count);
        return AutogradEngine.Record(Tensor.Scalar(loss), "CrossEntropy", [logits], g =>
        {
            var dl = GradientPool.Rent(logits.Numel, clear: count == 0); // otherwise every row is written below
            if (count == 0) return [new Tensor(dl, logits.Shape)];
            float scale = g.Storage[0] / count;
            Parallel.For(0, n, new ParallelOptions { MaxDegreeOfParallelism = n * (long)v < 1 << 16 ? 1 : Environment.ProcessorCount }, i =>
            {
                if (t[i] == ignoreIndex) { dl.AsSpan(i * v, v).Clear(); return; }
                var row = logits.Storage.AsSpan(i * v, v);
                var drow = dl.AsSpan(i * v, v);
                Kernels.Cpu.VectorMath.ScaledExp(row, lse[i], scale, drow); // softmax · scale, one pass
                drow[t[i]] -= scale;                                        // − onehot · scale
            });
            return [new Tensor(dl, logits.Shape)];
        });
    }

    /// <summary>Checks every target against a vocabulary of <paramref name="v"/> and counts those not ignored.</summary>
    /// <exception cref="ArgumentException">A target is outside <c>[0, v)</c> and not the ignore index; the message names <paramref name="op"/>.</exception>
    private static int CountTargets(int[] targets, int v, int ignoreIndex, string op)
    {
        int count = 0;
        for (int i = 0; i < targets.Length; i++)
        {
            if (targets[i] == ignoreIndex) continue;
            if ((uint)targets[i] >= (uint)v)
                throw new ArgumentException($"{op}: target {targets[i]} at row {i} is outside [0, {v}) and is not the ignore index {ignoreIndex}.", nameof(targets));
            count++;
        }
        return count;
    }

    /// <summary>log Σ exp(row), with the row's maximum subtracted first: two vectorised passes.</summary>
    private static float LogSumExp(ReadOnlySpan<float> row)
    {
        float max = TensorPrimitives.Max(row);
        return max + MathF.Log(Kernels.Cpu.VectorMath.SumExp(row, max));
    }
}
