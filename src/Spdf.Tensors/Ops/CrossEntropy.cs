using System.Numerics.Tensors;
using Spdf.Tensors.Autograd;

namespace Spdf.Tensors;

public static partial class Functional
{
    /// <summary>
    /// Mean cross-entropy of <paramref name="logits"/> <c>[N, V]</c> (or <c>[..., V]</c>, flattened) against integer
    /// <paramref name="targets"/> <c>[N]</c> (<c>torch.nn.functional.cross_entropy</c>, reduction "mean"). Targets equal to
    /// <paramref name="ignoreIndex"/> contribute nothing and are not counted; if every target is ignored the loss is 0.
    /// Fused log-softmax and negative log-likelihood: the backward is <c>(softmax − onehot) / count</c>.
    /// </summary>
    /// <exception cref="ArgumentException">Row counts differ, or a target is outside <c>[0, V)</c> and not the ignore index.</exception>
    public static Tensor CrossEntropy(Tensor logits, IntTensor targets, int ignoreIndex = -100)
    {
        ArgumentNullException.ThrowIfNull(logits);
        ArgumentNullException.ThrowIfNull(targets);
        if (logits.Rank < 1) throw new ArgumentException($"CrossEntropy: logits must have rank ≥ 1; got {logits.Shape}.", nameof(logits));
        int v = logits.Shape[-1];
        int n = logits.Shape.Product(0, logits.Rank - 1);
        if (targets.Numel != n)
            throw new ArgumentException($"CrossEntropy: {n} rows of logits (shape {logits.Shape}) but {targets.Numel} targets (shape {targets.Shape}).", nameof(targets));
        var t = targets.Data;
        var lse = new float[n];
        double total = 0; int count = 0;
        for (int i = 0; i < n; i++)
        {
            if (t[i] == ignoreIndex) continue;
            if ((uint)t[i] >= (uint)v)
                throw new ArgumentException($"CrossEntropy: target {t[i]} at row {i} is outside [0, {v}) and is not the ignore index {ignoreIndex}.", nameof(targets));
            var row = logits.Storage.AsSpan(i * v, v);
            float max = TensorPrimitives.Max(row);
            double s = 0;
            foreach (float z in row) s += Math.Exp(z - max);
            lse[i] = max + (float)Math.Log(s);
            total += lse[i] - row[t[i]];
            count++;
        }
        float loss = count == 0 ? 0f : (float)(total / count);
        return AutogradEngine.Record(Tensor.Scalar(loss), "CrossEntropy", [logits], g =>
        {
            var dl = new float[logits.Numel];
            if (count == 0) return [new Tensor(dl, logits.Shape)];
            float scale = g.Storage[0] / count;
            for (int i = 0; i < n; i++)
            {
                if (t[i] == ignoreIndex) continue;
                var row = logits.Storage.AsSpan(i * v, v);
                var drow = dl.AsSpan(i * v, v);
                TensorPrimitives.Subtract(row, lse[i], drow);
                TensorPrimitives.Exp(drow, drow);
                drow[t[i]] -= 1f;
                TensorPrimitives.Multiply(drow, scale, drow);
            }
            return [new Tensor(dl, logits.Shape)];
        });
    }
}
