namespace Spdf.Tensors.Kernels.Cpu;

/// <summary>
/// Runs <c>[0, n)</c> in fixed chunks, in parallel when there are several. The chunks do not depend on the thread count,
/// so per-chunk partial results summed in chunk order give the same answer on any machine.
/// </summary>
internal static class ParallelChunks
{
    /// <summary>Chunks of <paramref name="chunkSize"/> that cover <paramref name="n"/> items.</summary>
    public static int Count(int n, int chunkSize) => (n + chunkSize - 1) / chunkSize;

    /// <summary>Calls <paramref name="body"/>(chunk, from, to) for each chunk; a single chunk runs on the calling thread.</summary>
    public static void For(int n, int chunkSize, Action<int, int, int> body)
    {
        int chunks = Count(n, chunkSize);
        if (chunks <= 1) { if (n > 0) body(0, 0, n); return; }
        Parallel.For(0, chunks, c => body(c, c * chunkSize, Math.Min(n, (c + 1) * chunkSize)));
    }
}
