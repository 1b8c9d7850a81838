using TorchSharp;
using static TorchSharp.torch;

namespace Spdf.Sparsity.TorchSharp;

/// <summary>
/// The handle <see cref="TorchSparsifier.Apply"/> returns for a TorchSharp model: its sparse weights, the report (which
/// layers run the compressed kernels and why the others do not), the phase and transitions of the run, and the engine
/// hooks a <see cref="SparsityController"/> calls around each optimizer step. Any training loop:
/// <code>
/// var sparse = TorchSparsifier.Apply(model, SparsityConfig.Default(0.75), optimizer);
/// var controller = new SparsityController(sparse);
/// for (long step = 1; ...; step++)
/// {
///     controller.BeginStep(step);
///     optimizer.zero_grad(); loss(model.call(x), y).backward();
///     controller.BeforeOptimizerStep(step);   // dropped gradients exactly 0
///     optimizer.step();
///     controller.AfterOptimizerStep(step);    // dropped weights and moments exactly 0; GMP / SET / RigL
/// }
/// sparse.Densify();                            // SPDF: dropped weights start at 0.0 and learn again
/// </code>
/// </summary>
public sealed class TorchSparseModel : SparseModelHandle
{
    private List<TorchSparseWeight> _weights;

    internal TorchSparseModel(nn.Module model, List<TorchSparseWeight> weights, string distribution) : base(distribution)
    {
        Model = model;
        _weights = weights;
        foreach (var w in weights) w.Handle = this;
    }

    /// <summary>The model (modified in place).</summary>
    public nn.Module Model { get; }

    /// <summary>The sparse weights, in model order; empty after <see cref="Densify"/>.</summary>
    public IReadOnlyList<TorchSparseWeight> Layers => _weights;

    /// <inheritdoc />
    public override IReadOnlyList<ISparseWeight> Weights => _weights;

    /// <summary>
    /// The optimizer that trains the model. Its state at dropped places is zeroed when it is set and whenever a mask changes
    /// (so a grown weight starts with zero moments); in between, zero gradients keep it at zero for every element-wise
    /// optimizer (SGD with momentum, Adam, AdamW, RMSprop, ...), weight decay included. <see cref="Densify"/> keeps or resets
    /// its state. Null: only weights and gradients are masked.
    /// </summary>
    public optim.Optimizer? Optimizer
    {
        get => _optimizer;
        set
        {
            SetDroppedSecondMoments(0f);
            _optimizer = value;
            if (value is not null) foreach (var w in _weights) w.MaskState(value);
        }
    }

    private optim.Optimizer? _optimizer;

    /// <inheritdoc />
    protected override long ModelParameterCount() => Model.parameters().Sum(p => p.numel());

    /// <inheritdoc />
    /// <remarks>
    /// Makes dropped gradients exactly 0 (layers on the masked path). For TorchSharp's Adam and AdamW it also sets the
    /// second moments at dropped places to 1 for the duration of the step, and <see cref="AfterOptimizerStep"/> sets them
    /// back to exactly 0: LibTorch's <c>sqrt</c> (2.10, CPU) takes about 8 times longer on exact zeros than on other values
    /// (1.3 ms against 0.15 ms for a 1536 × 384 moment at 75% sparsity; <c>quick torchsharp-sqrt</c>), and the optimizer
    /// takes the square root of every second moment each step. No result changes: at a dropped place the gradient and the
    /// first moment are 0, so the update there is 0 whatever the denominator (the weight, decayed or not, stays 0).
    /// </remarks>
    public override void BeforeOptimizerStep()
    {
        foreach (var w in _weights) w.MaskGradient();
        SetDroppedSecondMoments(1f);
    }

    /// <inheritdoc />
    /// <remarks>
    /// With gradients and optimizer state exactly 0 at dropped places (see <see cref="Optimizer"/>), an element-wise
    /// optimizer leaves dropped weights at 0. As a guard, the weights of layers that compute with the dense weight (the
    /// masked path) are set to exactly 0 there again, one pass over each; a layer on the compressed kernels reads only its
    /// kept weights, and zeroes the dropped ones itself before any masked-dense pass. Second moments that
    /// <see cref="BeforeOptimizerStep"/> set to 1 are exactly 0 again.
    /// </remarks>
    public override void AfterOptimizerStep()
    {
        foreach (var w in _weights)
            if (w.Layer is not { ReadsKeptWeightsOnly: true }) w.ApplyMask();
        SetDroppedSecondMoments(0f);
    }

    private bool _secondMomentsRaised;

    /// <summary>Writes <paramref name="value"/> at the dropped places of Adam's and AdamW's second moments (<c>exp_avg_sq</c>,
    /// and <c>max_exp_avg_sq</c> with AMSGrad); 1 only before a step, 0 after it.</summary>
    internal void SetDroppedSecondMoments(float value)
    {
        bool raise = value != 0;
        if (!raise && !_secondMomentsRaised) return;
        if (Optimizer is not { } opt || opt is not (global::TorchSharp.Modules.Adam or global::TorchSharp.Modules.AdamW)) return;
        var states = OptimizerStates.ByParameter(opt); // once per call, not once per weight
        foreach (var w in _weights)
            foreach (var t in OptimizerStates.SecondMoments(states.GetValueOrDefault(w.Weight.Handle)))
                if (t.shape.SequenceEqual(w.Weight.shape)) w.FillDropped(t, value);
        _secondMomentsRaised = raise;
    }

    /// <summary>After loading a state dict into the model (masks included): keeps the invariants for the loaded masks.</summary>
    public void OnStateLoaded()
    {
        foreach (var w in _weights) w.MaskChanged();
    }

    /// <summary>
    /// The SPDF transition: every swapped layer gives its place back to the user's original <c>Linear</c>, the mask
    /// buffers go, and the dropped weights (exactly 0.0) are trainable from the next step. With
    /// <see cref="OptimizerStateOnDensify.Reset"/> the optimizer's state of those weights and biases restarts (moments and
    /// the step count of bias correction, as a new PyTorch optimizer's would).
    /// </summary>
    /// <exception cref="InvalidOperationException">The model is already dense.</exception>
    public override int Densify(OptimizerStateOnDensify state = OptimizerStateOnDensify.Keep, long step = 0)
    {
        CheckCanDensify();
        SetDroppedSecondMoments(0f); // a step begun without AfterOptimizerStep leaves no raised moment behind
        foreach (var w in _weights)
        {
            w.ApplyMask();
            if (w.Layer is { } layer)
            {
                var (parent, key) = TorchSparsifier.Parent(Model, w.Name);
                string? why = ModuleSurgery.TrySwap(parent, key, layer, layer.Original);
                if (why is not null) throw new InvalidOperationException($"Densify: could not put layer '{w.Name}' back: {why}.");
                w.Layer = null;
                w.Owner = layer.Original;
            }
            ModuleSurgery.RemoveBuffer(w.Owner, "weight_mask");
            if (Optimizer is { } opt && state == OptimizerStateOnDensify.Reset)
            {
                OptimizerStates.Reset(opt, w.Weight);
                if (w.Bias is { } b) OptimizerStates.Reset(opt, b);
            }
        }
        int n = _weights.Count;
        _weights = [];
        MarkDensified(state, step);
        return n;
    }

    /// <summary>Sparse fine-tuning: the masks stay and are frozen.</summary>
    /// <exception cref="InvalidOperationException">The model was densified.</exception>
    public override void FreezeMask(long step = 0)
    {
        if (Phase == SparsityPhase.DenseFinetune) throw new InvalidOperationException("FreezeMask: the model was densified; sparsify it again to fine-tune sparsely.");
        foreach (var w in _weights) w.ApplyMask();
        MarkFrozen(step);
    }
}
