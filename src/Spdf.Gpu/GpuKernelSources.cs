using ILGPU;

namespace Spdf.Gpu;

/// <summary>The shapes of a sparse product: <c>Cᵀ[rows, n] = A[rows, cols]·Bᵀ[cols, n]</c> with A in CSR.</summary>
internal readonly record struct SparseShape(int Rows, int N, int HasBias);

/// <summary>The SDDMM's shape: W's rows, tokens, and how many token ranges each row is split into.</summary>
internal readonly record struct SddmmShape(int Rows, int N, int Splits);

/// <summary>
/// The strides of a dense product <c>C[M, N] = A·B + bias</c>: A's element (i, k) is at <c>A[i·A0 + k·A1]</c>, B's (k, j)
/// at <c>B[k·B0 + j·B1]</c>, C is row-major and overwritten. HasBias 1 adds <c>bias[j]</c>.
/// </summary>
internal readonly record struct GemmShape(int M, int N, int K, int A0, int A1, int B0, int B1, int HasBias);

/// <summary>AdamW's scalars for one step, as Spdf.Tensors' fused update takes them: <c>Decay = 1 − lr·wd</c>,
/// <c>StepSize = lr / (1 − β1ᵗ)</c>, <c>InvSqrtBc2 = 1 / √(1 − β2ᵗ)</c>.</summary>
internal readonly record struct AdamWScalars(float Decay, float Beta1, float Beta2, float StepSize, float InvSqrtBc2, float Epsilon);

/// <summary>
/// The GPU kernels, as C# methods that ILGPU compiles to PTX at run time (and runs on its CPU accelerator in tests). All
/// activations live on the device feature-major (<c>Xᵀ [features, tokens]</c>), so that a warp's 32 lanes read 32
/// consecutive tokens of one feature in one coalesced transaction, whatever feature a kept weight points at (the
/// transposed-activation layout of SparseProp, Nikdan et al., 2023, and of Sputnik's row-split SpMM, Gale et al., 2020).
/// </summary>
internal static class GpuKernelSources
{
    /// <summary>Lanes per warp; the kernels are written for NVIDIA's 32 (ILGPU's CPU accelerator emulates it).</summary>
    public const int WarpSize = 32;

    /// <summary>Warps per group of the row kernels (SpMM, SDDMM, row sums, SpMV).</summary>
    public const int RowWarps = 4;

    /// <summary>Tokens one warp of the SpMM covers: four per lane.</summary>
    public const int SpmmTokens = 4 * WarpSize;

    /// <summary>The transpose's tile edge and its group (32 × 8 threads, four elements each).</summary>
    public const int TransposeTile = 32, TransposeRows = 8;

    /// <summary>The SGEMM's output tile (128 × 128, 8 × 8 per thread of a 256-thread group) and its K step.</summary>
    public const int GemmTile = 128, GemmK = 16, GemmThreads = 256;

    /// <summary>Entries of a row the SDDMM's warp takes at once (one register of partial sums each).</summary>
    public const int SddmmBatch = 8;

    private const int TransposeShared = TransposeTile * (TransposeTile + 1);

    /// <summary>The row kernels' grid: groups of <see cref="RowWarps"/> rows, the row groups fastest, then columns of
    /// the grid (token tiles or token ranges). The row of the calling warp.</summary>
    private static int WarpRow(int rows)
    {
        int rowBlocks = (rows + RowWarps - 1) / RowWarps;
        return Grid.IdxX % rowBlocks * RowWarps + Warp.WarpIdx;
    }

    /// <summary>The grid column (token tile or token range) of the calling group; see <see cref="WarpRow"/>.</summary>
    private static int GridColumn(int rows) => Grid.IdxX / ((rows + RowWarps - 1) / RowWarps);

    /// <summary>Range <paramref name="split"/> of <paramref name="splits"/> near-equal ranges of [0, <paramref name="length"/>).</summary>
    private static (int Begin, int End) SplitRange(int length, int splits, int split)
    {
        int per = (length + splits - 1) / splits, begin = split * per;
        return (begin, IntrinsicMath.Min(length, begin + per));
    }
    private const int GemmShared = GemmK * GemmTile;

    /// <summary>
    /// <c>dst[c, r] = src[r, c]</c> for a row-major <c>[rows, cols]</c> source, through a padded 32 × 33 shared tile
    /// (reads and writes both coalesced). Grid: one group per tile, tiles of columns fastest.
    /// </summary>
    public static void Transpose(ArrayView<float> src, ArrayView<float> dst, int rows, int cols)
    {
        var tile = SharedMemory.Allocate<float>(TransposeShared);
        int tilesC = (cols + TransposeTile - 1) / TransposeTile;
        int c0 = Grid.IdxX % tilesC * TransposeTile, r0 = Grid.IdxX / tilesC * TransposeTile;
        int tx = Group.IdxX % TransposeTile, ty = Group.IdxX / TransposeTile;
        for (int j = ty; j < TransposeTile; j += TransposeRows)
        {
            int r = r0 + j, c = c0 + tx;
            if (r < rows && c < cols) tile[j * (TransposeTile + 1) + tx] = src[(long)r * cols + c];
        }
        Group.Barrier();
        for (int j = ty; j < TransposeTile; j += TransposeRows)
        {
            int c = c0 + j, r = r0 + tx;
            if (r < rows && c < cols) dst[(long)c * rows + r] = tile[tx * (TransposeTile + 1) + j];
        }
    }

    /// <summary>
    /// The sparse-dense product over kept weights only: <c>Cᵀ[r, t] = Σ_e vals[e]·Bᵀ[cols[e], t] (+ bias[r])</c> for the
    /// entries e of CSR row r. One warp per (row, 128 tokens); the warp reads 32 entries at once (one per lane) and
    /// broadcasts each by shuffle, then every lane does four FMAs on four coalesced loads. Rows fastest in the grid, so
    /// the groups running together share one 128-token slab of Bᵀ in L2. Serves the forward (A = W, B = X) and the input
    /// gradient (A = Wᵀ in CSR, B = dY).
    /// </summary>
    public static void Spmm(ArrayView<int> rowPtr, ArrayView<int> cols, ArrayView<float> vals, ArrayView<float> bt,
        ArrayView<float> bias, ArrayView<float> ct, SparseShape s)
    {
        int lane = Warp.LaneIdx;
        int r = WarpRow(s.Rows);
        if (r >= s.Rows) return; // a whole warp leaves together
        int n = s.N, tile = GridColumn(s.Rows) * SpmmTokens, t0 = tile + lane;
        bool full = tile + SpmmTokens <= n;
        float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        int start = rowPtr[r], end = rowPtr[r + 1];
        for (int b = start; b < end; b += WarpSize)
        {
            int e = b + lane;
            float myV = e < end ? vals[e] : 0f;
            int myC = e < end ? cols[e] : 0;
            int count = IntrinsicMath.Min(WarpSize, end - b);
            for (int j = 0; j < count; j++)
            {
                float v = Warp.Shuffle(myV, j);
                long off = (long)Warp.Shuffle(myC, j) * n + t0;
                if (full)
                {
                    a0 += v * bt[off];
                    a1 += v * bt[off + WarpSize];
                    a2 += v * bt[off + 2 * WarpSize];
                    a3 += v * bt[off + 3 * WarpSize];
                }
                else
                {
                    if (t0 < n) a0 += v * bt[off];
                    if (t0 + WarpSize < n) a1 += v * bt[off + WarpSize];
                    if (t0 + 2 * WarpSize < n) a2 += v * bt[off + 2 * WarpSize];
                    if (t0 + 3 * WarpSize < n) a3 += v * bt[off + 3 * WarpSize];
                }
            }
        }
        float bv = s.HasBias != 0 ? bias[r] : 0f;
        long o = (long)r * n + t0;
        if (t0 < n) ct[o] = a0 + bv;
        if (t0 + WarpSize < n) ct[o + WarpSize] = a1 + bv;
        if (t0 + 2 * WarpSize < n) ct[o + 2 * WarpSize] = a2 + bv;
        if (t0 + 3 * WarpSize < n) ct[o + 3 * WarpSize] = a3 + bv;
    }

    /// <summary>
    /// The weight gradient at kept positions only (a sampled dense-dense product):
    /// <c>dw[e] = Σ_t dYᵀ[r, t]·Xᵀ[cols[e], t]</c> for the entries e of row r. One warp per (row, token range); the
    /// warp takes the row's entries eight at a time, and each lane walks the range's tokens 32 apart, holding dYᵀ[r, t]
    /// in a register for the eight FMAs on eight coalesced loads of Xᵀ and keeping eight partial sums in registers. A
    /// shuffle reduction per entry closes the range (paid once per range, not per token). With one range the sums are
    /// stored; with several (<see cref="SddmmShape.Splits"/>, to fill the device when rows are few) they are added
    /// atomically into a zeroed <paramref name="dw"/>.
    /// </summary>
    public static void Sddmm(ArrayView<int> rowPtr, ArrayView<int> cols, ArrayView<float> dyt, ArrayView<float> xt,
        ArrayView<float> dw, SddmmShape s)
    {
        int lane = Warp.LaneIdx;
        int r = WarpRow(s.Rows);
        if (r >= s.Rows) return; // a whole warp leaves together
        int n = s.N;
        var (tBegin, tEnd) = SplitRange(n, s.Splits, GridColumn(s.Rows));
        if (tBegin >= tEnd) return;
        long dyRow = (long)r * n;
        int start = rowPtr[r], end = rowPtr[r + 1];
        for (int b = start; b < end; b += SddmmBatch)
        {
            int count = IntrinsicMath.Min(SddmmBatch, end - b);
            // Columns of the batch (the same address in every lane: one broadcast load each); past the row's end, the
            // first entry's column again, whose sums are not stored.
            long x0 = Row(cols, b, count, 0, n), x1 = Row(cols, b, count, 1, n), x2 = Row(cols, b, count, 2, n), x3 = Row(cols, b, count, 3, n);
            long x4 = Row(cols, b, count, 4, n), x5 = Row(cols, b, count, 5, n), x6 = Row(cols, b, count, 6, n), x7 = Row(cols, b, count, 7, n);
            float a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
            for (int t = tBegin + lane; t < tEnd; t += WarpSize)
            {
                float d = dyt[dyRow + t];
                a0 += d * xt[x0 + t]; a1 += d * xt[x1 + t]; a2 += d * xt[x2 + t]; a3 += d * xt[x3 + t];
                a4 += d * xt[x4 + t]; a5 += d * xt[x5 + t]; a6 += d * xt[x6 + t]; a7 += d * xt[x7 + t];
            }
            PutBatch(dw, b, count, s.Splits, a0, a1, a2, a3, a4, a5, a6, a7);
        }
    }

    /// <summary>Where the activations of the batch's entry j start (rows of <paramref name="stride"/>); past the row's
    /// end, the first entry's again (one broadcast load, the same address in every lane; its sums are not stored).</summary>
    private static long Row(ArrayView<int> cols, int b, int count, int j, int stride) => (long)cols[j < count ? b + j : b] * stride;

    /// <summary>Reduces a batch's eight partial sums across the warp; lane 0 stores (one range) or adds (several) the
    /// first <paramref name="count"/>.</summary>
    private static void PutBatch(ArrayView<float> dw, int b, int count, int splits, float a0, float a1, float a2, float a3, float a4, float a5, float a6, float a7)
    {
        a0 = WarpSum(a0); a1 = WarpSum(a1); a2 = WarpSum(a2); a3 = WarpSum(a3);
        a4 = WarpSum(a4); a5 = WarpSum(a5); a6 = WarpSum(a6); a7 = WarpSum(a7);
        if (Warp.LaneIdx != 0) return;
        Put(dw, b, a0, splits);
        if (count > 1) Put(dw, b + 1, a1, splits);
        if (count > 2) Put(dw, b + 2, a2, splits);
        if (count > 3) Put(dw, b + 3, a3, splits);
        if (count > 4) Put(dw, b + 4, a4, splits);
        if (count > 5) Put(dw, b + 5, a5, splits);
        if (count > 6) Put(dw, b + 6, a6, splits);
        if (count > 7) Put(dw, b + 7, a7, splits);
    }

    private static void Put(ArrayView<float> dw, int e, float v, int splits)
    {
        if (splits == 1) dw[e] = v;
        else Atomic.Add(ref dw[e], v);
    }

    /// <summary>
    /// Rounds feature-major FP32 activations <c>[rows, n]</c> to bfloat16 (round to nearest even, NaN kept a NaN) and
    /// packs each pair of consecutive tokens into one 32-bit word, token 2p in the low half: <c>dst [rows, ⌈n/2⌉]</c>.
    /// One 4-byte load then brings two activations, which halves the loads per FMA of the kernels that read them.
    /// </summary>
    public static void ToBf16Pairs(Index1D i, ArrayView<float> src, ArrayView<uint> dst, int n)
    {
        int pairs = (n + 1) / 2;
        long r = i / pairs;
        int t = i % pairs * 2;
        float lo = src[r * n + t];
        float hi = t + 1 < n ? src[r * n + t + 1] : 0f;
        dst[i] = (Bf16(hi) << 16) | Bf16(lo);
    }

    private static uint Bf16(float f)
    {
        uint bits = Interop.FloatAsInt(f);
        if ((bits & 0x7FFF_FFFFu) > 0x7F80_0000u) return (bits >> 16) | 0x40; // a NaN stays a NaN
        return (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16;
    }

    private static float Lo(uint u) => Interop.IntAsFloat(u << 16);

    private static float Hi(uint u) => Interop.IntAsFloat(u & 0xFFFF0000u);

    /// <summary>Tokens one warp of the BF16 SpMM covers: four pairs per lane.</summary>
    public const int SpmmBf16Tokens = 8 * WarpSize;

    /// <summary>
    /// <see cref="Spmm"/> over BF16 activations packed in token pairs (<see cref="ToBf16Pairs"/>):
    /// <c>Cᵀ[r, t] = Σ_e vals[e]·Bᵀ[cols[e], t] (+ bias[r])</c> with FP32 weights, FP32 accumulation and FP32 output.
    /// One warp per (row, 256 tokens): each lane holds four pairs, eight accumulators, so every 4-byte load feeds two FMAs.
    /// </summary>
    public static void SpmmBf16(ArrayView<int> rowPtr, ArrayView<int> cols, ArrayView<float> vals, ArrayView<uint> bh,
        ArrayView<float> bias, ArrayView<float> ct, SparseShape s)
    {
        int lane = Warp.LaneIdx;
        int r = WarpRow(s.Rows);
        if (r >= s.Rows) return;
        int n = s.N, pairs = (n + 1) / 2;
        int tile = GridColumn(s.Rows) * (SpmmBf16Tokens / 2), p0 = tile + lane;
        bool full = tile + SpmmBf16Tokens / 2 <= pairs;
        float a0 = 0, b0 = 0, a1 = 0, b1 = 0, a2 = 0, b2 = 0, a3 = 0, b3 = 0;
        int start = rowPtr[r], end = rowPtr[r + 1];
        for (int b = start; b < end; b += WarpSize)
        {
            int e = b + lane;
            float myV = e < end ? vals[e] : 0f;
            int myC = e < end ? cols[e] : 0;
            int count = IntrinsicMath.Min(WarpSize, end - b);
            for (int j = 0; j < count; j++)
            {
                float v = Warp.Shuffle(myV, j);
                long off = (long)Warp.Shuffle(myC, j) * pairs + p0;
                uint u0 = full || p0 < pairs ? bh[off] : 0u;
                uint u1 = full || p0 + WarpSize < pairs ? bh[off + WarpSize] : 0u;
                uint u2 = full || p0 + 2 * WarpSize < pairs ? bh[off + 2 * WarpSize] : 0u;
                uint u3 = full || p0 + 3 * WarpSize < pairs ? bh[off + 3 * WarpSize] : 0u;
                a0 += v * Lo(u0); b0 += v * Hi(u0);
                a1 += v * Lo(u1); b1 += v * Hi(u1);
                a2 += v * Lo(u2); b2 += v * Hi(u2);
                a3 += v * Lo(u3); b3 += v * Hi(u3);
            }
        }
        float bv = s.HasBias != 0 ? bias[r] : 0f;
        long o = (long)r * n;
        StorePair(ct, o, n, 2 * p0, a0 + bv, b0 + bv);
        StorePair(ct, o, n, 2 * (p0 + WarpSize), a1 + bv, b1 + bv);
        StorePair(ct, o, n, 2 * (p0 + 2 * WarpSize), a2 + bv, b2 + bv);
        StorePair(ct, o, n, 2 * (p0 + 3 * WarpSize), a3 + bv, b3 + bv);
    }

    private static void StorePair(ArrayView<float> ct, long row, int n, int t, float lo, float hi)
    {
        if (t < n) ct[row + t] = lo;
        if (t + 1 < n) ct[row + t + 1] = hi;
    }

    /// <summary>
    /// <see cref="Sddmm"/> over BF16 activations packed in token pairs, dY in FP32:
    /// <c>dw[e] = Σ_t dYᵀ[r, t]·Xᵀ[cols[e], t]</c>. Each lane walks token pairs 32 apart, so every 4-byte load of Xᵀ
    /// feeds two FMAs; ranges (<see cref="SddmmShape.Splits"/>) split the pairs.
    /// </summary>
    public static void SddmmBf16(ArrayView<int> rowPtr, ArrayView<int> cols, ArrayView<float> dyt, ArrayView<uint> xh,
        ArrayView<float> dw, SddmmShape s)
    {
        int lane = Warp.LaneIdx;
        int r = WarpRow(s.Rows);
        if (r >= s.Rows) return;
        int n = s.N, pairs = (n + 1) / 2;
        var (pBegin, pEnd) = SplitRange(pairs, s.Splits, GridColumn(s.Rows));
        if (pBegin >= pEnd) return;
        long dyRow = (long)r * n;
        int start = rowPtr[r], end = rowPtr[r + 1];
        for (int b = start; b < end; b += SddmmBatch)
        {
            int count = IntrinsicMath.Min(SddmmBatch, end - b);
            long x0 = Row(cols, b, count, 0, pairs), x1 = Row(cols, b, count, 1, pairs), x2 = Row(cols, b, count, 2, pairs), x3 = Row(cols, b, count, 3, pairs);
            long x4 = Row(cols, b, count, 4, pairs), x5 = Row(cols, b, count, 5, pairs), x6 = Row(cols, b, count, 6, pairs), x7 = Row(cols, b, count, 7, pairs);
            float a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
            for (int p = pBegin + lane; p < pEnd; p += WarpSize)
            {
                int t = 2 * p;
                float dl = dyt[dyRow + t], dh = t + 1 < n ? dyt[dyRow + t + 1] : 0f;
                uint u;
                u = xh[x0 + p]; a0 += dl * Lo(u) + dh * Hi(u);
                u = xh[x1 + p]; a1 += dl * Lo(u) + dh * Hi(u);
                u = xh[x2 + p]; a2 += dl * Lo(u) + dh * Hi(u);
                u = xh[x3 + p]; a3 += dl * Lo(u) + dh * Hi(u);
                u = xh[x4 + p]; a4 += dl * Lo(u) + dh * Hi(u);
                u = xh[x5 + p]; a5 += dl * Lo(u) + dh * Hi(u);
                u = xh[x6 + p]; a6 += dl * Lo(u) + dh * Hi(u);
                u = xh[x7 + p]; a7 += dl * Lo(u) + dh * Hi(u);
            }
            PutBatch(dw, b, count, s.Splits, a0, a1, a2, a3, a4, a5, a6, a7);
        }
    }

    /// <summary><c>sums[r] = Σ_t Cᵀ[r, t]</c>: one warp per row, lanes over tokens, a shuffle reduction (the bias gradient).</summary>
    public static void RowSums(ArrayView<float> ct, ArrayView<float> sums, int rows, int n)
    {
        int r = WarpRow(rows);
        if (r >= rows) return;
        float acc = 0;
        for (int t = Warp.LaneIdx; t < n; t += WarpSize) acc += ct[(long)r * n + t];
        acc = WarpSum(acc);
        if (Warp.LaneIdx == 0) sums[r] = acc;
    }

    /// <summary>
    /// Batch-1 decode, <c>y[r] = Σ_e vals[e]·x[cols[e]] (+ bias[r])</c>: one warp per row, lanes over its entries, a
    /// shuffle reduction.
    /// </summary>
    public static void Spmv(ArrayView<int> rowPtr, ArrayView<int> cols, ArrayView<float> vals, ArrayView<float> x,
        ArrayView<float> bias, ArrayView<float> y, SparseShape s)
    {
        int r = WarpRow(s.Rows);
        if (r >= s.Rows) return;
        float acc = 0;
        for (int e = rowPtr[r] + Warp.LaneIdx, end = rowPtr[r + 1]; e < end; e += WarpSize) acc += vals[e] * x[cols[e]];
        acc = WarpSum(acc);
        if (Warp.LaneIdx == 0) y[r] = acc + (s.HasBias != 0 ? bias[r] : 0f);
    }

    private static float WarpSum(float v)
    {
        for (int d = WarpSize / 2; d > 0; d >>= 1) v += Warp.ShuffleDown(v, d);
        return v;
    }

    /// <summary>
    /// AdamW (Loshchilov and Hutter, 2019; PyTorch's <c>torch.optim.AdamW</c>) over one flat array, e.g. a sparse layer's
    /// compressed values, whose moments then exist for kept weights only; the same arithmetic as Spdf.Tensors'
    /// <c>AdamW.Update</c>: <c>m = β1·m + (1−β1)·g</c>, <c>v = β2·v + (1−β2)·g²</c>,
    /// <c>p = p·(1 − lr·wd) − lr/(1−β1ᵗ) · m / (√v / √(1−β2ᵗ) + ε)</c>.
    /// </summary>
    public static void AdamW(Index1D i, ArrayView<float> p, ArrayView<float> g, ArrayView<float> m, ArrayView<float> v, AdamWScalars a)
    {
        float gi = g[i];
        float mi = a.Beta1 * m[i] + (1 - a.Beta1) * gi;
        float vi = a.Beta2 * v[i] + (1 - a.Beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * a.Decay - a.StepSize * mi / (MathF.Sqrt(vi) * a.InvSqrtBc2 + a.Epsilon);
    }

    /// <summary><c>dst[i] = src[map[i]]</c>: refreshes Wᵀ's values (CSR of the transpose) from W's after an update.</summary>
    public static void Gather(Index1D i, ArrayView<float> src, ArrayView<int> map, ArrayView<float> dst) => dst[i] = src[map[i]];

    /// <summary><c>sums[j] = Σ_i C[i, j]</c> for a row-major <c>[rows, cols]</c> C: a thread per column (the dense bias gradient).</summary>
    public static void ColSums(Index1D j, ArrayView<float> c, ArrayView<float> sums, int rows, int cols)
    {
        float acc = 0;
        for (int i = 0; i < rows; i++) acc += c[(long)i * cols + j];
        sums[j] = acc;
    }

    /// <summary>
    /// A tiled dense SGEMM, <c>C[M, N] = A·B (+ bias)</c> with A and B at any strides (so one kernel serves
    /// <c>X·Wᵀ</c>, <c>dY·W</c> and <c>dYᵀ·X</c>): 128 × 128 output tiles, K in steps of 16 through shared memory, each
    /// of 256 threads holding an 8 × 8 block of accumulators in registers (rows ty + 16i, columns tx + 16j, so a warp's
    /// shared loads are broadcasts or conflict-free): 16 shared loads feed 64 FMAs. Tiles are loaded along whichever of
    /// A's and B's dimensions is contiguous, so the loads coalesce for every layout.
    /// </summary>
    public static void Sgemm(ArrayView<float> a, ArrayView<float> b, ArrayView<float> bias, ArrayView<float> c, GemmShape s)
    {
        var sa = SharedMemory.Allocate<float>(GemmShared); // sa[kk·128 + i]
        var sb = SharedMemory.Allocate<float>(GemmShared); // sb[kk·128 + j]
        int tilesN = (s.N + GemmTile - 1) / GemmTile;
        int i0 = Grid.IdxX / tilesN * GemmTile, j0 = Grid.IdxX % tilesN * GemmTile;
        int tid = Group.IdxX, tx = tid % 16, ty = tid / 16;
        bool aAlongK = s.A1 == 1, bAlongK = s.B0 == 1;
        float c00 = 0, c01 = 0, c02 = 0, c03 = 0, c04 = 0, c05 = 0, c06 = 0, c07 = 0;
        float c10 = 0, c11 = 0, c12 = 0, c13 = 0, c14 = 0, c15 = 0, c16 = 0, c17 = 0;
        float c20 = 0, c21 = 0, c22 = 0, c23 = 0, c24 = 0, c25 = 0, c26 = 0, c27 = 0;
        float c30 = 0, c31 = 0, c32 = 0, c33 = 0, c34 = 0, c35 = 0, c36 = 0, c37 = 0;
        float c40 = 0, c41 = 0, c42 = 0, c43 = 0, c44 = 0, c45 = 0, c46 = 0, c47 = 0;
        float c50 = 0, c51 = 0, c52 = 0, c53 = 0, c54 = 0, c55 = 0, c56 = 0, c57 = 0;
        float c60 = 0, c61 = 0, c62 = 0, c63 = 0, c64 = 0, c65 = 0, c66 = 0, c67 = 0;
        float c70 = 0, c71 = 0, c72 = 0, c73 = 0, c74 = 0, c75 = 0, c76 = 0, c77 = 0;
        for (int k0 = 0; k0 < s.K; k0 += GemmK)
        {
            for (int q = tid; q < GemmShared; q += GemmThreads)
            {
                int kk = aAlongK ? q % GemmK : q / GemmTile, ii = aAlongK ? q / GemmK : q % GemmTile;
                int gi = i0 + ii, gk = k0 + kk;
                sa[kk * GemmTile + ii] = gi < s.M && gk < s.K ? a[(long)gi * s.A0 + (long)gk * s.A1] : 0f;
                int kb = bAlongK ? q % GemmK : q / GemmTile, jj = bAlongK ? q / GemmK : q % GemmTile;
                int gj = j0 + jj, gkb = k0 + kb;
                sb[kb * GemmTile + jj] = gj < s.N && gkb < s.K ? b[(long)gkb * s.B0 + (long)gj * s.B1] : 0f;
            }
            Group.Barrier();
            for (int kk = 0; kk < GemmK; kk++)
            {
                int ra = kk * GemmTile + ty, rb = kk * GemmTile + tx;
                float a0 = sa[ra], a1 = sa[ra + 16], a2 = sa[ra + 32], a3 = sa[ra + 48], a4 = sa[ra + 64], a5 = sa[ra + 80], a6 = sa[ra + 96], a7 = sa[ra + 112];
                float b0 = sb[rb], b1 = sb[rb + 16], b2 = sb[rb + 32], b3 = sb[rb + 48], b4 = sb[rb + 64], b5 = sb[rb + 80], b6 = sb[rb + 96], b7 = sb[rb + 112];
                c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3; c04 += a0 * b4; c05 += a0 * b5; c06 += a0 * b6; c07 += a0 * b7;
                c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3; c14 += a1 * b4; c15 += a1 * b5; c16 += a1 * b6; c17 += a1 * b7;
                c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3; c24 += a2 * b4; c25 += a2 * b5; c26 += a2 * b6; c27 += a2 * b7;
                c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3; c34 += a3 * b4; c35 += a3 * b5; c36 += a3 * b6; c37 += a3 * b7;
                c40 += a4 * b0; c41 += a4 * b1; c42 += a4 * b2; c43 += a4 * b3; c44 += a4 * b4; c45 += a4 * b5; c46 += a4 * b6; c47 += a4 * b7;
                c50 += a5 * b0; c51 += a5 * b1; c52 += a5 * b2; c53 += a5 * b3; c54 += a5 * b4; c55 += a5 * b5; c56 += a5 * b6; c57 += a5 * b7;
                c60 += a6 * b0; c61 += a6 * b1; c62 += a6 * b2; c63 += a6 * b3; c64 += a6 * b4; c65 += a6 * b5; c66 += a6 * b6; c67 += a6 * b7;
                c70 += a7 * b0; c71 += a7 * b1; c72 += a7 * b2; c73 += a7 * b3; c74 += a7 * b4; c75 += a7 * b5; c76 += a7 * b6; c77 += a7 * b7;
            }
            Group.Barrier();
        }
        Store(c, bias, s, i0 + ty + 0, j0 + tx, c00, c01, c02, c03, c04, c05, c06, c07);
        Store(c, bias, s, i0 + ty + 16, j0 + tx, c10, c11, c12, c13, c14, c15, c16, c17);
        Store(c, bias, s, i0 + ty + 32, j0 + tx, c20, c21, c22, c23, c24, c25, c26, c27);
        Store(c, bias, s, i0 + ty + 48, j0 + tx, c30, c31, c32, c33, c34, c35, c36, c37);
        Store(c, bias, s, i0 + ty + 64, j0 + tx, c40, c41, c42, c43, c44, c45, c46, c47);
        Store(c, bias, s, i0 + ty + 80, j0 + tx, c50, c51, c52, c53, c54, c55, c56, c57);
        Store(c, bias, s, i0 + ty + 96, j0 + tx, c60, c61, c62, c63, c64, c65, c66, c67);
        Store(c, bias, s, i0 + ty + 112, j0 + tx, c70, c71, c72, c73, c74, c75, c76, c77);
    }

    private static void Store(ArrayView<float> c, ArrayView<float> bias, GemmShape s, int i, int j,
        float v0, float v1, float v2, float v3, float v4, float v5, float v6, float v7)
    {
        if (i >= s.M) return;
        StoreOne(c, bias, s, i, j, v0);
        StoreOne(c, bias, s, i, j + 16, v1);
        StoreOne(c, bias, s, i, j + 32, v2);
        StoreOne(c, bias, s, i, j + 48, v3);
        StoreOne(c, bias, s, i, j + 64, v4);
        StoreOne(c, bias, s, i, j + 80, v5);
        StoreOne(c, bias, s, i, j + 96, v6);
        StoreOne(c, bias, s, i, j + 112, v7);
    }

    private static void StoreOne(ArrayView<float> c, ArrayView<float> bias, GemmShape s, int i, int j, float v)
    {
        if (j >= s.N) return;
        long at = (long)i * s.N + j;
        c[at] = s.HasBias != 0 ? v + bias[j] : v;
    }
}
