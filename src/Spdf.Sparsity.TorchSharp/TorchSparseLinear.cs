using Spdf.Sparsity.Kernels;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Spdf.Sparsity.TorchSharp;

/// <summary>
/// The compressed replacement of a TorchSharp <c>Linear</c> <c>y = x·(W ⊙ M)ᵀ + b</c> (x <c>[..., in]</c>, W and M
/// <c>[out, in]</c>, y <c>[..., out]</c>): it adopts the user's own <see cref="Parameter"/> objects (so the optimizer keeps
/// training them) and the mask buffer, and computes with Spdf's CPU kernels through TorchSharp's custom autograd: the
/// forward pass and the input gradient are sparse-dense products over kept weights, the weight gradient is computed only
/// at kept positions (<see cref="SparseLinearKernels"/>). Its state dict has the original layer's names
/// (<c>weight</c>, <c>bias</c>, <c>weight_mask</c>). <see cref="TorchSparsifier"/> puts it where the model's field,
/// <c>Sequential</c> or <c>ModuleList</c> allows; <see cref="TorchSparseModel.Densify"/> puts the original back.
/// </summary>
public sealed class TorchSparseLinear : nn.Module<Tensor, Tensor>
{
    private readonly TorchSparseWeight _w;
    private CsrMatrix? _csr, _csrT; // W with the weight's values at the last forward pass; the structure of Wᵀ
    private int[]? _csrTMap;         // per padded slot of Wᵀ, its entry in W (values gathered from W's per backward pass)
    private SparseKernelMode _mode = SparseKernelMode.Auto, _chosen = SparseKernelMode.Auto;

    internal TorchSparseLinear(TorchSparseWeight weight, nn.Module original) : base("SpdfSparseLinear")
    {
        _w = weight;
        Original = original;
        register_parameter("weight", weight.Weight);
        if (weight.Bias is { } b) register_parameter("bias", b);
        register_buffer("weight_mask", weight.MaskTensor);
    }

    /// <summary>The layer it replaced (kept, never disposed: it shares the parameters).</summary>
    public nn.Module Original { get; }

    /// <summary>Input features.</summary>
    public int InFeatures => _w.Cols;

    /// <summary>Output features.</summary>
    public int OutFeatures => _w.Rows;

    /// <summary>Which kernel to use; <see cref="SparseKernelMode.Auto"/> (default) times both at first use and keeps the
    /// faster, <see cref="SparseKernelMode.Heuristic"/> chooses by a fixed rule (runs repeat bit for bit).</summary>
    public SparseKernelMode KernelMode
    {
        get => _mode;
        set { _mode = value; _chosen = SparseKernelMode.Auto; }
    }

    private SparseKernelMode Resolved => _mode is SparseKernelMode.Auto or SparseKernelMode.Heuristic ? _chosen : _mode;

    /// <summary>The kernel in use: "csr", "masked-dense", or "auto" before the first forward pass.</summary>
    public string Kernel => Resolved switch
    {
        SparseKernelMode.Compressed => "csr",
        SparseKernelMode.MaskedDense => "masked-dense",
        _ => "auto",
    };

    /// <summary>The mask changed: the CSR structures are rebuilt at the next pass, and Auto measures again (Heuristic applies its rule).</summary>
    internal void Invalidate()
    {
        _csr = null;
        _csrT = null;
        _csrTMap = null;
        _chosen = SparseKernelMode.Auto;
    }

    /// <summary>W in CSR with the weight's current values.</summary>
    internal CsrMatrix Csr()
    {
        _csr ??= CsrMatrix.FromMask(_w.Mask);
        _csr.Gather(TorchTensors.Floats(_w.Weight));
        return _csr;
    }

    /// <summary>
    /// The structure of Wᵀ, with W's values (as gathered by the forward pass) placed in its padded slot order in a pooled
    /// buffer that the caller disposes: W's kept values are read in sequence instead of the dense weight column by column.
    /// </summary>
    internal CsrMatrix RentCsrT(CsrMatrix w, out AlignedBuffer padded)
    {
        _csrT ??= w.TransposeStructure(out _csrTMap, CsrMatrix.DefaultPanelWidth, slotMap: true);
        padded = AlignedBuffer.Rent(_csrTMap!.Length);
        PaddedPanels.GatherMapped(w.Values.AsSpan(0, w.Nnz), _csrTMap, padded.Span);
        return _csrT;
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor input)
    {
        ArgumentNullException.ThrowIfNull(input);
        TorchTensors.CheckCpuFloat32(input, "The input of sparse layer '" + _w.Name + "'", nameof(input));
        if (input.dim() < 1 || input.shape[^1] != InFeatures)
            throw new ArgumentException($"Sparse layer '{_w.Name}': the input's last dimension {(input.dim() == 0 ? 0 : input.shape[^1])} (shape [{string.Join(", ", input.shape)}]) differs from the layer's input size {InFeatures}.", nameof(input));
        // RigL's update steps need the dense gradient: the masked-dense path gives it (dropped weights are 0 already).
        if (_w.CaptureDenseGradient && _w.Weight.requires_grad && is_grad_enabled()) return MaskedDense(input);
        if (Resolved == SparseKernelMode.Auto)
            _chosen = _mode == SparseKernelMode.Heuristic
                ? KernelChoice.ByRule(input.numel() / InFeatures, InFeatures, OutFeatures, _w.KeptCount, _w.Weight.requires_grad && is_grad_enabled())
                : Measure(input);
        return Resolved == SparseKernelMode.Compressed ? Compressed(input) : MaskedDense(input);
    }

    private Tensor MaskedDense(Tensor input)
    {
        if (ReadsKeptWeightsOnly) _w.ApplyMask(); // the dense product reads every weight: dropped ones exactly 0 first
        ReadsKeptWeightsOnly = false;
        if (_w.Weight.requires_grad && is_grad_enabled()) _w.DenseGradientPending = true; // its dropped gradients need masking
        return nn.functional.linear(input, _w.Weight, _w.Bias);
    }

    private Tensor Compressed(Tensor input)
    {
        ReadsKeptWeightsOnly = true;
        return _w.Bias is { } b ? SparseLinearFunction.apply(input, _w.Weight, b, this) : SparseLinearFunction.apply(input, _w.Weight, this);
    }

    /// <summary>Whether the layer's last pass ran the compressed kernels, which read the kept weights only: what the
    /// dropped places hold cannot change its result until a masked-dense pass, which sets them to 0 first.</summary>
    internal bool ReadsKeptWeightsOnly { get; private set; }

    /// <summary>The faster kernel on this input (<see cref="KernelChoice.Faster"/>, gradients off).</summary>
    private SparseKernelMode Measure(Tensor input)
    {
        using var _ = no_grad();
        return KernelChoice.Faster(() => MaskedDense(input).Dispose(), () => Compressed(input).Dispose());
    }

    /// <inheritdoc />
    public override string ToString() => $"TorchSparseLinear(in={InFeatures}, out={OutFeatures}, kept={_w.KeptCount}, kernel={Kernel})";

    /// <summary>The custom autograd function: arguments (input, weight, [bias,] layer).</summary>
    private sealed class SparseLinearFunction : autograd.SingleTensorFunction<SparseLinearFunction>
    {
        public override string Name => "SpdfSparseLinear";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            using var threads = OpenMpThreads.Use(); // the kernels' loops on LibTorch's own threads
            var input = (Tensor)vars[0];
            var layer = (TorchSparseLinear)vars[^1];
            var bias = vars.Length == 4 ? (Tensor)vars[2] : null;
            var x = TorchTensors.Contiguous(input);
            int k = layer.InFeatures, m = layer.OutFeatures;
            int n = (int)(x.numel() / k);
            var outShape = input.shape.ToArray();
            outShape[^1] = m;
            var y = empty(outShape, ScalarType.Float32);
            SparseLinearKernels.Forward(layer.Csr(), TorchTensors.Floats(x), TorchTensors.Floats(y), n, bias is null ? default : TorchTensors.Floats(bias));
            ctx.save_for_backward([x]);
            ctx.save_data("layer", layer);
            ctx.save_data("needs_x", input.requires_grad);
            return y;
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
        {
            using var threads = OpenMpThreads.Use();
            var x = ctx.get_saved_variables()[0];
            var layer = (TorchSparseLinear)ctx.get_data("layer");
            bool needsX = (bool)ctx.get_data("needs_x");
            var w = layer._w;
            int k = layer.InFeatures, m = layer.OutFeatures;
            int n = (int)(x.numel() / k);
            using var dyCopy = grad.is_contiguous() ? null : grad.contiguous();
            var dy = dyCopy ?? grad;
            var csr = layer._csr ?? layer.Csr(); // the weight is what the forward pass read: its values are in place
            Tensor? dx = needsX ? empty(x.shape, ScalarType.Float32) : null;
            bool needsW = w.Weight.requires_grad, needsB = w.Bias is { requires_grad: true };
            using var values = needsW ? AlignedBuffer.Rent(csr.Nnz) : null; // pooled: no large-object garbage per step
            Tensor? db = needsB ? empty([m], ScalarType.Float32) : null;
            AlignedBuffer? padded = null;
            var csrT = needsX ? layer.RentCsrT(csr, out padded) : null;
            using (padded)
                SparseLinearKernels.Backward(csr, csrT, padded is null ? default : padded.Span, TorchTensors.Floats(dy), TorchTensors.Floats(x), n,
                    dx is null ? default : TorchTensors.Floats(dx), values is null ? default : values.Span, db is null ? default : TorchTensors.Floats(db));
            Tensor? dw = null;
            if (values is not null)
            {
                if (w.Weight.grad is { } acc && acc.is_contiguous() && acc.dtype == ScalarType.Float32 && acc.device_type == DeviceType.CPU)
                {
                    // Accumulate straight into the weight's existing gradient at kept places (what autograd would do with a
                    // dense dW, without writing and adding the dense [out, in] array): the function then gives no weight
                    // gradient to autograd.
                    csr.ScatterAdd(values.Span, TorchTensors.Floats(acc));
                }
                else
                {
                    dw = zeros([m, k], ScalarType.Float32); // exactly 0 at dropped places
                    csr.Scatter(values.Span, TorchTensors.Floats(dw));
                }
            }
            return w.Bias is null ? [dx!, dw!, null!] : [dx!, dw!, db!, null!];
        }
    }
}
