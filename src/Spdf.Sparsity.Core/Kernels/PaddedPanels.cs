namespace Spdf.Sparsity.Kernels;

/// <summary>
/// The column structure of a <see cref="CsrMatrix"/>, laid out for the SpMM: every (panel, row) run of entries padded to a whole
/// number of groups of <see cref="GroupSize"/>, with columns relative to the panel's first column (so 16 bits for any
/// width). Groups let the kernel read four column indices with one 64-bit load and four values with one 128-bit load,
/// and read the indices of the groups <see cref="Lookahead"/> ahead across row boundaries, so that the activation loads
/// that depend on them never wait for them (on the AVX-512 CPU we measure, that lifts the inner loop from about 65% to
/// about 80% of the FMA peak). A padding entry repeats the run's last column with value 0.
/// </summary>
internal sealed class PaddedPanels
{
    /// <summary>Entries per group.</summary>
    public const int GroupSize = 4;

    /// <summary>Groups whose indices the kernel holds ahead of the one it multiplies; the column array has this many zero groups after the last.</summary>
    public const int Lookahead = 3;

    private PaddedPanels(int rows, int[] groupPointers, ushort[] columns, int groups)
    {
        Rows = rows; GroupPointers = groupPointers; Columns = columns; Groups = groups;
    }

    /// <summary>Rows of the matrix.</summary>
    public int Rows { get; }

    /// <summary>Groups in all: the padded values array holds <c>Groups × GroupSize</c> floats.</summary>
    public int Groups { get; }

    /// <summary>Panel p, row r covers groups <c>[GroupPointers[p·(Rows+1) + r], GroupPointers[p·(Rows+1) + r + 1])</c>.</summary>
    public int[] GroupPointers { get; }

    /// <summary>Panel-relative columns, <see cref="GroupSize"/> per group, then <see cref="Lookahead"/> groups of zeros.</summary>
    public ushort[] Columns { get; }

    /// <summary>Bytes held.</summary>
    public long Bytes => Columns.Length * 2L + GroupPointers.Length * 4L;

    /// <summary>
    /// The group pointers for runs delimited by <paramref name="rowPointers"/> (a CSR's, <c>panels × (rows + 1)</c>) and a
    /// zeroed column array for them; the caller writes each run's panel-relative columns from <see cref="Slot"/> on,
    /// then calls <see cref="Pad"/>.
    /// </summary>
    public static PaddedPanels Allocate(int rows, int[] rowPointers)
    {
        var gp = new int[rowPointers.Length];
        int groups = 0;
        for (int i = 0; i < rowPointers.Length; i++)
        {
            gp[i] = groups;
            if ((i + 1) % (rows + 1) != 0) groups += (rowPointers[i + 1] - rowPointers[i] + GroupSize - 1) / GroupSize; // not a panel's end
        }
        return new PaddedPanels(rows, gp, new ushort[(groups + Lookahead) * GroupSize], groups);
    }

    /// <summary>The first padded slot of run <paramref name="run"/> (panel p, row r: run p·(Rows+1) + r).</summary>
    public int Slot(int run) => GroupPointers[run] * GroupSize;

    /// <summary>Fills every run's padding slots with the run's last column (padding then reads a row the run reads anyway).</summary>
    public void Pad(int[] rowPointers)
    {
        for (int i = 0; i < rowPointers.Length - 1; i++)
        {
            if ((i + 1) % (Rows + 1) == 0) continue;
            int count = rowPointers[i + 1] - rowPointers[i];
            if (count == 0) continue;
            int at = Slot(i) + count, end = Slot(i + 1);
            for (; at < end; at++) Columns[at] = Columns[at - 1];
        }
    }

    /// <summary>Copies CSR-ordered <paramref name="values"/> (one per entry) into the padded order; padding gets 0. Panels
    /// are copied in parallel when the matrix is large.</summary>
    /// <exception cref="ArgumentException">A length does not fit.</exception>
    public void GatherValues(CsrMatrix csr, ReadOnlySpan<float> values, Span<float> padded)
    {
        if (values.Length < csr.Nnz || padded.Length < Groups * GroupSize)
            throw new ArgumentException($"GatherValues: expected {csr.Nnz} values and {Groups * GroupSize} padded slots; got {values.Length} and {padded.Length}.");
        unsafe
        {
            fixed (float* pv = values, pp = padded)
            {
                nint av = (nint)pv, ap = (nint)pp;
                int[] rp = csr.RowPointers;
                int rows = Rows, panels = csr.Panels;
                void Panel(int p)
                {
                    for (int i = p * (rows + 1), end = i + rows; i < end; i++)
                    {
                        int s = rp[i], e = rp[i + 1], at = Slot(i), stop = Slot(i + 1);
                        new ReadOnlySpan<float>((float*)av + s, e - s).CopyTo(new Span<float>((float*)ap + at, e - s));
                        new Span<float>((float*)ap + at + e - s, stop - at - (e - s)).Clear();
                    }
                }
                if (panels == 1 || csr.Nnz < 1 << 16) for (int p = 0; p < panels; p++) Panel(p);
                else KernelThreads.For(panels, Panel);
            }
        }
    }

    /// <summary><c>padded[j] = map[j] &lt; 0 ? 0 : values[map[j]]</c>, in parallel when large (a random-access gather).</summary>
    /// <exception cref="ArgumentException">A length does not fit.</exception>
    public static void GatherMapped(ReadOnlySpan<float> values, int[] map, Span<float> padded)
    {
        if (padded.Length < map.Length) throw new ArgumentException($"GatherMapped: {map.Length} slots need as many padded values; got {padded.Length}.", nameof(padded));
        unsafe
        {
            fixed (float* pv = values, pp = padded)
            {
                nint av = (nint)pv, ap = (nint)pp;
                int length = values.Length;
                void Range(int from, int to)
                {
                    float* v = (float*)av, d = (float*)ap;
                    for (int j = from; j < to; j++)
                    {
                        int src = map[j];
                        d[j] = (uint)src < (uint)length ? v[src] : 0f;
                    }
                }
                int chunks = map.Length < 1 << 16 ? 1 : Environment.ProcessorCount * 4;
                if (chunks == 1) Range(0, map.Length);
                else KernelThreads.For(chunks, c => Range((int)((long)map.Length * c / chunks), (int)((long)map.Length * (c + 1) / chunks)));
            }
        }
    }
}
