using System.Numerics.Tensors;
using System.Runtime.Intrinsics;

namespace Spdf.Sparsity.Kernels;

/// <summary>
/// A transformer MLP of two sparse layers with an elementwise activation between them, <c>y = W₂·act(W₁·x + b₁) + b₂</c>,
/// kept in token blocks from end to end: per block of <see cref="SparseKernels.TokenBlock"/> tokens, x is transposed in,
/// both products and the activation run while the block is in cache, and only y is transposed out. Two sparse layers
/// called one after the other instead move the 4C-wide hidden activation to rows and back in each direction, and the
/// activation makes passes of its own over it. The backward pass does the same per range of token blocks, with the
/// weight gradients summed per range (as <see cref="SparseKernels.SddmmFromRows"/>); it recomputes the hidden
/// activation from the saved pre-activation, and the activation's derivative with it, from one evaluation. (Saving the
/// activation and its derivative instead measured slower: twice the bytes to and from memory cost more than the
/// evaluation.) Glossary: N tokens, C = the input and output width, H = the hidden width.
/// </summary>
/// <remarks>The activation comes as function pointers, so that the engine binding passes its engine's own (the
/// results then equal the unfused layers' up to float rounding).</remarks>
internal static unsafe class SparseMlpKernels
{
    /// <summary>Whether the fused kernels apply: AVX-512, and both layers' weight gradients small enough to be summed
    /// per token range (<see cref="SparseKernels.SddmmSplitsTokens"/>), which needs more than one token block.</summary>
    public static bool Supports(CsrMatrix up, CsrMatrix down, int n) =>
        Vector512.IsHardwareAccelerated && SparseKernels.SddmmSplitsTokens(up, n) && SparseKernels.SddmmSplitsTokens(down, n);

    /// <summary>Floats of what a training step's forward pass saves for the backward: the pre-activation, in token
    /// blocks of H features.</summary>
    public static int SavedLength(CsrMatrix up, int n) => SparseKernels.BlockedLength(up.Rows, n);

    /// <summary>
    /// The forward pass: <paramref name="yRows"/> <c>(N, C)</c> from <paramref name="xRows"/> <c>(N, C)</c>. When
    /// <paramref name="saved"/> is not empty (a training step), the pre-activation <c>W₁·x + b₁</c> goes into it in
    /// token blocks (what <see cref="Backward"/> reads).
    /// </summary>
    /// <param name="up">W₁ <c>(H, C)</c>, with its values.</param>
    /// <param name="upBias">b₁ (H), or empty.</param>
    /// <param name="down">W₂ <c>(C, H)</c>, with its values.</param>
    /// <param name="downBias">b₂ (C), or empty.</param>
    /// <param name="activation">(input, output, count).</param>
    /// <param name="xRows">The input, <c>(N, C)</c>.</param>
    /// <param name="n">Tokens.</param>
    /// <param name="saved">Room for <see cref="SavedLength"/> floats, or empty when no backward pass will run.</param>
    /// <param name="yRows">The output, <c>(N, C)</c> (overwritten).</param>
    /// <exception cref="ArgumentException">The layers do not chain, a span does not fit, or <see cref="Supports"/> is false.</exception>
    public static void Forward(CsrMatrix up, ReadOnlySpan<float> upBias, CsrMatrix down, ReadOnlySpan<float> downBias,
        delegate*<float*, float*, int, void> activation, ReadOnlySpan<float> xRows, int n, Span<float> saved, Span<float> yRows)
    {
        Check(up, upBias, down, downBias, n);
        int c = up.Cols, h = up.Rows;
        bool save = !saved.IsEmpty;
        if (xRows.Length < (long)n * c || yRows.Length < (long)n * c || (save && saved.Length < SavedLength(up, n)))
            throw new ArgumentException($"Sparse MLP: {n} tokens of width {c} need x and y of {(long)n * c} and (to save for the backward pass) {SavedLength(up, n)} floats; got {xRows.Length}, {yRows.Length} and {saved.Length}.");
        var pvUp = SparseKernels.PaddedValues(up, default, "", "", out var gatheredUp);
        var pvDown = SparseKernels.PaddedValues(down, default, "", "", out var gatheredDown);
        try
        {
            fixed (float* px = xRows, py = yRows, ps = saved, pb1 = upBias, pb2 = downBias, pv1 = pvUp, pv2 = pvDown)
            fixed (ushort* pc1 = up.Padded.Columns, pc2 = down.Padded.Columns)
            fixed (int* pg1 = up.Padded.GroupPointers, pg2 = down.Padded.GroupPointers)
            {
                nint ax = (nint)px, ay = (nint)py, asv = (nint)ps, ab1 = (nint)pb1, ab2 = (nint)pb2, av1 = (nint)pv1, av2 = (nint)pv2,
                    ac1 = (nint)pc1, ac2 = (nint)pc2, ag1 = (nint)pg1, ag2 = (nint)pg2;
                int blocks = (n + SparseKernels.TokenBlock - 1) / SparseKernels.TokenBlock;
                int strideC = SparseKernels.BlockStride(c), strideH = SparseKernels.BlockStride(h);
                void Block(int b)
                {
                    using var xs = AlignedBuffer.Rent(strideC); // X's block, then Y's (the first product has read X)
                    using var hs = save ? null : AlignedBuffer.Rent(strideH);
                    using var gs = AlignedBuffer.Rent(strideH);
                    fixed (float* xb = xs.Span, hScratch = hs is null ? default : hs.Span, gb = gs.Span)
                    {
                        float* yb = xb;
                        float* hb = save ? (float*)asv + (long)b * strideH : hScratch;
                        BlockTranspose.ToBlock((float*)ax, n, c, SparseKernels.TokenBlock, xb, b);
                        SparseKernels.SpMMPaddedBlock((ulong*)ac1, (float*)av1, (int*)ag1, h, up.Panels, up.PanelWidth, xb, hb, (float*)ab1);
                        activation(hb, gb, h * SparseKernels.TokenBlock);
                        SparseKernels.SpMMPaddedBlock((ulong*)ac2, (float*)av2, (int*)ag2, c, down.Panels, down.PanelWidth, gb, yb, (float*)ab2);
                        BlockTranspose.FromBlock(yb, n, c, SparseKernels.TokenBlock, (float*)ay, b);
                    }
                }
                KernelThreads.For(blocks, Block);
            }
        }
        finally
        {
            gatheredUp?.Dispose();
            gatheredDown?.Dispose();
        }
    }

    /// <summary>
    /// The backward pass from <paramref name="dyRows"/> <c>(N, C)</c>: the input gradient into <paramref name="dxRows"/>
    /// (skipped when empty; needs <paramref name="upT"/>), the kept weights' gradients in each layer's CSR order into
    /// <paramref name="dUp"/> and <paramref name="dDown"/>, and the bias gradients into <paramref name="dUpBias"/> and
    /// <paramref name="dDownBias"/> (each skipped when empty). All are overwritten.
    /// </summary>
    /// <param name="up">W₁ <c>(H, C)</c>: its structure (its values feed the input gradient through <paramref name="upT"/>).</param>
    /// <param name="upT">W₁ᵀ in CSR with its values or with <paramref name="upTPadded"/>, or null when no input gradient is wanted.</param>
    /// <param name="upTPadded">W₁ᵀ's values in its padded slot order, or empty to gather them from its own.</param>
    /// <param name="down">W₂ <c>(C, H)</c>: its structure.</param>
    /// <param name="downT">W₂ᵀ in CSR with its values or with <paramref name="downTPadded"/>.</param>
    /// <param name="downTPadded">W₂ᵀ's values in its padded slot order, or empty to gather them from its own.</param>
    /// <param name="activationWithDerivative">The activation, (input, output, derivative at the input, count): the
    /// hidden activation and the derivative for the gradient through it, from one evaluation.</param>
    /// <param name="xRows">The forward's input, <c>(N, C)</c>.</param>
    /// <param name="saved">The pre-activation <see cref="Forward"/> saved.</param>
    /// <param name="dyRows">The output's gradient, <c>(N, C)</c>.</param>
    /// <param name="n">Tokens.</param>
    /// <param name="dxRows">dX, <c>(N, C)</c>, or empty.</param>
    /// <param name="dUp">W₁'s kept weights' gradient, in its CSR order.</param>
    /// <param name="dUpBias">b₁'s gradient (H), or empty.</param>
    /// <param name="dDown">W₂'s kept weights' gradient, in its CSR order.</param>
    /// <param name="dDownBias">b₂'s gradient (C), or empty.</param>
    /// <exception cref="ArgumentException">The layers do not chain, a span does not fit, or <see cref="Supports"/> is false.</exception>
    public static void Backward(CsrMatrix up, CsrMatrix? upT, ReadOnlySpan<float> upTPadded, CsrMatrix down, CsrMatrix downT, ReadOnlySpan<float> downTPadded,
        delegate*<float*, float*, float*, int, void> activationWithDerivative,
        ReadOnlySpan<float> xRows, ReadOnlySpan<float> saved, ReadOnlySpan<float> dyRows, int n,
        Span<float> dxRows, Span<float> dUp, Span<float> dUpBias, Span<float> dDown, Span<float> dDownBias)
    {
        ArgumentNullException.ThrowIfNull(downT);
        Check(up, default, down, default, n);
        int c = up.Cols, h = up.Rows, nnz1 = up.Nnz, nnz2 = down.Nnz;
        bool withDx = !dxRows.IsEmpty, withB1 = !dUpBias.IsEmpty, withB2 = !dDownBias.IsEmpty;
        if (xRows.Length < (long)n * c || dyRows.Length < (long)n * c || saved.Length < SavedLength(up, n) || (withDx && dxRows.Length < (long)n * c)
            || dUp.Length < nnz1 || dDown.Length < nnz2 || (withB1 && dUpBias.Length < h) || (withB2 && dDownBias.Length < c))
            throw new ArgumentException($"Sparse MLP backward: {n} tokens of width {c} (hidden {h}) need x, dY (and dX) of {(long)n * c}, a saved pre-activation of {SavedLength(up, n)}, {nnz1} and {nnz2} weight gradients and {h} and {c} bias gradients.");
        if (withDx && (upT is null || upT.Rows != c || upT.Cols != h || upT.Nnz != nnz1))
            throw new ArgumentException($"Sparse MLP backward: the input gradient needs W₁ᵀ as a {c}×{h} CSR with {nnz1} entries.", nameof(upT));
        if (downT.Rows != h || downT.Cols != c || downT.Nnz != nnz2)
            throw new ArgumentException($"Sparse MLP backward: W₂ᵀ must be a {h}×{c} CSR with {nnz2} entries; got {downT.Rows}×{downT.Cols} with {downT.Nnz}.", nameof(downT));
        int blocks = (n + SparseKernels.TokenBlock - 1) / SparseKernels.TokenBlock;
        int ranges = SparseKernels.TokenRanges(blocks);
        int part1 = (nnz1 + 15) & ~15, part2 = (nnz2 + 15) & ~15, sums1 = (h + 15) & ~15, sums2 = (c + 15) & ~15;
        int part = part1 + part2 + sums1 + sums2;
        using var parts = AlignedBuffer.Rent(ranges * part);
        AlignedBuffer? gatheredUpT = null;
        var pvUpT = withDx ? SparseKernels.PaddedValues(upT!, upTPadded, "Sparse MLP backward: W₁ᵀ's padded layout", nameof(upTPadded), out gatheredUpT) : default;
        var pvDownT = SparseKernels.PaddedValues(downT, downTPadded, "Sparse MLP backward: W₂ᵀ's padded layout", nameof(downTPadded), out var gatheredDownT);
        try
        {
            fixed (float* px = xRows, psv = saved, pdy = dyRows, pdx = dxRows, pp = parts.Span, pv1 = pvUpT, pv2 = pvDownT)
            fixed (ushort* pc1 = up.Padded.Columns, pc2 = down.Padded.Columns, pc1T = upT is null ? null : upT.Padded.Columns, pc2T = downT.Padded.Columns)
            fixed (int* pg1 = up.Padded.GroupPointers, pg2 = down.Padded.GroupPointers, pr1 = up.RowPointers, pr2 = down.RowPointers,
                   pg1T = upT is null ? null : upT.Padded.GroupPointers, pg2T = downT.Padded.GroupPointers)
            {
                nint ax = (nint)px, asv = (nint)psv, ady = (nint)pdy, adx = (nint)pdx, app = (nint)pp, av1 = (nint)pv1, av2 = (nint)pv2,
                    ac1 = (nint)pc1, ac2 = (nint)pc2, ac1T = (nint)pc1T, ac2T = (nint)pc2T, ag1 = (nint)pg1, ag2 = (nint)pg2,
                    ar1 = (nint)pr1, ar2 = (nint)pr2, ag1T = (nint)pg1T, ag2T = (nint)pg2T;
                int strideC = SparseKernels.BlockStride(c), strideH = SparseKernels.BlockStride(h);
                int tb = SparseKernels.TokenBlock;
                void Range(int r)
                {
                    int b0 = (int)((long)blocks * r / ranges), b1 = (int)((long)blocks * (r + 1) / ranges);
                    float* d1 = (float*)app + (long)r * part, d2 = d1 + part1, s1 = d2 + part2, s2 = s1 + sums1;
                    new Span<float>(d1, part).Clear();
                    using var xs = AlignedBuffer.Rent(strideC); // X's block, then dX's
                    using var dys = AlignedBuffer.Rent(strideC);
                    using var gs = AlignedBuffer.Rent(strideH);
                    using var gds = AlignedBuffer.Rent(strideH);
                    using var dgs = AlignedBuffer.Rent(strideH);
                    fixed (float* xb = xs.Span, dyb = dys.Span, gb = gs.Span, gd = gds.Span, dgb = dgs.Span)
                        for (int b = b0; b < b1; b++)
                        {
                            float* hb = (float*)asv + (long)b * strideH;
                            BlockTranspose.ToBlock((float*)ady, n, c, tb, dyb, b);
                            // The hidden activation and the derivative there, recomputed from the pre-activation.
                            activationWithDerivative(hb, gb, gd, h * tb);
                            // W₂: its weight and bias gradients from dY and the hidden activation, and the hidden gradient.
                            if (withB2) SparseKernels.AddBlockRowSums(dyb, 0, c, s2);
                            for (int p = 0; p < down.Panels; p++)
                                SparseKernels.SddmmPanel((ulong*)ac2, (int*)ag2 + p * (c + 1), (int*)ar2 + p * (c + 1), 0, c, dyb, (byte*)(gb + (long)p * down.PanelWidth * tb), d2);
                            SparseKernels.SpMMPaddedBlock((ulong*)ac2T, (float*)av2, (int*)ag2T, h, downT.Panels, downT.PanelWidth, dyb, dgb, null);
                            // Through the activation: the pre-activation's gradient.
                            TensorPrimitives.Multiply(new ReadOnlySpan<float>(dgb, h * tb), new ReadOnlySpan<float>(gd, h * tb), new Span<float>(dgb, h * tb));
                            // W₁: its weight and bias gradients from that and X, and dX.
                            if (withB1) SparseKernels.AddBlockRowSums(dgb, 0, h, s1);
                            BlockTranspose.ToBlock((float*)ax, n, c, tb, xb, b);
                            for (int p = 0; p < up.Panels; p++)
                                SparseKernels.SddmmPanel((ulong*)ac1, (int*)ag1 + p * (h + 1), (int*)ar1 + p * (h + 1), 0, h, dgb, (byte*)(xb + (long)p * up.PanelWidth * tb), d1);
                            if (withDx)
                            {
                                SparseKernels.SpMMPaddedBlock((ulong*)ac1T, (float*)av1, (int*)ag1T, c, upT!.Panels, upT.PanelWidth, dgb, xb, null);
                                BlockTranspose.FromBlock(xb, n, c, tb, (float*)adx, b);
                            }
                        }
                }
                if (ranges == 1) Range(0);
                else KernelThreads.For(ranges, Range);
                SparseKernels.SumParts((float*)app, part, ranges, dUp[..nnz1]);
                SparseKernels.SumParts((float*)app + part1, part, ranges, dDown[..nnz2]);
                if (withB1) SparseKernels.SumParts((float*)app + part1 + part2, part, ranges, dUpBias[..h]);
                if (withB2) SparseKernels.SumParts((float*)app + part1 + part2 + sums1, part, ranges, dDownBias[..c]);
            }
        }
        finally
        {
            gatheredUpT?.Dispose();
            gatheredDownT?.Dispose();
        }
    }

    private static void Check(CsrMatrix up, ReadOnlySpan<float> upBias, CsrMatrix down, ReadOnlySpan<float> downBias, int n)
    {
        ArgumentNullException.ThrowIfNull(up);
        ArgumentNullException.ThrowIfNull(down);
        if (down.Cols != up.Rows || down.Rows != up.Cols)
            throw new ArgumentException($"Sparse MLP: W₁ must be (H, C) and W₂ (C, H) to chain; got W₁ {up.Rows}×{up.Cols} and W₂ {down.Rows}×{down.Cols}.");
        if (!upBias.IsEmpty && upBias.Length != up.Rows)
            throw new ArgumentException($"Sparse MLP: b₁ has {upBias.Length} elements; expected {up.Rows}.", nameof(upBias));
        if (!downBias.IsEmpty && downBias.Length != down.Rows)
            throw new ArgumentException($"Sparse MLP: b₂ has {downBias.Length} elements; expected {down.Rows}.", nameof(downBias));
        if (!Supports(up, down, n))
            throw new ArgumentException($"Sparse MLP: {n} tokens with {up.Nnz} and {down.Nnz} kept weights take the unfused layers (needs AVX-512, more than {SparseKernels.TokenBlock} tokens and at most {SparseKernels.TokenSplitMaxBytes / sizeof(float)} kept weights per layer).");
    }
}
