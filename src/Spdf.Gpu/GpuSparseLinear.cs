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
        : base(device, mask?.Cols ?? 0, mask?.Rows ?? 0, bias, hasBias, maxTokens)
    {
        if (activations is not (GpuActivationPrecision.Float32 or GpuActivationPrecision.BFloat16))
            throw new ArgumentOutOfRangeException(nameof(activations), activations, "Expected Float32 or BFloat16.");
        Activations = activations;
        ArgumentNullException.ThrowIfNull(mask);
        if (weight.Length != mask.Numel)
            throw new ArgumentException($"The weight has {weight.Length} elements; the mask {mask.ShapeText} expects {mask.Numel}.", nameof(weight));
        Mask = mask;
        var (ptr, cols) = GpuCsr.Build(mask, transpose: false, out _, out _denseIndex);
        var (ptrT, colsT) = GpuCsr.Build(mask, transpose: true, out var map, out _);
        _w = Own(GpuCsr.Upload(device, OutFeatures, InFeatures, ptr, cols, "W"));
        _wT = Own(GpuCsr.Upload(device, InFeatures, OutFeatures, ptrT, colsT, "Wᵀ"));
        _entryMap = Own(device.Upload<int>(map, "Wᵀ entry map"));
        var kept = new float[Nnz];
        for (int e = 0; e < kept.Length; e++) kept[e] = weight[_denseIndex[e]];
        _values = Own(device.Upload<float>(kept, "kept weights"));
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
    public int Nnz => _values is null ? Mask.KeptCount : (int)_values.Length;

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
        if (weight.Length != Mask.Numel)
            throw new ArgumentException($"The weight has {weight.Length} elements; expected {Mask.ShapeText} = {Mask.Numel}.", nameof(weight));
        var kept = new float[Nnz];
        for (int e = 0; e < kept.Length; e++) kept[e] = weight[_denseIndex[e]];
        _values.CopyFrom(kept);
        _transposeStale = true;
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
        if (_xh is null) k.Spmm(_w, _values.View, xt, BiasView, Bias is not null, yt, tokens);
        else
        {
            var xh = _xh.Slice((tokens + 1) / 2 * (long)InFeatures);
            k.ToBf16Pairs(xt, xh, InFeatures, tokens);
            k.SpmmBf16(_w, _values.View, xh, BiasView, Bias is not null, yt, tokens);
        }
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
            if (_dyh is null) k.Spmm(_wT, _valuesT.View, dyt, _valuesT.View, false, dxt, tokens);
            else
            {
                var dyh = _dyh.Slice((tokens + 1) / 2 * (long)OutFeatures);
                k.ToBf16Pairs(dyt, dyh, OutFeatures, tokens);
                k.SpmmBf16(_wT, _valuesT.View, dyh, _valuesT.View, false, dxt, tokens);
            }
            k.Transpose(dxt, dx, InFeatures, tokens);
        }
        k.Transpose(x, xt, tokens, InFeatures);
        if (_xh is null) k.Sddmm(_w, dyt, xt, _grad.View, tokens);
        else
        {
            var xh = _xh.Slice((tokens + 1) / 2 * (long)InFeatures);
            k.ToBf16Pairs(xt, xh, InFeatures, tokens);
            k.SddmmBf16(_w, dyt, xh, _grad.View, tokens);
        }
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
