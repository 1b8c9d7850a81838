using System.Numerics.Tensors;
using Spdf.Tensors.Autograd;

namespace Spdf.Tensors;

public static partial class Functional
{
    /// <summary>
    /// Layer normalisation over the last dimension (<c>torch.nn.functional.layer_norm</c>):
    /// <c>y = (x − mean) / √(var + eps) · weight + bias</c> with the biased variance. x <c>[..., C]</c>,
    /// weight and bias <c>[C]</c> or null.
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
        var y = GradientPool.Rent(x.Numel, clear: true);
        var mean = new float[rows];
        var rstd = new float[rows];
        var xs = x.Storage;
        for (int r = 0; r < rows; r++)
        {
            var xr = xs.AsSpan(r * c, c);
            float m = TensorPrimitives.Sum(xr) / c;
            var yr = y.AsSpan(r * c, c);
            TensorPrimitives.Subtract(xr, m, yr);
            float v = TensorPrimitives.Dot(yr, yr) / c;
            float rs = 1f / MathF.Sqrt(v + eps);
            TensorPrimitives.Multiply(yr, rs, yr);
            if (weight is not null) TensorPrimitives.Multiply(yr, weight.Storage, yr);
            if (bias is not null) TensorPrimitives.Add(yr, bias.Storage, yr);
            mean[r] = m; rstd[r] = rs;
        }
        Tensor[] inputs = (weight, bias) switch
        {
            (null, null) => [x],
            (not null, null) => [x, weight],
            (null, not null) => [x, bias],
            _ => [x, weight!, bias!],
        };
        return AutogradEngine.Record(new Tensor(y, x.Shape), "LayerNorm", inputs, g =>
        {
            var dx = x.RequiresGrad ? GradientPool.Rent(x.Numel, clear: true) : null;
            var dw = weight is { RequiresGrad: true } ? new float[c] : null;
            var db = bias is { RequiresGrad: true } ? new float[c] : null;
            var xhat = GradientPool.Rent(c, clear: true);
            var dxhat = GradientPool.Rent(c, clear: true);
            for (int r = 0; r < rows; r++)
            {
                var gr = g.Storage.AsSpan(r * c, c);
                TensorPrimitives.Subtract(xs.AsSpan(r * c, c), mean[r], xhat);
                TensorPrimitives.Multiply(xhat, rstd[r], xhat);
                if (dw is not null) TensorPrimitives.MultiplyAdd(gr, xhat, dw, dw);
                if (db is not null) TensorPrimitives.Add(db, gr, db);
                if (dx is null) continue;
                if (weight is not null) TensorPrimitives.Multiply(gr, weight.Storage, dxhat); else gr.CopyTo(dxhat);
                // dx = rstd · (dxhat − mean(dxhat) − xhat · mean(dxhat ⊙ xhat))
                float m1 = TensorPrimitives.Sum(dxhat) / c;
                float m2 = TensorPrimitives.Dot(dxhat, xhat) / c;
                var dxr = dx.AsSpan(r * c, c);
                TensorPrimitives.MultiplyAdd(xhat, -m2, dxhat, dxr);
                TensorPrimitives.Subtract(dxr, m1, dxr);
                TensorPrimitives.Multiply(dxr, rstd[r], dxr);
            }
            var grads = new List<Tensor?> { dx is null ? null : new Tensor(dx, x.Shape) };
            if (weight is not null) grads.Add(dw is null ? null : new Tensor(dw, weight.Shape));
            if (bias is not null) grads.Add(db is null ? null : new Tensor(db, bias.Shape));
            return grads.ToArray();
        });
    }
}
