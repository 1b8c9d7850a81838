using Spdf.Sparsity.Masks;
using Spdf.Tensors;
using Spdf.Tensors.Nn;

namespace Spdf.Sparsity;

/// <summary>
/// Applies a <see cref="SparsityConfig"/> to any <see cref="Module"/> tree: each <see cref="Linear"/> whose weight name
/// matches a group becomes a <see cref="SparseLinear"/> that shares the same parameters (so an optimizer built before or
/// after keeps working), with a mask drawn by the group's initialiser.
/// </summary>
public static class Sparsifier
{
    /// <summary>Sparsifies <paramref name="model"/> in place and returns a handle for reports and transitions.</summary>
    /// <exception cref="ArgumentException">A group matches no <c>Linear</c> weight (when the config requires every group to match).</exception>
    public static SparsifiedModel Apply(Module model, SparsityConfig config)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(config);
        var linears = model.NamedModules().Where(m => m.Module is Linear).Select(m => (m.Name, Layer: (Linear)m.Module)).ToList();
        var selected = config.Select(linears.Select(l => (l.Name, l.Layer.OutFeatures, l.Layer.InFeatures)).ToList());
        if (config.Storage == SparseWeightStorage.Compressed && config.Algorithm is { } algorithm)
            throw new ArgumentException($"Sparsity algorithm '{algorithm.Name}' changes masks, but storage Compressed keeps only the kept weights under a fixed mask; use SparseWeightStorage.Dense with it.", nameof(config));
        var generator = new SparsityRandom(config.Seed);
        var layers = new List<SparseLayerInfo>();
        foreach (var (index, group, sparsity) in selected)
        {
            var (name, layer) = linears[index];
            var mask = group.Initializer.Create(layer.Weight.AsReadOnlySpan(), layer.OutFeatures, layer.InFeatures, sparsity, generator);
            var sparse = layer as SparseLinear;
            if (sparse is null)
            {
                sparse = SparseLinear.FromLinear(layer, mask, config.Storage);
                ModuleTree.Replace(model, name, sparse);
            }
            else sparse.SetMask(mask);
            sparse.KernelMode = config.KernelMode;
            layers.Add(new SparseLayerInfo(name, sparse, group.Initializer.Name, sparsity));
        }
        return new SparsifiedModel(model, layers, config.Distribution?.Name ?? "uniform") { Algorithm = config.Algorithm };
    }
}

/// <summary>One sparsified layer: its module name, the layer, and how its mask was made.</summary>
/// <param name="Name">The module's dotted name (e.g. <c>h.0.attn.c_attn</c>).</param>
/// <param name="Layer">The layer.</param>
/// <param name="Initializer">The mask initialiser's name.</param>
/// <param name="TargetSparsity">The sparsity asked for.</param>
public sealed record SparseLayerInfo(string Name, SparseLinear Layer, string Initializer, double TargetSparsity) : ISparseWeight
{
    int ISparseWeight.Rows => Layer.OutFeatures;
    int ISparseWeight.Cols => Layer.InFeatures;
    int ISparseWeight.KeptCount => Layer.KeptCount;
    SparsityMask ISparseWeight.Mask => Layer.Mask;
    SparseWeightStorage ISparseWeight.Storage => Layer.Storage;
    string ISparseWeight.Kernel => Layer.Kernel;

    ReadOnlySpan<float> ISparseWeight.Weight => Layer.Storage == SparseWeightStorage.Dense ? Layer.Weight.AsReadOnlySpan()
        : throw new NotSupportedException($"Layer '{Name}' keeps only its kept weights (SparseWeightStorage.Compressed); it has no dense weight to read.");

    bool ISparseWeight.CaptureDenseGradient
    {
        get => Layer.CaptureDenseGradient;
        set => Layer.CaptureDenseGradient = value;
    }

    ReadOnlySpan<float> ISparseWeight.DenseGradient => Layer.DenseGradient is { } g ? g.AsReadOnlySpan() : default;

    void ISparseWeight.ClearDenseGradient() => Layer.ClearDenseGradient();

    void ISparseWeight.SetMask(SparsityMask mask) => Layer.SetMask(mask);
}

/// <summary>Finds and replaces modules by dotted name.</summary>
internal static class ModuleTree
{
    public static void Replace(Module root, string name, Module replacement)
    {
        if (name.Length == 0) throw new ArgumentException("The root module itself cannot be replaced; sparsify a model that contains the Linear layer.", nameof(name));
        int dot = name.LastIndexOf('.');
        var parent = dot < 0 ? root : root.GetSubmodule(name[..dot]);
        parent.ReplaceModule(name[(dot + 1)..], replacement);
    }
}
