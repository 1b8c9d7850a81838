using Spdf.Sparsity.Masks;

namespace Spdf.Gpu;

/// <summary>
/// The structure of a sparse matrix on the device, in plain CSR: <c>RowPointers [rows + 1]</c> and <c>Columns [nnz]</c>
/// (32-bit, increasing within a row). Values live apart, so one structure serves W and the update's buffers.
/// </summary>
internal sealed class GpuCsr : IDeviceMemory
{
    private GpuCsr(int rows, int cols, int nnz, GpuBuffer<int> rowPointers, GpuBuffer<int> columns)
    {
        Rows = rows; Cols = cols; Nnz = nnz; RowPointers = rowPointers; Columns = columns;
    }

    public int Rows { get; }
    public int Cols { get; }
    public int Nnz { get; }
    public GpuBuffer<int> RowPointers { get; }
    public GpuBuffer<int> Columns { get; }

    /// <summary>
    /// The host arrays of a mask's CSR (<paramref name="transpose"/>: of its transpose) and, for the transpose, the index
    /// in the untransposed CSR's entry order of each entry (<paramref name="entryMap"/>), so Wᵀ's values are
    /// <c>values[entryMap[e]]</c>. <paramref name="denseIndex"/> holds each entry's flat index in the row-major weight.
    /// </summary>
    public static (int[] RowPointers, int[] Columns) Build(SparsityMask mask, bool transpose, out int[] entryMap, out int[] denseIndex)
    {
        int r0 = mask.Rows, c0 = mask.Cols;
        int rows = transpose ? c0 : r0, cols = transpose ? r0 : c0;
        ReadOnlySpan<float> m = mask.Values;
        var ptr = new int[rows + 1];
        for (int i = 0; i < m.Length; i++) if (m[i] != 0) ptr[(transpose ? i % c0 : i / c0) + 1]++;
        for (int r = 0; r < rows; r++) ptr[r + 1] += ptr[r];
        int nnz = ptr[rows];
        var colIdx = new int[nnz];
        entryMap = transpose ? new int[nnz] : [];
        denseIndex = new int[nnz];
        var next = ptr[..rows];
        int entry = 0; // the untransposed CSR's entry number, in row-major order of the mask
        for (int i = 0; i < m.Length; i++)
        {
            if (m[i] == 0) continue;
            int wr = i / c0, wc = i % c0;
            int r = transpose ? wc : wr, c = transpose ? wr : wc;
            int at = next[r]++;
            colIdx[at] = c;
            denseIndex[at] = i;
            if (transpose) entryMap[at] = entry;
            entry++;
        }
        return (ptr, colIdx);
    }

    public static GpuCsr Upload(GpuDevice device, int rows, int cols, int[] rowPointers, int[] columns, string what) =>
        new(rows, cols, columns.Length, device.Upload<int>(rowPointers, what + " row pointers"), device.Upload<int>(columns, what + " columns"));

    public long Bytes => (RowPointers.Length + Columns.Length) * 4L;

    public void Dispose()
    {
        RowPointers.Dispose();
        Columns.Dispose();
    }
}
