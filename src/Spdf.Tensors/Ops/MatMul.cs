using System.Numerics.Tensors;
using Spdf.Tensors.Autograd;
using Spdf.Tensors.Kernels.Cpu;

namespace Spdf.Tensors;

public partial class Tensor
{
    /// <summary>Matrix product <c>this · other</c> (see <see cref="MatMul(Tensor, Tensor, bool, bool)"/>).</summary>
    public Tensor MatMul(Tensor other) => MatMul(this, other, false, false);

    /// <summary>
    /// Batched matrix product <c>op(a)·op(b)</c> (<c>torch.matmul</c>), where <c>op</c> transposes the last two
    /// dimensions when asked. <c>a</c> is <c>[..., M, K]</c> and <c>b</c> is <c>[K, N]</c> (shared by every batch)
    /// or <c>[..., K, N]</c> with the same batch dimensions; the result is <c>[..., M, N]</c>.
    /// </summary>
    /// <exception cref="ArgumentException">A rank is below 2, the inner dimensions differ, or the batch dimensions differ.</exception>
    public static Tensor MatMul(Tensor a, Tensor b, bool transposeA, bool transposeB)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        if (a.Rank < 2 || b.Rank < 2)
            throw new ArgumentException($"MatMul needs operands of rank ≥ 2; got shapes {a.Shape} and {b.Shape}.");
        int m = a.Shape[transposeA ? -1 : -2], ka = a.Shape[transposeA ? -2 : -1];
        int kb = b.Shape[transposeB ? -1 : -2], n = b.Shape[transposeB ? -2 : -1];
        if (ka != kb)
            throw new ArgumentException($"MatMul: inner dimensions differ: {a.Shape}{(transposeA ? "ᵀ" : "")} · {b.Shape}{(transposeB ? "ᵀ" : "")} ({ka} vs {kb}).");
        int k = ka;
        var batchDims = a.Shape.Dims[..^2].ToArray();
        int batch = a.Shape.Product(0, a.Rank - 2);
        bool shared = b.Rank == 2;
        if (!shared && !b.Shape.Dims[..^2].SequenceEqual(batchDims))
            throw new ArgumentException($"MatMul: batch dimensions differ: {a.Shape} vs {b.Shape}; expected equal batch dimensions or a 2-D right operand.");
        var outShape = new Shape([.. batchDims, m, n]);
        var c = GradientPool.Rent(outShape.Numel, clear: false); // every element is written (k = 0 clears)
        int sa = m * k, sb = shared ? 0 : k * n, sc = m * n;
        if (shared && !transposeA)
            Gemm.MatMul(a.Storage, false, b.Storage, transposeB, c, batch * m, n, k);
        else
            for (int i = 0; i < batch; i++)
                Gemm.MatMul(a.Storage.AsSpan(i * sa, sa), transposeA, b.Storage.AsSpan(i * sb, k * n), transposeB, c.AsSpan(i * sc, sc), m, n, k);

        return AutogradEngine.Record(new Tensor(c, outShape), "MatMul", [a, b], g =>
        {
            Tensor? ga = null, gb = null;
            var dc = g.Storage;
            if (a.RequiresGrad)
            {
                var da = GradientPool.Rent(a.Numel, clear: false);
                if (shared && !transposeA) Gemm.MatMul(dc, false, b.Storage, !transposeB, da, batch * m, k, n);
                else
                    for (int i = 0; i < batch; i++)
                    {
                        var dci = dc.AsSpan(i * sc, sc); var bi = b.Storage.AsSpan(i * sb, k * n); var dai = da.AsSpan(i * sa, sa);
                        if (!transposeA) Gemm.MatMul(dci, false, bi, !transposeB, dai, m, k, n);
                        else Gemm.MatMul(bi, transposeB, dci, true, dai, k, m, n);
                    }
                ga = new Tensor(da, a.Shape);
            }
            if (b.RequiresGrad)
            {
                var db = GradientPool.Rent(b.Numel, clear: false);
                if (shared && !transposeA)
                {
                    if (!transposeB) Gemm.MatMul(a.Storage, true, dc, false, db, k, n, batch * m);
                    else Gemm.MatMul(dc, true, a.Storage, false, db, n, k, batch * m);
                }
                else
                    for (int i = 0; i < batch; i++)
                    {
                        var dci = dc.AsSpan(i * sc, sc); var ai = a.Storage.AsSpan(i * sa, sa);
                        var dbi = db.AsSpan(i * sb, k * n);
                        bool acc = shared && i > 0;
                        if (!transposeB) Gemm.MatMul(ai, !transposeA, dci, false, dbi, k, n, m, acc);
                        else Gemm.MatMul(dci, true, ai, transposeA, dbi, n, k, m, acc);
                    }
                gb = new Tensor(db, b.Shape);
            }
            return [ga, gb];
        });
    }
}

public static partial class Functional
{
    /// <summary>
    /// Affine map <c>y = x·Wᵀ + b</c> (<c>torch.nn.functional.linear</c>): x <c>[..., in]</c>, weight <c>[out, in]</c>,
    /// bias <c>[out]</c> or null; y <c>[..., out]</c>. One GEMM per pass: forward X·Wᵀ, input gradient dY·W,
    /// weight gradient dYᵀ·X.
    /// </summary>
    /// <exception cref="ArgumentException">The last dimension of x differs from the weight's input size, or the bias has the wrong shape.</exception>
    public static Tensor Linear(Tensor input, Tensor weight, Tensor? bias = null)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(weight);
        if (weight.Rank != 2) throw new ArgumentException($"Linear: weight must be 2-D [out, in]; got {weight.Shape}.", nameof(weight));
        if (input.Rank < 1) throw new ArgumentException($"Linear: input must have rank ≥ 1; got {input.Shape}.", nameof(input));
        int outF = weight.Shape[0], inF = weight.Shape[1];
        if (input.Shape[-1] != inF)
            throw new ArgumentException($"Linear: input's last dimension {input.Shape[-1]} (shape {input.Shape}) differs from the weight's input size {inF} (weight {weight.Shape}).", nameof(input));
        if (bias is not null && (bias.Rank != 1 || bias.Shape[0] != outF))
            throw new ArgumentException($"Linear: bias must have shape [{outF}]; got {bias.Shape}.", nameof(bias));
        int rows = input.Shape.Product(0, input.Rank - 1);
        var outDims = input.Shape.ToArray(); outDims[^1] = outF;
        // Every element of y is written: skip zeroing. With a bias, C starts as the broadcast bias and the GEMM accumulates.
        var y = GradientPool.Rent(rows * outF, clear: false);
        if (bias is not null)
            for (int r = 0; r < rows; r++) bias.Storage.AsSpan().CopyTo(y.AsSpan(r * outF, outF));
        Gemm.MatMul(input.Storage, false, weight.Storage, true, y, rows, outF, inF, accumulate: bias is not null);
        Tensor[] inputs = bias is null ? [input, weight] : [input, weight, bias];
        return AutogradEngine.Record(new Tensor(y, new Shape(outDims)), "Linear", inputs, g => LinearBackward(g, input, weight, bias, rows, inF, outF));
    }

    internal static Tensor?[] LinearBackward(Tensor g, Tensor input, Tensor weight, Tensor? bias, int rows, int inF, int outF)
    {
        Tensor? dx = null, dw = null, db = null;
        if (input.RequiresGrad)
        {
            var d = GradientPool.Rent(input.Numel, clear: false);
            Gemm.MatMul(g.Storage, false, weight.Storage, false, d, rows, inF, outF); // dX = dY·W
            dx = new Tensor(d, input.Shape);
        }
        if (weight.RequiresGrad)
        {
            var d = GradientPool.Rent(weight.Numel, clear: false);
            Gemm.MatMul(g.Storage, true, input.Storage, false, d, outF, inF, rows); // dW = dYᵀ·X
            dw = new Tensor(d, weight.Shape);
        }
        if (bias is not null && bias.RequiresGrad) db = new Tensor(SumRows(g.Storage, rows, outF), bias.Shape);
        return bias is null ? [dx, dw] : [dx, dw, db];
    }

    /// <summary><c>result[j] = Σ_r x[r·cols + j]</c>, in parallel over column chunks (each summed in row order, so deterministic).</summary>
    internal static float[] SumRows(float[] x, int rows, int cols)
    {
        var result = GradientPool.Rent(cols, clear: true);
        const int chunk = 256;
        int chunks = (cols + chunk - 1) / chunk;
        void Sum(int c)
        {
            int j0 = c * chunk, len = Math.Min(chunk, cols - j0);
            var dst = result.AsSpan(j0, len);
            for (int r = 0; r < rows; r++) TensorPrimitives.Add(dst, x.AsSpan(r * cols + j0, len), dst);
        }
        if ((long)rows * cols < 1 << 16 || chunks == 1) for (int c = 0; c < chunks; c++) Sum(c);
        else Parallel.For(0, chunks, Sum);
        return result;
    }
}
