using System.Numerics.Tensors;

namespace Spdf.Sparsity.Kernels;

/// <summary>
/// A sparse linear layer's three products over kept weights only, on row-major spans, for every engine binding:
/// the forward <c>Y = X·Wᵀ + b</c> (a sparse-dense product, or a sparse matrix-vector product for one token), the input
/// gradient <c>dX = dY·W</c> (the same product over Wᵀ) and the weight gradient at kept positions only
/// (<c>dW[e] = Σ_t dY[t, r]·X[t, c]</c>, a sampled dense-dense product), with the bias gradient on the way.
/// X is <c>[n, in]</c>, W <c>[out, in]</c> in CSR, Y and dY <c>[n, out]</c>. Temporaries come from the pool of aligned
/// buffers (<see cref="AlignedBuffer"/>): token-blocked transposes of X and dY that each kernel walks.
/// </summary>
public static class SparseLinearKernels
{
    /// <summary><c>y = x·Wᵀ + b</c> for <paramref name="n"/> rows of <paramref name="x"/>.</summary>
    /// <exception cref="ArgumentException">A span does not fit the shapes.</exception>
    public static void Forward(CsrMatrix w, ReadOnlySpan<float> x, Span<float> y, int n, ReadOnlySpan<float> bias = default)
    {
        ArgumentNullException.ThrowIfNull(w);
        int k = w.Cols, m = w.Rows;
        Check(x.Length, (long)n * k, "x");
        Check(y.Length, (long)n * m, "y");
        if (!bias.IsEmpty) Check(bias.Length, m, "bias");
        if (n == 0) return;
        if (n == 1)
        {
            SparseKernels.SpMV(w, x, y); // decode: one token
            if (!bias.IsEmpty) TensorPrimitives.Add(y, bias, y);
            return;
        }
        // Xᵀ in token blocks; each block is transposed in just before it is used and each block of Yᵀ out as soon as it
        // is done (SpMMFused). Xᵀ is not kept for backward: transposing it again there costs ~1% of a step and saves a
        // copy of every sparse layer's input.
        using var xt = AlignedBuffer.Rent(SparseKernels.BlockedLength(k, n));
        using var yt = AlignedBuffer.Rent(SparseKernels.BlockedLength(m, n));
        SparseKernels.SpMMFused(w, default, x, xt.Span, yt.Span, y, n, bias);
    }

    /// <summary>
    /// The backward pass of <see cref="Forward"/>: <paramref name="dx"/> (skipped when empty) over <paramref name="wT"/>,
    /// the structure of Wᵀ (<see cref="CsrMatrix.TransposeStructure(out int[], int)"/>) with its values, or with
    /// <paramref name="wTPaddedValues"/> in its padded slot order when not empty; <paramref name="dwValues"/> (one per kept
    /// weight, in W's entry order; skipped when empty) and <paramref name="dBias"/> (<c>[out]</c>, skipped when empty).
    /// </summary>
    /// <exception cref="ArgumentException">A span does not fit the shapes, or dX is asked for without Wᵀ.</exception>
    public static void Backward(CsrMatrix w, CsrMatrix? wT, ReadOnlySpan<float> wTPaddedValues, ReadOnlySpan<float> dy, ReadOnlySpan<float> x, int n,
        Span<float> dx, Span<float> dwValues, Span<float> dBias)
    {
        ArgumentNullException.ThrowIfNull(w);
        int k = w.Cols, m = w.Rows;
        Check(dy.Length, (long)n * m, "dy");
        if (!dx.IsEmpty)
        {
            if (wT is null) throw new ArgumentException("The input gradient needs Wᵀ in CSR.", nameof(wT));
            Check(dx.Length, (long)n * k, "dx");
        }
        if (!dwValues.IsEmpty) { Check(dwValues.Length, w.Nnz, "dwValues"); Check(x.Length, (long)n * k, "x"); }
        if (!dBias.IsEmpty) Check(dBias.Length, m, "dBias");
        if (n == 0)
        {
            dx.Clear(); dwValues.Clear(); dBias.Clear();
            return;
        }
        if (!dwValues.IsEmpty && SparseKernels.SddmmSplitsTokens(w, n))
        {
            // Small weights: both gradients in one pass over token ranges, each transposing its own blocks from the rows.
            SparseKernels.BackwardFromRows(w, wT, wTPaddedValues, dy, x, n, dx, dwValues, dBias);
            return;
        }
        using var dyt = AlignedBuffer.Rent(SparseKernels.BlockedLength(m, n)); // dYᵀ in token blocks
        if (!dx.IsEmpty)
        {
            // dXᵀ = Wᵀ·dYᵀ over kept weights; dYᵀ's blocks are filled on the way (the SDDMM and the bias use them next).
            using var dxt = AlignedBuffer.Rent(SparseKernels.BlockedLength(k, n));
            SparseKernels.SpMMFused(wT!, wTPaddedValues, dy, dyt.Span, dxt.Span, dx, n);
        }
        else BlockTranspose.ToBlocks(dy, n, m, SparseKernels.TokenBlock, dyt.Span, SparseKernels.BlockStride(m));
        if (!dwValues.IsEmpty)
        {
            using var xt = AlignedBuffer.Rent(SparseKernels.BlockedLength(k, n)); // Xᵀ again
            BlockTranspose.ToBlocks(x, n, k, SparseKernels.TokenBlock, xt.Span, SparseKernels.BlockStride(k));
            SparseKernels.Sddmm(w, dyt.Span, xt.Span, dwValues, n, dBias); // the bias gradient on the way
        }
        else if (!dBias.IsEmpty) SparseKernels.RowSums(dyt.Span, m, n, dBias);
    }

    private static void Check(long actual, long expected, string name)
    {
        if (actual != expected) throw new ArgumentException($"{name} has {actual} elements; the layer's shapes need {expected}.", name);
    }
}
