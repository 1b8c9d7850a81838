using ILGPU;
using Spdf.Sparsity.Masks;

namespace Spdf.Gpu;

/// <summary>How a sparse layer's kernels read activations.</summary>
public enum GpuActivationPrecision
{
    /// <summary>FP32 throughout.</summary>
    Float32,

    /// <summary>
    /// X (forward and weight gradient) and dY (input gradient) rounded to bfloat16 (round to nearest even) and packed in
    /// token pairs, so each 4-byte load feeds two FMAs; weights, accumulation, outputs and dY in the weight gradient stay
    /// FP32. The results equal FP32 products of the rounded activations (within FP32 summation order).
    /// </summary>
    BFloat16,
}

/// <summary>
/// A linear layer with a static weight mask, computed over kept weights only (the SPDF paper's sparse pre-training,
/// Thangarasa et al., 2023): W <c>[out, in]</c> is held compressed (CSR values in row-major order of the kept weights,
/// plus the structure of Wᵀ for the input gradient), and so are its gradient and AdamW's moments. Forward is a
/// sparse-dense product, the input gradient the same over Wᵀ, the weight gradient a sampled dense-dense product at kept
/// positions only; activations are transposed on the device to feature-major for coalesced reads. Results equal the
/// masked dense layer <c>X·(W ⊙ M)ᵀ + b</c> within float rounding.
/// </summary>
public sealed class GpuSparseLinear : GpuLinear
{
    private readonly GpuCsr _w, _wT;
    private readonly GpuBuffer<int> _entryMap;
    private readonly GpuBuffer<float> _values, _valuesT, _grad, _xt, _yt, _dxt;
    private readonly GpuBuffer<uint>? _xh, _dyh;
    private readonly int[] _denseIndex;
    private GpuBuffer<float>? _m, _v;
    private bool _transposeStale = true;

    /// <summary>
    /// Uploads <paramref name="weight"/> <c>[out, in]</c> (row-major; only kept places are read) under
    /// <paramref name="mask"/>, and allocates everything a training loop of up to <paramref name="maxTokens"/> tokens
    /// per call needs. <paramref name="activations"/> chooses how the kernels read activations.
    /// </summary>
    /// <exception cref="ArgumentException">The weight's length is not the mask's, the bias's length is not out, or a size is not positive.</exception>
    /// <exception cref="GpuMemoryException">The device has no room.</exception>
    public GpuSparseLinear(GpuDevice device, ReadOnlySpan<float> weight, SparsityMask mask, ReadOnlySpan<float> bias, bool hasBias, int maxTokens,
        GpuActivationPrecision activations = GpuActivationPrecision.Float32)
        : base(device, (mask ?? throw new ArgumentNullException(nameof(mask))).Cols, mask.Rows, bias, hasBias, maxTokens)
    {
        if (activations is not (GpuActivationPrecision.Float32 or GpuActivationPrecision.BFloat16))
            throw new ArgumentOutOfRangeException(nameof(activations), activations, "Expected Float32 or BFloat16.");
        Activations = activations;
        Mask = mask;
        var (ptr, cols) = GpuCsr.Build(mask, transpose: false, out _, out _denseIndex);
        var (ptrT, colsT) = GpuCsr.Build(mask, transpose: true, out var map, out _);
        _w = Own(GpuCsr.Upload(device, OutFeatures, InFeatures, ptr, cols, "W"));
        _wT = Own(GpuCsr.Upload(device, InFeatures, OutFeatures, ptrT, colsT, "Wᵀ"));
        _entryMap = Own(device.Upload<int>(map, "Wᵀ entry map"));
        _values = Own(device.Upload<float>(Kept(weight), "kept weights"));
        _valuesT = Own(device.Allocate<float>(Nnz, "kept weights of Wᵀ"));
        _grad = Own(device.Allocate<float>(Nnz, "kept weights' gradient"));
        _xt = Own(device.Allocate<float>((long)maxTokens * InFeatures, "Xᵀ workspace"));
        _yt = Own(device.Allocate<float>((long)maxTokens * OutFeatures, "Yᵀ / dYᵀ workspace"));
        _dxt = Own(device.Allocate<float>((long)maxTokens * InFeatures, "dXᵀ workspace"));
        if (activations == GpuActivationPrecision.BFloat16)
        {
            long pairs = (maxTokens + 1) / 2;
            _xh = Own(device.Allocate<uint>(pairs * InFeatures, "Xᵀ in BF16 pairs"));
            _dyh = Own(device.Allocate<uint>(pairs * OutFeatures, "dYᵀ in BF16 pairs"));
        }
    }

    /// <summary>How the kernels read activations.</summary>
    public GpuActivationPrecision Activations { get; }

    /// <summary>The mask (static: a new mask needs a new layer).</summary>
    public SparsityMask Mask { get; }

    /// <summary>Kept weights.</summary>
    public int Nnz => _denseIndex.Length;

    /// <summary>The kept weights, in row-major order of their places (the layer's parameters).</summary>
    public GpuBuffer<float> Values => _values;

    /// <summary>Their gradient from the last <see cref="GpuLinear.Backward"/>.</summary>
    public GpuBuffer<float> ValueGrad => _grad;

    /// <inheritdoc />
    public override long MacsPerToken => Nnz;

    /// <summary>Replaces the kept weights from a dense <c>[out, in]</c> host weight (dropped places are not read).</summary>
    /// <exception cref="ArgumentException">The length is not out × in.</exception>
    public void LoadWeight(ReadOnlySpan<float> weight)
    {
        _values.CopyFrom(Kept(weight));
        _transposeStale = true;
    }

    /// <summary>The kept places of a dense <c>[out, in]</c> weight, in the CSR's entry order.</summary>
    private float[] Kept(ReadOnlySpan<float> weight)
    {
        if (weight.Length != Mask.Numel)
            throw new ArgumentException($"The weight has {weight.Length} elements; the mask {Mask.ShapeText} expects {Mask.Numel}.", nameof(weight));
        var kept = new float[_denseIndex.Length];
        for (int e = 0; e < kept.Length; e++) kept[e] = weight[_denseIndex[e]];
        return kept;
    }

    /// <summary>
    /// Queues batch-1 decode, <c>y [out] = W·x + b</c> for one token <c>x [in]</c> (a sparse matrix-vector product).
    /// </summary>
    /// <exception cref="ArgumentException">A view is too short.</exception>
    public void Decode(ArrayView<float> x, ArrayView<float> y)
    {
        if (x.Length < InFeatures) throw new ArgumentException($"The view x has {x.Length} elements; expected at least {InFeatures}.", nameof(x));
        if (y.Length < OutFeatures) throw new ArgumentException($"The view y has {y.Length} elements; expected at least {OutFeatures}.", nameof(y));
        Device.Kernels.Spmv(_w, _values.View, x, BiasView, Bias is not null, y);
    }

    private ArrayView<float> BiasView => Bias?.View ?? _values.View;

    private protected override void ForwardCore(ArrayView<float> x, ArrayView<float> y, int tokens)
    {
        var k = Device.Kernels;
        var xt = _xt.Slice((long)tokens * InFeatures);
        var yt = _yt.Slice((long)tokens * OutFeatures);
        k.Transpose(x, xt, tokens, InFeatures);
        SparseTimes(_w, _values.View, xt, _xh, Bias is not null, yt, tokens);
        k.Transpose(yt, y, OutFeatures, tokens);
    }

    private protected override void BackwardCore(ArrayView<float> dy, ArrayView<float> x, ArrayView<float> dx, bool wantDx, int tokens)
    {
        var k = Device.Kernels;
        var xt = _xt.Slice((long)tokens * InFeatures);
        var dyt = _yt.Slice((long)tokens * OutFeatures);
        k.Transpose(dy, dyt, tokens, OutFeatures);
        if (wantDx)
        {
            if (_transposeStale)
            {
                k.Gather(_values.View, _entryMap.View, _valuesT.View, Nnz);
                _transposeStale = false;
            }
            var dxt = _dxt.Slice((long)tokens * InFeatures);
            SparseTimes(_wT, _valuesT.View, dyt, _dyh, false, dxt, tokens);
            k.Transpose(dxt, dx, InFeatures, tokens);
        }
        k.Transpose(x, xt, tokens, InFeatures);
        if (_xh is null) k.Sddmm(_w, dyt, xt, _grad.View, tokens);
        else k.SddmmBf16(_w, dyt, Bf16Pairs(xt, _xh, InFeatures, tokens), _grad.View, tokens);
    }

    /// <summary><c>Cᵀ = A·Bᵀ (+ bias)</c> over A's kept entries, reading Bᵀ in FP32, or, with a BF16 workspace, rounded
    /// into it first.</summary>
    private void SparseTimes(GpuCsr a, ArrayView<float> values, ArrayView<float> bt, GpuBuffer<uint>? halves, bool hasBias, ArrayView<float> ct, int tokens)
    {
        var k = Device.Kernels;
        if (halves is null) k.Spmm(a, values, bt, BiasView, hasBias, ct, tokens);
        else k.SpmmBf16(a, values, Bf16Pairs(bt, halves, a.Cols, tokens), BiasView, hasBias, ct, tokens);
    }

    /// <summary>Feature-major <paramref name="ft"/> <c>[features, tokens]</c> rounded into <paramref name="halves"/> as BF16 token pairs.</summary>
    private ArrayView<uint> Bf16Pairs(ArrayView<float> ft, GpuBuffer<uint> halves, int features, int tokens)
    {
        var h = halves.Slice((tokens + 1) / 2 * (long)features);
        Device.Kernels.ToBf16Pairs(ft, h, features, tokens);
        return h;
    }

    private protected override void BiasGradient(ArrayView<float> dy, ArrayView<float> db, int tokens) =>
        Device.Kernels.RowSums(_yt.Slice((long)tokens * OutFeatures), db, OutFeatures, tokens); // dYᵀ, left by BackwardCore

    private protected override void AdamWWeights(AdamWScalars a)
    {
        _m ??= Zeroed(Nnz, "first moment of kept weights");
        _v ??= Zeroed(Nnz, "second moment of kept weights");
        Device.Kernels.AdamW(_values.View, _grad.View, _m.View, _v.View, Nnz, a);
        _transposeStale = true;
    }

    private protected override void ClearWeightGrad() => _grad.Clear();

    /// <inheritdoc />
    public override float[] DownloadWeight() => Scatter(_values.ToArray());

    /// <inheritdoc />
    public override float[] DownloadWeightGrad() => Scatter(_grad.ToArray());

    private float[] Scatter(float[] kept)
    {
        var dense = new float[Mask.Numel];
        for (int e = 0; e < kept.Length; e++) dense[_denseIndex[e]] = kept[e];
        return dense;
    }
}
