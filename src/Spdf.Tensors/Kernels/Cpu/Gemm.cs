using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Spdf.Tensors.Kernels.Cpu;

/// <summary>
/// Single-precision general matrix multiply, <c>C = op(A)·op(B)</c> or <c>C += op(A)·op(B)</c>,
/// in the BLIS style: B is packed into KC×NR panels and A into MR×KC strips, and a register-blocked
/// micro-kernel (6×32 with Vector512, 6×16 with Vector256, scalar otherwise; chosen at run time)
/// multiplies a strip by a panel. Tiles of C are spread over all cores; each element of C is
/// written by exactly one task in a fixed order of k, so results do not depend on scheduling.
/// </summary>
/// <remarks>Glossary: M, N = rows and columns of C; K = the inner dimension; rs/cs = row/column stride.</remarks>
public static unsafe class Gemm
{
    /// <summary>Rows of A per micro-kernel.</summary>
    public const int MR = 6;

    /// <summary>Columns of B per micro-kernel for the instruction set in use (32, 16 or 8).</summary>
    public static readonly int NR = Vector512.IsHardwareAccelerated ? 32 : Vector256.IsHardwareAccelerated ? 16 : 8;

    /// <summary>The micro-kernel in use, for benchmark reports.</summary>
    public static string KernelName => NR switch { 32 => "avx512-6x32", 16 => "avx2-6x16", _ => "scalar-6x8" };

    private const int KC = 256;
    private const int MC = MR * 16; // rows of C per task (A block of MC×KC stays in L2)

    /// <summary>Maximum number of threads GEMM spreads over (defaults to the processor count).</summary>
    public static int MaxThreads { get; set; } = Environment.ProcessorCount;

    [ThreadStatic] private static float[]? _packA;
    [ThreadStatic] private static float[]? _packB;

    /// <summary>
    /// Row-major matrix product over contiguous operands: <c>C[M,N] (+)= op(A)·op(B)</c>, where A is stored
    /// <c>[M,K]</c> (or <c>[K,M]</c> when <paramref name="transposeA"/>) and B is stored <c>[K,N]</c>
    /// (or <c>[N,K]</c> when <paramref name="transposeB"/>).
    /// </summary>
    /// <exception cref="ArgumentException">A span is shorter than its shape needs.</exception>
    public static void MatMul(ReadOnlySpan<float> a, bool transposeA, ReadOnlySpan<float> b, bool transposeB, Span<float> c,
                              int m, int n, int k, bool accumulate = false)
    {
        Multiply(a, transposeA ? 1 : k, transposeA ? m : 1, b, transposeB ? 1 : n, transposeB ? k : 1, c, n, m, n, k, accumulate);
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

        int nr = NR;
        int mPad = (m + MR - 1) / MR * MR, nPad = (n + nr - 1) / nr * nr;
        int kcMax = Math.Min(KC, k);
        var packA = Rent(ref _packA, mPad * kcMax);
        var packB = Rent(ref _packB, nPad * kcMax);
        int mBlocks = (m + MC - 1) / MC;
        int nPanels = nPad / nr;
        int threads = Math.Max(1, MaxThreads);
        // Split N into chunks so that there are enough tasks for every core.
        int nChunks = Math.Clamp((threads * 4 + mBlocks - 1) / mBlocks, 1, nPanels);
        int panelsPerChunk = (nPanels + nChunks - 1) / nChunks;
        nChunks = (nPanels + panelsPerChunk - 1) / panelsPerChunk;
        int tasks = mBlocks * nChunks;

        fixed (float* pa0 = a, pb0 = b, pc0 = c, ppA = packA, ppB = packB)
        {
            nint pa = (nint)pa0, pb = (nint)pb0, pc = (nint)pc0, pkA = (nint)ppA, pkB = (nint)ppB;
            for (int p0 = 0; p0 < k; p0 += KC)
            {
                int kc = Math.Min(KC, k - p0);
                bool acc = accumulate || p0 > 0;
                int aStrips = mPad / MR;
                long packWork = (long)(mPad + nPad) * kc;
                if (packWork > 1 << 16 && threads > 1)
                {
                    Parallel.For(0, aStrips + nPanels, new ParallelOptions { MaxDegreeOfParallelism = threads }, s =>
                    {
                        if (s < aStrips) PackA((float*)pa, rsA, csA, m, p0, kc, s, (float*)pkA);
                        else PackB((float*)pb, rsB, csB, n, p0, kc, s - aStrips, nr, (float*)pkB);
                    });
                }
                else
                {
                    for (int s = 0; s < aStrips; s++) PackA((float*)pa, rsA, csA, m, p0, kc, s, (float*)pkA);
                    for (int s = 0; s < nPanels; s++) PackB((float*)pb, rsB, csB, n, p0, kc, s, nr, (float*)pkB);
                }

                void Task(int t)
                {
                    int mb = t / nChunks, ncu = t % nChunks;
                    int i0 = mb * MC, i1 = Math.Min(m, i0 + MC);
                    int jp0 = ncu * panelsPerChunk, jp1 = Math.Min(nPanels, jp0 + panelsPerChunk);
                    for (int jp = jp0; jp < jp1; jp++)
                    {
                        int j = jp * nr;
                        int nrEff = Math.Min(nr, n - j);
                        float* bp = (float*)pkB + (long)jp * kc * nr;
                        for (int i = i0; i < i1; i += MR)
                        {
                            int mrEff = Math.Min(MR, m - i);
                            float* ap = (float*)pkA + (long)(i / MR) * kc * MR;
                            float* cp = (float*)pc + (long)i * ldc + j;
                            MicroTile(kc, ap, bp, cp, ldc, mrEff, nrEff, acc, nr);
                        }
                    }
                }

                if (tasks == 1 || threads == 1 || (long)m * n * kc < 1 << 15)
                    for (int t = 0; t < tasks; t++) Task(t);
                else
                    Parallel.For(0, tasks, new ParallelOptions { MaxDegreeOfParallelism = threads }, Task);
            }
        }
    }

    private static void Need(int have, long need, string name, int rows, int cols)
    {
        if (have < need)
            throw new ArgumentException($"Gemm: {name} ({rows}×{cols} with the given strides) needs {need} elements but its span has {have}.");
    }

    private static float[] Rent(ref float[]? cache, int size)
    {
        if (cache is null || cache.Length < size) cache = GC.AllocateUninitializedArray<float>(Math.Max(size, 1), pinned: true);
        return cache;
    }

    /// <summary>Packs rows [s·MR, s·MR+MR) of A(:, p0..p0+kc) into an MR-interleaved strip, zero-padded past M.</summary>
    private static void PackA(float* a, int rsA, int csA, int m, int p0, int kc, int s, float* dst)
    {
        float* d = dst + (long)s * kc * MR;
        int i0 = s * MR;
        int rows = Math.Min(MR, m - i0);
        for (int r = 0; r < MR; r++)
        {
            if (r >= rows) { for (int p = 0; p < kc; p++) d[p * MR + r] = 0; continue; }
            float* src = a + (long)(i0 + r) * rsA + (long)p0 * csA;
            if (csA == 1) for (int p = 0; p < kc; p++) d[p * MR + r] = src[p];
            else for (int p = 0; p < kc; p++) d[p * MR + r] = src[(long)p * csA];
        }
    }

    /// <summary>Packs columns [s·NR, s·NR+NR) of B(p0..p0+kc, :) into a row-interleaved panel, zero-padded past N.</summary>
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
            for (int j = 0; j < nr; j++)
            {
                if (j >= cols) { for (int p = 0; p < kc; p++) d[p * nr + j] = 0; continue; }
                float* src = b + (long)p0 * rsB + (long)(j0 + j) * csB;
                for (int p = 0; p < kc; p++) d[p * nr + j] = src[(long)p * rsB];
            }
        }
    }

    private static void MicroTile(int kc, float* a, float* b, float* c, int ldc, int mrEff, int nrEff, bool acc, int nr)
    {
        if (mrEff == MR && nrEff == nr)
        {
            Micro(kc, a, b, c, ldc, acc, nr);
            return;
        }
        float* tile = stackalloc float[MR * 32];
        Micro(kc, a, b, tile, nr, false, nr);
        for (int i = 0; i < mrEff; i++)
            for (int j = 0; j < nrEff; j++)
                c[(long)i * ldc + j] = acc ? c[(long)i * ldc + j] + tile[i * nr + j] : tile[i * nr + j];
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Micro(int kc, float* a, float* b, float* c, int ldc, bool acc, int nr)
    {
        if (nr == 32) Micro512(kc, a, b, c, ldc, acc);
        else if (nr == 16) Micro256(kc, a, b, c, ldc, acc);
        else MicroScalar(kc, a, b, c, ldc, acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Micro512(int kc, float* a, float* b, float* c, int ldc, bool acc)
    {
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector512<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
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
            a += MR; b += 32;
        }
        Store512(c, c00, c01, acc); c += ldc;
        Store512(c, c10, c11, acc); c += ldc;
        Store512(c, c20, c21, acc); c += ldc;
        Store512(c, c30, c31, acc); c += ldc;
        Store512(c, c40, c41, acc); c += ldc;
        Store512(c, c50, c51, acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store512(float* c, Vector512<float> v0, Vector512<float> v1, bool acc)
    {
        if (acc) { v0 += Vector512.Load(c); v1 += Vector512.Load(c + 16); }
        v0.Store(c); v1.Store(c + 16);
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
            a += MR; b += 16;
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
        float* t = stackalloc float[MR * 8];
        for (int q = 0; q < MR * 8; q++) t[q] = 0;
        for (int p = 0; p < kc; p++, a += MR, b += 8)
            for (int i = 0; i < MR; i++)
                for (int j = 0; j < 8; j++) t[i * 8 + j] = MathF.FusedMultiplyAdd(a[i], b[j], t[i * 8 + j]);
        for (int i = 0; i < MR; i++)
            for (int j = 0; j < 8; j++) c[(long)i * ldc + j] = acc ? c[(long)i * ldc + j] + t[i * 8 + j] : t[i * 8 + j];
    }
}
