using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Spdf.Benchmarks;

/// <summary>
/// Measures this machine's FP32 FMA peak: each thread runs independent chains of fused multiply-adds (enough chains to
/// cover FMA latency × units) on the widest vectors the runtime accelerates. GFLOP/s = 2 × lanes × FMAs / time.
/// </summary>
internal static class Peak
{
    public static (double PerCore, double AllCores, string Isa) Measure(double seconds = 1.0)
    {
        double one = Run(1, seconds);
        double all = Run(Environment.ProcessorCount, seconds);
        return (one, all, Vector512.IsHardwareAccelerated ? "avx512" : Vector256.IsHardwareAccelerated ? "avx2" : "scalar");
    }

    /// <summary>
    /// The ceiling of kernels whose every FMA reads a fresh activation vector from L1 (the sparse SpMM/SDDMM pattern:
    /// one broadcast weight times a 16-lane slice of an activation row that differs per kept weight): independent FMAs
    /// with a memory operand, one 64-byte load each, on all cores. Dense GEMM reuses each loaded vector across 12 rows
    /// and is bound by <see cref="Measure"/>; when this figure is about half of that, the L1 serves one 64-byte load per
    /// cycle and an unstructured sparse kernel cannot exceed half the FMA peak.
    /// </summary>
    /// <returns>GFLOP/s on all cores, or null where Vector512 is not accelerated.</returns>
    public static double? MeasureLoadBound(double seconds = 1.0)
    {
        if (!Vector512.IsHardwareAccelerated) return null;
        return MeasureLoadBound(seconds, misalignBytes: 0);
    }

    /// <summary>As <see cref="MeasureLoadBound(double)"/>, with every load starting <paramref name="misalignBytes"/> past a
    /// 64-byte boundary (0: cache-line aligned, as the sparse kernels' token blocks are).</summary>
    public static double? MeasureLoadBound(double seconds, int misalignBytes)
    {
        if (!Vector512.IsHardwareAccelerated) return null;
        var x = GC.AllocateArray<float>(4096 + 32, pinned: true); // 16 KiB: stays in L1
        for (int i = 0; i < x.Length; i++) x[i] = 1e-3f * (i % 97);
        return Run(Environment.ProcessorCount, seconds, s => Spin(s, n => LoadChunk512(x, misalignBytes, n), 8.0 * 16 * 2));
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static unsafe float LoadChunk512(float[] data, int misalignBytes, int n)
    {
        var w = Vector512.Create(0.5f);
        Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default, c6 = default, c7 = default;
        fixed (float* p0 = data)
        {
            float* p = (float*)((((nint)p0 + 63) & ~(nint)63) + misalignBytes);
            for (int i = 0; i < n; i++)
            {
                float* x = p + ((i & 31) << 7); // a different 512-byte slice each iteration, as kept weights pick rows
                c0 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x), c0); c1 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x + 16), c1);
                c2 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x + 32), c2); c3 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x + 48), c3);
                c4 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x + 64), c4); c5 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x + 80), c5);
                c6 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x + 96), c6); c7 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x + 112), c7);
            }
        }
        return (c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7).GetElement(0);
    }

    private static double Run(int threads, double seconds) => Run(threads, seconds, Spin);

    private static double Run(int threads, double seconds, Func<double, double> spin)
    {
        var results = new double[threads];
        var workers = Enumerable.Range(0, threads).Select(t => new Thread(() => results[t] = spin(seconds)) { IsBackground = true }).ToList();
        workers.ForEach(w => w.Start());
        workers.ForEach(w => w.Join());
        return results.Sum();
    }

    private static double Spin(double seconds) =>
        Vector512.IsHardwareAccelerated ? Spin(seconds, Chunk512, 12.0 * 16 * 2) : Spin(seconds, Chunk256, 12.0 * 8 * 2);

    /// <summary>Runs <paramref name="chunk"/> (n iterations of <paramref name="flopPerIteration"/> each) for the given time; GFLOP/s.</summary>
    private static double Spin(double seconds, Func<int, float> chunk, double flopPerIteration)
    {
        const int inner = 1 << 16;
        long iterations = 0;
        float sink = 0;
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed.TotalSeconds < seconds)
        {
            sink += chunk(inner);
            iterations += inner;
        }
        Sink = sink;
        return iterations * flopPerIteration / sw.Elapsed.TotalSeconds / 1e9;
    }

    // The accumulators must not live across a call, or the JIT keeps them in stack slots: one call-free loop per chunk.
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float Chunk512(int n)
    {
        var a = Vector512.Create(0.999999f); var b = Vector512.Create(1e-7f);
        Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default,
            c6 = default, c7 = default, c8 = default, c9 = default, c10 = default, c11 = default;
        for (int i = 0; i < n; i++)
        {
            c0 = Vector512.FusedMultiplyAdd(c0, a, b); c1 = Vector512.FusedMultiplyAdd(c1, a, b);
            c2 = Vector512.FusedMultiplyAdd(c2, a, b); c3 = Vector512.FusedMultiplyAdd(c3, a, b);
            c4 = Vector512.FusedMultiplyAdd(c4, a, b); c5 = Vector512.FusedMultiplyAdd(c5, a, b);
            c6 = Vector512.FusedMultiplyAdd(c6, a, b); c7 = Vector512.FusedMultiplyAdd(c7, a, b);
            c8 = Vector512.FusedMultiplyAdd(c8, a, b); c9 = Vector512.FusedMultiplyAdd(c9, a, b);
            c10 = Vector512.FusedMultiplyAdd(c10, a, b); c11 = Vector512.FusedMultiplyAdd(c11, a, b);
        }
        return (c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11).GetElement(0);
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float Chunk256(int n)
    {
        var a = Vector256.Create(0.999999f); var b = Vector256.Create(1e-7f);
        Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default,
            c6 = default, c7 = default, c8 = default, c9 = default, c10 = default, c11 = default;
        for (int i = 0; i < n; i++)
        {
            c0 = Vector256.FusedMultiplyAdd(c0, a, b); c1 = Vector256.FusedMultiplyAdd(c1, a, b);
            c2 = Vector256.FusedMultiplyAdd(c2, a, b); c3 = Vector256.FusedMultiplyAdd(c3, a, b);
            c4 = Vector256.FusedMultiplyAdd(c4, a, b); c5 = Vector256.FusedMultiplyAdd(c5, a, b);
            c6 = Vector256.FusedMultiplyAdd(c6, a, b); c7 = Vector256.FusedMultiplyAdd(c7, a, b);
            c8 = Vector256.FusedMultiplyAdd(c8, a, b); c9 = Vector256.FusedMultiplyAdd(c9, a, b);
            c10 = Vector256.FusedMultiplyAdd(c10, a, b); c11 = Vector256.FusedMultiplyAdd(c11, a, b);
        }
        return (c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11).GetElement(0);
    }

    /// <summary>Keeps the result observable so the loops are not removed.</summary>
    public static float Sink;
}
