using System.Reflection;
using ILGPU;
using ILGPU.Runtime;
using static Spdf.Gpu.GpuKernelSources;

namespace Spdf.Gpu;

/// <summary>The kernels of <see cref="GpuKernelSources"/> loaded on one device, and their launch shapes.</summary>
internal sealed class GpuKernels
{
    private readonly GpuDevice _device;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int, int> _transpose;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<int>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, SparseShape> _spmm;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<int>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, SddmmShape> _sddmm;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int, int> _rowSums;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<int>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, SparseShape> _spmv;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape> _sgemm;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AdamWScalars> _adamW;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>> _gather;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, int, int> _colSums;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<uint>, int> _toBf16;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<int>, ArrayView<int>, ArrayView<float>, ArrayView<uint>, ArrayView<float>, ArrayView<float>, SparseShape> _spmmBf16;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<int>, ArrayView<int>, ArrayView<float>, ArrayView<uint>, ArrayView<float>, SddmmShape> _sddmmBf16;

    public GpuKernels(GpuDevice device)
    {
        _device = device;
        var a = device.Accelerator;
        _transpose = a.LoadKernel<ArrayView<float>, ArrayView<float>, int, int>(GpuKernelSources.Transpose);
        _spmm = a.LoadKernel<ArrayView<int>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, SparseShape>(GpuKernelSources.Spmm);
        _sddmm = a.LoadKernel<ArrayView<int>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, SddmmShape>(GpuKernelSources.Sddmm);
        _rowSums = a.LoadKernel<ArrayView<float>, ArrayView<float>, int, int>(GpuKernelSources.RowSums);
        _spmv = a.LoadKernel<ArrayView<int>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, SparseShape>(GpuKernelSources.Spmv);
        _sgemm = a.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape>(GpuKernelSources.Sgemm);
        _adamW = a.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AdamWScalars>(GpuKernelSources.AdamW);
        _gather = a.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>>(GpuKernelSources.Gather);
        _colSums = a.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, int, int>(GpuKernelSources.ColSums);
        _toBf16 = a.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<uint>, int>(GpuKernelSources.ToBf16Pairs);
        _spmmBf16 = a.LoadKernel<ArrayView<int>, ArrayView<int>, ArrayView<float>, ArrayView<uint>, ArrayView<float>, ArrayView<float>, SparseShape>(GpuKernelSources.SpmmBf16);
        _sddmmBf16 = a.LoadKernel<ArrayView<int>, ArrayView<int>, ArrayView<float>, ArrayView<uint>, ArrayView<float>, SddmmShape>(GpuKernelSources.SddmmBf16);
    }

    /// <summary>Every kernel method, and whether it is explicitly grouped (for compiling them all, e.g. to PTX).</summary>
    public static IReadOnlyList<(MethodInfo Method, bool ExplicitlyGrouped)> All { get; } =
    [
        (M(nameof(Transpose)), true), (M(nameof(Spmm)), true), (M(nameof(Sddmm)), true), (M(nameof(RowSums)), true),
        (M(nameof(Spmv)), true), (M(nameof(Sgemm)), true), (M(nameof(AdamW)), false), (M(nameof(Gather)), false),
        (M(nameof(ColSums)), false), (M(nameof(ToBf16Pairs)), false), (M(nameof(SpmmBf16)), true), (M(nameof(SddmmBf16)), true),
    ];

    private static MethodInfo M(string name) =>
        typeof(GpuKernelSources).GetMethod(name, BindingFlags.Public | BindingFlags.Static) ?? throw new MissingMethodException(nameof(GpuKernelSources), name);

    private AcceleratorStream S => _device.Stream;

    private static int Blocks(long count, int per) => checked((int)((count + per - 1) / per));

    /// <summary>The row kernels' launch: a group of <see cref="RowWarps"/> warps per row group and grid column.</summary>
    private static KernelConfig RowGrid(int rows, int columns) => new(checked(Blocks(rows, RowWarps) * columns), RowWarps * WarpSize);

    /// <summary><c>dst [cols, rows] = srcᵀ</c> for a row-major <c>[rows, cols]</c> source.</summary>
    public void Transpose(ArrayView<float> src, ArrayView<float> dst, int rows, int cols)
    {
        if (rows == 0 || cols == 0) return;
        int grid = checked(Blocks(cols, TransposeTile) * Blocks(rows, TransposeTile));
        _transpose(S, new KernelConfig(grid, TransposeTile * TransposeRows), src, dst, rows, cols);
    }

    /// <summary><c>Cᵀ [rows, n] = A·Bᵀ (+ bias)</c> with A in CSR.</summary>
    public void Spmm(GpuCsr a, ArrayView<float> values, ArrayView<float> bt, ArrayView<float> bias, bool hasBias, ArrayView<float> ct, int n)
    {
        if (a.Rows == 0 || n == 0) return;
        _spmm(S, RowGrid(a.Rows, Blocks(n, SpmmTokens)), a.RowPointers.View, a.Columns.View, values, bt, bias, ct,
            new SparseShape(a.Rows, n, hasBias ? 1 : 0));
    }

    /// <summary>
    /// <c>dw[e] = Σ_t dYᵀ[row(e), t]·Xᵀ[col(e), t]</c> over A's kept entries. When A's rows alone give fewer than
    /// eight groups per multiprocessor, each row's tokens are split into ranges (<see cref="SddmmSplits"/>) whose
    /// sums are added atomically into a zeroed <paramref name="dw"/>.
    /// </summary>
    public void Sddmm(GpuCsr a, ArrayView<float> dyt, ArrayView<float> xt, ArrayView<float> dw, int n)
    {
        if (a.Rows == 0 || a.Nnz == 0) return;
        var (config, shape) = SddmmSetup(a, dw, n);
        _sddmm(S, config, a.RowPointers.View, a.Columns.View, dyt, xt, dw, shape);
    }

    /// <summary>The SDDMM's grid and shape; with several token ranges, the gradient is zeroed first (they add into it).</summary>
    private (KernelConfig Config, SddmmShape Shape) SddmmSetup(GpuCsr a, ArrayView<float> dw, int n)
    {
        int splits = SddmmSplits(_device, a.Rows, n);
        if (splits > 1) dw.SubView(0, a.Nnz).MemSetToZero(S);
        return (RowGrid(a.Rows, splits), new SddmmShape(a.Rows, n, splits));
    }

    /// <summary>
    /// Token ranges per row for the SDDMM: enough for eight groups per multiprocessor (32 warps to hide load latency
    /// with), each range at least 128 tokens.
    /// </summary>
    internal static int SddmmSplits(GpuDevice device, int rows, int n)
    {
        long wanted = 8L * Math.Max(1, device.Accelerator.NumMultiprocessors);
        long rowGroups = Blocks(rows, RowWarps);
        return (int)Math.Clamp((wanted + rowGroups - 1) / rowGroups, 1, Math.Max(1, n / SpmmTokens));
    }

    /// <summary><c>sums[r] = Σ_t Cᵀ[r, t]</c>.</summary>
    public void RowSums(ArrayView<float> ct, ArrayView<float> sums, int rows, int n)
    {
        if (rows == 0) return;
        _rowSums(S, RowGrid(rows, 1), ct, sums, rows, n);
    }

    /// <summary><c>y = A·x (+ bias)</c> with A in CSR (batch-1 decode).</summary>
    public void Spmv(GpuCsr a, ArrayView<float> values, ArrayView<float> x, ArrayView<float> bias, bool hasBias, ArrayView<float> y)
    {
        if (a.Rows == 0) return;
        _spmv(S, RowGrid(a.Rows, 1), a.RowPointers.View, a.Columns.View, values, x, bias, y,
            new SparseShape(a.Rows, 1, hasBias ? 1 : 0));
    }

    /// <summary><c>C = A·B (+ bias)</c> at the strides of <paramref name="shape"/>.</summary>
    public void Sgemm(ArrayView<float> a, ArrayView<float> b, ArrayView<float> bias, ArrayView<float> c, GemmShape shape)
    {
        if (shape.M == 0 || shape.N == 0) return;
        int grid = checked(Blocks(shape.M, GemmTile) * Blocks(shape.N, GemmTile));
        _sgemm(S, new KernelConfig(grid, GemmThreads), a, b, bias, c, shape);
    }

    /// <summary>AdamW over the first <paramref name="count"/> elements.</summary>
    public void AdamW(ArrayView<float> p, ArrayView<float> g, ArrayView<float> m, ArrayView<float> v, int count, AdamWScalars a)
    {
        if (count > 0) _adamW(S, count, p, g, m, v, a);
    }

    /// <summary><c>dst[i] = src[map[i]]</c> for the first <paramref name="count"/> elements.</summary>
    public void Gather(ArrayView<float> src, ArrayView<int> map, ArrayView<float> dst, int count)
    {
        if (count > 0) _gather(S, count, src, map, dst);
    }

    /// <summary>Feature-major FP32 <c>[rows, n]</c> to BF16 token pairs <c>[rows, ⌈n/2⌉]</c>.</summary>
    public void ToBf16Pairs(ArrayView<float> src, ArrayView<uint> dst, int rows, int n)
    {
        long count = (long)rows * ((n + 1) / 2);
        if (count > 0) _toBf16(S, checked((int)count), src, dst, n);
    }

    /// <summary><see cref="Spmm"/> over BF16 token pairs.</summary>
    public void SpmmBf16(GpuCsr a, ArrayView<float> values, ArrayView<uint> bh, ArrayView<float> bias, bool hasBias, ArrayView<float> ct, int n)
    {
        if (a.Rows == 0 || n == 0) return;
        _spmmBf16(S, RowGrid(a.Rows, Blocks(n, SpmmBf16Tokens)), a.RowPointers.View, a.Columns.View, values, bh, bias, ct,
            new SparseShape(a.Rows, n, hasBias ? 1 : 0));
    }

    /// <summary><see cref="Sddmm"/> over BF16 token pairs of Xᵀ (dYᵀ in FP32).</summary>
    public void SddmmBf16(GpuCsr a, ArrayView<float> dyt, ArrayView<uint> xh, ArrayView<float> dw, int n)
    {
        if (a.Rows == 0 || a.Nnz == 0) return;
        var (config, shape) = SddmmSetup(a, dw, n);
        _sddmmBf16(S, config, a.RowPointers.View, a.Columns.View, dyt, xh, dw, shape);
    }

    /// <summary>Column sums of a row-major <c>[rows, cols]</c> matrix.</summary>
    public void ColSums(ArrayView<float> c, ArrayView<float> sums, int rows, int cols)
    {
        if (cols > 0) _colSums(S, cols, c, sums, rows, cols);
    }
}
