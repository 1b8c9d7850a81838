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

    private CsrMatrix(int rows, int cols, int panelWidth, bool transposed, int[] rowPointers, ushort[]? col16, int[]? col32, float[]? values, LayoutCache? cache = null)
    {
        _cache = cache ?? new LayoutCache();
        Rows = rows; Cols = cols; PanelWidth = panelWidth; Transposed = transposed; RowPointers = rowPointers; Columns16 = col16; Columns32 = col32;
        Nnz = rowPointers[^1];
        if (values is not null && values.Length < Nnz && !ReferenceEquals(values, NoValues))
            throw new ArgumentException($"The values array has {values.Length} entries; the mask keeps {Nnz}.", nameof(values));
        Values = values ?? new float[Nnz];
    }

    /// <summary>Builds the structure of a 2-D <paramref name="mask"/>, or of its transpose, with values 0.</summary>
    /// <exception cref="ArgumentException">The mask is not 2-D, or the panel width is not positive.</exception>
    public static CsrMatrix FromMask(SparsityMask mask, bool transpose = false, int panelWidth = DefaultPanelWidth) => FromMask(mask, transpose, panelWidth, null);

    /// <summary>As <see cref="FromMask(SparsityMask, bool, int)"/>, over an existing values array (one per kept weight, in entry order).</summary>
    internal static CsrMatrix FromMask(SparsityMask mask, bool transpose, int panelWidth, float[]? values)
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
        at = 0;
        for (int p = 0; p < panels; p++)
        {
            int cEnd = Math.Min(cols, (p + 1) * pw);
            for (int r = 0; r < rows; r++)
                for (int c = p * pw; c < cEnd; c++)
                {
                    if (m[Flat(r, c)] == 0) continue;
                    if (narrow) c16![at] = (ushort)c; else c32![at] = c;
                    at++;
                }
        }
        return new CsrMatrix(rows, cols, pw, transpose, ptr, c16, c32, values);
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
    public int Nnz { get; }

    private static readonly float[] NoValues = [];

    /// <summary>The same structure over another values array (at least <see cref="Nnz"/> long, e.g. a pooled one); the
    /// structure's arrays are shared, not copied.</summary>
    /// <exception cref="ArgumentException">The array is shorter than <see cref="Nnz"/>.</exception>
    public CsrMatrix WithValues(float[] values)
    {
        ArgumentNullException.ThrowIfNull(values);
        return new CsrMatrix(Rows, Cols, PanelWidth, Transposed, RowPointers, Columns16, Columns32, values, _cache);
    }

    /// <summary>Kernel layouts derived from the structure, built on first use and shared by every <see cref="WithValues"/> view.</summary>
    private sealed class LayoutCache { public PaddedPanels? Padded; }

    private readonly LayoutCache _cache;

    /// <summary>The SpMM's padded-group layout of this structure (built on first use; two racing builders build the same thing).</summary>
    internal PaddedPanels Padded => _cache.Padded ??= PaddedPanels.Build(this);

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

    /// <summary>Values of the kept entries (the first <see cref="Nnz"/> elements; a pooled array may be longer).</summary>
    public float[] Values { get; }

    /// <summary>Whether this is the transpose of the mask's matrix (rows are the weight's columns).</summary>
    public bool Transposed { get; }

    /// <summary>Bytes held: values, column indices, row pointers and the SpMM layout once built.</summary>
    public long Bytes => Nnz * (4L + (Columns16 is not null ? 2 : 4)) + RowPointers.Length * 4L + (_cache.Padded?.Bytes ?? 0);

    /// <summary>Column of entry <paramref name="e"/>.</summary>
    public int Column(int e) => Columns16 is not null ? Columns16[e] : Columns32![e];

    /// <summary>Flat index in the dense (untransposed, row-major) weight of the entry at row <paramref name="row"/>, column <paramref name="col"/>.</summary>
    private int Flat(int row, int col) => Transposed ? col * Rows + row : row * Cols + col;

    /// <summary>For each entry, its flat index in the dense (untransposed, row-major) weight; computed on each call (no copy is kept).</summary>
    public int[] DenseIndices()
    {
        var idx = new int[Nnz];
        for (int p = 0, panels = Panels; p < panels; p++)
            for (int r = 0; r < Rows; r++)
            {
                var (s, e) = Range(p, r);
                for (int i = s; i < e; i++) idx[i] = Flat(r, Column(i));
            }
        return idx;
    }

    /// <summary>
    /// The structure of this matrix's transpose (no values), panelled by <paramref name="panelWidth"/> over this matrix's
    /// rows, built from the entries alone (no dense mask). <paramref name="entryMap"/>[e] is the index among this matrix's
    /// entries of the transpose's entry e, so the transpose's values are <c>Values[entryMap[e]]</c>.
    /// </summary>
    /// <exception cref="ArgumentException">The panel width is not positive.</exception>
    public CsrMatrix TransposeStructure(out int[] entryMap, int panelWidth = DefaultPanelWidth) => TransposeStructure(out entryMap, panelWidth, slotMap: false);

    /// <summary>
    /// As <see cref="TransposeStructure(out int[], int)"/>; with <paramref name="slotMap"/> the map is indexed by the
    /// transpose's padded slots instead (<see cref="PaddedPanels.SlotMap"/>: −1 for padding), written in the same pass,
    /// so no entry-indexed map is ever allocated (at GPT-2 small's width that transient was 85 MB at 75% sparsity).
    /// </summary>
    internal CsrMatrix TransposeStructure(out int[] entryMap, int panelWidth, bool slotMap)
    {
        if (panelWidth <= 0) throw new ArgumentException($"Panel width {panelWidth} must be positive.", nameof(panelWidth));
        int rowsT = Cols, colsT = Rows;
        int pw = Math.Min(panelWidth, Math.Max(colsT, 1));
        int panelsT = Math.Max(1, (colsT + pw - 1) / pw), panels = Panels;
        var cursor = new int[panelsT * rowsT]; // entries per (panel of the transpose, its row); then where the next one goes
        for (int q = 0; q < panels; q++)
            for (int r = 0; r < Rows; r++)
            {
                var (s, e) = Range(q, r);
                for (int i = s; i < e; i++) cursor[r / pw * rowsT + Column(i)]++;
            }
        var ptr = new int[panelsT * (rowsT + 1)];
        int at = 0;
        for (int p = 0; p < panelsT; p++)
        {
            for (int c = 0; c < rowsT; c++)
            {
                ptr[p * (rowsT + 1) + c] = at;
                int n = cursor[p * rowsT + c];
                cursor[p * rowsT + c] = at;
                at += n;
            }
            ptr[p * (rowsT + 1) + rowsT] = at;
        }
        bool narrow = colsT <= ushort.MaxValue + 1;
        var c16 = narrow ? new ushort[at] : null;
        var c32 = narrow ? null : new int[at];
        // With slotMap: padded slot of transposed entry pos = groupStart(run) × GroupSize + (pos − runStart), where the
        // run is (panel, row) of the transpose; slotShift[run] = groupStart × GroupSize − runStart.
        int[]? slotShift = null;
        if (slotMap)
        {
            slotShift = new int[panelsT * rowsT];
            int groups = 0;
            for (int p = 0; p < panelsT; p++)
                for (int c = 0; c < rowsT; c++)
                {
                    int start = ptr[p * (rowsT + 1) + c], count = ptr[p * (rowsT + 1) + c + 1] - start;
                    slotShift[p * rowsT + c] = groups * PaddedPanels.GroupSize - start;
                    groups += (count + PaddedPanels.GroupSize - 1) / PaddedPanels.GroupSize;
                }
            entryMap = new int[groups * PaddedPanels.GroupSize];
            Array.Fill(entryMap, -1);
        }
        else entryMap = new int[at];
        for (int r = 0; r < Rows; r++) // ascending rows of this matrix: ascending columns within each row of the transpose
            for (int q = 0; q < panels; q++)
            {
                var (s, e) = Range(q, r);
                for (int i = s; i < e; i++)
                {
                    int run = r / pw * rowsT + Column(i), pos = cursor[run]++;
                    if (narrow) c16![pos] = (ushort)r; else c32![pos] = r;
                    entryMap[slotShift is null ? pos : pos + slotShift[run]] = i;
                }
            }
        return new CsrMatrix(rowsT, colsT, pw, !Transposed, ptr, c16, c32, NoValues);
    }

    /// <summary>Copies the kept values out of a dense weight.</summary>
    public void Gather(ReadOnlySpan<float> dense) => GatherInto(dense, Values.AsSpan(0, Nnz));

    /// <summary>Copies the kept entries of a dense <c>[out, in]</c> array into <paramref name="values"/> (one per entry).</summary>
    /// <exception cref="ArgumentException">A length does not fit.</exception>
    public void GatherInto(ReadOnlySpan<float> dense, Span<float> values)
    {
        if (dense.Length != Rows * Cols || values.Length != Nnz)
            throw new ArgumentException($"GatherInto: expected a dense array of {Rows * Cols} and {Nnz} values; got {dense.Length} and {values.Length}.");
        var v = values;
        for (int p = 0, panels = Panels; p < panels; p++)
            for (int r = 0; r < Rows; r++)
            {
                var (s, e) = Range(p, r);
                for (int i = s; i < e; i++) v[i] = dense[Flat(r, Column(i))];
            }
    }

    /// <summary>Writes <paramref name="values"/> (one per entry) into a dense array at the kept places; others are untouched.</summary>
    /// <exception cref="ArgumentException">A length does not fit.</exception>
    public void Scatter(ReadOnlySpan<float> values, Span<float> dense)
    {
        if (dense.Length != Rows * Cols || values.Length != Nnz)
            throw new ArgumentException($"Scatter: expected {Nnz} values and a dense array of {Rows * Cols}; got {values.Length} and {dense.Length}.");
        for (int p = 0, panels = Panels; p < panels; p++)
            for (int r = 0; r < Rows; r++)
            {
                var (s, e) = Range(p, r);
                for (int i = s; i < e; i++) dense[Flat(r, Column(i))] = values[i];
            }
    }
}
