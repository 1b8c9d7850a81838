using Spdf.Sparsity.Masks;

namespace Spdf.Sparsity.Kernels;

/// <summary>
/// The kept entries of a <c>(rows, cols)</c> matrix in column-panelled compressed sparse rows: columns are cut into
/// panels of <see cref="PanelWidth"/>, and within each panel the entries are stored row by row (CSR) in increasing
/// column order. A kernel that walks one panel at a time touches only that panel's rows of the activations, which then
/// stay in L1 (128 rows × 64 tokens × 4 bytes = 32 KiB). One panel as wide as the matrix is plain CSR. Column indices are
/// 16-bit when <c>cols ≤ 65,536</c>, else 32-bit. The structure follows a mask; <see cref="Gather"/> refreshes values
/// from a dense weight after each optimizer step and <see cref="Scatter"/> writes kept values back.
/// </summary>
public sealed class CsrMatrix
{
    /// <summary>The panel width used unless asked otherwise.</summary>
    public const int DefaultPanelWidth = 128;

    private CsrMatrix(int rows, int cols, int panelWidth, int[] rowPointers, ushort[]? col16, int[]? col32, int[] denseIndex)
    {
        Rows = rows; Cols = cols; PanelWidth = panelWidth; RowPointers = rowPointers; Columns16 = col16; Columns32 = col32; DenseIndex = denseIndex;
        Values = new float[denseIndex.Length];
    }

    /// <summary>Builds the structure of a 2-D <paramref name="mask"/>, or of its transpose.</summary>
    /// <exception cref="ArgumentException">The mask is not 2-D, or the panel width is not positive.</exception>
    public static CsrMatrix FromMask(SparsityMask mask, bool transpose = false, int panelWidth = DefaultPanelWidth)
    {
        ArgumentNullException.ThrowIfNull(mask);
        if (mask.Shape.Rank != 2) throw new ArgumentException($"A CSR matrix needs a 2-D mask; got shape {mask.Shape}.", nameof(mask));
        if (panelWidth <= 0) throw new ArgumentException($"Panel width {panelWidth} must be positive.", nameof(panelWidth));
        int r0 = mask.Shape[0], c0 = mask.Shape[1];
        int rows = transpose ? c0 : r0, cols = transpose ? r0 : c0;
        int pw = Math.Min(panelWidth, Math.Max(cols, 1));
        int panels = Math.Max(1, (cols + pw - 1) / pw);
        var m = mask.Values.AsReadOnlySpan();
        int Flat(int r, int c) => transpose ? c * c0 + r : r * c0 + c;
        var ptr = new int[panels * (rows + 1)];
        int at = 0;
        for (int p = 0; p < panels; p++)
        {
            int cEnd = Math.Min(cols, (p + 1) * pw);
            for (int r = 0; r < rows; r++)
            {
                ptr[p * (rows + 1) + r] = at;
                for (int c = p * pw; c < cEnd; c++) if (m[Flat(r, c)] != 0) at++;
            }
            ptr[p * (rows + 1) + rows] = at;
        }
        bool narrow = cols <= ushort.MaxValue + 1;
        var c16 = narrow ? new ushort[at] : null;
        var c32 = narrow ? null : new int[at];
        var dense = new int[at];
        at = 0;
        for (int p = 0; p < panels; p++)
        {
            int cEnd = Math.Min(cols, (p + 1) * pw);
            for (int r = 0; r < rows; r++)
                for (int c = p * pw; c < cEnd; c++)
                {
                    int flat = Flat(r, c);
                    if (m[flat] == 0) continue;
                    dense[at] = flat;
                    if (narrow) c16![at] = (ushort)c; else c32![at] = c;
                    at++;
                }
        }
        return new CsrMatrix(rows, cols, pw, ptr, c16, c32, dense);
    }

    /// <summary>Rows.</summary>
    public int Rows { get; }

    /// <summary>Columns.</summary>
    public int Cols { get; }

    /// <summary>Columns per panel.</summary>
    public int PanelWidth { get; }

    /// <summary>Number of column panels.</summary>
    public int Panels => RowPointers.Length / (Rows + 1);

    /// <summary>Kept entries.</summary>
    public int Nnz => Values.Length;

    /// <summary>
    /// Entry ranges: panel p, row r covers entries <c>[RowPointers[p·(Rows+1) + r], RowPointers[p·(Rows+1) + r + 1])</c>.
    /// </summary>
    public int[] RowPointers { get; }

    /// <summary>The entries of row <paramref name="row"/> inside panel <paramref name="panel"/>.</summary>
    public (int Start, int End) Range(int panel, int row)
    {
        int i = panel * (Rows + 1) + row;
        return (RowPointers[i], RowPointers[i + 1]);
    }

    /// <summary>Column indices when <c>Cols ≤ 65,536</c>, else null.</summary>
    public ushort[]? Columns16 { get; }

    /// <summary>Column indices when <c>Cols &gt; 65,536</c>, else null.</summary>
    public int[]? Columns32 { get; }

    /// <summary>Values of the kept entries.</summary>
    public float[] Values { get; }

    /// <summary>For each entry, its flat index in the dense (untransposed) weight.</summary>
    public int[] DenseIndex { get; }

    /// <summary>Bytes held: values, column indices and row pointers (not the dense index map).</summary>
    public long Bytes => Nnz * (4L + (Columns16 is not null ? 2 : 4)) + RowPointers.Length * 4L;

    /// <summary>Column of entry <paramref name="e"/>.</summary>
    public int Column(int e) => Columns16 is not null ? Columns16[e] : Columns32![e];

    /// <summary>Copies the kept values out of a dense weight.</summary>
    public void Gather(ReadOnlySpan<float> dense)
    {
        var v = Values; var idx = DenseIndex;
        for (int e = 0; e < v.Length; e++) v[e] = dense[idx[e]];
    }

    /// <summary>Writes <paramref name="values"/> (one per entry) into a dense array at the kept places; others are untouched.</summary>
    public void Scatter(ReadOnlySpan<float> values, Span<float> dense)
    {
        var idx = DenseIndex;
        for (int e = 0; e < idx.Length; e++) dense[idx[e]] = values[e];
    }
}
