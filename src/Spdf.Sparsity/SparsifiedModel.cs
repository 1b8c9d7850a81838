using Spdf.Tensors.Nn;
using Spdf.Tensors.Optim;

namespace Spdf.Sparsity;

/// <summary>
/// The handle <see cref="Sparsifier.Apply"/> returns for a Spdf.Tensors model: its sparse layers, a report of their
/// sparsity and memory, the current <see cref="SparsityPhase"/> and the transitions taken (for checkpoint metadata).
/// A <see cref="SparsityController"/> over it drives mask updates and transitions step by step. Both engine hooks
/// around the optimizer step are empty here: Spdf.Tensors' sparse layers give gradients that are exactly 0 at dropped
/// places, and its optimizers keep state only for kept weights.
/// </summary>
public sealed class SparsifiedModel : SparseModelHandle
{
    internal SparsifiedModel(Module model, IReadOnlyList<SparseLayerInfo> layers, string distribution) : base(distribution)
    {
        Model = model;
        Layers = layers;
    }

    /// <summary>The model (modified in place).</summary>
    public Module Model { get; }

    /// <summary>The sparse layers, in model order; empty after <see cref="Transitions.Densify"/>.</summary>
    public IReadOnlyList<SparseLayerInfo> Layers { get; internal set; }

    /// <inheritdoc />
    public override IReadOnlyList<ISparseWeight> Weights => Layers;

    /// <summary>The optimizer that trains the model, used by transitions that a <see cref="SparsityController"/> takes
    /// (Densify keeps or resets its state); null to leave optimizer state alone.</summary>
    public Optimizer? Optimizer { get; set; }

    /// <summary>Re-zeroes every dropped weight (a no-op when the invariant holds).</summary>
    public void ApplyMasks()
    {
        foreach (var l in Layers) l.Layer.ApplyMask();
    }

    /// <inheritdoc />
    protected override long ModelParameterCount() =>
        // A compressed layer's parameter holds only its kept weights; count the model's weights as if dense.
        Model.ParameterCount() + Layers.Where(l => l.Layer.Storage == SparseWeightStorage.Compressed).Sum(l => (long)l.Layer.OutFeatures * l.Layer.InFeatures - l.Layer.KeptCount);

    /// <inheritdoc />
    public override int Densify(OptimizerStateOnDensify state = OptimizerStateOnDensify.Keep, long step = 0) =>
        Sparsity.Transitions.Densify(this, Optimizer, state, step);

    /// <inheritdoc />
    public override void FreezeMask(long step = 0) => Sparsity.Transitions.FreezeMask(this, step);
}
