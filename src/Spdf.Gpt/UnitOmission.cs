using Spdf.Sparsity;
using Spdf.Tensors;
using Spdf.Tensors.Autograd;
using Spdf.Tensors.Nn;

namespace Spdf.Gpt;

/// <summary>
/// The smaller dense products of sparsity-accelerated training (SAT): the rows or columns of a projection that the kept
/// MLP channels or attention heads use, gathered with gradients (a gathered row's gradient goes back to its place; the
/// rows of omitted units get none). A masked sparse layer's weight is gathered with its mask, so dropped weights stay
/// out of the product and get no gradient either; a layer that keeps only its kept weights (compressed storage) has no
/// dense weight to gather from and is refused.
/// </summary>
internal static class UnitOmission
{
    /// <summary>Rows <paramref name="rows"/> of the layer's weight <c>[k, in]</c> and bias <c>[k]</c> (null without one).</summary>
    public static (Tensor Weight, Tensor? Bias) Rows(Linear layer, int[] rows)
    {
        var (w, mask) = Dense(layer);
        var ids = new IntTensor(rows, new Shape(rows.Length));
        var wk = Functional.Embedding(ids, w);
        if (mask is not null) wk = wk * Functional.Embedding(ids, mask);
        Tensor? bk = layer.Bias is { } b ? Functional.Embedding(ids, b.Reshape(b.Numel, 1)).Reshape(rows.Length) : null;
        return (wk, bk);
    }

    /// <summary>Columns <paramref name="columns"/> of the layer's weight: <c>[out, k]</c>.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    public static Tensor Columns(Linear layer, int[] columns)
    {
        var (w, mask) = Dense(layer);
        int rowsN = w.Shape[0], cols = w.Shape[1], k = columns.Length;
        var y = CustomOp.RentStorage(rowsN * k, clear: false);
        var ws = w.AsReadOnlySpan();
        var ms = mask is null ? default : mask.AsReadOnlySpan();
        for (int r = 0; r < rowsN; r++)
            for (int j = 0; j < k; j++)
            {
                int at = r * cols + columns[j];
                y[r * k + j] = mask is null ? ws[at] : ws[at] * ms[at];
            }
        return CustomOp.Record(new Tensor(y, new Shape(rowsN, k)), "GatherColumns", [w], g =>
        {
            var dw = CustomOp.RentStorage(rowsN * cols, clear: true);
            var gs = g.AsReadOnlySpan();
            var m = mask is null ? default : mask.AsReadOnlySpan();
            for (int r = 0; r < rowsN; r++)
                for (int j = 0; j < k; j++)
                {
                    int at = r * cols + columns[j];
                    dw[at] = m.IsEmpty ? gs[r * k + j] : gs[r * k + j] * m[at];
                }
            return [new Tensor(dw, w.Shape)];
        });
    }

    /// <summary>The layer's dense weight and, for a masked sparse layer, its mask (a view of the mask's values).</summary>
    /// <exception cref="NotSupportedException">The layer keeps only its kept weights (compressed storage).</exception>
    internal static (Tensor Weight, Tensor? Mask) Dense(Linear layer)
    {
        if (layer is not SparseLinear sparse) return (layer.Weight, null);
        if (sparse.Storage == SparseWeightStorage.Compressed)
            throw new NotSupportedException($"Unit omission (SAT) gathers rows and columns of the dense weight, but this {sparse.OutFeatures}×{sparse.InFeatures} sparse layer keeps only its kept weights (SparseWeightStorage.Compressed). Sparsify with SparseWeightStorage.Dense, or Densify first.");
        return (sparse.Weight, new Tensor(sparse.Mask.Values, sparse.Weight.Shape));
    }

    /// <summary>Checks a kept set: ascending, distinct, in [0, n), not empty.</summary>
    public static int[]? Check(int[]? kept, int n, string what)
    {
        if (kept is null) return null;
        if (kept.Length == 0) throw new ArgumentException($"The kept {what} are empty; keep at least one (null keeps all {n}).", nameof(kept));
        for (int i = 0; i < kept.Length; i++)
            if ((uint)kept[i] >= (uint)n || (i > 0 && kept[i] <= kept[i - 1]))
                throw new ArgumentException($"Kept {what} entry {i} is {kept[i]}; expected strictly ascending indices in [0, {n}).", nameof(kept));
        return kept;
    }
}
