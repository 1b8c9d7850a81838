using System.Numerics.Tensors;
using Spdf.Tensors.Autograd;

namespace Spdf.Tensors;

/// <summary>Neural-network functions with forward and backward, after <c>torch.nn.functional</c>.</summary>
public static partial class Functional
{
    /// <summary>Softmax over dimension <paramref name="dim"/> (<c>torch.softmax</c>), max-subtracted for stability.</summary>
    public static Tensor Softmax(Tensor x, int dim = -1) => SoftmaxImpl(x, dim, log: false);

    /// <summary>Log-softmax over dimension <paramref name="dim"/> (<c>torch.log_softmax</c>).</summary>
    public static Tensor LogSoftmax(Tensor x, int dim = -1) => SoftmaxImpl(x, dim, log: true);

    private static Tensor SoftmaxImpl(Tensor x, int dim, bool log)
    {
        ArgumentNullException.ThrowIfNull(x);
        int d = x.Shape.NormalizeDim(dim);
        int outer = x.Shape.Product(0, d), len = x.Shape[d], inner = x.Shape.Product(d + 1, x.Rank);
        var y = GradientPool.Rent(x.Numel, clear: true);
        var buf = new float[len];
        for (int o = 0; o < outer; o++)
            for (int i = 0; i < inner; i++)
            {
                int baseIdx = o * len * inner + i;
                Gather(x.Storage, baseIdx, inner, buf);
                if (log)
                {
                    float max = TensorPrimitives.Max(buf);
                    TensorPrimitives.Subtract(buf, max, buf);
                    float lse = MathF.Log(Kernels.Cpu.VectorMath.SumExp(buf, 0f));
                    TensorPrimitives.Subtract(buf, lse, buf);
                }
                else TensorPrimitives.SoftMax(buf, buf);
                Scatter(buf, y, baseIdx, inner);
            }
        return AutogradEngine.Record(new Tensor(y, x.Shape), log ? "LogSoftmax" : "Softmax", [x], g =>
        {
            var dx = GradientPool.Rent(x.Numel, clear: true);
            var gy = GradientPool.Rent(len, clear: true);
            for (int o = 0; o < outer; o++)
                for (int i = 0; i < inner; i++)
                {
                    int baseIdx = o * len * inner + i;
                    Gather(y, baseIdx, inner, buf);
                    Gather(g.Storage, baseIdx, inner, gy);
                    if (log)
                    {
                        // dx = g - softmax · Σg
                        float sumG = TensorPrimitives.Sum(gy);
                        TensorPrimitives.Exp(buf, buf);
                        TensorPrimitives.MultiplyAdd(buf, -sumG, gy, buf);
                    }
                    else
                    {
                        // dx = y ⊙ (g - Σ y·g)
                        float dot = TensorPrimitives.Dot(buf, gy);
                        TensorPrimitives.Subtract(gy, dot, gy);
                        TensorPrimitives.Multiply(buf, gy, buf);
                    }
                    Scatter(buf, dx, baseIdx, inner);
                }
            return [new Tensor(dx, x.Shape)];
        });
    }

    private static void Gather(float[] src, int start, int stride, Span<float> dst)
    {
        if (stride == 1) { src.AsSpan(start, dst.Length).CopyTo(dst); return; }
        for (int l = 0; l < dst.Length; l++) dst[l] = src[start + l * stride];
    }

    private static void Scatter(ReadOnlySpan<float> src, float[] dst, int start, int stride)
    {
        if (stride == 1) { src.CopyTo(dst.AsSpan(start)); return; }
        for (int l = 0; l < src.Length; l++) dst[start + l * stride] = src[l];
    }
}
