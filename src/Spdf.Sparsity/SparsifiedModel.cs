using System.Globalization;
using System.Text;
using System.Text.Json;
using Spdf.Tensors.Nn;

namespace Spdf.Sparsity;

/// <summary>The phase of an SPDF run, recorded in checkpoints.</summary>
public enum SparsityPhase
{
    /// <summary>Sparse pre-training: masks are applied.</summary>
    SparsePretrain,
    /// <summary>Dense fine-tuning after <see cref="Transitions.Densify"/>.</summary>
    DenseFinetune,
    /// <summary>Sparse fine-tuning: the mask is kept and frozen.</summary>
    SparseFinetune,
}

/// <summary>
/// The handle <see cref="Sparsifier.Apply"/> returns: the sparse layers of a model, a report of their sparsity and
/// memory, the current <see cref="SparsityPhase"/> and the transitions taken (for checkpoint metadata).
/// </summary>
public sealed class SparsifiedModel
{
    private readonly List<string> _transitions = [];

    internal SparsifiedModel(Module model, IReadOnlyList<SparseLayerInfo> layers, string distribution)
    {
        Model = model;
        Layers = layers;
        Distribution = distribution;
    }

    /// <summary>The model (modified in place).</summary>
    public Module Model { get; }

    /// <summary>The sparse layers, in model order; empty after <see cref="Transitions.Densify"/>.</summary>
    public IReadOnlyList<SparseLayerInfo> Layers { get; internal set; }

    /// <summary>How per-layer sparsities were chosen ("uniform" or "erk").</summary>
    public string Distribution { get; }

    /// <summary>The mask-update algorithm from the config (null: static masks).</summary>
    public Algorithms.ISparsityAlgorithm? Algorithm { get; init; }

    /// <summary>The current phase.</summary>
    public SparsityPhase Phase { get; internal set; } = SparsityPhase.SparsePretrain;

    /// <summary>The transitions taken so far, oldest first (e.g. "densify(keep-optimizer-state) at step 1200").</summary>
    public IReadOnlyList<string> Transitions => _transitions;

    internal void AddTransition(string t) => _transitions.Add(t);

    /// <summary>Re-zeroes every dropped weight (a no-op when the invariant holds).</summary>
    public void ApplyMasks()
    {
        foreach (var l in Layers) l.Layer.ApplyMask();
    }

    /// <summary>Per-layer and total sparsity, counts and bytes.</summary>
    public SparsityReport Report()
    {
        var rows = Layers.Select(l =>
        {
            var shape = new Tensors.Shape(l.Layer.OutFeatures, l.Layer.InFeatures);
            int kept = l.Layer.KeptCount, numel = shape.Numel;
            long denseBytes = (long)numel * 4;
            long csrBytes = kept * (4L + (shape[1] <= ushort.MaxValue + 1 ? 2 : 4)) + (shape[0] + 1) * 4L;
            return new SparsityReportRow(l.Name, shape.ToArray(), numel, kept, 1 - (double)kept / Math.Max(1, numel), denseBytes, csrBytes, l.Initializer, l.Layer.Kernel, l.Layer.Storage);
        }).ToList();
        // A compressed layer's parameter holds only its kept weights; count the model's weights as if dense.
        long totalParams = Model.ParameterCount() + Layers.Where(l => l.Layer.Storage == SparseWeightStorage.Compressed).Sum(l => (long)l.Layer.OutFeatures * l.Layer.InFeatures - l.Layer.KeptCount);
        return new SparsityReport(rows, totalParams, Phase, Distribution);
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

/// <summary>One row of a <see cref="SparsityReport"/>.</summary>
/// <param name="Name">Module name.</param>
/// <param name="Shape">Weight shape.</param>
/// <param name="Numel">Weights.</param>
/// <param name="Kept">Kept weights.</param>
/// <param name="Sparsity">Fraction held at zero.</param>
/// <param name="DenseBytes">Bytes of the dense float32 weight.</param>
/// <param name="CompressedBytes">Bytes of a CSR copy (values, 16- or 32-bit column indices, row offsets).</param>
/// <param name="Initializer">Mask initialiser.</param>
/// <param name="Kernel">Kernel in use.</param>
/// <param name="Storage">Where the layer keeps its weight.</param>
public sealed record SparsityReportRow(string Name, int[] Shape, long Numel, long Kept, double Sparsity, long DenseBytes, long CompressedBytes, string Initializer, string Kernel, SparseWeightStorage Storage = SparseWeightStorage.Dense);

/// <summary>Per-layer and total sparsity of a model.</summary>
/// <param name="Rows">One row per sparse layer.</param>
/// <param name="ModelParameters">All trainable parameters of the model, counting a compressed layer's weight as dense.</param>
/// <param name="Phase">The phase.</param>
/// <param name="Distribution">The distribution name.</param>
public sealed record SparsityReport(IReadOnlyList<SparsityReportRow> Rows, long ModelParameters, SparsityPhase Phase, string Distribution)
{
    /// <summary>Weights in sparse layers.</summary>
    public long SparseLayerWeights => Rows.Sum(r => r.Numel);

    /// <summary>Kept weights in sparse layers.</summary>
    public long KeptWeights => Rows.Sum(r => r.Kept);

    /// <summary>Sparsity over the sparse layers.</summary>
    public double LayerSparsity => SparseLayerWeights == 0 ? 0 : 1 - (double)KeptWeights / SparseLayerWeights;

    /// <summary>Zeroed weights as a fraction of all model parameters.</summary>
    public double ModelSparsity => ModelParameters == 0 ? 0 : (double)(SparseLayerWeights - KeptWeights) / ModelParameters;

    /// <summary>A plain-text table.</summary>
    public override string ToString()
    {
        var sb = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        sb.AppendLine(inv, $"{"layer",-28} {"shape",-12} {"kept",10} {"sparsity",9} {"dense KiB",10} {"CSR KiB",9}  init / kernel");
        foreach (var r in Rows)
            sb.AppendLine(inv, $"{r.Name,-28} {string.Join("x", r.Shape),-12} {r.Kept,10:N0} {r.Sparsity,9:P1} {r.DenseBytes / 1024.0,10:N1} {r.CompressedBytes / 1024.0,9:N1}  {r.Initializer} / {r.Kernel}{(r.Storage == SparseWeightStorage.Compressed ? " / compressed storage" : "")}");
        sb.AppendLine(inv, $"sparse layers: {KeptWeights:N0}/{SparseLayerWeights:N0} kept ({LayerSparsity:P1} sparse); model: {ModelSparsity:P1} of {ModelParameters:N0} parameters at zero; phase {Phase}, distribution {Distribution}");
        return sb.ToString();
    }
}
