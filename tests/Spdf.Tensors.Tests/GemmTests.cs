using Spdf.Tensors.Kernels.Cpu;

namespace Spdf.Tensors.Tests;

public class GemmTests
{
    private static float[] Rand(int n, Generator g)
    {
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = g.NextFloat() * 2 - 1;
        return a;
    }

    private static float[] Naive(float[] a, bool ta, float[] b, bool tb, int m, int n, int k)
    {
        var c = new float[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double s = 0;
                for (int p = 0; p < k; p++)
                    s += (double)(ta ? a[p * m + i] : a[i * k + p]) * (tb ? b[j * k + p] : b[p * n + j]);
                c[i * n + j] = (float)s;
            }
        return c;
    }

    public static IEnumerable<object[]> Sizes()
    {
        // [200, 100, 1600]: a weight gradient's shape; each half of K is three blocks of A over two depth blocks.
        // [100, 2050, 40] and [100, 2650, 770]: B far wider than A is tall (an LM head's logits), the wide loop: two blocks
        // of A, a partial last panel and chunk; one and two depth blocks (C just above what K is split for).
        // From K = 512 with C at most 256K elements (and 1M multiply-adds), K is split into two halves summed at the end:
        // [97, 31, 513], [50, 64, 1100], [200, 100, 1600], [30, 2100, 800] and [67, 129, 2101] (halves of 1,056 and 1,045).
        int[][] sizes = [[1, 1, 1], [7, 17, 1], [1, 1000, 7], [17, 7, 1000], [1000, 17, 7], [33, 65, 300], [97, 31, 513], [50, 64, 1100], [200, 100, 1600],
                         [100, 2050, 40], [100, 2650, 770], [30, 2100, 800], [67, 129, 2101]];
        foreach (var s in sizes)
            foreach (bool ta in new[] { false, true })
                foreach (bool tb in new[] { false, true })
                    yield return [s[0], s[1], s[2], ta, tb];
    }

    [Theory]
    [MemberData(nameof(Sizes))]
    public void MatchesNaiveReferenceInEveryLayoutWithEveryKernel(int m, int n, int k, bool ta, bool tb)
    {
        var g = new Generator((ulong)(m * 31 + n * 7 + k));
        var a = Rand(m * k, g); var b = Rand(k * n, g);
        var expected = Naive(a, ta, b, tb, m, n, k);
        foreach (var kernel in Enum.GetValues<GemmKernel>().Where(kk => kk <= Gemm.Best))
        {
            var c = new float[m * n];
            lock (KernelLock)
            {
                var saved = Gemm.Kernel;
                try { Gemm.Kernel = kernel; Gemm.MatMul(a, ta, b, tb, c, m, n, k); }
                finally { Gemm.Kernel = saved; }
            }
            for (int i = 0; i < c.Length; i++)
                c[i].Should().BeApproximately(expected[i], 1e-4f * MathF.Sqrt(k) + 1e-5f, $"element {i} of {m}×{n}×{k} ta={ta} tb={tb} kernel={kernel}");
        }
    }

    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(1, 65, 17)]
    [InlineData(2, 3000, 768)]   // parallel chunks of rows of B
    [InlineData(4, 2304, 769)]
    public void FewRowsTakeTheGemvPathAndMatchTheBlockedKernel(int m, int n, int k)
    {
        // Batch-1 decoding's X·Wᵀ: streamed rows of W instead of packing it; same values as the blocked GEMM.
        var g = new Generator((ulong)(m * 7 + n + k));
        var a = Rand(m * k, g); var b = Rand(n * k, g);
        foreach (bool accumulate in new[] { false, true })
        {
            var start = Rand(m * n, g);
            var gemv = (float[])start.Clone(); var blocked = (float[])start.Clone();
            Gemm.MatMul(a, false, b, true, gemv, m, n, k, accumulate);   // m ≤ GemvMaxRows: the GEMV
            Gemm.Multiply(a, k, 1, b, 1, k, blocked, n, m, n, k, accumulate); // the packed kernel, called directly
            var naive = Naive(a, false, b, true, m, n, k);
            for (int i = 0; i < gemv.Length; i++)
            {
                float want = naive[i] + (accumulate ? start[i] : 0);
                gemv[i].Should().BeApproximately(want, 1e-4f * MathF.Sqrt(k) + 1e-5f, $"element {i}, accumulate {accumulate}");
                gemv[i].Should().BeApproximately(blocked[i], 1e-4f * MathF.Sqrt(k) + 1e-5f);
            }
        }
        FluentActions.Invoking(() => Gemm.Gemv(a, b, new float[m * n - 1], m, n, k, false)).Should().Throw<ArgumentException>();
    }

    /// <summary>Serialises tests that switch the process-wide kernel.</summary>
    internal static readonly object KernelLock = new();

    [Fact]
    public void AccumulateAddsToExistingValues()
    {
        var g = new Generator(3);
        int m = 13, n = 37, k = 300;
        var a = Rand(m * k, g); var b = Rand(k * n, g);
        var c = Rand(m * n, g);
        var before = (float[])c.Clone();
        Gemm.MatMul(a, false, b, false, c, m, n, k, accumulate: true);
        var prod = Naive(a, false, b, false, m, n, k);
        for (int i = 0; i < c.Length; i++) c[i].Should().BeApproximately(before[i] + prod[i], 1e-3f);
    }

    [Theory]
    [InlineData(40, 50, 300)]   // the blocked loop
    [InlineData(67, 129, 2101)] // two halves of K, the second added row by row
    public void WritesOnlyTheColumnsOfCInARowStride(int m, int n, int k)
    {
        var g = new Generator((ulong)(m + k));
        var a = Rand(m * k, g); var b = Rand(k * n, g);
        int ldc = n + 5;
        var c = Enumerable.Repeat(7f, m * ldc).ToArray();
        Gemm.Multiply(a, k, 1, b, n, 1, c, ldc, m, n, k, accumulate: false);
        var expected = Naive(a, false, b, false, m, n, k);
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < n; j++)
                c[i * ldc + j].Should().BeApproximately(expected[i * n + j], 1e-4f * MathF.Sqrt(k) + 1e-5f, $"C[{i}, {j}]");
            for (int j = n; j < ldc; j++) c[i * ldc + j].Should().Be(7f, $"C[{i}, {j}] lies between rows and is not C's");
        }
    }

    [Fact]
    public void ZeroInnerDimensionClearsOrKeeps()
    {
        var c = new float[] { 1, 2, 3, 4 };
        Gemm.MatMul([], false, [], false, c, 2, 2, 0, accumulate: true);
        c.Should().Equal(1, 2, 3, 4);
        Gemm.MatMul([], false, [], false, c, 2, 2, 0);
        c.Should().Equal(0, 0, 0, 0);
    }

    [Fact]
    public void ShortSpanThrowsWithShape()
    {
        var act = () => Gemm.MatMul(new float[5], false, new float[6], false, new float[4], 2, 2, 3);
        act.Should().Throw<ArgumentException>().WithMessage("*A (2×3*needs 6*has 5*");
    }

    [Theory]
    [InlineData(100, 2650, 770, false, true)]  // the wide loop (an LM head's logits), two depth blocks
    [InlineData(30, 2100, 40, true, false)]    // the wide loop, A transposed, one depth block
    [InlineData(200, 100, 400, true, false)]   // the default loop
    [InlineData(70, 130, 2101, true, false)]   // two halves of K: the first onto C, the second added after
    public void AccumulatesOntoWhatCHolds(int m, int n, int k, bool ta, bool tb)
    {
        var g = new Generator((ulong)(m + n + k));
        var a = Rand(m * k, g); var b = Rand(k * n, g); var start = Rand(m * n, g);
        var c = (float[])start.Clone();
        Gemm.MatMul(a, ta, b, tb, c, m, n, k, accumulate: true);
        var product = Naive(a, ta, b, tb, m, n, k);
        for (int i = 0; i < c.Length; i++)
            c[i].Should().BeApproximately(start[i] + product[i], 1e-4f * MathF.Sqrt(k) + 1e-5f, $"element {i} of {m}×{n}×{k}");
    }

    [Theory]
    [InlineData(300, 1000, 700)] // the default loop (C too large to split K)
    [InlineData(300, 200, 700)]  // two halves of K
    [InlineData(100, 2650, 770)] // B far wider than A is tall: the wide loop on several threads, the default loop on one
    [InlineData(67, 129, 2101)]  // deep with a small C: two halves of K, side by side or one after the other
    public void ResultsDoNotDependOnThreadCount(int m, int n, int k)
    {
        var g = new Generator(9);
        var a = Rand(m * k, g); var b = Rand(k * n, g);
        var c1 = new float[m * n]; var c2 = new float[m * n];
        int saved = Gemm.MaxThreads;
        try
        {
            Gemm.MaxThreads = 1; Gemm.MatMul(a, false, b, true, c1, m, n, k);
            Gemm.MaxThreads = 4; Gemm.MatMul(a, false, b, true, c2, m, n, k);
        }
        finally { Gemm.MaxThreads = saved; }
        c1.Should().Equal(c2);
    }
}

public class TransposeTests
{
    [Theory]
    [InlineData(1, 1)]
    [InlineData(7, 9)]
    [InlineData(16, 24)]
    [InlineData(33, 17)]
    public void MatchesIndexDefinition(int rows, int cols)
    {
        var src = Enumerable.Range(0, rows * cols).Select(i => (float)i).ToArray();
        var dst = new float[rows * cols];
        Kernels.Cpu.Transpose.Run(src, rows, cols, dst);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) dst[c * rows + r].Should().Be(src[r * cols + c]);
    }
}
