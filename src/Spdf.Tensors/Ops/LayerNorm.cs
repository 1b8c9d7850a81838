using System.Numerics.Tensors;
using Spdf.Tensors.Autograd;

namespace Spdf.Tensors;

public static partial class Functional
{
    /// <summary>
    /// Layer normalisation over the last dimension (<c>torch.nn.functional.layer_norm</c>):
    /// <c>y = (x − mean) / √(var + eps) · weight + bias</c> with the biased variance. x <c>[..., C]</c>,
    /// weight and bias <c>[C]</c> or null. Rows run in parallel chunks.
    /// </summary>
    /// <exception cref="ArgumentException">weight or bias is not <c>[C]</c>.</exception>
    public static Tensor LayerNorm(Tensor x, Tensor? weight, Tensor? bias, float eps = 1e-5f)
    {
        ArgumentNullException.ThrowIfNull(x);
        int c = x.Shape[-1];
        if (weight is not null && (weight.Rank != 1 || weight.Shape[0] != c))
            throw new ArgumentException($"LayerNorm: weight must have shape [{c}] to match input {x.Shape}; got {weight.Shape}.", nameof(weight));
        if (bias is not null && (bias.Rank != 1 || bias.Shape[0] != c))
            throw new ArgumentException($"LayerNorm: bias must have shape [{c}] to match input {x.Shape}; got {bias.Shape}.", nameof(bias));
        int rows = x.Shape.Product(0, x.Rank - 1);
        var y = GradientPool.Rent(x.Numel, clear: false); // every element is written
        var mean = new float[rows];
        var rstd = new float[rows];
        var xs = x.Storage;
        // Rows go in fixed chunks of about 16K elements, in parallel when there are several; the backward sums the
        // chunks' weight and bias gradients in chunk order, so results do not depend on the thread count.
        int chunkRows = Math.Max(1, (1 << 14) / Math.Max(c, 1)), chunks = Kernels.Cpu.ParallelChunks.Count(rows, chunkRows);
        Kernels.Cpu.ParallelChunks.For(rows, chunkRows, (_, r0, r1) =>
        {
            for (int r = r0; r < r1; r++)
                (mean[r], rstd[r]) = Kernels.Cpu.Normalization.LayerNormRow(xs.AsSpan(r * c, c), weight?.Storage, bias?.Storage, eps, y.AsSpan(r * c, c));
        });
        Tensor[] inputs = (weight, bias) switch
        {
            (null, null) => [x],
            (not null, null) => [x, weight],
            (null, not null) => [x, bias],
            _ => [x, weight!, bias!],
        };
        return AutogradEngine.Record(new Tensor(y, x.Shape), "LayerNorm", inputs, g =>
        {
            var dx = x.RequiresGrad ? GradientPool.Rent(x.Numel, clear: false) : null; // every element is written
            var dw = weight is { RequiresGrad: true } ? new float[c] : null;
            var db = bias is { RequiresGrad: true } ? new float[c] : null;
            var dwParts = dw is null ? null : new float[chunks * c]; // one partial sum per chunk
            var dbParts = db is null ? null : new float[chunks * c];
            var gs = g.Storage;
            Kernels.Cpu.ParallelChunks.For(rows, chunkRows, (ch, r0, r1) =>
            {
                var dwp = dwParts is null ? default : dwParts.AsSpan(ch * c, c);
                var dbp = dbParts is null ? default : dbParts.AsSpan(ch * c, c);
                for (int r = r0; r < r1; r++)
                    Kernels.Cpu.Normalization.LayerNormBackwardRow(xs.AsSpan(r * c, c), gs.AsSpan(r * c, c), weight?.Storage, mean[r], rstd[r],
                        dx is null ? default : dx.AsSpan(r * c, c), dwp, dbp);
            });
            for (int ch = 0; ch < chunks; ch++)
            {
                if (dw is not null) TensorPrimitives.Add(dw, dwParts.AsSpan(ch * c, c), dw);
                if (db is not null) TensorPrimitives.Add(db, dbParts.AsSpan(ch * c, c), db);
            }
            var grads = new List<Tensor?> { dx is null ? null : new Tensor(dx, x.Shape) };
            if (weight is not null) grads.Add(dw is null ? null : new Tensor(dw, weight.Shape));
            if (bias is not null) grads.Add(db is null ? null : new Tensor(db, bias.Shape));
            return grads.ToArray();
        });
    }
}
