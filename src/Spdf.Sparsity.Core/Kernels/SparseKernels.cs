using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Spdf.Sparsity.Kernels;

/// <summary>
/// Kernels that do work only for kept weights. Glossary: N = tokens, K = input features, M = output features;
/// W is <c>(M, K)</c> in CSR. Activations are transposed into token blocks (<see cref="TokenBlock"/> tokens;
/// <see cref="BlockTranspose.ToBlocks"/>): block b is a contiguous <c>(features, TokenBlock)</c> panel, so every kernel is
/// vectorised along tokens (unstructured masks give no structure along features) without cache-set conflicts.
/// </summary>
public static unsafe class SparseKernels
{
    /// <summary>Tokens per block of the transposed activations (4 × Vector512).</summary>
    public const int TokenBlock = 64;

    /// <summary>
    /// Floats from one token block to the next: the <c>(features, TokenBlock)</c> panel plus one cache line, so that a
    /// feature's rows in successive blocks do not all fall into the same cache sets (panel sizes are often multiples of 64 KiB).
    /// </summary>
    public static int BlockStride(int features) => features * TokenBlock + 16;

    /// <summary>Elements of a token-blocked activation of <paramref name="features"/> × <paramref name="n"/> tokens.</summary>
    public static int BlockedLength(int features, int n) => (n + TokenBlock - 1) / TokenBlock * BlockStride(features);

    /// <summary>
    /// <c>y[b, m, :] = Σ_{k kept in row m} W[m, k]·x[b, k, :]</c> on token-blocked activations: the forward
    /// <c>Yᵀ = W·Xᵀ</c> (with the CSR of W), or the input gradient <c>dXᵀ = Wᵀ·dYᵀ</c> (with the CSR of Wᵀ). Blocks run in parallel.
    /// </summary>
    /// <exception cref="ArgumentException">A span is shorter than its shape needs.</exception>
    public static void SpMM(CsrMatrix csr, ReadOnlySpan<float> xBlocks, Span<float> yBlocks, int n, ReadOnlySpan<float> bias = default)
    {
        ArgumentNullException.ThrowIfNull(csr);
        SpMMCore(csr, default, default, xBlocks, default, yBlocks, default, n, bias); // reads the blocks, writes none of them
    }

    /// <summary>
    /// As <see cref="SpMM"/>, optionally with the values already in <paramref name="csr"/>'s padded order
    /// (<paramref name="paddedValues"/>, e.g. gathered straight from W's values for Wᵀ), and with the transposes fused in: when <paramref name="xRows"/> (row-major <c>(n, Cols)</c>)
    /// is given, each token block of <paramref name="xBlocks"/> is filled from it just before the block is multiplied;
    /// when <paramref name="yRows"/> (row-major <c>(n, Rows)</c>) is given, each block of the result is written there as
    /// soon as it is done. The blocks move while they are in cache instead of in separate passes over memory.
    /// <paramref name="paddedValues"/> empty: the values are gathered from the matrix's own.
    /// </summary>
    internal static void SpMMFused(CsrMatrix csr, ReadOnlySpan<float> paddedValues, ReadOnlySpan<float> xRows, Span<float> xBlocks, Span<float> yBlocks, Span<float> yRows, int n, ReadOnlySpan<float> bias = default) =>
        SpMMCore(csr, paddedValues, xRows, xBlocks, xRows.IsEmpty ? default : xBlocks, yBlocks, yRows, n, bias);

    /// <summary>The SpMM: reads <paramref name="xBlocks"/>; only when <paramref name="xRows"/> is given does it fill the
    /// blocks, through <paramref name="xFill"/> (the same memory, writable), so a caller with read-only blocks passes none.</summary>
    private static void SpMMCore(CsrMatrix csr, ReadOnlySpan<float> paddedValues, ReadOnlySpan<float> xRows, ReadOnlySpan<float> xBlocks, Span<float> xFill,
        Span<float> yBlocks, Span<float> yRows, int n, ReadOnlySpan<float> bias)
    {
        ArgumentNullException.ThrowIfNull(csr);
        if (!xRows.IsEmpty && (xFill.Length != xBlocks.Length || !System.Runtime.CompilerServices.Unsafe.AreSame(ref System.Runtime.InteropServices.MemoryMarshal.GetReference(xFill), ref System.Runtime.InteropServices.MemoryMarshal.GetReference(xBlocks))))
            throw new ArgumentException("SpMM: fusing the transpose of the input needs the blocks as a writable span of the same memory.", nameof(xFill));
        var layout = csr.Padded;
        int rows = csr.Rows, cols = csr.Cols;
        if (xBlocks.Length < BlockedLength(cols, n) || yBlocks.Length < BlockedLength(rows, n))
            throw new ArgumentException($"SpMM: a {rows}×{cols} CSR times {n} tokens needs blocked input {BlockedLength(cols, n)} and output {BlockedLength(rows, n)} elements; got {xBlocks.Length} and {yBlocks.Length}.");
        if ((!xRows.IsEmpty && xRows.Length < (long)n * cols) || (!yRows.IsEmpty && yRows.Length < (long)n * rows))
            throw new ArgumentException($"SpMM: row-major input and output need {(long)n * cols} and {(long)n * rows} elements; got {xRows.Length} and {yRows.Length}.");
        if (!bias.IsEmpty && bias.Length != rows)
            throw new ArgumentException($"SpMM: bias has {bias.Length} elements; expected {rows} (one per output row).", nameof(bias));
        paddedValues = PaddedValues(csr, paddedValues, "SpMM: the padded layout", nameof(paddedValues), out var gathered);
        try
        {
            int blocks = (n + TokenBlock - 1) / TokenBlock;
            bool parallel = blocks > 1 && (long)csr.Nnz * n >= 1 << 16;
            bool simd = Vector512.IsHardwareAccelerated;
            fixed (float* px = xBlocks, pxf = xFill, py = yBlocks, pbias = bias, pv = paddedValues, pxr = xRows, pyr = yRows)
            fixed (ushort* pc = layout.Columns)
            fixed (int* pg = layout.GroupPointers)
            {
                nint ax = (nint)px, axf = (nint)pxf, ay = (nint)py, ab = (nint)pbias, av = (nint)pv, ac = (nint)pc, ag = (nint)pg, axr = (nint)pxr, ayr = (nint)pyr;
                int panels = csr.Panels, width = csr.PanelWidth;
                void Block(int b)
                {
                    float* xb = (float*)ax + (long)b * BlockStride(cols), yb = (float*)ay + (long)b * BlockStride(rows);
                    if (axr != 0) BlockTranspose.ToBlock((float*)axr, n, cols, TokenBlock, (float*)axf + (long)b * BlockStride(cols), b);
                    if (simd) SpMMPaddedBlock((ulong*)ac, (float*)av, (int*)ag, rows, panels, width, xb, yb, (float*)ab);
                    else SpMMPaddedPortable(csr, (float*)av, xb, yb, (float*)ab);
                    if (ayr != 0) BlockTranspose.FromBlock(yb, n, rows, TokenBlock, (float*)ayr, b);
                }
                if (!parallel) for (int b = 0; b < blocks; b++) Block(b);
                else KernelThreads.For(blocks, Block);
            }
        }
        finally { gathered?.Dispose(); }
    }

    /// <summary>
    /// <paramref name="csr"/>'s values in its padded slot order: <paramref name="given"/> when not empty (checked against
    /// the layout's slots), else gathered from the matrix's own values into <paramref name="gathered"/> (the caller
    /// disposes it).
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="given"/> has fewer values than the layout has slots.</exception>
    internal static ReadOnlySpan<float> PaddedValues(CsrMatrix csr, ReadOnlySpan<float> given, string what, string paramName, out AlignedBuffer? gathered)
    {
        var layout = csr.Padded;
        int slots = layout.Groups * PaddedPanels.GroupSize;
        gathered = null;
        if (!given.IsEmpty)
        {
            if (given.Length < slots)
                throw new ArgumentException($"{what} has {slots} slots; got {given.Length} values.", paramName);
            return given;
        }
        gathered = AlignedBuffer.Rent(Math.Max(1, slots)); // an empty mask has no groups
        layout.GatherValues(csr, csr.Values.AsSpan(0, csr.Nnz), gathered.Span);
        return gathered.Span;
    }

    /// <summary>One token block over the padded layout without Vector512 (padding slots hold 0 and add nothing).</summary>
    private static void SpMMPaddedPortable(CsrMatrix csr, float* pv, float* xb, float* yb, float* bias)
    {
        var layout = csr.Padded;
        int rows = csr.Rows, panels = csr.Panels;
        for (int m = 0; m < rows; m++) new Span<float>(yb + m * TokenBlock, TokenBlock).Fill(bias != null ? bias[m] : 0f);
        for (int p = 0; p < panels; p++)
        {
            float* xp = xb + (long)p * csr.PanelWidth * TokenBlock;
            for (int m = 0; m < rows; m++)
            {
                var y = new Span<float>(yb + m * TokenBlock, TokenBlock);
                int s = layout.Slot(p * (rows + 1) + m), e = layout.Slot(p * (rows + 1) + m + 1);
                for (int j = s; j < e; j++)
                    System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(xp + layout.Columns[j] * TokenBlock, TokenBlock), pv[j], y, y);
            }
        }
    }

    /// <summary>
    /// One token block of the SpMM over the padded-group layout (<see cref="PaddedPanels"/>), panel by panel so that
    /// the panel's activation rows (128 × 64 tokens × 4 B = 32 KiB) stay in L1 while every output row takes its entries
    /// there. Each group of four entries costs one 64-bit index load, one 128-bit value load and 16 FMAs whose memory
    /// operands are activation slices; the index words of the next <see cref="PaddedPanels.Lookahead"/> groups are
    /// already in registers (the stream runs on across rows and panels), so those loads never wait for their address.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void SpMMPaddedBlock(ulong* q, float* pv, int* gp, int rows, int panels, int panelWidth, float* xb, float* yb, float* bias)
    {
        for (int p = 0; p < panels; p++)
            SpMMPanel(q, pv, gp + p * (rows + 1), rows, (byte*)(xb + (long)p * panelWidth * TokenBlock), yb, bias, p == 0);
    }

    /// <summary>
    /// One panel of one token block: every row's run of entries in the panel (group pointers <paramref name="ptr"/>),
    /// added onto <paramref name="y"/>, or onto the bias (or zero) for the first panel. A function of its own, so that the
    /// row loop keeps its few pointers in registers (inlined into the panel loop, the JIT spilled a dozen of them to
    /// the stack on every row).
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void SpMMPanel(ulong* q, float* pv, int* ptr, int rows, byte* xp, float* y, float* bias, bool first)
    {
        nint g = ptr[0];
        ulong q0 = q[g], q1 = q[g + 1], q2 = q[g + 2];
        // The four weights of a group go to all lanes by one permute each from the group's 128-bit load (a broadcast
        // of lanes 1–3 took two shuffles each).
        var i0 = Vector512<int>.Zero; var i1 = Vector512.Create(1); var i2 = Vector512.Create(2); var i3 = Vector512.Create(3);
        for (int m = 0; m < rows; m++, y += TokenBlock)
        {
            nint gEnd = ptr[m + 1];
            Vector512<float> a0, a1, a2, a3;
            if (!first) { a0 = Vector512.Load(y); a1 = Vector512.Load(y + 16); a2 = Vector512.Load(y + 32); a3 = Vector512.Load(y + 48); }
            else { a0 = bias != null ? Vector512.Create(bias[m]) : default; a1 = a2 = a3 = a0; }
            Vector512<float> b0 = default, b1 = default, b2 = default, b3 = default;
            for (; g < gEnd; g++)
            {
                ulong qn = q[g + PaddedPanels.Lookahead];
                var vv = Vector128.Load(pv + g * PaddedPanels.GroupSize).ToVector256Unsafe().ToVector512Unsafe();
                // Byte offset of a 16-bit column: column × 64 tokens × 4 bytes = column << 8.
                float* x = (float*)(xp + (nuint)((q0 << 8) & 0xFF_FF00)), z = (float*)(xp + (nuint)((q0 >> 8) & 0xFF_FF00));
                var w = Avx512F.PermuteVar16x32(vv, i0); var u = Avx512F.PermuteVar16x32(vv, i1);
                a0 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x), a0);
                a1 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x + 16), a1);
                a2 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x + 32), a2);
                a3 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x + 48), a3);
                b0 = Vector512.FusedMultiplyAdd(u, Vector512.Load(z), b0);
                b1 = Vector512.FusedMultiplyAdd(u, Vector512.Load(z + 16), b1);
                b2 = Vector512.FusedMultiplyAdd(u, Vector512.Load(z + 32), b2);
                b3 = Vector512.FusedMultiplyAdd(u, Vector512.Load(z + 48), b3);
                x = (float*)(xp + (nuint)((q0 >> 24) & 0xFF_FF00)); z = (float*)(xp + (nuint)((q0 >> 40) & 0xFF_FF00));
                w = Avx512F.PermuteVar16x32(vv, i2); u = Avx512F.PermuteVar16x32(vv, i3);
                a0 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x), a0);
                a1 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x + 16), a1);
                a2 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x + 32), a2);
                a3 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x + 48), a3);
                b0 = Vector512.FusedMultiplyAdd(u, Vector512.Load(z), b0);
                b1 = Vector512.FusedMultiplyAdd(u, Vector512.Load(z + 16), b1);
                b2 = Vector512.FusedMultiplyAdd(u, Vector512.Load(z + 32), b2);
                b3 = Vector512.FusedMultiplyAdd(u, Vector512.Load(z + 48), b3);
                q0 = q1; q1 = q2; q2 = qn;
            }
            (a0 + b0).Store(y); (a1 + b1).Store(y + 16); (a2 + b2).Store(y + 32); (a3 + b3).Store(y + 48);
        }
    }

    /// <summary><c>sums[r] = Σ_t blocks[t, r]</c> over a token-blocked activation of <paramref name="rows"/> features (the bias gradient from dYᵀ; padding lanes are zero).</summary>
    /// <exception cref="ArgumentException">A span is shorter than its shape needs.</exception>
    public static void RowSums(ReadOnlySpan<float> blocks, int rows, int n, Span<float> sums)
    {
        if (blocks.Length < BlockedLength(rows, n) || sums.Length < rows)
            throw new ArgumentException($"RowSums: needs {BlockedLength(rows, n)} blocked elements and {rows} sums; got {blocks.Length} and {sums.Length}.");
        int nb = (n + TokenBlock - 1) / TokenBlock, stride = BlockStride(rows);
        fixed (float* pb = blocks, ps = sums)
        {
            nint ab = (nint)pb, aps = (nint)ps;
            int chunks = Math.Min(rows, Environment.ProcessorCount * 4);
            void Rows(int c)
            {
                int r0 = (int)((long)rows * c / chunks), r1 = (int)((long)rows * (c + 1) / chunks);
                for (int r = r0; r < r1; r++)
                {
                    float* row = (float*)ab + r * TokenBlock;
                    if (Vector512.IsHardwareAccelerated)
                    {
                        // A row's 64-token slices summed as vectors over all blocks, reduced once.
                        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
                        for (int b = 0; b < nb; b++, row += stride)
                        {
                            a0 += Vector512.Load(row); a1 += Vector512.Load(row + 16); a2 += Vector512.Load(row + 32); a3 += Vector512.Load(row + 48);
                        }
                        ((float*)aps)[r] = Spdf.Shared.VectorSum.Of((a0 + a1) + (a2 + a3));
                        continue;
                    }
                    float s = 0;
                    for (int b = 0; b < nb; b++) s += System.Numerics.Tensors.TensorPrimitives.Sum(new ReadOnlySpan<float>(row + (long)b * stride, TokenBlock));
                    ((float*)aps)[r] = s;
                }
            }
            if ((long)rows * n < 1 << 16) for (int c = 0; c < chunks; c++) Rows(c);
            else KernelThreads.For(chunks, Rows);
        }
    }

    /// <summary>
    /// Sampled dense-dense product, the weight gradient at kept places only, on token-blocked activations:
    /// <c>dw[e] = Σ_t dy[row(e), t]·x[col(e), t]</c> for every entry e of the CSR of W. Rows are split over threads
    /// (two chunks per core); each token block is walked panel by panel, so the panel's activation rows
    /// (128 × 64 tokens × 4 B = 32 KiB) stay in L1 while every row of the chunk takes its entries there, four at a time.
    /// </summary>
    /// <param name="csr">The structure of W (its values are not read).</param>
    /// <param name="dyBlocks">dYᵀ in token blocks (<c>Rows</c> features).</param>
    /// <param name="xBlocks">Xᵀ in token blocks (<c>Cols</c> features).</param>
    /// <param name="dw">The gradient, one value per entry, in the CSR's order (overwritten).</param>
    /// <param name="n">Tokens.</param>
    /// <param name="rowSums">Optional: also <c>rowSums[r] = Σ_t dy[r, t]</c> (the bias gradient), summed while each dY
    /// slice is on its way to the kernel instead of in a pass of its own over dYᵀ (overwritten).</param>
    /// <exception cref="ArgumentException">A span is shorter than its shape needs.</exception>
    public static void Sddmm(CsrMatrix csr, ReadOnlySpan<float> dyBlocks, ReadOnlySpan<float> xBlocks, Span<float> dw, int n, Span<float> rowSums = default)
    {
        ArgumentNullException.ThrowIfNull(csr);
        if (dyBlocks.Length < BlockedLength(csr.Rows, n) || xBlocks.Length < BlockedLength(csr.Cols, n) || dw.Length < csr.Nnz)
            throw new ArgumentException($"SDDMM: shapes need blocked dY {BlockedLength(csr.Rows, n)}, blocked X {BlockedLength(csr.Cols, n)} and dW {csr.Nnz} elements; got {dyBlocks.Length}, {xBlocks.Length}, {dw.Length}.");
        if (!rowSums.IsEmpty && rowSums.Length < csr.Rows)
            throw new ArgumentException($"SDDMM: row sums need {csr.Rows} elements (one per row of W); got {rowSums.Length}.", nameof(rowSums));
        dw[..csr.Nnz].Clear();
        bool fuseSums = !rowSums.IsEmpty && Vector512.IsHardwareAccelerated;
        if (fuseSums) rowSums[..csr.Rows].Clear();
        // Two chunks per core (measured at 2048×768×3072: fewer, larger chunks stream dY rows best; one per core leaves
        // a core idle when the other's chunk runs long, eight or more cost 15–20%).
        int chunks = Math.Min(csr.Rows, Environment.ProcessorCount * 2);
        fixed (float* pdy = dyBlocks, px = xBlocks, pw = dw, ps = rowSums)
        {
            nint ady = (nint)pdy, ax = (nint)px, aw = (nint)pw, asums = fuseSums ? (nint)ps : 0;
            int blocks = (n + TokenBlock - 1) / TokenBlock;
            void Rows(int c)
            {
                int m0 = (int)((long)csr.Rows * c / chunks), m1 = (int)((long)csr.Rows * (c + 1) / chunks);
                if (Vector512.IsHardwareAccelerated) SddmmRows(csr, (float*)ady, (float*)ax, (float*)aw, blocks, m0, m1, (float*)asums);
                else SddmmRowsPortable(csr, (float*)ady, (float*)ax, (float*)aw, blocks, m0, m1);
            }
            if (chunks <= 1 || (long)csr.Nnz * n < 1 << 16) for (int c = 0; c < chunks; c++) Rows(c);
            else KernelThreads.For(chunks, Rows);
        }
        if (!rowSums.IsEmpty && !fuseSums) RowSums(dyBlocks, csr.Rows, n, rowSums);
    }

    /// <summary>
    /// Largest weight gradient (kept weights, in bytes) for which <see cref="SddmmFromRows"/> splits the tokens over
    /// threads: each range of token blocks sums into a gradient of its own, walked once per token block. Measured on
    /// 2,048 tokens (Zen 5), the layer's whole backward (<see cref="BackwardFromRows"/> against the SpMM and the row
    /// split): faster for small weights (512 → 128 at 75%: 0.75–0.78 against 1.35–1.46 ms), 2–3% faster at 2.4 MiB
    /// (768 → 3072 at 75%), 2–5% slower at 4.7 MiB (the same layer at 50%).
    /// </summary>
    internal const int TokenSplitMaxBytes = 3 << 20;

    /// <summary>Whether <see cref="SddmmFromRows"/> splits <paramref name="n"/> tokens over threads for this matrix
    /// (small gradients, several token blocks, AVX-512), rather than its rows over pre-transposed activations.</summary>
    public static bool SddmmSplitsTokens(CsrMatrix csr, int n) =>
        Vector512.IsHardwareAccelerated && n > TokenBlock && (long)csr.Nnz * sizeof(float) <= TokenSplitMaxBytes;

    /// <summary>
    /// The SDDMM of <see cref="Sddmm"/> straight from row-major <paramref name="dyRows"/> (<c>(n, Rows)</c>) and
    /// <paramref name="xRows"/> (<c>(n, Cols)</c>), for small weights (<see cref="SddmmSplitsTokens"/>): the token blocks
    /// are split into ranges that run in parallel; each range transposes its blocks of X and dY into scratch panels of
    /// its own just before it uses them, and sums its entries' products into a gradient of its own (and its row sums, the
    /// bias gradient); the ranges' gradients are added at the end. Every input row is read once, by the thread that uses
    /// it. Splitting rows instead, each thread read every block of pre-transposed activations that the other core had just
    /// written: at width 128 the weight gradient took 2.5–3× the SDDMM's own time.
    /// </summary>
    /// <exception cref="ArgumentException">A span is shorter than its shape needs, or the matrix is one that
    /// <see cref="SddmmSplitsTokens"/> leaves to <see cref="Sddmm"/>.</exception>
    public static void SddmmFromRows(CsrMatrix csr, ReadOnlySpan<float> dyRows, ReadOnlySpan<float> xRows, Span<float> dw, int n, Span<float> rowSums = default) =>
        BackwardFromRows(csr, null, default, dyRows, xRows, n, default, dw, rowSums);

    /// <summary>
    /// A sparse layer's whole backward pass in one pass over token ranges, for small weights (<see cref="SddmmSplitsTokens"/>):
    /// per token block, dY's block is transposed once into a scratch panel and serves both the input gradient
    /// <c>dXᵀ = Wᵀ·dYᵀ</c> over <paramref name="wT"/> (its block written back to <paramref name="dxRows"/> at once; skipped
    /// when empty) and the weight gradient, as in <see cref="SddmmFromRows"/>. No token-blocked copy of dY or dX is
    /// written, and the two products share one parallel loop.
    /// </summary>
    /// <param name="w">The structure of W (its values are not read).</param>
    /// <param name="wT">Wᵀ in CSR, with its values or with <paramref name="wTPaddedValues"/> (its padded slot order); null when <paramref name="dxRows"/> is empty.</param>
    /// <param name="wTPaddedValues">Wᵀ's values in its padded slot order, or empty to gather them from <paramref name="wT"/>'s own.</param>
    /// <param name="dyRows">dY, row-major <c>(n, Rows)</c>.</param>
    /// <param name="xRows">X, row-major <c>(n, Cols)</c>.</param>
    /// <param name="n">Tokens.</param>
    /// <param name="dxRows">dX, row-major <c>(n, Cols)</c> (overwritten), or empty.</param>
    /// <param name="dw">The weight gradient, one value per entry of <paramref name="w"/> (overwritten).</param>
    /// <param name="rowSums">The bias gradient, <c>Rows</c> values (overwritten), or empty.</param>
    /// <exception cref="ArgumentException">A span does not fit the shapes, Wᵀ does not fit W, or the matrix is one that
    /// <see cref="SddmmSplitsTokens"/> leaves to <see cref="Sddmm"/>.</exception>
    internal static void BackwardFromRows(CsrMatrix w, CsrMatrix? wT, ReadOnlySpan<float> wTPaddedValues, ReadOnlySpan<float> dyRows, ReadOnlySpan<float> xRows, int n,
        Span<float> dxRows, Span<float> dw, Span<float> rowSums)
    {
        ArgumentNullException.ThrowIfNull(w);
        int rows = w.Rows, cols = w.Cols, nnz = w.Nnz;
        if (!SddmmSplitsTokens(w, n))
            throw new ArgumentException($"SDDMM from rows: a {rows}×{cols} matrix with {nnz} kept weights over {n} tokens takes the row-split path (needs AVX-512, more than {TokenBlock} tokens and at most {TokenSplitMaxBytes / sizeof(float)} kept weights).");
        if (dyRows.Length < (long)n * rows || xRows.Length < (long)n * cols || dw.Length < nnz)
            throw new ArgumentException($"SDDMM from rows: shapes need dY {(long)n * rows}, X {(long)n * cols} and dW {nnz} elements; got {dyRows.Length}, {xRows.Length}, {dw.Length}.");
        if (!rowSums.IsEmpty && rowSums.Length < rows)
            throw new ArgumentException($"SDDMM: row sums need {rows} elements (one per row of W); got {rowSums.Length}.", nameof(rowSums));
        bool withDx = !dxRows.IsEmpty;
        AlignedBuffer? gathered = null;
        if (withDx)
        {
            if (wT is null || wT.Rows != cols || wT.Cols != rows || wT.Nnz != nnz)
                throw new ArgumentException($"Backward: the input gradient needs Wᵀ as a {cols}×{rows} CSR with {nnz} entries; got {(wT is null ? "none" : $"{wT.Rows}×{wT.Cols} with {wT.Nnz}")}.", nameof(wT));
            if (dxRows.Length < (long)n * cols)
                throw new ArgumentException($"Backward: dX needs {(long)n * cols} elements; got {dxRows.Length}.", nameof(dxRows));
            wTPaddedValues = PaddedValues(wT, wTPaddedValues, "Backward: Wᵀ's padded layout", nameof(wTPaddedValues), out gathered);
        }
        int blocks = (n + TokenBlock - 1) / TokenBlock;
        int ranges = TokenRanges(blocks);
        int part = (nnz + 15) & ~15, sumPart = (rows + 15) & ~15;
        using var parts = AlignedBuffer.Rent(Math.Max(1, ranges * (part + sumPart)));
        var layout = w.Padded;
        var layoutT = wT?.Padded;
        bool sums = !rowSums.IsEmpty;
        try
        {
            fixed (float* pdy = dyRows, px = xRows, pdx = dxRows, pparts = parts.Span, pvT = wTPaddedValues)
            fixed (ushort* pc = layout.Columns, pcT = layoutT is null ? null : layoutT.Columns)
            fixed (int* prp = w.RowPointers, pgp = layout.GroupPointers, pgpT = layoutT is null ? null : layoutT.GroupPointers)
            {
                nint ady = (nint)pdy, ax = (nint)px, adx = (nint)pdx, aparts = (nint)pparts, ac = (nint)pc, arp = (nint)prp, agp = (nint)pgp,
                    avT = (nint)pvT, acT = (nint)pcT, agpT = (nint)pgpT;
                int panels = w.Panels, width = w.PanelWidth, panelsT = wT?.Panels ?? 0, widthT = wT?.PanelWidth ?? 0;
                void Range(int r)
                {
                    int b0 = (int)((long)blocks * r / ranges), b1 = (int)((long)blocks * (r + 1) / ranges);
                    float* dwr = (float*)aparts + (long)r * part, sr = (float*)aparts + (long)ranges * part + (long)r * sumPart;
                    new Span<float>(dwr, nnz).Clear();
                    new Span<float>(sr, rows).Clear();
                    using var xs = AlignedBuffer.Rent(BlockStride(cols)); // X's block; then dX's
                    using var ds = AlignedBuffer.Rent(BlockStride(rows));
                    fixed (float* xb = xs.Span, db = ds.Span)
                        for (int b = b0; b < b1; b++)
                        {
                            BlockTranspose.ToBlock((float*)ady, n, rows, TokenBlock, db, b);
                            if (withDx)
                            {
                                SpMMPaddedBlock((ulong*)acT, (float*)avT, (int*)agpT, cols, panelsT, widthT, db, xb, null);
                                BlockTranspose.FromBlock(xb, n, cols, TokenBlock, (float*)adx, b);
                            }
                            BlockTranspose.ToBlock((float*)ax, n, cols, TokenBlock, xb, b);
                            if (sums) AddBlockRowSums(db, 0, rows, sr);
                            for (int p = 0; p < panels; p++)
                                SddmmPanel((ulong*)ac, (int*)agp + p * (rows + 1), (int*)arp + p * (rows + 1), 0, rows, db, (byte*)(xb + (long)p * width * TokenBlock), dwr);
                        }
                }
                if (ranges == 1) Range(0);
                else KernelThreads.For(ranges, Range);
                SumParts((float*)aparts, part, ranges, dw[..nnz]);
                if (sums) SumParts((float*)aparts + (long)ranges * part, sumPart, ranges, rowSums[..rows]);
            }
        }
        finally { gathered?.Dispose(); }
    }

    /// <summary>Ranges of token blocks a token-split pass runs in parallel, each summing into gradients of its own: two
    /// per core, so a core that runs late leaves its second range to the other.</summary>
    internal static int TokenRanges(int blocks) => Math.Min(blocks, 2 * Environment.ProcessorCount);

    /// <summary><c>sums[m] += Σ_t block[m, t]</c> for rows <c>[m0, m1)</c> of one token block (padding tokens are zero).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void AddBlockRowSums(float* block, int m0, int m1, float* sums)
    {
        for (int m = m0; m < m1; m++)
        {
            float* d = block + m * TokenBlock;
            sums[m] += Spdf.Shared.VectorSum.Of((Vector512.Load(d) + Vector512.Load(d + 16)) + (Vector512.Load(d + 32) + Vector512.Load(d + 48)));
        }
    }

    /// <summary><c>total = Σ_r parts[r·stride ..]</c> over <paramref name="count"/> partial results, summed in order.</summary>
    internal static void SumParts(float* parts, int stride, int count, Span<float> total)
    {
        new ReadOnlySpan<float>(parts, total.Length).CopyTo(total);
        for (int r = 1; r < count; r++) System.Numerics.Tensors.TensorPrimitives.Add(total, new ReadOnlySpan<float>(parts + (long)r * stride, total.Length), total);
    }

    /// <summary>
    /// Rows <c>[m0, m1)</c> of the SDDMM, one token block at a time (the row's 64-token dY slice lives in four registers)
    /// and panel by panel (<see cref="SddmmPanel"/>).
    /// Block by block rather than panel by panel: the chunk's dY rows then stream in order, and the gradients they add to
    /// are the same for every block (panel-outer order measured 10–40% slower).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void SddmmRows(CsrMatrix csr, float* dyb, float* xb, float* dw, int blocks, int m0, int m1, float* sums)
    {
        long dyStride = BlockStride(csr.Rows), xStride = BlockStride(csr.Cols);
        var layout = csr.Padded;
        int panels = csr.Panels, rows = csr.Rows;
        fixed (ushort* pc = layout.Columns)
        fixed (int* prp = csr.RowPointers)
        fixed (int* pgp = layout.GroupPointers)
        {
            for (int b = 0; b < blocks; b++)
            {
                if (sums != null) AddBlockRowSums(dyb + b * dyStride, m0, m1, sums);
                for (int p = 0; p < panels; p++)
                {
                    byte* xq = (byte*)(xb + b * xStride + (long)p * csr.PanelWidth * TokenBlock);
                    SddmmPanel((ulong*)pc, pgp + p * (rows + 1), prp + p * (rows + 1), m0, m1, dyb + b * dyStride, xq, dw);
                }
            }
        }
    }

    /// <summary>
    /// One panel of one token block for rows <c>[m0, m1)</c>: for each entry i of each row m,
    /// <c>dw[i] += Σ_t dy[m, t]·x[c[i], t]</c>, with <paramref name="q"/> the padded layout's packed 16-bit panel-relative
    /// columns, <paramref name="gp"/> and <paramref name="rp"/> the panel's group and row pointers, and <paramref name="x0"/>
    /// the panel's activation rows (128 × 64 tokens × 4 B = 32 KiB, in L1 while every row takes its entries there).
    /// Entries go four at a time in the SpMM's padded groups: one 64-bit load brings four columns, and the column words of
    /// the next <see cref="PaddedPanels.Lookahead"/> groups ride in registers across rows, so no activation load waits
    /// for its address (10.7 → 9.5 ms at 75%, against one call per row). Padding results are not stored. The four dot
    /// products of a group are summed across their lanes together, with in-lane operations first: unpacks and shuffles
    /// within each 128-bit quarter leave quarter j holding every entry's partial sum of that quarter, and two halvings
    /// (512 → 256 → 128 bits) finish all four at once, 11 vector operations for four entries. Cross-quarter shuffles
    /// (vshuff32x4, vpermps) cost two passes each on cores that split 512-bit operations (Zen 4): on such a machine the
    /// earlier exchange of quarters took 35–40% of the kernel's time, and this order cut the SDDMM at 75% from 27 to
    /// 24 ms. The reduction, paid every 16 FMAs, is what makes one-block passes pay (a probe with the data in L1: 13.4
    /// cycles a group, 20.8 reducing each entry alone); with four blocks per pass the dY slice took 16 registers and
    /// each run paid its reload, and two blocks per pass (64 KiB of activation rows) measured no faster.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    internal static void SddmmPanel(ulong* q, int* gp, int* rp, int m0, int m1, float* dy, byte* x0, float* dw)
    {
        nint g0 = gp[m0];
        ulong q0 = q[g0], q1 = q[g0 + 1], q2 = q[g0 + 2];
        for (int m = m0; m < m1; m++)
        {
            nint g = gp[m], gEnd = gp[m + 1];
            if (g == gEnd) continue;
            float* d0 = dy + m * TokenBlock;
            var y0 = Vector512.Load(d0); var y1 = Vector512.Load(d0 + 16); var y2 = Vector512.Load(d0 + 32); var y3 = Vector512.Load(d0 + 48);
            float* wbase = dw + rp[m] - g * PaddedPanels.GroupSize; // group i's first entry: wbase + 4i
            float* wend = dw + rp[m + 1];
            for (nint i = g; i < gEnd; i++)
            {
                ulong qn = q[i + PaddedPanels.Lookahead];
                // Byte offset of a column's row in the block: column × 64 tokens × 4 bytes = column << 8.
                nuint o0 = (nuint)((q0 << 8) & 0xFF_FF00), o1 = (nuint)((q0 >> 8) & 0xFF_FF00), o2 = (nuint)((q0 >> 24) & 0xFF_FF00), o3 = (nuint)((q0 >> 40) & 0xFF_FF00);
                q0 = q1; q1 = q2; q2 = qn;
                // The four dot products stay written out: behind a shared helper the JIT loaded the activation slices
                // into registers of their own instead of folding them into the FMAs, and the kernel ran slower.
                var a = y0 * Vector512.Load((float*)(x0 + o0));
                a = Vector512.FusedMultiplyAdd(y1, Vector512.Load((float*)(x0 + o0) + 16), a);
                a = Vector512.FusedMultiplyAdd(y2, Vector512.Load((float*)(x0 + o0) + 32), a);
                a = Vector512.FusedMultiplyAdd(y3, Vector512.Load((float*)(x0 + o0) + 48), a);
                var b = y0 * Vector512.Load((float*)(x0 + o1));
                b = Vector512.FusedMultiplyAdd(y1, Vector512.Load((float*)(x0 + o1) + 16), b);
                b = Vector512.FusedMultiplyAdd(y2, Vector512.Load((float*)(x0 + o1) + 32), b);
                b = Vector512.FusedMultiplyAdd(y3, Vector512.Load((float*)(x0 + o1) + 48), b);
                var c = y0 * Vector512.Load((float*)(x0 + o2));
                c = Vector512.FusedMultiplyAdd(y1, Vector512.Load((float*)(x0 + o2) + 16), c);
                c = Vector512.FusedMultiplyAdd(y2, Vector512.Load((float*)(x0 + o2) + 32), c);
                c = Vector512.FusedMultiplyAdd(y3, Vector512.Load((float*)(x0 + o2) + 48), c);
                var d = y0 * Vector512.Load((float*)(x0 + o3));
                d = Vector512.FusedMultiplyAdd(y1, Vector512.Load((float*)(x0 + o3) + 16), d);
                d = Vector512.FusedMultiplyAdd(y2, Vector512.Load((float*)(x0 + o3) + 32), d);
                d = Vector512.FusedMultiplyAdd(y3, Vector512.Load((float*)(x0 + o3) + 48), d);
                var t0 = Avx512F.UnpackLow(a, b) + Avx512F.UnpackHigh(a, b);
                var t1 = Avx512F.UnpackLow(c, d) + Avx512F.UnpackHigh(c, d);
                var s = Avx512F.Shuffle(t0, t1, 0x44) + Avx512F.Shuffle(t0, t1, 0xEE);
                var h = s.GetLower() + s.GetUpper();
                var r = h.GetLower() + h.GetUpper();
                float* at = wbase + i * PaddedPanels.GroupSize;
                if (at + PaddedPanels.GroupSize <= wend) (Vector128.Load(at) + r).Store(at);
                else
                {
                    var keep = Vector128.LessThan(Vector128.Create(0, 1, 2, 3), Vector128.Create((int)(wend - at))).AsSingle();
                    Avx512F.VL.MaskStore(at, keep, Avx512F.VL.MaskLoad(at, keep, Vector128<float>.Zero) + r);
                }
            }
        }
    }

    /// <summary>The SDDMM's rows without Vector512: one dot product per entry.</summary>
    private static void SddmmRowsPortable(CsrMatrix csr, float* dyb, float* xb, float* dw, int blocks, int m0, int m1)
    {
        long dyStride = BlockStride(csr.Rows), xStride = BlockStride(csr.Cols);
        var pcs = csr.Padded.Columns;
        for (int b = 0; b < blocks; b++)
            for (int p = 0; p < csr.Panels; p++)
            {
                float* xp = xb + b * xStride + (long)p * csr.PanelWidth * TokenBlock;
                for (int m = m0; m < m1; m++)
                {
                    var dy = new ReadOnlySpan<float>(dyb + b * dyStride + m * TokenBlock, TokenBlock);
                    var (eStart, eEnd) = csr.Range(p, m);
                    for (int e = eStart, slot = csr.Padded.Slot(p * (csr.Rows + 1) + m); e < eEnd; e++, slot++)
                        dw[e] += System.Numerics.Tensors.TensorPrimitives.Dot(dy, new ReadOnlySpan<float>(xp + pcs[slot] * TokenBlock, TokenBlock));
                }
            }
    }

    /// <summary>
    /// Sparse matrix-vector product for batch-1 decoding, <c>y[m] = Σ_{k kept} W[m, k]·x[k]</c>, reading only kept
    /// weights (values and 16-bit panel-relative columns: about 6 bytes per kept weight against 4 per dense weight).
    /// </summary>
    /// <exception cref="ArgumentException">A span is shorter than its shape needs.</exception>
    public static void SpMV(CsrMatrix csr, ReadOnlySpan<float> x, Span<float> y)
    {
        ArgumentNullException.ThrowIfNull(csr);
        if (x.Length < csr.Cols || y.Length < csr.Rows)
            throw new ArgumentException($"SpMV: a {csr.Rows}×{csr.Cols} CSR needs x of {csr.Cols} and y of {csr.Rows}; got {x.Length} and {y.Length}.");
        fixed (float* px = x, py = y)
        {
            nint ax = (nint)px, ay = (nint)py;
            int chunks = Math.Min(csr.Rows, Environment.ProcessorCount * 4);
            void Rows(int c)
            {
                int m0 = (int)((long)csr.Rows * c / chunks), m1 = (int)((long)csr.Rows * (c + 1) / chunks);
                SpMVRows(csr, (float*)ax, (float*)ay, m0, m1);
            }
            if (csr.Nnz < 1 << 15) for (int c = 0; c < chunks; c++) Rows(c);
            else KernelThreads.For(chunks, Rows);
        }
    }

    /// <summary>
    /// Rows <c>[m0, m1)</c> of the SpMV, panel by panel: within a panel the rows' entries (values, and columns in the
    /// padded layout) lie one after another, so each panel of the chunk is read as two sequential streams. Row by row
    /// across panels, every row jumped between the panels' distant regions (twelve short streams at GPT-2 Small's width),
    /// and decoding read memory about two thirds as fast as the dense GEMV does.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void SpMVRows(CsrMatrix csr, float* x, float* y, int m0, int m1)
    {
        var layout = csr.Padded;
        int rows = csr.Rows, panels = csr.Panels, width = csr.PanelWidth;
        fixed (float* pv = csr.Values)
        fixed (ushort* pcol = layout.Columns)
        fixed (int* rp = csr.RowPointers)
        fixed (int* gp = layout.GroupPointers)
        {
            for (int m = m0; m < m1; m++) y[m] = 0f;
            for (int p = 0; p < panels; p++)
            {
                float* xp = x + (nint)p * width;
                int* prp = rp + p * (rows + 1), pgp = gp + p * (rows + 1);
                for (int m = m0; m < m1; m++)
                {
                    nint e = prp[m], e1 = prp[m + 1];
                    if (e == e1) continue;
                    ushort* c = pcol + (nint)pgp[m] * PaddedPanels.GroupSize - e; // c[e]: entry e's panel-relative column
                    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
                    for (; e + 4 <= e1; e += 4)
                    {
                        s0 += pv[e] * xp[c[e]]; s1 += pv[e + 1] * xp[c[e + 1]];
                        s2 += pv[e + 2] * xp[c[e + 2]]; s3 += pv[e + 3] * xp[c[e + 3]];
                    }
                    for (; e < e1; e++) s0 += pv[e] * xp[c[e]];
                    y[m] += (s0 + s1) + (s2 + s3);
                }
            }
        }
    }
}
