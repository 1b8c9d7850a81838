using System.Text.Json;
using Spdf.Sparsity.Algorithms;
using Spdf.Sparsity.Masks;

namespace Spdf.Sparsity;

/// <summary>
/// One sparse weight <c>[rows, cols]</c> of a model as an engine binding presents it to the engine-free algorithms
/// (GMP, SET, RigL), the <see cref="SparsityController"/> and reports. Spans are row-major and valid until the next
/// call that changes the layer.
/// </summary>
public interface ISparseWeight
{
    /// <summary>The module's dotted name (e.g. <c>h.0.attn.c_attn</c>).</summary>
    string Name { get; }

    /// <summary>Rows: output features.</summary>
    int Rows { get; }

    /// <summary>Columns: input features.</summary>
    int Cols { get; }

    /// <summary>The number of kept weights.</summary>
    int KeptCount { get; }

    /// <summary>The current mask (a fresh copy where the layer keeps it packed).</summary>
    SparsityMask Mask { get; }

    /// <summary>The dense weight, 0 at dropped places.</summary>
    /// <exception cref="NotSupportedException">The layer keeps only its kept weights (<see cref="SparseWeightStorage.Compressed"/>).</exception>
    ReadOnlySpan<float> Weight { get; }

    /// <summary>Where the layer keeps its weight; a compressed layer's mask is fixed.</summary>
    SparseWeightStorage Storage { get; }

    /// <summary>The mask initialiser's name.</summary>
    string Initializer { get; }

    /// <summary>The kernel in use, for reports ("csr", "masked-dense", ...).</summary>
    string Kernel { get; }

    /// <summary>When set, the next backward passes also record the weight's full dense gradient (RigL's growth criterion).</summary>
    bool CaptureDenseGradient { get; set; }

    /// <summary>The dense gradient recorded under <see cref="CaptureDenseGradient"/>; empty when none was. It is the
    /// binding's own buffer: in data-parallel training the <see cref="SparsityController"/> averages it across ranks in place.</summary>
    ReadOnlySpan<float> DenseGradient { get; }

    /// <summary>Forgets <see cref="DenseGradient"/>.</summary>
    void ClearDenseGradient();

    /// <summary>
    /// Replaces the mask. The binding keeps the invariants: newly dropped weights, their gradients and optimizer moments
    /// become exactly 0; newly grown weights start at 0 with zero moments; compressed structures are rebuilt.
    /// </summary>
    void SetMask(SparsityMask mask);
}

/// <summary>
/// The engine-free part of a sparsified model's handle (what <c>Sparsifier.Apply</c> returns in each engine): its sparse
/// weights, the phase and transitions of the run, the mask-update algorithm, reports and checkpoint metadata, and the
/// engine hooks that the <see cref="SparsityController"/> calls around each optimizer step.
/// </summary>
public abstract class SparseModelHandle
{
    private readonly List<string> _transitions = [];

    /// <summary>Creates the handle's shared state.</summary>
    protected SparseModelHandle(string distribution) => Distribution = distribution ?? throw new ArgumentNullException(nameof(distribution));

    /// <summary>The sparse weights, in model order; empty after Densify.</summary>
    public abstract IReadOnlyList<ISparseWeight> Weights { get; }

    /// <summary>How per-layer sparsities were chosen ("uniform" or "erk").</summary>
    public string Distribution { get; }

    /// <summary>The mask-update algorithm from the config (null: static masks).</summary>
    public ISparsityAlgorithm? Algorithm { get; init; }

    /// <summary>The current phase.</summary>
    public SparsityPhase Phase { get; internal set; } = SparsityPhase.SparsePretrain;

    /// <summary>The transitions taken so far, oldest first (e.g. "densify(keep-optimizer-state) at step 1200").</summary>
    public IReadOnlyList<string> Transitions => _transitions;

    internal void AddTransition(string t) => _transitions.Add(t);

    /// <summary>For a binding's Densify, before it touches a layer: refuses a model that is dense already.</summary>
    /// <exception cref="InvalidOperationException">The model is in <see cref="SparsityPhase.DenseFinetune"/>.</exception>
    internal void CheckCanDensify()
    {
        if (Phase == SparsityPhase.DenseFinetune) throw new InvalidOperationException("Densify: the model is already dense (phase DenseFinetune).");
    }

    /// <summary>For a binding's Densify, once every layer is dense: the phase and the transition recorded in checkpoints.</summary>
    internal void MarkDensified(OptimizerStateOnDensify state, long step)
    {
        Phase = SparsityPhase.DenseFinetune;
        AddTransition($"densify({(state == OptimizerStateOnDensify.Keep ? "keep" : "reset")}-optimizer-state) at step {step}");
    }

    /// <summary>For a binding's FreezeMask, once the masks are applied: the phase and the transition recorded in checkpoints.</summary>
    internal void MarkFrozen(long step)
    {
        Phase = SparsityPhase.SparseFinetune;
        AddTransition($"freeze-mask at step {step}");
    }

    /// <summary>All trainable parameters of the model, counting a compressed layer's weight as dense.</summary>
    protected abstract long ModelParameterCount();

    /// <summary>
    /// Engine hook, called after backward and before the optimizer step: gradients must be exactly 0 at dropped places
    /// (also where they are NaN). A no-op where the engine's layers already give such gradients.
    /// </summary>
    public virtual void BeforeOptimizerStep() { }

    /// <summary>
    /// Engine hook, called after the optimizer step: dropped weights and their optimizer moments must be exactly 0 (an
    /// optimizer's weight decay or momentum would otherwise move them). A no-op where the engine's optimizers keep state
    /// only for kept weights.
    /// </summary>
    public virtual void AfterOptimizerStep() { }

    /// <summary>The SPDF transition: every sparse layer becomes dense, dropped weights start at 0.0 and learn again.</summary>
    /// <returns>The number of layers densified.</returns>
    public abstract int Densify(OptimizerStateOnDensify state = OptimizerStateOnDensify.Keep, long step = 0);

    /// <summary>Sparse fine-tuning: the masks stay and are frozen.</summary>
    public abstract void FreezeMask(long step = 0);

    /// <summary>Per-layer and total sparsity, counts and bytes.</summary>
    public SparsityReport Report()
    {
        var rows = Weights.Select(SparsityReportRow.For).ToList();
        return new SparsityReport(rows, ModelParameterCount(), Phase, Distribution);
    }

    /// <summary>Key/value metadata for a checkpoint (safetensors <c>__metadata__</c>): phase, transitions and per-layer sparsity.</summary>
    public Dictionary<string, string> CheckpointMetadata()
    {
        var report = Report();
        return new Dictionary<string, string>
        {
            ["spdf.phase"] = Phase.ToString(),
            ["spdf.transitions"] = JsonSerializer.Serialize(_transitions),
            ["spdf.distribution"] = Distribution,
            ["spdf.layers"] = JsonSerializer.Serialize(report.Rows.ToDictionary(r => r.Name, r => Math.Round(r.Sparsity, 6))),
        };
    }
}
