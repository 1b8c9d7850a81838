using System.Globalization;
using System.Text;

namespace Spdf.Sparsity;

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
public sealed record SparsityReportRow(string Name, int[] Shape, long Numel, long Kept, double Sparsity, long DenseBytes, long CompressedBytes, string Initializer, string Kernel, SparseWeightStorage Storage = SparseWeightStorage.Dense)
{
    /// <summary>The row of one sparse weight.</summary>
    public static SparsityReportRow For(ISparseWeight w)
    {
        ArgumentNullException.ThrowIfNull(w);
        long numel = (long)w.Rows * w.Cols, kept = w.KeptCount;
        long csrBytes = kept * (4L + (w.Cols <= ushort.MaxValue + 1 ? 2 : 4)) + (w.Rows + 1) * 4L;
        return new SparsityReportRow(w.Name, [w.Rows, w.Cols], numel, kept, 1 - (double)kept / Math.Max(1, numel), numel * 4, csrBytes, w.Initializer, w.Kernel, w.Storage);
    }
}

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
