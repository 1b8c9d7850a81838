using Spdf.Sparsity.Distributed;
using Spdf.Tensors;
using Spdf.Tensors.Nn;

namespace Spdf.Sparsity;

/// <summary>
/// Data-parallel training of a Spdf.Tensors model over an <see cref="ICommunicator"/> (e.g. <c>Spdf.Mpi</c>'s MPI
/// group): every rank holds the whole model, trains on its own shard of the data, and averages gradients after the
/// backward pass, so that every rank takes the same optimizer step.
/// <code>
/// DataParallel.BroadcastParameters(model, group);          // identical start
/// var reducer = DataParallel.CreateReducer(model, sparsity, group);
/// // each step: forward, backward, controller.BeforeOptimizerStep(step), then
/// reducer.AverageGradients();                              // kept gradients only for masked weights
/// optimizer.Step();
/// </code>
/// The Spdf.Gpt trainer does all of this when <c>TrainerOptions.Communicator</c> is set.
/// </summary>
public static class DataParallel
{
    /// <summary>
    /// A reducer for every trainable parameter of <paramref name="model"/> in model order. A masked sparse weight
    /// (<see cref="SparseWeightStorage.Dense"/>) sends only its kept gradients; a compressed one's parameter already
    /// holds only them. Build a new reducer after a mask update or a transition (the kept places change).
    /// </summary>
    public static GradientReducer CreateReducer(Module model, SparsifiedModel? sparsity, ICommunicator communicator, int bucketBytes = GradientReducer.DefaultBucketBytes)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(communicator);
        var masked = new Dictionary<Parameter, SparseLinear>(ReferenceEqualityComparer.Instance);
        var compressed = new Dictionary<Parameter, SparseLinear>(ReferenceEqualityComparer.Instance);
        if (sparsity is not null && sparsity.Phase != SparsityPhase.DenseFinetune)
            foreach (var l in sparsity.Layers)
                if (l.Layer.Storage == SparseWeightStorage.Dense) masked[l.Layer.Weight] = l.Layer;
                else if (l.Layer.WeightValues is { } values) compressed[values] = l.Layer;
        var entries = new List<ReducedGradient>();
        foreach (var (name, p) in model.NamedParameters())
        {
            if (!p.RequiresGrad) continue;
            var param = p;
            GradientBuffer grad = () => (param.Grad ??= new Tensor(param.Shape)).AsSpan();
            entries.Add(masked.TryGetValue(p, out var layer) ? ReducedGradient.Masked(name, p.Numel, grad, layer.Mask.Values)
                : compressed.TryGetValue(p, out var c) ? ReducedGradient.Dense(name, p.Numel, grad, (long)c.OutFeatures * c.InFeatures)
                : ReducedGradient.Dense(name, p.Numel, grad));
        }
        return new GradientReducer(communicator, entries, bucketBytes);
    }

    /// <summary>Copies every parameter of rank <paramref name="root"/> to the other ranks (an identical start).</summary>
    public static void BroadcastParameters(Module model, ICommunicator communicator, int root = 0)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(communicator);
        if (communicator.Size == 1) return;
        foreach (var p in model.Parameters()) communicator.Broadcast(p.AsSpan(), root);
    }

    /// <summary>
    /// Checks that every rank holds the same weights and masks (the state dict, buffers included).
    /// </summary>
    /// <exception cref="InvalidOperationException">A tensor differs from rank 0's; the message names it and the rank, on every rank.</exception>
    public static void VerifyReplicas(Module model, ICommunicator communicator)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(communicator);
        if (communicator.Size == 1) return;
        var state = model.StateDict();
        ReplicaCheck.Verify(communicator, state.Keys.ToList(), state.Values.Select(t => ReplicaCheck.Hash(t.AsReadOnlySpan())).ToArray(), "tensor");
    }
}
