using Spdf.Sparsity.Distributed;
using TorchSharp;
using static TorchSharp.torch;

namespace Spdf.Sparsity.TorchSharp;

/// <summary>
/// Data-parallel training of a TorchSharp model on the CPU over an <see cref="ICommunicator"/> (e.g. <c>Spdf.Mpi</c>'s
/// MPI group), with the engine-free <see cref="GradientReducer"/>: every rank holds the whole model and trains on its
/// own shard of the data; gradients are averaged after the backward pass (only the kept values of sparse weights), so
/// every rank takes the same optimizer step.
/// <code>
/// TorchDataParallel.BroadcastParameters(model, world);              // identical start
/// var controller = new SparsityController(sparse) { Communicator = world }; // RigL's dense gradients are averaged too
/// var reducer = TorchDataParallel.CreateReducer(model, sparse, world);
/// // each step:
/// controller.BeginStep(step); loss.backward(); controller.BeforeOptimizerStep(step);
/// reducer.AverageGradients();
/// optimizer.step(); controller.AfterOptimizerStep(step);            // build a new reducer when masks changed
/// </code>
/// </summary>
public static class TorchDataParallel
{
    /// <summary>
    /// A reducer for every trainable parameter of <paramref name="model"/>, in <c>named_parameters()</c> order (the same on
    /// every rank). The weights of <paramref name="sparsity"/> send only their kept gradients (while the model is sparse);
    /// build a new reducer after a mask update or a transition.
    /// </summary>
    /// <exception cref="ArgumentException">A trainable parameter is not a float32 CPU tensor.</exception>
    public static GradientReducer CreateReducer(nn.Module model, TorchSparseModel? sparsity, ICommunicator communicator, int bucketBytes = GradientReducer.DefaultBucketBytes)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(communicator);
        var masked = new Dictionary<IntPtr, TorchSparseWeight>();
        if (sparsity is not null && sparsity.Phase != SparsityPhase.DenseFinetune)
            foreach (var w in sparsity.Layers) masked[w.Weight.Handle] = w;
        var entries = new List<ReducedGradient>();
        foreach (var (name, p) in model.named_parameters())
        {
            if (!p.requires_grad) continue;
            TorchTensors.CheckCpuFloat32(p, $"Parameter '{name}'", nameof(model));
            var param = p;
            int length = checked((int)p.numel());
            GradientBuffer grad = () => Gradient(param, name);
            if (masked.TryGetValue(p.Handle, out var w))
            {
                var mask = TorchTensors.Contiguous(w.MaskTensor);
                entries.Add(ReducedGradient.Masked(name, length, grad, TorchTensors.Floats(mask)));
            }
            else entries.Add(ReducedGradient.Dense(name, length, grad));
        }
        return new GradientReducer(communicator, entries, bucketBytes);
    }

    private static Span<float> Gradient(global::TorchSharp.Modules.Parameter p, string name)
    {
        var g = p.grad ?? throw new InvalidOperationException($"Parameter '{name}' has no gradient; every rank must run backward through the same parameters before the gradients are averaged.");
        if (!g.is_contiguous()) throw new InvalidOperationException($"The gradient of '{name}' is not contiguous; data-parallel averaging reads it in place.");
        return TorchTensors.Floats(g);
    }

    /// <summary>Copies every parameter of rank <paramref name="root"/> to the other ranks (an identical start).</summary>
    public static void BroadcastParameters(nn.Module model, ICommunicator communicator, int root = 0)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(communicator);
        if (communicator.Size == 1) return;
        using var _ = torch.no_grad();
        foreach (var (name, p) in model.named_parameters())
        {
            TorchTensors.CheckCpuFloat32(p, $"Parameter '{name}'", nameof(model));
            if (!p.is_contiguous()) throw new ArgumentException($"Parameter '{name}' is not contiguous; it is broadcast in place.", nameof(model));
            communicator.Broadcast(TorchTensors.Floats(p), root);
        }
    }

    /// <summary>Checks that every rank holds the same float32 parameters and buffers (masks included).</summary>
    /// <exception cref="InvalidOperationException">A tensor differs from rank 0's; the message names it and the rank, on every rank.</exception>
    public static void VerifyReplicas(nn.Module model, ICommunicator communicator)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(communicator);
        if (communicator.Size == 1) return;
        var names = new List<string>();
        var hashes = new List<ulong>();
        foreach (var (name, t) in model.state_dict())
        {
            if (t.dtype != ScalarType.Float32 || t.device_type != DeviceType.CPU) continue;
            using var c = t.contiguous(); // a handle of its own (the same storage when already contiguous)
            names.Add(name);
            hashes.Add(ReplicaCheck.Hash(TorchTensors.Floats(c)));
        }
        ReplicaCheck.Verify(communicator, names, hashes.ToArray(), "tensor");
    }
}
