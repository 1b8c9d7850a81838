using System.Numerics.Tensors;
using Spdf.Tensors.Autograd;

namespace Spdf.Tensors;

public partial class Tensor
{
    /// <summary>Sum of all elements as a scalar tensor (accumulated in double).</summary>
    public Tensor Sum()
    {
        double acc = 0;
        foreach (float v in Storage) acc += v;
        var inShape = Shape;
        return AutogradEngine.Record(Scalar((float)acc), "Sum", [this], g =>
        {
            var d = GradientPool.Rent(inShape.Numel, clear: false);
            Array.Fill(d, g.Storage[0]);
            return [new Tensor(d, inShape)];
        });
    }

    /// <summary>Mean of all elements as a scalar tensor.</summary>
    /// <exception cref="InvalidOperationException">The tensor is empty.</exception>
    public Tensor Mean()
    {
        if (Numel == 0) throw new InvalidOperationException($"Mean of an empty tensor of shape {Shape} is undefined.");
        return Sum().MulScalar(1f / Numel);
    }

    private (int outer, int len, int inner, int[] outDims) ReduceGeometry(int dim, bool keepDim)
    {
        int d = Shape.NormalizeDim(dim);
        var dims = Shape.ToArray().ToList();
        if (keepDim) dims[d] = 1; else dims.RemoveAt(d);
        return (Shape.Product(0, d), Shape[d], Shape.Product(d + 1, Rank), dims.ToArray());
    }

    /// <summary>Sum over dimension <paramref name="dim"/> (<c>torch.sum(x, dim, keepdim)</c>).</summary>
    public Tensor Sum(int dim, bool keepDim = false)
    {
        var (outer, len, inner, outDims) = ReduceGeometry(dim, keepDim);
        var res = GradientPool.Rent(outer * inner, clear: true);
        for (int o = 0; o < outer; o++)
            for (int l = 0; l < len; l++)
            {
                var dst = res.AsSpan(o * inner, inner);
                TensorPrimitives.Add(dst, Storage.AsSpan((o * len + l) * inner, inner), dst);
            }
        var inShape = Shape;
        return AutogradEngine.Record(new Tensor(res, new Shape(outDims)), "SumDim", [this], g =>
        {
            var dx = GradientPool.Rent(inShape.Numel, clear: true);
            for (int o = 0; o < outer; o++)
                for (int l = 0; l < len; l++)
                    g.Storage.AsSpan(o * inner, inner).CopyTo(dx.AsSpan((o * len + l) * inner));
            return [new Tensor(dx, inShape)];
        });
    }

    /// <summary>Mean over dimension <paramref name="dim"/>.</summary>
    public Tensor Mean(int dim, bool keepDim = false)
    {
        int len = Shape[dim];
        if (len == 0) throw new InvalidOperationException($"Mean over empty dimension {dim} of shape {Shape} is undefined.");
        return Sum(dim, keepDim).MulScalar(1f / len);
    }

    /// <summary>Maximum over dimension <paramref name="dim"/> with the index of the first maximum
    /// (<c>torch.max(x, dim)</c>); the gradient flows to that index.</summary>
    /// <exception cref="InvalidOperationException">The dimension is empty.</exception>
    public (Tensor Values, IntTensor Indices) Max(int dim, bool keepDim = false)
    {
        var (outer, len, inner, outDims) = ReduceGeometry(dim, keepDim);
        if (len == 0) throw new InvalidOperationException($"Max over empty dimension {dim} of shape {Shape} is undefined.");
        var vals = GradientPool.Rent(outer * inner, clear: true);
        var idx = new int[outer * inner];
        for (int o = 0; o < outer; o++)
            for (int i = 0; i < inner; i++)
            {
                int best = 0; float bv = Storage[o * len * inner + i];
                for (int l = 1; l < len; l++)
                {
                    float v = Storage[(o * len + l) * inner + i];
                    if (v > bv || (float.IsNaN(v) && !float.IsNaN(bv))) { bv = v; best = l; }
                }
                vals[o * inner + i] = bv; idx[o * inner + i] = best;
            }
        var inShape = Shape;
        var values = AutogradEngine.Record(new Tensor(vals, new Shape(outDims)), "MaxDim", [this], g =>
        {
            var dx = GradientPool.Rent(inShape.Numel, clear: true);
            for (int o = 0; o < outer; o++)
                for (int i = 0; i < inner; i++)
                    dx[(o * len + idx[o * inner + i]) * inner + i] = g.Storage[o * inner + i];
            return [new Tensor(dx, inShape)];
        });
        return (values, new IntTensor(idx, new Shape(outDims)));
    }
}
