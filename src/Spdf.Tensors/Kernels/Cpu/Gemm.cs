using Spdf.Shared;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Spdf.Tensors.Kernels.Cpu;

/// <summary>
/// Single-precision general matrix multiply, <c>C = op(A)·op(B)</c> or <c>C += op(A)·op(B)</c>,
/// in the BLIS style: B is packed into KC×NR panels and A into MR×KC strips, and a register-blocked
/// micro-kernel (12×32 with Vector512, 6×16 with Vector256, 6×8 scalar otherwise; chosen at run time)
/// multiplies a strip by a panel. Tiles of C are spread over all cores; each element of C is
/// written by exactly one task in a fixed order of k, so results do not depend on scheduling.
/// </summary>
/// <remarks>Glossary: M, N = rows and columns of C; K = the inner dimension; rs/cs = row/column stride.</remarks>
public static unsafe class Gemm
{
    private static GemmKernel _kernel = Best;

    /// <summary>The fastest micro-kernel this machine runs.</summary>
    public static GemmKernel Best => Vector512.IsHardwareAccelerated ? GemmKernel.Avx512 : Vector256.IsHardwareAccelerated ? GemmKernel.Avx2 : GemmKernel.Scalar;

    /// <summary>The micro-kernel in use; defaults to <see cref="Best"/>. Tests and benchmarks may pick a narrower one.</summary>
    /// <exception cref="ArgumentException">The machine cannot run the kernel asked for.</exception>
    public static GemmKernel Kernel
    {
        get => _kernel;
        set
        {
            if (value > Best) throw new ArgumentException($"GEMM kernel {value} is not supported on this machine; the widest available is {Best}.", nameof(value));
            _kernel = value;
        }
    }

    /// <summary>Rows of A per micro-kernel (12 with Vector512: 24 accumulators; 6 otherwise).</summary>
    public static int MR => RowsOf(_kernel);

    /// <summary>Columns of B per micro-kernel (32, 16 or 8).</summary>
    public static int NR => ColumnsOf(_kernel);

    private static int RowsOf(GemmKernel kernel) => kernel == GemmKernel.Avx512 ? 12 : 6;

    private static int ColumnsOf(GemmKernel kernel) => kernel switch { GemmKernel.Avx512 => 32, GemmKernel.Avx2 => 16, _ => 8 };

    /// <summary>The micro-kernel in use, for benchmark reports.</summary>
    public static string KernelName => _kernel switch { GemmKernel.Avx512 => "avx512-12x32", GemmKernel.Avx2 => "avx2-6x16", _ => "scalar-6x8" };

    /// <summary>
    /// Largest depth of a packed block; K is split into equal blocks no deeper than this. Fewer, deeper blocks mean fewer
    /// read-modify-write passes over C; 768 measured best on Zen 5 (docs/benchmarks.md) even though a 768×32 panel of B
    /// exceeds L1 and streams from L2.
    /// </summary>
    public static int KC { get; set; } = 768;


    /// <summary>Maximum number of threads GEMM spreads over (defaults to the processor count).</summary>
    public static int MaxThreads { get; set; } = Environment.ProcessorCount;

    [ThreadStatic] private static float[]? _packA;
    [ThreadStatic] private static float[]? _packB;
    [ThreadStatic] private static float[]? _packAll; // MultiplyWide's packed depth block of A, shared by its tasks
    // Which block of A this thread's _packA holds: the call (a number from _calls), the depth block's first row, the M block.
    [ThreadStatic] private static (long Call, int Depth, int Block, float[]? Buffer) _packed;
    private static long _calls;

    /// <summary>
    /// Row-major matrix product over contiguous operands: <c>C[M,N] (+)= op(A)·op(B)</c>, where A is stored
    /// <c>[M,K]</c> (or <c>[K,M]</c> when <paramref name="transposeA"/>) and B is stored <c>[K,N]</c>
    /// (or <c>[N,K]</c> when <paramref name="transposeB"/>).
    /// </summary>
    /// <exception cref="ArgumentException">A span is shorter than its shape needs.</exception>
    public static void MatMul(ReadOnlySpan<float> a, bool transposeA, ReadOnlySpan<float> b, bool transposeB, Span<float> c,
                              int m, int n, int k, bool accumulate = false)
    {
        if (m is > 0 and <= GemvMaxRows && n > 0 && k > 0 && !transposeA && transposeB)
        {
            Gemv(a, b, c, m, n, k, accumulate);
            return;
        }
        Multiply(a, transposeA ? 1 : k, transposeA ? m : 1, b, transposeB ? 1 : n, transposeB ? k : 1, c, n, m, n, k, accumulate);
    }

    /// <summary>Up to this many rows of A, <c>A·Bᵀ</c> with B stored <c>[N,K]</c> goes through <see cref="Gemv"/>.</summary>
    public const int GemvMaxRows = 4;

    /// <summary>
    /// <c>C[i,j] (+)= A[i,:]·B[j,:]</c> for a few rows of A (batch-1 decoding: a token through <c>Linear</c>'s <c>X·Wᵀ</c>).
    /// Packing B for the blocked kernel reads and writes the whole weight to multiply it once; here each row of B (a row of
    /// W, contiguous) is streamed from memory once and dotted with every row of A while it is in L1, so the product runs at
    /// the memory's bandwidth. Rows of B are split over the cores in chunks; each C element has one writer and a fixed order.
    /// </summary>
    /// <exception cref="ArgumentException">A span is shorter than its shape needs.</exception>
    public static void Gemv(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> c, int m, int n, int k, bool accumulate)
    {
        if (m < 0 || n < 0 || k < 0) throw new ArgumentException($"Gemv sizes must be non-negative; got M={m}, N={n}, K={k}.");
        if (m == 0 || n == 0) return;
        Need(a.Length, (long)m * k, "A", m, k);
        Need(b.Length, (long)n * k, "B", n, k);
        Need(c.Length, (long)m * n, "C", m, n);
        const int Chunk = 64; // rows of B per task
        int chunks = (n + Chunk - 1) / Chunk;
        fixed (float* pa0 = a, pb0 = b, pc0 = c)
        {
            nint pa = (nint)pa0, pb = (nint)pb0, pc = (nint)pc0;
            void Rows(int t)
            {
                int j0 = t * Chunk, j1 = Math.Min(n, j0 + Chunk);
                for (int j = j0; j < j1; j++)
                {
                    var row = new ReadOnlySpan<float>((float*)pb + (long)j * k, k);
                    for (int i = 0; i < m; i++)
                    {
                        float dot = System.Numerics.Tensors.TensorPrimitives.Dot(new ReadOnlySpan<float>((float*)pa + (long)i * k, k), row);
                        float* at = (float*)pc + (long)i * n + j;
                        *at = accumulate ? *at + dot : dot;
                    }
                }
            }
            int threads = Math.Max(1, MaxThreads);
            if (threads > 1 && chunks > 1 && (long)n * k >= 1 << 16)
                Parallel.For(0, chunks, new ParallelOptions { MaxDegreeOfParallelism = threads }, Rows);
            else
                for (int t = 0; t < chunks; t++) Rows(t);
        }
    }

    /// <summary>
    /// Strided matrix product: <c>C[i,j] (+)= Σ_p A(i,p)·B(p,j)</c> with <c>A(i,p) = a[i·rsA + p·csA]</c>,
    /// <c>B(p,j) = b[p·rsB + j·csB]</c> and <c>C[i,j] = c[i·ldc + j]</c>.
    /// </summary>
    /// <exception cref="ArgumentException">A size is negative or a span is shorter than its shape and strides need.</exception>
    public static void Multiply(ReadOnlySpan<float> a, int rsA, int csA, ReadOnlySpan<float> b, int rsB, int csB,
                                Span<float> c, int ldc, int m, int n, int k, bool accumulate)
    {
        if (m < 0 || n < 0 || k < 0) throw new ArgumentException($"Gemm sizes must be non-negative; got M={m}, N={n}, K={k}.");
        if (m == 0 || n == 0) return;
        Need(c.Length, (long)(m - 1) * ldc + n, "C", m, n);
        if (k == 0) { if (!accumulate) for (int i = 0; i < m; i++) c.Slice(i * ldc, n).Clear(); return; }
        Need(a.Length, (long)(m - 1) * rsA + (long)(k - 1) * csA + 1, "A", m, k);
        Need(b.Length, (long)(k - 1) * rsB + (long)(n - 1) * csB + 1, "B", k, n);
        var kernel = _kernel; // captured once: a concurrent change of Kernel affects only later calls
        int threads = Math.Max(1, MaxThreads);
        if (IsDeep(m, n, k)) MultiplySplitDepth(a, rsA, csA, b, rsB, csB, c, ldc, m, n, k, accumulate, kernel, threads);
        else MultiplyBlocked(a, rsA, csA, b, rsB, csB, c, ldc, m, n, k, accumulate, kernel, threads, allowWide: true);
    }

    /// <summary>
    /// Whether the product is deep and its C small, so that it runs as two halves of K (<see cref="MultiplySplitDepth"/>):
    /// K at least 512, C at most 256K elements (1 MiB), and at least 1M multiply-adds. Decided by the shape alone, so
    /// that the order of every element's sums, and so its bits, do not depend on the number of threads.
    /// </summary>
    private static bool IsDeep(int m, int n, int k) => k >= 512 && (long)m * n <= 1 << 18 && (long)m * n * k >= 1 << 20;

    /// <summary>
    /// A deep product with a small C: the LM head's input gradient (512 tokens × 384 features over a vocabulary of
    /// 8,192), a weight gradient over 2,048 tokens (128 × 128). The blocked loop runs one parallel region per depth block
    /// (and one more to pack B); with a small C each region holds little work, and on two cores the 12 depth blocks of the
    /// first product ran only 1.66× faster than on one. Here K is split in two halves that run side by side, each over
    /// all of C with its own packing (no block of A or B is packed twice): the first half into C, the second into a
    /// scratch C that is then added. Each half gets half the threads. Every element is summed in the same order whatever
    /// the number of threads.
    /// </summary>
    private static void MultiplySplitDepth(ReadOnlySpan<float> a, int rsA, int csA, ReadOnlySpan<float> b, int rsB, int csB,
                                           Span<float> c, int ldc, int m, int n, int k, bool accumulate, GemmKernel kernel, int threads)
    {
        int k0 = (k / 2 + 7) & ~7; // the first half's depth, a multiple of 8 (whole 8 × 8 transposes when A is packed)
        var scratch = System.Buffers.ArrayPool<float>.Shared.Rent(m * n);
        try
        {
            int inner = Math.Max(1, threads / 2);
            fixed (float* pa0 = a, pb0 = b, pc0 = c, ps0 = scratch)
            {
                nint pa = (nint)pa0, pb = (nint)pb0, pc = (nint)pc0, ps = (nint)ps0;
                int aLen = a.Length, bLen = b.Length, cLen = c.Length;
                long aOff = (long)k0 * csA, bOff = (long)k0 * rsB;
                void Half(int h)
                {
                    if (h == 0)
                        MultiplyBlocked(new ReadOnlySpan<float>((float*)pa, aLen), rsA, csA, new ReadOnlySpan<float>((float*)pb, bLen), rsB, csB,
                            new Span<float>((float*)pc, cLen), ldc, m, n, k0, accumulate, kernel, inner, allowWide: false);
                    else
                        MultiplyBlocked(new ReadOnlySpan<float>((float*)pa + aOff, (int)(aLen - aOff)), rsA, csA, new ReadOnlySpan<float>((float*)pb + bOff, (int)(bLen - bOff)), rsB, csB,
                            new Span<float>((float*)ps, m * n), n, m, n, k - k0, false, kernel, inner, allowWide: false);
                }
                if (threads > 1) Parallel.For(0, 2, new ParallelOptions { MaxDegreeOfParallelism = threads }, Half);
                else { Half(0); Half(1); }
                for (int i = 0; i < m; i++)
                {
                    var row = new Span<float>((float*)pc + (long)i * ldc, n);
                    System.Numerics.Tensors.TensorPrimitives.Add(row, new ReadOnlySpan<float>((float*)ps + (long)i * n, n), row);
                }
            }
        }
        finally { System.Buffers.ArrayPool<float>.Shared.Return(scratch); }
    }

    /// <summary>The blocked product (BLIS loops) over <paramref name="threads"/> threads; sizes already checked. The halves
    /// of <see cref="MultiplySplitDepth"/> pass <paramref name="allowWide"/> false: <see cref="MultiplyWide"/>'s tasks
    /// take their thread's buffer for packed B, which a half's default loop on that thread may be using.</summary>
    private static void MultiplyBlocked(ReadOnlySpan<float> a, int rsA, int csA, ReadOnlySpan<float> b, int rsB, int csB,
                                        Span<float> c, int ldc, int m, int n, int k, bool accumulate, GemmKernel kernel, int threads, bool allowWide)
    {
        int mr = RowsOf(kernel), nr = ColumnsOf(kernel);
        int mc = mr * 8;
        int nPad = (n + nr - 1) / nr * nr;
        int kc0 = (k + (k + KC - 1) / KC - 1) / ((k + KC - 1) / KC); // equal blocks: ceil(k / blocks)
        int mBlocks = (m + mc - 1) / mc;
        int nPanels = nPad / nr;
        if (allowWide && threads > 1 && IsWide(mBlocks, nPanels, mc, kc0, nr))
        {
            MultiplyWide(a, rsA, csA, b, rsB, csB, c, ldc, m, n, k, accumulate, kernel, kc0, threads);
            return;
        }
        var packB = Rent(ref _packB, nPad * kc0); // all of B's depth block (the wide loop packs chunks of its own)
        // Split N into chunks so that there are enough tasks for every core.
        int nChunks = Math.Clamp((threads * 4 + mBlocks - 1) / mBlocks, 1, nPanels);
        int panelsPerChunk = (nPanels + nChunks - 1) / nChunks;
        nChunks = (nPanels + panelsPerChunk - 1) / panelsPerChunk;
        int tasks = mBlocks * nChunks;
        var options = new ParallelOptions { MaxDegreeOfParallelism = threads };
        long call = Interlocked.Increment(ref _calls); // names this call's packed blocks of A (see Task)

        fixed (float* pa0 = a, pb0 = b, pc0 = c, ppB = packB)
        {
            nint pa = (nint)pa0, pb = (nint)pb0, pc = (nint)pc0, pkB = (nint)Align64(ppB);
            for (int p0 = 0; p0 < k; p0 += kc0)
            {
                int kc = Math.Min(kc0, k - p0);
                bool acc = accumulate || p0 > 0;
                // B is shared by every task: pack it once per depth block, in parallel when large.
                if ((long)nPad * kc > 1 << 16 && threads > 1)
                    Parallel.For(0, nPanels, options, s => PackB((float*)pb, rsB, csB, n, p0, kc, s, nr, (float*)pkB));
                else
                    for (int s = 0; s < nPanels; s++) PackB((float*)pb, rsB, csB, n, p0, kc, s, nr, (float*)pkB);

                void Task(int t)
                {
                    int mb = t / nChunks, ncu = t % nChunks;
                    int i0 = mb * mc, i1 = Math.Min(m, i0 + mc);
                    int jp0 = ncu * panelsPerChunk, jp1 = Math.Min(nPanels, jp0 + panelsPerChunk);
                    // Each task packs its own MC×KC block of A into a per-thread buffer, so it is hot in L2 when used. When N
                    // is split for parallelism, the tasks of one block of A are consecutive, and a thread that runs
                    // several of them packs the block once (a weight gradient of 128 rows and K = 2,048 tokens packed
                    // each block four times).
                    var packA = Rent(ref _packA, mc * kc0);
                    fixed (float* pkA0 = packA)
                    {
                        float* pkA = Align64(pkA0);
                        if (_packed != (call, p0, mb, packA))
                        {
                            PackABlock((float*)pa, rsA, csA, m, p0, kc, i0, i1, mr, pkA);
                            _packed = (call, p0, mb, packA);
                        }
                        TileBlock(kc, pkA, (float*)pkB, (float*)pc, ldc, m, n, i0, i1, jp0, jp1, acc, mr, nr);
                    }
                }

                if (tasks == 1 || threads == 1 || (long)m * n * kc < 1 << 15)
                    for (int t = 0; t < tasks; t++) Task(t);
                else
                    Parallel.For(0, tasks, options, Task);
            }
        }
    }

    /// <summary>Bytes of packed B one task of <see cref="MultiplyWide"/> keeps in L2 while every block of A passes over it.</summary>
    private const int WideChunkBytes = 192 << 10;

    /// <summary>
    /// Whether B is so much wider than A is tall that <see cref="MultiplyWide"/> should run the product: at least 16
    /// panels of B for each block of A, and all of A's packed depth block within 2 MiB (a GPT's LM head chunk, 512 tokens
    /// against a vocabulary of 8,192, is 6 blocks of A and 256 panels).
    /// </summary>
    private static bool IsWide(int mBlocks, int nPanels, int mc, int kc, int nr) =>
        nPanels >= 16 * mBlocks && (long)mBlocks * mc * kc * sizeof(float) <= 2 << 20 && nPanels * nr >= 2048;

    /// <summary>
    /// The product for a B much wider than A is tall. The default loop gives each task one block of A and a share of
    /// B's panels, so with few blocks of A every task streams megabytes of packed B, and B (packed whole per depth
    /// block, ahead of the tasks) is read from memory once per block of A: the LM head's logits, 512 × 8,192 × 384,
    /// ran at 60% of the FMA peak. Here A's depth block is packed once, for all tasks; each task packs a chunk of B's
    /// panels that fits L2 (<see cref="WideChunkBytes"/>) into its thread's buffer and runs every block of A over it.
    /// B is read once, and its packing needs no pass of its own. The micro-kernels and the order of each element's
    /// sums are those of the default loop, so results are the same to the bit.
    /// </summary>
    private static void MultiplyWide(ReadOnlySpan<float> a, int rsA, int csA, ReadOnlySpan<float> b, int rsB, int csB,
                                     Span<float> c, int ldc, int m, int n, int k, bool accumulate, GemmKernel kernel, int kc0, int threads)
    {
        int mr = RowsOf(kernel), nr = ColumnsOf(kernel), mc = mr * 8;
        int mBlocks = (m + mc - 1) / mc, mPad = mBlocks * mc;
        int nPanels = (n + nr - 1) / nr;
        int chunkPanels = Math.Max(1, WideChunkBytes / (kc0 * nr * sizeof(float)));
        int chunks = (nPanels + chunkPanels - 1) / chunkPanels;
        var packAll = Rent(ref _packAll, mPad * kc0);
        var options = new ParallelOptions { MaxDegreeOfParallelism = threads };
        fixed (float* pa0 = a, pb0 = b, pc0 = c, ppA = packAll)
        {
            nint pa = (nint)pa0, pb = (nint)pb0, pc = (nint)pc0, pkA = (nint)Align64(ppA);
            for (int p0 = 0; p0 < k; p0 += kc0)
            {
                int kc = Math.Min(kc0, k - p0);
                bool acc = accumulate || p0 > 0;
                // A's depth block, every M block in its strips: block mb at mb·mc·kc, as the default loop packs one.
                void PackBlock(int mb) => PackABlock((float*)pa, rsA, csA, m, p0, kc, mb * mc, Math.Min(m, mb * mc + mc), mr, (float*)pkA + (long)mb * mc * kc);
                if (mBlocks > 1) Parallel.For(0, mBlocks, options, PackBlock);
                else PackBlock(0);
                Parallel.For(0, chunks, options, t =>
                {
                    int jp0 = t * chunkPanels, jp1 = Math.Min(nPanels, jp0 + chunkPanels);
                    var packB = Rent(ref _packB, chunkPanels * kc0 * nr);
                    fixed (float* ppB = packB)
                    {
                        float* pkB = Align64(ppB);
                        float* chunkB = pkB - (long)jp0 * kc * nr; // panel jp at chunkB + jp·kc·nr, as in the default loop's packed B
                        for (int jp = jp0; jp < jp1; jp++) PackB((float*)pb, rsB, csB, n, p0, kc, jp, nr, chunkB);
                        for (int mb = 0; mb < mBlocks; mb++)
                            TileBlock(kc, (float*)pkA + (long)mb * mc * kc, chunkB, (float*)pc, ldc, m, n, mb * mc, Math.Min(m, mb * mc + mc), jp0, jp1, acc, mr, nr);
                    }
                });
            }
        }
    }

    /// <summary>Packs rows [i0, i1) of A's depth block [p0, p0 + kc) into MR-row strips at <paramref name="dst"/>, the
    /// strip of row i at (i − i0)·kc.</summary>
    private static void PackABlock(float* a, int rsA, int csA, int m, int p0, int kc, int i0, int i1, int mr, float* dst)
    {
        if (rsA == 1) PackATransposedBlock(a, csA, m, p0, kc, i0, i1, mr, dst);
        else for (int i = i0; i < i1; i += mr) PackA(a, rsA, csA, m, p0, kc, i, mr, dst + (long)(i - i0) * kc);
    }

    /// <summary>The micro-tiles of C rows [i0, i1) × panels [jp0, jp1): A's packed block (rows from i0) against B's packed
    /// panels (panel jp at <paramref name="packedB"/> + jp·kc·NR).</summary>
    private static void TileBlock(int kc, float* blockA, float* packedB, float* c, int ldc, int m, int n, int i0, int i1, int jp0, int jp1, bool acc, int mr, int nr)
    {
        for (int jp = jp0; jp < jp1; jp++)
        {
            int j = jp * nr, nrEff = Math.Min(nr, n - j);
            float* bp = packedB + (long)jp * kc * nr;
            for (int i = i0; i < i1; i += mr)
                MicroTile(kc, blockA + (long)(i - i0) * kc, bp, c + (long)i * ldc + j, ldc, Math.Min(mr, m - i), nrEff, acc, mr, nr);
        }
    }

    private static void Need(int have, long need, string name, int rows, int cols)
    {
        if (have < need)
            throw new ArgumentException($"Gemm: {name} ({rows}×{cols} with the given strides) needs {need} elements but its span has {have}.");
    }

    /// <summary>A pinned per-thread packing buffer with room to start <paramref name="size"/> elements on a 64-byte
    /// boundary (<see cref="Align64"/>): packed panels are read one 512-bit vector at a time, and a vector that spans two
    /// cache lines costs two loads.</summary>
    private static float[] Rent(ref float[]? cache, int size)
    {
        size += 15;
        if (cache is null || cache.Length < size) cache = GC.AllocateUninitializedArray<float>(Math.Max(size, 1), pinned: true);
        return cache;
    }

    /// <summary>The first 64-byte boundary at or after <paramref name="p"/>.</summary>
    private static float* Align64(float* p) => (float*)(((nint)p + 63) & ~(nint)63);

    /// <summary>Packs rows [i0, i0+MR) of A(:, p0..p0+kc) into an MR-interleaved strip (p-major), zero-padded past M.
    /// For A with rows more than one element apart (a transposed A, rsA = 1, goes through <see cref="PackATransposedBlock"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackA(float* a, int rsA, int csA, int m, int p0, int kc, int i0, int mr, float* d)
    {
        int rows = Math.Min(mr, m - i0);
        // Row-major A: walk p outermost so that writes are contiguous and each row is read as a sequential stream.
        float** rowPtr = stackalloc float*[16];
        for (int r = 0; r < rows; r++) rowPtr[r] = a + (long)(i0 + r) * rsA + (long)p0 * csA;
        int pStart = 0;
        if (csA == 1 && rows == mr && mr >= 8 && Avx.IsSupported)
        {
            // Rows 0–7 of each 8-deep slice by an 8×8 register transpose; rows 8–11 (MR = 12) by a 4×8 one, others
            // element by element.
            for (; pStart + 8 <= kc; pStart += 8)
            {
                Block8x8.Transpose(rowPtr[0] + pStart, rsA, d + pStart * mr, mr);
                int r = 8;
                if (mr >= 12) { Transpose4x8(rowPtr[8] + pStart, rsA, d + pStart * mr + 8, mr); r = 12; }
                for (int q = 0; q < 8; q++)
                {
                    float* dp = d + (pStart + q) * mr;
                    for (int rr = r; rr < mr; rr++) dp[rr] = rowPtr[rr][pStart + q];
                }
            }
        }
        for (int p = pStart; p < kc; p++)
        {
            float* dp = d + p * mr;
            long off = (long)p * csA;
            for (int r = 0; r < rows; r++) dp[r] = rowPtr[r][off];
            for (int r = rows; r < mr; r++) dp[r] = 0;
        }
    }

    /// <summary>
    /// Packs rows [i0, i1) of a transposed A (stored <c>[K, M]</c>: the block's values for one p are contiguous) into its
    /// MR-row strips in one pass over p: each source line is read once, for every strip it feeds. Strip by strip, each
    /// strip re-read the lines it shared with the previous one after they had left L1, and when M is a multiple of 2048
    /// the block's rows (one per p, M floats apart) all fall into the same few cache sets: the weight gradient of a
    /// 2048-token GPT head with an 8192-word vocabulary (A = dLogits, M = 8192) ran at 66% of the FMA peak.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackATransposedBlock(float* a, int csA, int m, int p0, int kc, int i0, int i1, int mr, float* d)
    {
        int strips = (i1 - i0 + mr - 1) / mr;
        int fullStrips = Math.Min(strips, (Math.Min(i1, m) - i0) / mr);
        for (int p = 0; p < kc; p++)
        {
            float* src = a + i0 + (long)(p0 + p) * csA;
            float* dp = d + p * mr;
            int s = 0;
            if (mr == 12 && Vector128.IsHardwareAccelerated)
                for (; s < fullStrips; s++)
                {
                    float* q = src + s * 12, o = dp + (long)s * kc * 12;
                    Vector128.Store(Vector128.Load(q), o); Vector128.Store(Vector128.Load(q + 4), o + 4); Vector128.Store(Vector128.Load(q + 8), o + 8);
                }
            for (; s < strips; s++)
            {
                int rows = Math.Min(mr, m - (i0 + s * mr));
                float* q = src + s * mr, o = dp + (long)s * kc * mr;
                for (int r = 0; r < rows; r++) o[r] = q[r];
                for (int r = Math.Max(rows, 0); r < mr; r++) o[r] = 0;
            }
        }
    }

    /// <summary>Packs columns [s·NR, s·NR+NR) of B(p0..p0+kc, :) into a row-interleaved panel, zero-padded past N.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackB(float* b, int rsB, int csB, int n, int p0, int kc, int s, int nr, float* dst)
    {
        float* d = dst + (long)s * kc * nr;
        int j0 = s * nr;
        int cols = Math.Min(nr, n - j0);
        if (csB == 1)
        {
            for (int p = 0; p < kc; p++)
            {
                float* src = b + (long)(p0 + p) * rsB + j0;
                float* dp = d + p * nr;
                if (cols == nr) new ReadOnlySpan<float>(src, nr).CopyTo(new Span<float>(dp, nr));
                else { for (int j = 0; j < cols; j++) dp[j] = src[j]; for (int j = cols; j < nr; j++) dp[j] = 0; }
            }
        }
        else
        {
            int p8 = 0;
            if (rsB == 1 && cols == nr && Avx.IsSupported)
            {
                // B stored transposed ([N, K]): transpose 8×8 blocks in registers so that reads and writes stay contiguous.
                for (; p8 + 8 <= kc; p8 += 8)
                    for (int j = 0; j < nr; j += 8)
                        Block8x8.Transpose(b + (long)(j0 + j) * csB + p0 + p8, csB, d + p8 * nr + j, nr);
            }
            for (int j = 0; j < nr; j++)
            {
                if (j >= cols) { for (int p = p8; p < kc; p++) d[p * nr + j] = 0; continue; }
                float* src = b + (long)p0 * rsB + (long)(j0 + j) * csB;
                for (int p = p8; p < kc; p++) d[p * nr + j] = src[(long)p * rsB];
            }
        }
    }

    /// <summary>Writes the transpose of the 4×8 block at <paramref name="src"/> (row stride <paramref name="ldSrc"/>) as 8 rows
    /// of 4 at <paramref name="dst"/> (row stride <paramref name="ldDst"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Transpose4x8(float* src, int ldSrc, float* dst, int ldDst)
    {
        var r0 = Avx.LoadVector256(src); var r1 = Avx.LoadVector256(src + ldSrc);
        var r2 = Avx.LoadVector256(src + 2L * ldSrc); var r3 = Avx.LoadVector256(src + 3L * ldSrc);
        var t0 = Avx.UnpackLow(r0, r1); var t1 = Avx.UnpackHigh(r0, r1);
        var t2 = Avx.UnpackLow(r2, r3); var t3 = Avx.UnpackHigh(r2, r3);
        var s0 = Avx.Shuffle(t0, t2, 0x44); var s1 = Avx.Shuffle(t0, t2, 0xEE); // columns 0 | 4, 1 | 5
        var s2 = Avx.Shuffle(t1, t3, 0x44); var s3 = Avx.Shuffle(t1, t3, 0xEE); // columns 2 | 6, 3 | 7
        s0.GetLower().Store(dst); s1.GetLower().Store(dst + ldDst); s2.GetLower().Store(dst + 2L * ldDst); s3.GetLower().Store(dst + 3L * ldDst);
        s0.GetUpper().Store(dst + 4L * ldDst); s1.GetUpper().Store(dst + 5L * ldDst); s2.GetUpper().Store(dst + 6L * ldDst); s3.GetUpper().Store(dst + 7L * ldDst);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void MicroTile(int kc, float* a, float* b, float* c, int ldc, int mrEff, int nrEff, bool acc, int mr, int nr)
    {
        if (mrEff == mr && nrEff == nr)
        {
            Micro(kc, a, b, c, ldc, acc, nr);
            return;
        }
        float* tile = stackalloc float[12 * 32];
        Micro(kc, a, b, tile, nr, false, nr);
        for (int i = 0; i < mrEff; i++)
            for (int j = 0; j < nrEff; j++)
                c[(long)i * ldc + j] = acc ? c[(long)i * ldc + j] + tile[i * nr + j] : tile[i * nr + j];
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Micro(int kc, float* a, float* b, float* c, int ldc, bool acc, int nr)
    {
        if (nr == 32) Micro512x12(kc, a, b, c, ldc, acc);
        else if (nr == 16) Micro256(kc, a, b, c, ldc, acc);
        else MicroScalar(kc, a, b, c, ldc, acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store512(float* c, Vector512<float> v0, Vector512<float> v1, bool acc)
    {
        if (acc) { v0 += Vector512.Load(c); v1 += Vector512.Load(c + 16); }
        v0.Store(c); v1.Store(c + 16);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Micro512x12(int kc, float* a, float* b, float* c, int ldc, bool acc)
    {
        if (acc && Sse.IsSupported)
        {
            // The C tile was last touched a whole pass ago: fetch it while the k loop runs.
            for (int r = 0; r < 12; r++) { Sse.Prefetch0(c + (long)r * ldc); Sse.Prefetch0(c + (long)r * ldc + 16); }
        }
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector512<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        Vector512<float> c60 = default, c61 = default, c70 = default, c71 = default, c80 = default, c81 = default;
        Vector512<float> c90 = default, c91 = default, ca0 = default, ca1 = default, cb0 = default, cb1 = default;
        for (int p = 0; p < kc; p++)
        {
            var b0 = Vector512.Load(b);
            var b1 = Vector512.Load(b + 16);
            var a0 = Vector512.Create(a[0]); c00 = Vector512.FusedMultiplyAdd(a0, b0, c00); c01 = Vector512.FusedMultiplyAdd(a0, b1, c01);
            var a1 = Vector512.Create(a[1]); c10 = Vector512.FusedMultiplyAdd(a1, b0, c10); c11 = Vector512.FusedMultiplyAdd(a1, b1, c11);
            var a2 = Vector512.Create(a[2]); c20 = Vector512.FusedMultiplyAdd(a2, b0, c20); c21 = Vector512.FusedMultiplyAdd(a2, b1, c21);
            var a3 = Vector512.Create(a[3]); c30 = Vector512.FusedMultiplyAdd(a3, b0, c30); c31 = Vector512.FusedMultiplyAdd(a3, b1, c31);
            var a4 = Vector512.Create(a[4]); c40 = Vector512.FusedMultiplyAdd(a4, b0, c40); c41 = Vector512.FusedMultiplyAdd(a4, b1, c41);
            var a5 = Vector512.Create(a[5]); c50 = Vector512.FusedMultiplyAdd(a5, b0, c50); c51 = Vector512.FusedMultiplyAdd(a5, b1, c51);
            var a6 = Vector512.Create(a[6]); c60 = Vector512.FusedMultiplyAdd(a6, b0, c60); c61 = Vector512.FusedMultiplyAdd(a6, b1, c61);
            var a7 = Vector512.Create(a[7]); c70 = Vector512.FusedMultiplyAdd(a7, b0, c70); c71 = Vector512.FusedMultiplyAdd(a7, b1, c71);
            var a8 = Vector512.Create(a[8]); c80 = Vector512.FusedMultiplyAdd(a8, b0, c80); c81 = Vector512.FusedMultiplyAdd(a8, b1, c81);
            var a9 = Vector512.Create(a[9]); c90 = Vector512.FusedMultiplyAdd(a9, b0, c90); c91 = Vector512.FusedMultiplyAdd(a9, b1, c91);
            var aa = Vector512.Create(a[10]); ca0 = Vector512.FusedMultiplyAdd(aa, b0, ca0); ca1 = Vector512.FusedMultiplyAdd(aa, b1, ca1);
            var ab = Vector512.Create(a[11]); cb0 = Vector512.FusedMultiplyAdd(ab, b0, cb0); cb1 = Vector512.FusedMultiplyAdd(ab, b1, cb1);
            a += 12; b += 32;
        }
        Store512(c, c00, c01, acc); c += ldc;
        Store512(c, c10, c11, acc); c += ldc;
        Store512(c, c20, c21, acc); c += ldc;
        Store512(c, c30, c31, acc); c += ldc;
        Store512(c, c40, c41, acc); c += ldc;
        Store512(c, c50, c51, acc); c += ldc;
        Store512(c, c60, c61, acc); c += ldc;
        Store512(c, c70, c71, acc); c += ldc;
        Store512(c, c80, c81, acc); c += ldc;
        Store512(c, c90, c91, acc); c += ldc;
        Store512(c, ca0, ca1, acc); c += ldc;
        Store512(c, cb0, cb1, acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Micro256(int kc, float* a, float* b, float* c, int ldc, bool acc)
    {
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector256<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int p = 0; p < kc; p++)
        {
            var b0 = Vector256.Load(b);
            var b1 = Vector256.Load(b + 8);
            var a0 = Vector256.Create(a[0]); c00 = Vector256.FusedMultiplyAdd(a0, b0, c00); c01 = Vector256.FusedMultiplyAdd(a0, b1, c01);
            var a1 = Vector256.Create(a[1]); c10 = Vector256.FusedMultiplyAdd(a1, b0, c10); c11 = Vector256.FusedMultiplyAdd(a1, b1, c11);
            var a2 = Vector256.Create(a[2]); c20 = Vector256.FusedMultiplyAdd(a2, b0, c20); c21 = Vector256.FusedMultiplyAdd(a2, b1, c21);
            var a3 = Vector256.Create(a[3]); c30 = Vector256.FusedMultiplyAdd(a3, b0, c30); c31 = Vector256.FusedMultiplyAdd(a3, b1, c31);
            var a4 = Vector256.Create(a[4]); c40 = Vector256.FusedMultiplyAdd(a4, b0, c40); c41 = Vector256.FusedMultiplyAdd(a4, b1, c41);
            var a5 = Vector256.Create(a[5]); c50 = Vector256.FusedMultiplyAdd(a5, b0, c50); c51 = Vector256.FusedMultiplyAdd(a5, b1, c51);
            a += 6; b += 16;
        }
        Store256(c, c00, c01, acc); c += ldc;
        Store256(c, c10, c11, acc); c += ldc;
        Store256(c, c20, c21, acc); c += ldc;
        Store256(c, c30, c31, acc); c += ldc;
        Store256(c, c40, c41, acc); c += ldc;
        Store256(c, c50, c51, acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store256(float* c, Vector256<float> v0, Vector256<float> v1, bool acc)
    {
        if (acc) { v0 += Vector256.Load(c); v1 += Vector256.Load(c + 8); }
        v0.Store(c); v1.Store(c + 8);
    }

    private static void MicroScalar(int kc, float* a, float* b, float* c, int ldc, bool acc)
    {
        float* t = stackalloc float[6 * 8];
        for (int q = 0; q < 6 * 8; q++) t[q] = 0;
        for (int p = 0; p < kc; p++, a += 6, b += 8)
            for (int i = 0; i < 6; i++)
                for (int j = 0; j < 8; j++) t[i * 8 + j] = MathF.FusedMultiplyAdd(a[i], b[j], t[i * 8 + j]);
        for (int i = 0; i < 6; i++)
            for (int j = 0; j < 8; j++) c[(long)i * ldc + j] = acc ? c[(long)i * ldc + j] + t[i * 8 + j] : t[i * 8 + j];
    }
}

/// <summary>GEMM micro-kernels, narrowest first.</summary>
public enum GemmKernel
{
    /// <summary>6×8, scalar fused multiply-adds.</summary>
    Scalar,
    /// <summary>6×16 with Vector256.</summary>
    Avx2,
    /// <summary>12×32 with Vector512.</summary>
    Avx512,
}
