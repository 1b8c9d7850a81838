using Spdf.Sparsity.Masks;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Spdf.Sparsity.TorchSharp;

/// <summary>
/// Applies a <see cref="SparsityConfig"/> (the same config type as the Spdf.Tensors path) to any TorchSharp
/// <c>torch.nn.Module</c> tree: each <c>Linear</c> whose weight name matches a group gets a mask drawn by the group's
/// initialiser (uniform random by default, the SPDF paper's choice), registered on the layer as the buffer
/// <c>weight_mask</c>; its dropped weights are set to 0. Where the model lets the layer be swapped (a field typed
/// <c>Module&lt;Tensor, Tensor&gt;</c> or <c>Module</c>, a <c>Sequential</c>, a <c>ModuleList</c>), a
/// <see cref="TorchSparseLinear"/> that adopts the same <see cref="Parameter"/> objects takes its place and runs the
/// compressed kernels; elsewhere (a field typed <c>Linear</c>, which is sealed) the layer keeps its dense product over
/// the masked weight. Either way a <see cref="SparsityController"/> keeps dropped weights, their gradients and the
/// optimizer's moments at exactly 0.
/// </summary>
public static class TorchSparsifier
{
    /// <summary>Sparsifies <paramref name="model"/> in place and returns its handle.</summary>
    /// <param name="model">Any module tree; its linear weights must be float32 on the CPU.</param>
    /// <param name="config">Which weights, how sparse, which masks.</param>
    /// <param name="optimizer">The optimizer that trains (or will train) the model: its state at dropped places is zeroed now
    /// (a dense model pruned mid-training) and after every step. May be set later on the handle.</param>
    /// <param name="compressedKernels">Swap layers for <see cref="TorchSparseLinear"/> where possible (default); false keeps
    /// every layer on its masked dense product.</param>
    /// <exception cref="ArgumentException">A group matches no linear weight, a weight is already sparse, not float32, or not on
    /// the CPU, or the config asks for compressed storage.</exception>
    public static TorchSparseModel Apply(nn.Module model, SparsityConfig config, optim.Optimizer? optimizer = null, bool compressedKernels = true)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(config);
        if (config.Storage == SparseWeightStorage.Compressed)
            throw new ArgumentException("SparseWeightStorage.Compressed (kept weights only) is not available for TorchSharp models: their layers keep the user's dense weight parameters, and the compressed kernels read the kept weights from them. Use SparseWeightStorage.Dense.", nameof(config));
        var linears = Walk(model, "").Where(m => m.Module is Linear || m.Module is TorchSparseLinear).ToList();
        var selected = config.Select(linears.Select(l => { var (rows, cols) = Dims(l.Module); return (l.Name, rows, cols); }).ToList());
        foreach (var (index, _, _) in selected)
        {
            var (name, module) = linears[index];
            if (module is not Linear linear || module.has_buffer("weight_mask"))
                throw new ArgumentException($"Layer '{name}' is already sparse (it has a weight_mask); densify the model before sparsifying it again.", nameof(model));
            TorchTensors.CheckCpuFloat32(linear.weight!, $"The weight of layer '{name}'", nameof(model));
            if (!linear.weight!.is_contiguous()) throw new ArgumentException($"The weight of layer '{name}' is not contiguous; Spdf's masks and kernels read weights in row-major order.", nameof(model));
        }
        var random = new SparsityRandom(config.Seed);
        var weights = new List<TorchSparseWeight>();
        foreach (var (index, group, sparsity) in selected)
        {
            var (name, layer) = linears[index];
            var linear = (Linear)layer;
            var (rows, cols) = Dims(linear);
            var mask = group.Initializer.Create(TorchTensors.Floats(linear.weight!), rows, cols, sparsity, random);
            var sw = new TorchSparseWeight(name, linear, linear.weight!, linear.bias, mask, group.Initializer.Name, sparsity);
            sw.ApplyMask();
            if (!compressedKernels) sw.KernelDescription = "masked-dense: compressed kernels not asked for";
            else
            {
                var replacement = new TorchSparseLinear(sw, linear) { KernelMode = config.KernelMode };
                var (parent, key) = Parent(model, name);
                string? why = name.Length == 0 ? "the model itself is the Linear" : ModuleSurgery.TrySwap(parent, key, linear, replacement);
                if (why is null) { sw.Layer = replacement; sw.Owner = replacement; }
                else sw.KernelDescription = $"masked-dense: {why}";
            }
            weights.Add(sw);
        }
        // Setting the optimizer zeroes its state at the dropped places (a model pruned mid-training).
        return new TorchSparseModel(model, weights, config.Distribution?.Name ?? "uniform") { Algorithm = config.Algorithm, Optimizer = optimizer };
    }

    /// <summary>
    /// Every module below <paramref name="module"/>, depth first in registration order (parents before children), as
    /// Spdf.Tensors walks a model: random masks are drawn from one stream in this order, so the same config gives the
    /// same masks in both engines.
    /// </summary>
    internal static IEnumerable<(string Name, nn.Module Module)> Walk(nn.Module module, string prefix)
    {
        foreach (var (name, child) in module.named_children())
        {
            string full = prefix.Length == 0 ? name : prefix + "." + name;
            yield return (full, child);
            foreach (var d in Walk(child, full)) yield return d;
        }
    }

    private static (int Rows, int Cols) Dims(nn.Module layer) => layer switch
    {
        Linear l => ((int)l.weight!.shape[0], (int)l.weight!.shape[1]),
        TorchSparseLinear s => (s.OutFeatures, s.InFeatures),
        _ => throw new ArgumentException($"{layer.GetType().Name} is not a linear layer.", nameof(layer)),
    };

    /// <summary>The parent module of the module named <paramref name="name"/>, and the child's key in it.</summary>
    internal static (nn.Module Parent, string Key) Parent(nn.Module root, string name)
    {
        int dot = name.LastIndexOf('.');
        if (dot < 0) return (root, name);
        string parentName = name[..dot];
        foreach (var (n, m) in root.named_modules())
            if (n == parentName) return (m, name[(dot + 1)..]);
        throw new InvalidOperationException($"Module '{parentName}' is not in the model.");
    }
}
