using System.Buffers;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using Spdf.Sparsity.Kernels;
using Spdf.Sparsity.Masks;
using Spdf.Tensors;
using Spdf.Tensors.Autograd;
using Spdf.Tensors.Nn;

namespace Spdf.Sparsity;

/// <summary>
/// A linear layer <c>y = x·(W ⊙ M)ᵀ + b</c> whose weight is held at zero outside its <see cref="Mask"/>: x
/// <c>[..., in]</c>, W and M <c>[out, in]</c>, y <c>[..., out]</c>. Two kernels compute it: the masked-dense reference
/// (a dense GEMM over W ⊙ M) and the compressed path (CSR of the kept weights: the forward and the input gradient are
/// sparse-dense products, the weight gradient is computed only at kept positions), chosen per layer by
/// <see cref="KernelMode"/>. Either way the weight's gradient is exactly 0 at dropped positions (also where it would be
/// NaN), so no optimizer moves a dropped weight (SPDF, Thangarasa et al. 2023, §3: static unstructured sparsity).
/// Derives from <see cref="Linear"/> so that a model's <c>Linear</c> fields can hold it. With
/// <see cref="SparseWeightStorage.Compressed"/> storage (<see cref="WithCompressedWeight"/>) it keeps no dense weight at all.
/// </summary>
public sealed class SparseLinear : Linear
{
    private readonly GatheredCsr _csr = new(transpose: false), _csrT = new(transpose: true); // dense storage
    private CsrMatrix? _master;      // compressed storage: the kept weights; its Values are WeightValues' storage
    private CsrMatrix? _masterT;     // compressed storage: the structure of Wᵀ; values are gathered from _master through
    private int[]? _masterTMap;      // _masterTMap (per padded slot of Wᵀ) into a pooled buffer for each backward pass
    private readonly Tensor? _maskBits; // compressed storage: the mask, 16 positions per float (no dense mask is kept)
    private readonly SparsityMask? _mask; // dense storage: the mask; _maskTensor (the buffer weight_mask) wraps its values
    private readonly Tensor? _maskTensor;
    private SparseKernelMode _chosen;

    /// <summary>Makes a sparse layer that shares <paramref name="weight"/> and <paramref name="bias"/> and zeroes the dropped weights.</summary>
    /// <exception cref="ArgumentException">The mask's shape differs from the weight's.</exception>
    public SparseLinear(Parameter weight, Parameter? bias, SparsityMask mask) : base(weight, bias)
    {
        ArgumentNullException.ThrowIfNull(mask);
        mask.CheckShape(weight.Shape[0], weight.Shape[1], nameof(mask));
        _mask = mask;
        _maskTensor = new Tensor(mask.Values, weight.Shape); // the mask's own array: a loaded checkpoint is seen at once
        RegisterBuffer("weight_mask", _maskTensor);
        ApplyMask();
        UpdateSupport();
    }

    private SparseLinear(Parameter? bias, SparsityMask mask, Parameter weight) : base(mask.Cols, mask.Rows, bias)
    {
        var bits = mask.ToPackedBits();
        _maskBits = new Tensor(bits, new Shape(bits.Length));
        RegisterBuffer("weight_mask_bits", _maskBits);
        KeptCount = mask.KeptCount;
        _master = CsrMatrix.FromMask(mask);
        _master.Gather(weight.AsReadOnlySpan());
        WeightValues = new Parameter(new Tensor(_master.Values, new Shape(_master.Nnz)), weight.RequiresGrad);
        RegisterParameter("weight_values", WeightValues);
    }

    /// <summary>
    /// Makes a sparse layer with <see cref="SparseWeightStorage.Compressed"/> storage: the kept entries of
    /// <paramref name="weight"/> are copied into <see cref="WeightValues"/>, and <paramref name="weight"/> is not kept
    /// (its memory is free once the caller lets it go). The bias is shared.
    /// </summary>
    /// <exception cref="ArgumentException">The mask's shape differs from the weight's, or the bias does not fit.</exception>
    public static SparseLinear WithCompressedWeight(Parameter weight, Parameter? bias, SparsityMask mask)
    {
        ArgumentNullException.ThrowIfNull(weight);
        ArgumentNullException.ThrowIfNull(mask);
        if (weight.Rank != 2) throw new ArgumentException($"SparseLinear weight must be [out, in]; got {weight.Shape}.", nameof(weight));
        mask.CheckShape(weight.Shape[0], weight.Shape[1], nameof(mask));
        return new SparseLinear(bias, mask, weight);
    }

    /// <summary>Makes a sparse layer from a dense one (sharing its parameters, or with <paramref name="storage"/>
    /// <see cref="SparseWeightStorage.Compressed"/> copying its kept weights) with a new mask.</summary>
    /// <exception cref="ArgumentException">The mask's shape differs from the weight's.</exception>
    public static SparseLinear FromLinear(Linear dense, SparsityMask mask, SparseWeightStorage storage = SparseWeightStorage.Dense)
    {
        ArgumentNullException.ThrowIfNull(dense);
        return storage == SparseWeightStorage.Compressed ? WithCompressedWeight(dense.Weight, dense.Bias, mask) : new SparseLinear(dense.Weight, dense.Bias, mask);
    }

    /// <summary>Where the weight is kept.</summary>
    public SparseWeightStorage Storage => _master is null ? SparseWeightStorage.Dense : SparseWeightStorage.Compressed;

    /// <summary>With compressed storage, the kept weights <c>[kept]</c> (the trainable parameter, in the order of
    /// <see cref="KeptPositions"/>); null with dense storage, whose parameter is <see cref="Linear.Weight"/>.</summary>
    public Parameter? WeightValues { get; }

    /// <summary>The parameter the optimizer trains: <see cref="WeightValues"/> or <see cref="Linear.Weight"/>.</summary>
    public Parameter TrainedWeight => WeightValues ?? Weight;

    /// <summary>
    /// With compressed storage, the flat (row-major) index in the dense <c>[out, in]</c> weight of each element of
    /// <see cref="WeightValues"/>; with dense storage, the kept positions in ascending order. A fresh array per call.
    /// </summary>
    public int[] KeptPositions() => _master?.DenseIndices() ?? _mask!.KeptIndices();

    /// <summary>The entries of a dense <c>[out, in]</c> weight at the kept positions, in the order of
    /// <see cref="WeightValues"/> (compressed storage) or ascending (dense storage): what loading a dense weight into this
    /// layer stores.</summary>
    /// <exception cref="ArgumentException">The tensor is not <c>[out, in]</c>.</exception>
    public Tensor GatherKept(Tensor dense)
    {
        ArgumentNullException.ThrowIfNull(dense);
        var shape = new Shape(OutFeatures, InFeatures);
        if (dense.Shape != shape) throw new ArgumentException($"GatherKept: got shape {dense.Shape}; this layer's weight is {shape}.", nameof(dense));
        var src = dense.AsReadOnlySpan();
        var kept = new Tensor(new Shape(KeptCount));
        if (_master is { } csr) csr.GatherInto(src, kept.AsSpan());
        else
        {
            var dst = kept.AsSpan(); int j = 0;
            foreach (int i in _mask!.KeptIndices()) dst[j++] = src[i];
        }
        return kept;
    }

    /// <summary>A fresh dense <c>[out, in]</c> tensor of the weight, 0 where the mask drops it (either storage).</summary>
    public Tensor ToDenseWeight()
    {
        var dense = new Tensor(new Shape(OutFeatures, InFeatures));
        if (_master is { } csr) csr.Scatter(csr.Values, dense.AsSpan());
        else
        {
            Weight.AsReadOnlySpan().CopyTo(dense.AsSpan());
            _mask!.Apply(dense.AsSpan());
        }
        return dense;
    }

    /// <summary>
    /// The mask: 1 where a weight is kept, 0 where it is held at zero. With compressed storage the layer keeps it packed
    /// (16 positions per float, the buffer <c>weight_mask_bits</c>) and this is a fresh dense copy on each call: use
    /// <see cref="KeptCount"/> and <see cref="Sparsity"/> for counts.
    /// </summary>
    public SparsityMask Mask => _mask ?? SparsityMask.FromPackedBits(_maskBits!.AsReadOnlySpan(), OutFeatures, InFeatures);

    /// <summary>The number of kept weights.</summary>
    public int KeptCount
    {
        get => _mask?.KeptCount ?? _keptCount;
        private init => _keptCount = value;
    }

    private int _keptCount;

    /// <summary>The fraction of weights held at zero.</summary>
    public double Sparsity => 1 - (double)KeptCount / ((long)OutFeatures * InFeatures);

    /// <summary>Which kernel to use; <see cref="SparseKernelMode.Auto"/> (default) measures both at first use,
    /// <see cref="SparseKernelMode.Heuristic"/> chooses by a fixed rule (runs repeat bit for bit).</summary>
    public SparseKernelMode KernelMode
    {
        get => _mode;
        set { _mode = value; _chosen = SparseKernelMode.Auto; }
    }

    private SparseKernelMode _mode = SparseKernelMode.Auto;

    /// <summary>The kernel in use, for reports: "csr" or "masked-dense" ("auto" before the first forward pass).</summary>
    public string Kernel => Resolved switch
    {
        SparseKernelMode.Compressed => "csr",
        SparseKernelMode.MaskedDense => "masked-dense",
        _ => "auto",
    };

    internal SparseKernelMode Resolved => _mode is SparseKernelMode.Auto or SparseKernelMode.Heuristic ? _chosen : _mode;

    /// <summary>Replaces the mask (a dynamic-sparsity update), zeroes newly dropped weights and rebuilds the compressed structure.</summary>
    /// <exception cref="ArgumentException">The mask's shape differs from the weight's.</exception>
    public void SetMask(SparsityMask mask)
    {
        ArgumentNullException.ThrowIfNull(mask);
        if (_master is not null)
            throw new NotSupportedException($"SetMask: {this} stores only its kept weights (compressed storage), so its mask is fixed. Dynamic sparsity (magnitude pruning, SET, RigL) needs SparseWeightStorage.Dense.");
        mask.CheckShape(OutFeatures, InFeatures, nameof(mask));
        int before = _mask!.KeptCount;
        mask.Values.CopyTo(_mask.Values, 0);
        _maskTensor!.MarkModified();
        if (_mask.KeptCount != before) _chosen = SparseKernelMode.Auto; // the density changed: Auto measures again (Heuristic applies its rule)
        ApplyMask();
        if (Weight.Grad is { } grad) _mask.Apply(grad.AsSpan());         // a pending gradient keeps the invariant too
        OnMaskChanged();
    }

    /// <summary>Tells optimizers where the weight may be non-zero, so that they keep state only for kept weights.</summary>
    private void UpdateSupport()
    {
        if (_master is not null) return; // WeightValues holds kept weights only: it is dense over them
        Weight.SparseSupport = _mask!.KeptIndices();
    }

    /// <summary>Sets dropped weights to exactly 0 (the invariant every step keeps; compressed storage has no dropped weights to set).</summary>
    public void ApplyMask()
    {
        if (_master is not null) return;
        _mask!.Apply(Weight.AsSpan());
        Weight.MarkModified();
    }

    /// <summary>Bytes of the compressed structures (W and Wᵀ in CSR; with compressed storage W's values are the parameter
    /// itself, Wᵀ keeps only its structure and the map to W's entries, and the packed mask is counted), or 0 before they are built.</summary>
    public long CompressedBytes => _master is null ? _csr.Bytes + _csrT.Bytes
        : _master.Bytes + (_masterT?.Bytes - _masterT?.Nnz * 4L ?? 0) + (_masterTMap?.Length ?? 0) * 4L + _maskBits!.Numel * 4L;

    /// <summary>After a state load: keeps the invariant (a loaded dense weight is zeroed where the mask drops it) and rebuilds the structures.</summary>
    protected override void OnStateLoaded()
    {
        if (_master is not null)
        {
            // The loaded values are in the entry order of the loaded mask: rebuild the structure over the same array
            // (it is the parameter's storage, which optimizers hold).
            var mask = Mask; // unpacked (and checked) from the loaded bits
            if (mask.KeptCount != _master.Nnz)
                throw new ArgumentException($"The loaded mask keeps {mask.KeptCount} weights but weight_values has {_master.Nnz}.");
            _master = CsrMatrix.FromMask(mask, false, CsrMatrix.DefaultPanelWidth, _master.Values);
            _masterT = null; _masterTMap = null;
            _chosen = SparseKernelMode.Auto;
            return;
        }
        ApplyMask();
        OnMaskChanged();
    }

    /// <summary>The mask's values changed: rebuild the compressed structures lazily and tell optimizers the new support.</summary>
    private void OnMaskChanged()
    {
        _csr.Invalidate();
        _csrT.Invalidate();
        UpdateSupport();
    }

    internal CsrMatrix Csr => _master ?? _csr.Get(_mask!, Weight);

    /// <summary>Wᵀ in CSR for the input gradient. With compressed storage its values are gathered from W's (they change
    /// every step) straight into the SpMM's padded order, in a pooled buffer that the caller disposes once the pass is done.</summary>
    internal CsrMatrix RentCsrT(out AlignedBuffer? padded)
    {
        padded = null;
        if (_master is null) return _csrT.Get(_mask!, Weight);
        if (_masterT is null)
        {
            _masterT = _master.TransposeStructure(out _masterTMap, CsrMatrix.DefaultPanelWidth, slotMap: true); // no values: gathered per pass
        }
        padded = AlignedBuffer.Rent(_masterTMap!.Length);
        PaddedPanels.GatherMapped(_master.Values.AsSpan(0, _master.Nnz), _masterTMap, padded.Span);
        return _masterT;
    }

    /// <summary>A CSR of W (or Wᵀ) built from the mask on first use, with values re-gathered only when the weight's
    /// <see cref="Tensor.Version"/> changed.</summary>
    private sealed class GatheredCsr(bool transpose)
    {
        private CsrMatrix? _matrix;
        private long _version = -1;

        public long Bytes => _matrix?.Bytes ?? 0;

        public void Invalidate() => _matrix = null;

        public CsrMatrix Get(SparsityMask mask, Parameter weight)
        {
            if (_matrix is null) { _matrix = CsrMatrix.FromMask(mask, transpose); _version = -1; }
            if (_version != weight.Version) { _matrix.Gather(weight.AsReadOnlySpan()); _version = weight.Version; }
            return _matrix;
        }
    }

    /// <inheritdoc />
    public override Tensor Forward(Tensor input)
    {
        ArgumentNullException.ThrowIfNull(input);
        if (input.Rank < 1 || input.Shape[-1] != InFeatures)
            throw new ArgumentException($"SparseLinear: input's last dimension {(input.Rank == 0 ? 0 : input.Shape[-1])} (shape {input.Shape}) differs from the layer's input size {InFeatures}.", nameof(input));
        if (Resolved == SparseKernelMode.Auto)
            _chosen = _mode == SparseKernelMode.Heuristic
                ? KernelChoice.ByRule(input.Numel / InFeatures, InFeatures, OutFeatures, KeptCount, GradMode.IsEnabled && TrainedWeight.RequiresGrad)
                : Measure(input);
        if (CaptureDenseGradient && GradMode.IsEnabled && TrainedWeight.RequiresGrad) return MaskedDenseForward(input, capture: true);
        return Resolved == SparseKernelMode.Compressed ? CompressedForward(input) : MaskedDenseForward(input);
    }

    /// <summary>
    /// When set, the next forward passes use the masked-dense kernel and their backward passes store the weight's full
    /// dense gradient (dropped positions included) in <see cref="DenseGradient"/>, while the weight itself still gets
    /// the masked gradient. RigL sets it on mask-update steps to choose where to regrow.
    /// </summary>
    public bool CaptureDenseGradient { get; set; }

    /// <summary>The dense gradient of the last backward pass made with <see cref="CaptureDenseGradient"/> set, or null.</summary>
    public Tensor? DenseGradient { get; private set; }

    /// <summary>Forgets <see cref="DenseGradient"/>.</summary>
    public void ClearDenseGradient() => DenseGradient = null;

    /// <summary>The faster kernel on this input (<see cref="KernelChoice.Faster"/>, gradients off).</summary>
    private SparseKernelMode Measure(Tensor input)
    {
        using var _ = GradMode.NoGrad();
        void Pass(Func<Tensor, Tensor> forward)
        {
            using var scope = TensorScope.Enter(); // the trial output goes straight back to the pool
            forward(input);
        }
        return KernelChoice.Faster(() => Pass(MaskedDenseForward), () => Pass(CompressedForward));
    }

    private Tensor MaskedDenseForward(Tensor input) => MaskedDenseForward(input, capture: false);

    private Tensor MaskedDenseForward(Tensor input, bool capture)
    {
        var shape = new Shape(OutFeatures, InFeatures);
        var masked = CustomOp.RentStorage(shape.Numel, clear: _master is not null);
        if (_master is { } master) master.Scatter(master.Values.AsSpan(0, master.Nnz), masked);
        else
        {
            Weight.AsReadOnlySpan().CopyTo(masked);
            _mask!.Apply(masked); // exactly 0 at dropped places, even where the stored weight is NaN
        }
        if (!GradMode.IsEnabled || !TrainedWeight.RequiresGrad)
        {
            // Nothing will read the masked copy after this product (e.g. Auto's timing, generation): give it back now,
            // so that repeated passes reuse one array instead of leaving one per pass for the GC.
            var y = Functional.Linear(input, new Tensor(masked, shape), Bias);
            CustomOp.ReturnStorage(masked);
            return y;
        }
        var maskedWeight = CustomOp.Record(new Tensor(masked, shape), "MaskWeight", [TrainedWeight], g =>
        {
            if (capture)
            {
                if (DenseGradient is null) DenseGradient = new Tensor(g.AsReadOnlySpan().ToArray(), Weight.Shape);
                else TensorPrimitives.Add(DenseGradient.AsReadOnlySpan(), g.AsReadOnlySpan(), DenseGradient.AsSpan()); // accumulation
            }
            if (_master is { } csr)
            {
                var dv = CustomOp.RentStorage(csr.Nnz, clear: false);
                csr.GatherInto(g.AsReadOnlySpan(), dv);
                return [new Tensor(dv, WeightValues!.Shape)];
            }
            var dw = CustomOp.RentStorage(g.Numel, clear: false);
            g.AsReadOnlySpan().CopyTo(dw);
            _mask!.Apply(dw);
            return [new Tensor(dw, Weight.Shape)];
        });
        return Functional.Linear(input, maskedWeight, Bias);
    }

    private Tensor CompressedForward(Tensor input)
    {
        int n = input.Shape.Product(0, input.Rank - 1), k = InFeatures, m = OutFeatures;
        var csr = Csr;
        var outDims = input.Shape.ToArray(); outDims[^1] = m;
        var y = CustomOp.RentStorage(n * m, clear: false);
        SparseLinearKernels.Forward(csr, input.AsReadOnlySpan(), y, n, Bias is { } b ? b.AsReadOnlySpan() : default);
        var weight = TrainedWeight;
        Tensor[] inputs = Bias is null ? [input, weight] : [input, weight, Bias];
        return CustomOp.Record(new Tensor(y, new Shape(outDims)), "SparseLinear", inputs, g =>
        {
            Tensor? dx = null, dw = null, db = null;
            float[]? d = input.RequiresGrad ? CustomOp.RentStorage(n * k, clear: false) : null;
            var vals = weight.RequiresGrad ? CustomOp.RentStorage(csr.Nnz, clear: false) : null; // dW only at kept places
            var biasGrad = Bias is { RequiresGrad: true } ? new float[m] : null;
            AlignedBuffer? paddedT = null;
            var csrT = d is null ? null : RentCsrT(out paddedT);
            using (paddedT)
                SparseLinearKernels.Backward(csr, csrT, paddedT is null ? default : paddedT.Span, g.AsReadOnlySpan(), input.AsReadOnlySpan(), n, d, vals, biasGrad);
            if (d is not null) dx = new Tensor(d, input.Shape);
            if (vals is not null) dw = WeightGradient(csr, vals);
            if (biasGrad is not null) db = new Tensor(biasGrad, Bias!.Shape);
            return Bias is null ? [dx, dw] : [dx, dw, db];
        });
    }

    /// <summary>
    /// The trained weight's gradient from the kept weights' (<paramref name="values"/>, in <paramref name="csr"/>'s order,
    /// rented from the pool): with compressed storage that is the gradient; with dense storage they are scattered into
    /// a dense gradient, exactly 0 at dropped places, and <paramref name="values"/> goes back to the pool.
    /// </summary>
    internal Tensor WeightGradient(CsrMatrix csr, float[] values)
    {
        if (_master is not null) return new Tensor(values, TrainedWeight.Shape);
        var dense = CustomOp.RentStorage(OutFeatures * InFeatures, clear: true);
        csr.Scatter(values, dense);
        CustomOp.ReturnStorage(values);
        return new Tensor(dense, TrainedWeight.Shape);
    }

    /// <inheritdoc />
    public override string ToString() => $"SparseLinear(in={InFeatures}, out={OutFeatures}, sparsity={Sparsity:P1}, kernel={Kernel}{(_master is null ? "" : ", storage=compressed")})";
}

