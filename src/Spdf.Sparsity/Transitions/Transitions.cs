using Spdf.Tensors.Nn;
using Spdf.Tensors.Optim;

namespace Spdf.Sparsity;

/// <summary>
/// The transitions between phases of an SPDF run (Thangarasa et al. 2023, §3): sparse pre-training →
/// <see cref="Densify"/> → dense fine-tuning, or <see cref="FreezeMask"/> to fine-tune with the mask kept, and
/// <see cref="Prune"/> to go from dense to sparse.
/// </summary>
public static class Transitions
{
    /// <summary>
    /// The SPDF step: every <see cref="SparseLinear"/> becomes a dense <see cref="Linear"/> sharing the same parameters,
    /// so dropped weights start at exactly 0.0 and are trainable from the next step. A layer with
    /// <see cref="SparseWeightStorage.Compressed"/> storage gets a new dense weight parameter, which takes the kept values'
    /// place in <paramref name="optimizer"/> (pass the optimizer that trains the model, or build a new one after this). With an optimizer,
    /// <paramref name="state"/> chooses whether its moments are kept or reset for those layers.
    /// </summary>
    /// <param name="model">The sparsified model handle.</param>
    /// <param name="optimizer">The optimizer whose state to keep or reset, or null.</param>
    /// <param name="state">Keep or reset the densified layers' optimizer state.</param>
    /// <param name="step">The training step, recorded with the transition.</param>
    /// <returns>The number of layers densified.</returns>
    /// <exception cref="InvalidOperationException">The model is already dense.</exception>
    public static int Densify(SparsifiedModel model, Optimizer? optimizer = null, OptimizerStateOnDensify state = OptimizerStateOnDensify.Keep, long step = 0)
    {
        ArgumentNullException.ThrowIfNull(model);
        model.CheckCanDensify();
        int n = 0;
        foreach (var layer in model.Layers)
        {
            Parameter weight;
            if (layer.Layer.WeightValues is { } values)
            {
                // Compressed storage: a new dense weight, 0 at dropped places; the optimizer trains it in the values'
                // place, with their moments moved to the kept positions (the others start at 0).
                weight = new Parameter(layer.Layer.ToDenseWeight(), values.RequiresGrad);
                if (optimizer is not null && optimizer.Parameters.Any(p => ReferenceEquals(p, values)))
                    optimizer.ReplaceParameter(values, weight, layer.Layer.KeptPositions());
            }
            else
            {
                layer.Layer.ApplyMask();
                weight = layer.Layer.Weight;
                weight.SparseSupport = null; // every weight trains again; optimizer moments expand, new ones at 0
            }
            ModuleTree.Replace(model.Model, layer.Name, Linear.FromParameters(weight, layer.Layer.Bias));
            if (optimizer is not null && state == OptimizerStateOnDensify.Reset)
            {
                optimizer.ResetState(weight);
                if (layer.Layer.Bias is { } b) optimizer.ResetState(b);
            }
            n++;
        }
        model.Layers = [];
        model.MarkDensified(state, step);
        return n;
    }

    /// <summary>Sparse fine-tuning: the masks stay and are frozen; the phase becomes <see cref="SparsityPhase.SparseFinetune"/>.</summary>
    /// <exception cref="InvalidOperationException">The model was densified.</exception>
    public static void FreezeMask(SparsifiedModel model, long step = 0)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (model.Phase == SparsityPhase.DenseFinetune)
            throw new InvalidOperationException("FreezeMask: the model was densified; prune it again to fine-tune sparsely.");
        model.ApplyMasks();
        model.MarkFrozen(step);
    }

    /// <summary>
    /// Dense → sparse: applies <paramref name="config"/> (e.g. magnitude masks) and zeroes the optimizer moments at the
    /// dropped positions so that they stay at zero.
    /// </summary>
    public static SparsifiedModel Prune(Module model, SparsityConfig config, Optimizer? optimizer = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (optimizer is not null && config.Storage == SparseWeightStorage.Compressed)
            throw new ArgumentException("Prune: with storage Compressed the pruned layers get new (kept-only) weight parameters, which the given optimizer does not train; prune first, then build the optimizer.", nameof(optimizer));
        var handle = Sparsifier.Apply(model, config);
        if (optimizer is not null)
            foreach (var l in handle.Layers)
                foreach (var (_, t) in optimizer.State(l.Layer.Weight))
                    l.Layer.Mask.Apply(t.AsSpan());
        handle.AddTransition("prune");
        return handle;
    }
}
