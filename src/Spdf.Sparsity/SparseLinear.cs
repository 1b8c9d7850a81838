using System.Buffers;
using System.Diagnostics;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using Spdf.Sparsity.Kernels;
using Spdf.Sparsity.Masks;
using Spdf.Tensors;
using Spdf.Tensors.Autograd;
using Spdf.Tensors.Kernels.Cpu;
using Spdf.Tensors.Nn;

namespace Spdf.Sparsity;

/// <summary>How a <see cref="SparseLinear"/> computes.</summary>
public enum SparseKernelMode
{
    /// <summary>Measure both kernels at first use and keep the faster.</summary>
    Auto,
    /// <summary>The reference: a dense GEMM over the masked weight; gains no time.</summary>
    MaskedDense,
    /// <summary>CSR kernels that do work only for kept weights (SpMM, SDDMM, SpMV).</summary>
    Compressed,
}

/// <summary>
/// A linear layer <c>y = x·(W ⊙ M)ᵀ + b</c> whose weight is held at zero outside its <see cref="Mask"/>: x
/// <c>[..., in]</c>, W and M <c>[out, in]</c>, y <c>[..., out]</c>. Two kernels compute it: the masked-dense reference
/// (a dense GEMM over W ⊙ M) and the compressed path (CSR of the kept weights: the forward and the input gradient are
/// sparse-dense products, the weight gradient is computed only at kept positions), chosen per layer by
/// <see cref="KernelMode"/>. Either way the weight's gradient is exactly 0 at dropped positions (also where it would be
/// NaN), so no optimizer moves a dropped weight (SPDF, Thangarasa et al. 2023, §3: static unstructured sparsity).
/// Derives from <see cref="Linear"/> so that a model's <c>Linear</c> fields can hold it.
/// </summary>
public sealed class SparseLinear : Linear
{
    private readonly GatheredCsr _csr = new(transpose: false), _csrT = new(transpose: true);
    private SparseKernelMode _chosen;

    /// <summary>Makes a sparse layer that shares <paramref name="weight"/> and <paramref name="bias"/> and zeroes the dropped weights.</summary>
    /// <exception cref="ArgumentException">The mask's shape differs from the weight's.</exception>
    public SparseLinear(Parameter weight, Parameter? bias, SparsityMask mask) : base(weight, bias)
    {
        ArgumentNullException.ThrowIfNull(mask);
        mask.CheckShape(weight.Shape, nameof(mask));
        Mask = mask;
        RegisterBuffer("weight_mask", mask.Values);
        ApplyMask();
        UpdateSupport();
    }

    /// <summary>Makes a sparse layer from a dense one (sharing its parameters) with a new mask.</summary>
    public static SparseLinear FromLinear(Linear dense, SparsityMask mask)
    {
        ArgumentNullException.ThrowIfNull(dense);
        return new SparseLinear(dense.Weight, dense.Bias, mask);
    }

    /// <summary>The mask: 1 where a weight is kept, 0 where it is held at zero.</summary>
    public SparsityMask Mask { get; private set; }

    /// <summary>Which kernel to use; <see cref="SparseKernelMode.Auto"/> (default) measures both at first use.</summary>
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

    private SparseKernelMode Resolved => _mode == SparseKernelMode.Auto ? _chosen : _mode;

    /// <summary>Replaces the mask (a dynamic-sparsity update), zeroes newly dropped weights and rebuilds the compressed structure.</summary>
    /// <exception cref="ArgumentException">The mask's shape differs from the weight's.</exception>
    public void SetMask(SparsityMask mask)
    {
        ArgumentNullException.ThrowIfNull(mask);
        mask.CheckShape(Weight.Shape, nameof(mask));
        int before = Mask.KeptCount;
        Mask.Values.CopyFrom(mask.Values);
        if (Mask.KeptCount != before) _chosen = SparseKernelMode.Auto; // the density changed: Auto measures again
        ApplyMask();
        if (Weight.Grad is { } grad) Mask.Apply(grad.AsSpan());         // a pending gradient keeps the invariant too
        OnMaskChanged();
    }

    /// <summary>Tells optimizers where the weight may be non-zero, so that they keep state only for kept weights.</summary>
    private void UpdateSupport()
    {
        var m = Mask.Values.AsReadOnlySpan();
        var support = new int[Mask.KeptCount];
        for (int i = 0, j = 0; i < m.Length; i++) if (m[i] != 0) support[j++] = i;
        Weight.SparseSupport = support;
    }

    /// <summary>Sets dropped weights to exactly 0 (the invariant every step keeps).</summary>
    public void ApplyMask()
    {
        Mask.Apply(Weight.AsSpan());
        Weight.MarkModified();
    }

    /// <summary>Bytes of the compressed structure (W and Wᵀ in CSR), or 0 before it is built.</summary>
    public long CompressedBytes => _csr.Bytes + _csrT.Bytes;

    /// <summary>After a state load: keeps the invariant (a loaded dense weight is zeroed where the mask drops it) and rebuilds the structures.</summary>
    protected override void OnStateLoaded()
    {
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

    private CsrMatrix Csr => _csr.Get(Mask, Weight);
    private CsrMatrix CsrT => _csrT.Get(Mask, Weight);

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
        if (Resolved == SparseKernelMode.Auto) _chosen = Measure(input);
        if (CaptureDenseGradient && GradMode.IsEnabled && Weight.RequiresGrad) return MaskedDenseForward(input, capture: true);
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

    /// <summary>
    /// Times forward passes of each kernel on this input (gradients off; best of three after a warm-up, since the
    /// machine's noise easily exceeds the difference) and returns the faster.
    /// </summary>
    private SparseKernelMode Measure(Tensor input)
    {
        using var _ = GradMode.NoGrad();
        double Time(Func<Tensor, Tensor> f)
        {
            using var scope = TensorScope.Enter(); // the trial outputs go straight back to the pool
            f(input); // warm
            double best = double.MaxValue;
            for (int i = 0; i < 3; i++)
            {
                var sw = Stopwatch.StartNew();
                f(input);
                best = Math.Min(best, sw.Elapsed.TotalMilliseconds);
            }
            return best;
        }
        double dense = Time(MaskedDenseForward), sparse = Time(CompressedForward);
        return sparse < dense ? SparseKernelMode.Compressed : SparseKernelMode.MaskedDense;
    }

    private Tensor MaskedDenseForward(Tensor input) => MaskedDenseForward(input, capture: false);

    private Tensor MaskedDenseForward(Tensor input, bool capture)
    {
        var masked = CustomOp.RentStorage(Weight.Numel, clear: false);
        Weight.AsReadOnlySpan().CopyTo(masked);
        Mask.Apply(masked); // exactly 0 at dropped places, even where the stored weight is NaN
        var maskedWeight = CustomOp.Record(new Tensor(masked, Weight.Shape), "MaskWeight", [Weight], g =>
        {
            if (capture)
            {
                if (DenseGradient is null) DenseGradient = new Tensor(g.AsReadOnlySpan().ToArray(), Weight.Shape);
                else TensorPrimitives.Add(DenseGradient.AsReadOnlySpan(), g.AsReadOnlySpan(), DenseGradient.AsSpan()); // accumulation
            }
            var dw = CustomOp.RentStorage(g.Numel, clear: false);
            g.AsReadOnlySpan().CopyTo(dw);
            Mask.Apply(dw);
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
        if (n == 1)
        {
            SparseKernels.SpMV(csr, input.AsReadOnlySpan(), y);                 // decode: one token
            if (Bias is { } b1) TensorPrimitives.Add(y, b1.AsReadOnlySpan(), y);
        }
        else
        {
            // Xᵀ in token blocks. Temporaries that never leave this method come from a pool: fresh large arrays cost
            // a page fault per 4 KiB. Xᵀ is not kept for backward (the input is, by autograd): transposing it again
            // there costs ~1% of the step and saves a copy of every sparse layer's input for the whole step.
            var xt = RentBlocks(input.AsReadOnlySpan(), n, k);
            var yt = ArrayPool<float>.Shared.Rent(SparseKernels.BlockedLength(m, n));
            SparseKernels.SpMM(csr, xt, yt, n, Bias is { } b ? b.AsReadOnlySpan() : default); // Yᵀ = W·Xᵀ + b over kept weights
            Transpose.FromBlocks(yt, n, m, SparseKernels.TokenBlock, y, SparseKernels.BlockStride(m));
            ArrayPool<float>.Shared.Return(yt);
            ArrayPool<float>.Shared.Return(xt);
        }
        Tensor[] inputs = Bias is null ? [input, Weight] : [input, Weight, Bias];
        return CustomOp.Record(new Tensor(y, new Shape(outDims)), "SparseLinear", inputs, g =>
        {
            var dyt = RentBlocks(g.AsReadOnlySpan(), n, m);                    // dYᵀ in token blocks
            Tensor? dx = null, dw = null, db = null;
            if (input.RequiresGrad)
            {
                var csrT = CsrT;
                var dxt = ArrayPool<float>.Shared.Rent(SparseKernels.BlockedLength(k, n));
                SparseKernels.SpMM(csrT, dyt, dxt, n);                          // dXᵀ = Wᵀ·dYᵀ over kept weights
                var d = CustomOp.RentStorage(n * k, clear: false);
                Transpose.FromBlocks(dxt, n, k, SparseKernels.TokenBlock, d, SparseKernels.BlockStride(k));
                ArrayPool<float>.Shared.Return(dxt);
                dx = new Tensor(d, input.Shape);
            }
            if (Weight.RequiresGrad)
            {
                var xtt = RentBlocks(input.AsReadOnlySpan(), n, k);             // Xᵀ again
                var vals = ArrayPool<float>.Shared.Rent(csr.Nnz);
                SparseKernels.Sddmm(csr, dyt, xtt, vals.AsSpan(0, csr.Nnz), n);   // dW only at kept places
                ArrayPool<float>.Shared.Return(xtt);
                var d = CustomOp.RentStorage(m * k, clear: true);               // exactly 0 at dropped places
                csr.Scatter(vals.AsSpan(0, csr.Nnz), d);
                ArrayPool<float>.Shared.Return(vals);
                dw = new Tensor(d, Weight.Shape);
            }
            if (Bias is { RequiresGrad: true } bias)
            {
                var d = new float[m];
                SparseKernels.RowSums(dyt, m, n, d);
                db = new Tensor(d, bias.Shape);
            }
            ArrayPool<float>.Shared.Return(dyt);
            return Bias is null ? [dx, dw] : [dx, dw, db];
        });
    }

    /// <summary>A pooled token-blocked transpose of <c>(n, features)</c> rows; give it back to <see cref="ArrayPool{T}.Shared"/>.</summary>
    private static float[] RentBlocks(ReadOnlySpan<float> rowsByFeatures, int n, int features)
    {
        var blocks = ArrayPool<float>.Shared.Rent(SparseKernels.BlockedLength(features, n));
        Transpose.ToBlocks(rowsByFeatures, n, features, SparseKernels.TokenBlock, blocks, SparseKernels.BlockStride(features));
        return blocks;
    }

    /// <inheritdoc />
    public override string ToString() => $"SparseLinear(in={InFeatures}, out={OutFeatures}, sparsity={Mask.Sparsity:P1}, kernel={Kernel})";
}
