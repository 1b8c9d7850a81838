using Spdf.Sparsity.Masks;

namespace Spdf.Sparsity.Kernels;

/// <summary>
/// The kept entries of a <c>(rows, cols)</c> matrix in column-panelled compressed sparse rows: columns are cut into
/// panels of <see cref="PanelWidth"/>, and within each panel the entries are stored row by row (CSR) in increasing
/// column order. A kernel that walks one panel at a time touches only that panel's rows of the activations, which then
/// stay in L1 (128 rows × 64 tokens × 4 bytes = 32 KiB). Panels are at most 65,536 columns wide. Column indices are kept
/// once, 16-bit and relative to their panel, in the SpMM's padded-group layout (<see cref="PaddedPanels"/>); values are in
/// plain entry order. The structure follows a mask; <see cref="Gather"/> refreshes values from a dense weight after each
/// optimizer step and <see cref="Scatter"/> writes kept values back.
/// </summary>
public sealed class CsrMatrix
{
    /// <summary>The panel width used unless asked otherwise.</summary>
    public const int DefaultPanelWidth = 128;

    /// <summary>The widest panel: panel-relative columns are 16-bit.</summary>
    public const int MaxPanelWidth = ushort.MaxValue + 1;

    private CsrMatrix(int rows, int cols, int panelWidth, bool transposed, int[] rowPointers, PaddedPanels layout, float[]? values)
    {
        Rows = rows; Cols = cols; PanelWidth = panelWidth; Transposed = transposed; RowPointers = rowPointers; Padded = layout;
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
        if (panelWidth <= 0) throw new ArgumentException($"Panel width {panelWidth} must be positive.", nameof(panelWidth));
        int r0 = mask.Rows, c0 = mask.Cols;
        int rows = transpose ? c0 : r0, cols = transpose ? r0 : c0;
        int pw = Math.Min(Math.Min(panelWidth, MaxPanelWidth), Math.Max(cols, 1));
        int panels = Math.Max(1, (cols + pw - 1) / pw);
        ReadOnlySpan<float> m = mask.Values;
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
        var layout = PaddedPanels.Allocate(rows, ptr);
        var pc = layout.Columns;
        for (int p = 0; p < panels; p++)
        {
            int cEnd = Math.Min(cols, (p + 1) * pw);
            for (int r = 0; r < rows; r++)
            {
                int slot = layout.Slot(p * (rows + 1) + r);
                for (int c = p * pw; c < cEnd; c++)
                    if (m[Flat(r, c)] != 0) pc[slot++] = (ushort)(c - p * pw);
            }
        }
        layout.Pad(ptr);
        return new CsrMatrix(rows, cols, pw, transpose, ptr, layout, values);
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
        return new CsrMatrix(Rows, Cols, PanelWidth, Transposed, RowPointers, Padded, values);
    }

    /// <summary>The columns, in the SpMM's padded-group layout (shared by every <see cref="WithValues"/> view).</summary>
    internal PaddedPanels Padded { get; }

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

    /// <summary>Values of the kept entries (the first <see cref="Nnz"/> elements; a pooled array may be longer).</summary>
    public float[] Values { get; }

    /// <summary>Whether this is the transpose of the mask's matrix (rows are the weight's columns).</summary>
    public bool Transposed { get; }

    /// <summary>Bytes held: values, row pointers and the padded column layout.</summary>
    public long Bytes => Nnz * 4L + RowPointers.Length * 4L + Padded.Bytes;

    /// <summary>Column of entry <paramref name="e"/> (a binary search for its run; loops over runs read
    /// <see cref="PaddedPanels.Columns"/> directly).</summary>
    /// <exception cref="ArgumentOutOfRangeException">No such entry.</exception>
    public int Column(int e)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(e);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(e, Nnz);
        var rp = RowPointers;
        int lo = 0, hi = rp.Length - 1; // the last run starting at or before e holds it (a panel's end pointer equals the next run's start)
        while (lo < hi) { int mid = (lo + hi + 1) >> 1; if (rp[mid] <= e) lo = mid; else hi = mid - 1; }
        return lo / (Rows + 1) * PanelWidth + Padded.Columns[Padded.Slot(lo) + e - rp[lo]];
    }

    /// <summary>Flat index in the dense (untransposed, row-major) weight of the entry at row <paramref name="row"/>, column <paramref name="col"/>.</summary>
    private int Flat(int row, int col) => Transposed ? col * Rows + row : row * Cols + col;

    /// <summary>For each entry, its flat index in the dense (untransposed, row-major) weight; computed on each call (no copy is kept).</summary>
    public int[] DenseIndices()
    {
        var idx = new int[Nnz];
        var pc = Padded.Columns;
        for (int p = 0, panels = Panels; p < panels; p++)
            for (int r = 0; r < Rows; r++)
            {
                var (s, e) = Range(p, r);
                for (int i = s, slot = Padded.Slot(p * (Rows + 1) + r); i < e; i++, slot++) idx[i] = Flat(r, p * PanelWidth + pc[slot]);
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
    /// transpose's padded slots instead (−1 for padding; <see cref="PaddedPanels.GatherMapped"/> reads it), written in the same pass,
    /// so no entry-indexed map is ever allocated (at GPT-2 small's width that transient was 85 MB at 75% sparsity).
    /// </summary>
    internal CsrMatrix TransposeStructure(out int[] entryMap, int panelWidth, bool slotMap)
    {
        if (panelWidth <= 0) throw new ArgumentException($"Panel width {panelWidth} must be positive.", nameof(panelWidth));
        int rowsT = Cols, colsT = Rows;
        int pw = Math.Min(Math.Min(panelWidth, MaxPanelWidth), Math.Max(colsT, 1));
        int panelsT = Math.Max(1, (colsT + pw - 1) / pw), panels = Panels;
        var pc = Padded.Columns;
        var cursor = new int[panelsT * rowsT]; // entries per (panel of the transpose, its row); then where the next one goes
        for (int q = 0; q < panels; q++)
            for (int r = 0; r < Rows; r++)
            {
                var (s, e) = Range(q, r);
                for (int slot = Padded.Slot(q * (Rows + 1) + r), end = slot + e - s; slot < end; slot++) cursor[r / pw * rowsT + q * PanelWidth + pc[slot]]++;
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
        var layout = PaddedPanels.Allocate(rowsT, ptr);
        var pcT = layout.Columns;
        // Padded slot of transposed entry pos: slotShift[run] + pos, where run is (panel, row) of the transpose.
        var slotShift = new int[panelsT * rowsT];
        for (int p = 0; p < panelsT; p++)
            for (int c = 0; c < rowsT; c++) slotShift[p * rowsT + c] = layout.Slot(p * (rowsT + 1) + c) - ptr[p * (rowsT + 1) + c];
        if (slotMap) { entryMap = new int[layout.Groups * PaddedPanels.GroupSize]; Array.Fill(entryMap, -1); }
        else entryMap = new int[at];
        for (int r = 0; r < Rows; r++) // ascending rows of this matrix: ascending columns within each row of the transpose
            for (int q = 0; q < panels; q++)
            {
                var (s, e) = Range(q, r);
                for (int i = s, slot = Padded.Slot(q * (Rows + 1) + r); i < e; i++, slot++)
                {
                    int run = r / pw * rowsT + q * PanelWidth + pc[slot], pos = cursor[run]++;
                    pcT[pos + slotShift[run]] = (ushort)(r - r / pw * pw);
                    entryMap[slotMap ? pos + slotShift[run] : pos] = i;
                }
            }
        layout.Pad(ptr);
        return new CsrMatrix(rowsT, colsT, pw, !Transposed, ptr, layout, NoValues);
    }

    /// <summary>Copies the kept values out of a dense weight.</summary>
    public void Gather(ReadOnlySpan<float> dense) => GatherInto(dense, Values.AsSpan(0, Nnz));

    /// <summary>Copies the kept entries of a dense <c>[out, in]</c> array into <paramref name="values"/> (one per entry).</summary>
    /// <exception cref="ArgumentException">A length does not fit.</exception>
    public unsafe void GatherInto(ReadOnlySpan<float> dense, Span<float> values)
    {
        if (dense.Length != Rows * Cols || values.Length != Nnz)
            throw new ArgumentException($"GatherInto: expected a dense array of {Rows * Cols} and {Nnz} values; got {dense.Length} and {values.Length}.");
        fixed (float* d = dense, v = values) Copy(d, v, toDense: false);
    }

    /// <summary>Writes <paramref name="values"/> (one per entry) into a dense array at the kept places; others are untouched.</summary>
    /// <exception cref="ArgumentException">A length does not fit.</exception>
    public unsafe void Scatter(ReadOnlySpan<float> values, Span<float> dense)
    {
        if (dense.Length != Rows * Cols || values.Length != Nnz)
            throw new ArgumentException($"Scatter: expected {Nnz} values and a dense array of {Rows * Cols}; got {values.Length} and {dense.Length}.");
        fixed (float* d = dense, v = values) Copy(d, (float*)v, toDense: true);
    }

    /// <summary>Adds <paramref name="values"/> (one per entry) into a dense array at the kept places; others are untouched
    /// (a gradient accumulated at kept positions only).</summary>
    /// <exception cref="ArgumentException">A length does not fit.</exception>
    public unsafe void ScatterAdd(ReadOnlySpan<float> values, Span<float> dense)
    {
        if (dense.Length != Rows * Cols || values.Length != Nnz)
            throw new ArgumentException($"ScatterAdd: expected {Nnz} values and a dense array of {Rows * Cols}; got {values.Length} and {dense.Length}.");
        fixed (float* d = dense, v = values) Copy(d, (float*)v, toDense: true, add: true);
    }

    /// <summary>
    /// Entries ↔ dense positions, row by row of each panel: a row's entries sit at consecutive offsets of one dense row
    /// (or column, when transposed) of the panel. Rows are split into chunks over the cores when there is enough to move
    /// (a GPT-2-sized layer's gather is a few megabytes of scattered reads per training step).
    /// </summary>
    private unsafe void Copy(float* dense, float* values, bool toDense, bool add = false)
    {
        nint pd = (nint)dense, pv = (nint)values;
        int rows = Rows, cols = Cols, panels = Panels, pw = PanelWidth;
        bool transposed = Transposed;
        void Chunk(int r0, int r1)
        {
            float* d = (float*)pd, v = (float*)pv;
            fixed (ushort* pc = Padded.Columns)
                for (int p = 0; p < panels; p++)
                    for (int r = r0; r < r1; r++)
                    {
                        var (s, e) = Range(p, r);
                        if (s == e) continue;
                        ushort* col = pc + Padded.Slot(p * (rows + 1) + r);
                        long baseAt = transposed ? (long)p * pw * rows + r : (long)r * cols + (long)p * pw;
                        long stride = transposed ? rows : 1;
                        if (add) for (int i = s; i < e; i++) d[baseAt + col[i - s] * stride] += v[i];
                        else if (toDense) for (int i = s; i < e; i++) d[baseAt + col[i - s] * stride] = v[i];
                        else for (int i = s; i < e; i++) v[i] = d[baseAt + col[i - s] * stride];
                    }
        }
        int chunks = Nnz < 1 << 16 ? 1 : Math.Min(rows, Environment.ProcessorCount * 2);
        if (chunks <= 1) Chunk(0, rows);
        else KernelThreads.For(chunks, c => Chunk((int)((long)rows * c / chunks), (int)((long)rows * (c + 1) / chunks)));
    }
}
