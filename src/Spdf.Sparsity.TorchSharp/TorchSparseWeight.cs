using Spdf.Sparsity.Masks;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Spdf.Sparsity.TorchSharp;

/// <summary>
/// One sparse weight of a TorchSharp model: the user's own <see cref="Parameter"/> <c>[out, in]</c>, its mask (the float
/// 0/1 buffer <c>weight_mask</c> registered on the layer that owns the weight, as <c>torch.nn.utils.prune</c> names it, so
/// that it is saved and loaded with the model's state dict) and the kernel the layer runs.
/// </summary>
public sealed class TorchSparseWeight : ISparseWeight
{
    private DroppedPositions _dropped; // where the mask drops a weight, as bits: masking is one vectorised pass
    private Tensor? _droppedTensor;    // the same as a bool tensor, made for masked_fill_ on a tensor the pass cannot read
    private float[]? _denseGradient;

    internal TorchSparseWeight(string name, nn.Module owner, Parameter weight, Parameter? bias, SparsityMask mask, string initializer, double targetSparsity)
    {
        Name = name;
        Owner = owner;
        Weight = weight;
        Bias = bias;
        Initializer = initializer;
        TargetSparsity = targetSparsity;
        Rows = (int)weight.shape[0];
        Cols = (int)weight.shape[1];
        MaskTensor = torch.tensor(mask.Values, [Rows, Cols], ScalarType.Float32);
        owner.register_buffer("weight_mask", MaskTensor);
        _dropped = new DroppedPositions(mask);
        KernelDescription = "masked-dense";
    }

    /// <summary>The module's dotted name (e.g. <c>h.0.mlp.c_fc</c>).</summary>
    public string Name { get; }

    /// <summary>The module that owns the weight (the user's <c>Linear</c>, or the <see cref="TorchSparseLinear"/> that replaced it).</summary>
    public nn.Module Owner { get; internal set; }

    /// <summary>The user's weight parameter <c>[out, in]</c>, exactly 0 at dropped places after each optimizer step.</summary>
    public Parameter Weight { get; }

    /// <summary>The layer's bias, or null.</summary>
    public Parameter? Bias { get; }

    /// <summary>The mask as a float 0/1 tensor <c>[out, in]</c> (the buffer <c>weight_mask</c>).</summary>
    public Tensor MaskTensor { get; }

    /// <summary>The sparsity asked for.</summary>
    public double TargetSparsity { get; }

    /// <summary>The compressed layer that computes this weight, or null where the layer could not be swapped.</summary>
    public TorchSparseLinear? Layer { get; internal set; }

    /// <summary>The kernel and, for a layer that keeps the masked-dense path, why (e.g. "masked-dense: field 'fc1' is typed Linear").</summary>
    public string KernelDescription { get; internal set; }

    /// <inheritdoc />
    public int Rows { get; }

    /// <inheritdoc />
    public int Cols { get; }

    /// <inheritdoc />
    public string Initializer { get; }

    /// <inheritdoc />
    public string Kernel => Layer?.Kernel ?? KernelDescription;

    /// <inheritdoc />
    public SparseWeightStorage Storage => SparseWeightStorage.Dense;

    /// <inheritdoc />
    public int KeptCount
    {
        get
        {
            using var count = MaskTensor.count_nonzero();
            return (int)count.item<long>();
        }
    }

    /// <inheritdoc />
    public SparsityMask Mask => new(TorchTensors.Floats(MaskTensor).ToArray(), Rows, Cols);

    ReadOnlySpan<float> ISparseWeight.Weight => TorchTensors.Floats(Weight);

    /// <inheritdoc />
    public bool CaptureDenseGradient { get; set; }

    /// <inheritdoc />
    public ReadOnlySpan<float> DenseGradient => _denseGradient;

    /// <inheritdoc />
    public void ClearDenseGradient() => _denseGradient = null;

    /// <summary>The handle the weight belongs to (its optimizer's state follows mask changes).</summary>
    internal TorchSparseModel? Handle { get; set; }

    /// <inheritdoc />
    /// <remarks>Newly dropped weights, their gradients and the optimizer's state there become 0; grown weights start at 0
    /// with zero moments (they had none while dropped).</remarks>
    public void SetMask(SparsityMask mask)
    {
        ArgumentNullException.ThrowIfNull(mask);
        mask.CheckShape(Rows, Cols, nameof(mask));
        mask.Values.AsSpan().CopyTo(TorchTensors.Floats(MaskTensor));
        MaskChanged();
    }

    /// <summary>The mask's values changed (SetMask, a loaded state dict): refresh what is derived from them and keep the invariants.</summary>
    internal void MaskChanged()
    {
        Handle?.SetDroppedSecondMoments(0f); // at the old dropped places, before they change
        _dropped = new DroppedPositions(TorchTensors.Floats(MaskTensor));
        _droppedTensor?.Dispose();
        _droppedTensor = null;
        ApplyMask();
        using (var g = Weight.grad) if (g is not null) FillDropped(g, 0f);
        if (Handle?.Optimizer is { } opt) MaskState(opt); // newly dropped weights keep no moments
        Layer?.Invalidate();
    }

    /// <summary>Sets dropped weights to exactly 0 (also where they are NaN).</summary>
    public void ApplyMask()
    {
        FillDropped(Weight, 0f);
    }

    /// <summary>Writes <paramref name="value"/> at the dropped places of a tensor of the weight's shape (NaN-safe): one
    /// vectorised pass over the mask's bits where the tensor is contiguous CPU float32, <c>masked_fill_</c> otherwise.</summary>
    internal void FillDropped(Tensor t, float value)
    {
        if (t.is_contiguous() && t.dtype == ScalarType.Float32 && t.device_type == DeviceType.CPU && t.numel() == _dropped.Length)
        {
            using var threads = OpenMpThreads.Use();
            _dropped.Fill(TorchTensors.Floats(t), value);
        }
        else
        {
            _droppedTensor ??= MaskTensor.eq(0f);
            using (no_grad()) t.masked_fill_(_droppedTensor, value);
        }
    }

    /// <summary>
    /// Whether a gradient that may be non-zero at dropped places has been accumulated since the last masking: always on the
    /// masked path (the user's <c>Linear</c> computes the dense gradient); on a swapped layer only after a masked-dense pass
    /// (the compressed kernels give gradients only at kept places).
    /// </summary>
    internal bool DenseGradientPending { get; set; } = true;

    /// <summary>After backward: records the dense gradient if asked to, then makes the dropped gradients exactly 0.</summary>
    internal void MaskGradient()
    {
        using var g = Weight.grad;
        if (g is null) return;
        if (Layer is not null && !DenseGradientPending) return; // exact zeros already: nothing to record or mask
        DenseGradientPending = Layer is null;
        if (CaptureDenseGradient)
        {
            using var contiguous = g.contiguous(); // g itself when it already is (a new handle on the same tensor)
            var dense = TorchTensors.Floats(contiguous).ToArray();
            if (_denseGradient is null) _denseGradient = dense;
            else System.Numerics.Tensors.TensorPrimitives.Add(_denseGradient, dense, _denseGradient);
        }
        FillDropped(g, 0f);
    }

    /// <summary>Makes every optimizer state tensor of the weight's shape (moments, momentum buffers) exactly 0 at dropped places.</summary>
    internal void MaskState(optim.Optimizer optimizer)
    {
        foreach (var t in OptimizerStates.Tensors(optimizer, Weight))
            if (t.shape.SequenceEqual(Weight.shape)) FillDropped(t, 0f);
    }

    /// <inheritdoc />
    public override string ToString() => $"{Name}: [{Rows}, {Cols}], {KeptCount} kept, {Kernel}";
}
