using ILGPU;

namespace Spdf.Gpu;

/// <summary>
/// A dense linear layer on Spdf's own tiled SGEMM (<see cref="GpuKernelSources.Sgemm"/>): the in-house dense baseline
/// that <see cref="GpuSparseLinear"/> is measured against, beside cuBLAS. Forward <c>Y = X·Wᵀ + b</c>, input gradient
/// <c>dX = dY·W</c>, weight gradient <c>dW = dYᵀ·X</c>, all without transposing anything (the kernel takes strides).
/// </summary>
public sealed class GpuDenseLinear : GpuLinear
{
    private readonly GpuBuffer<float> _w, _grad;
    private GpuBuffer<float>? _m, _v;

    /// <summary>Uploads <paramref name="weight"/> <c>[out, in]</c> (row-major).</summary>
    /// <exception cref="ArgumentException">The weight's length is not out × in, the bias's not out, or a size is not positive.</exception>
    /// <exception cref="GpuMemoryException">The device has no room.</exception>
    public GpuDenseLinear(GpuDevice device, ReadOnlySpan<float> weight, int inFeatures, int outFeatures, ReadOnlySpan<float> bias, bool hasBias, int maxTokens)
        : base(device, inFeatures, outFeatures, bias, hasBias, maxTokens)
    {
        if (weight.Length != (long)inFeatures * outFeatures)
            throw new ArgumentException($"The weight has {weight.Length} elements; expected [{outFeatures}, {inFeatures}] = {(long)inFeatures * outFeatures}.", nameof(weight));
        _w = Own(device.Upload(weight, "weight"));
        _grad = Own(device.Allocate<float>(weight.Length, "weight gradient"));
    }

    /// <summary>The weight <c>[out, in]</c>.</summary>
    public GpuBuffer<float> Weight => _w;

    /// <summary>Its gradient from the last <see cref="GpuLinear.Backward"/>.</summary>
    public GpuBuffer<float> WeightGrad => _grad;

    /// <inheritdoc />
    public override long MacsPerToken => (long)InFeatures * OutFeatures;

    private ArrayView<float> BiasView => Bias?.View ?? _w.View;

    private protected override void ForwardCore(ArrayView<float> x, ArrayView<float> y, int tokens) =>
        Device.Kernels.Sgemm(x, _w.View, BiasView, y,
            new GemmShape(tokens, OutFeatures, InFeatures, A0: InFeatures, A1: 1, B0: 1, B1: InFeatures, HasBias: Bias is null ? 0 : 1));

    private protected override void BackwardCore(ArrayView<float> dy, ArrayView<float> x, ArrayView<float> dx, bool wantDx, int tokens)
    {
        var k = Device.Kernels;
        if (wantDx)
            k.Sgemm(dy, _w.View, BiasView, dx, new GemmShape(tokens, InFeatures, OutFeatures, A0: OutFeatures, A1: 1, B0: InFeatures, B1: 1, HasBias: 0));
        k.Sgemm(dy, x, BiasView, _grad.View, new GemmShape(OutFeatures, InFeatures, tokens, A0: 1, A1: OutFeatures, B0: InFeatures, B1: 1, HasBias: 0));
    }

    private protected override void BiasGradient(ArrayView<float> dy, ArrayView<float> db, int tokens) =>
        Device.Kernels.ColSums(dy, db, tokens, OutFeatures);

    private protected override void AdamWWeights(AdamWScalars a)
    {
        _m ??= Zeroed(_w.Length, "weight first moment");
        _v ??= Zeroed(_w.Length, "weight second moment");
        Device.Kernels.AdamW(_w.View, _grad.View, _m.View, _v.View, checked((int)_w.Length), a);
    }

    private protected override void ClearWeightGrad() => _grad.Clear();

    /// <inheritdoc />
    public override float[] DownloadWeight() => _w.ToArray();

    /// <inheritdoc />
    public override float[] DownloadWeightGrad() => _grad.ToArray();
}
