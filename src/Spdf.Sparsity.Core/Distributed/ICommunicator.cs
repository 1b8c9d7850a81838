namespace Spdf.Sparsity.Distributed;

/// <summary>
/// The collective operations data-parallel training needs, engine-free and transport-free: every rank of a group calls
/// each operation in the same order with buffers of the same length (the MPI contract). <c>Spdf.Mpi</c> implements it
/// over MPI (MPICH); <see cref="SingleProcess"/> is the group of one.
/// </summary>
public interface ICommunicator
{
    /// <summary>This process's rank, 0 to <see cref="Size"/> − 1.</summary>
    int Rank { get; }

    /// <summary>The number of ranks in the group.</summary>
    int Size { get; }

    /// <summary>Replaces <paramref name="values"/> on every rank by the element-wise sum over all ranks (in place).</summary>
    void AllReduceSum(Span<float> values);

    /// <summary>Replaces <paramref name="values"/> on every rank by the element-wise sum over all ranks (in place).</summary>
    void AllReduceSum(Span<double> values);

    /// <summary>Copies <paramref name="values"/> of rank <paramref name="root"/> into every other rank's buffer.</summary>
    void Broadcast(Span<float> values, int root);

    /// <summary>Copies <paramref name="values"/> of rank <paramref name="root"/> into every other rank's buffer.</summary>
    void Broadcast(Span<ulong> values, int root);

    /// <summary>Gathers every rank's <paramref name="local"/> (all of one length) into <paramref name="all"/>, rank by rank,
    /// on every rank: <c>all.Length == local.Length * Size</c>.</summary>
    void AllGather(ReadOnlySpan<ulong> local, Span<ulong> all);

    /// <summary>Returns when every rank has called it.</summary>
    void Barrier();

    /// <summary>Ends every rank of the group with <paramref name="exitCode"/> (after a failure on this one). Does not return.</summary>
    void Abort(int exitCode);
}

/// <summary>The group of one process: collectives leave buffers as they are. The default where no group is given.</summary>
public sealed class SingleProcess : ICommunicator
{
    /// <summary>The one instance.</summary>
    public static SingleProcess Instance { get; } = new();

    private SingleProcess() { }

    /// <inheritdoc />
    public int Rank => 0;

    /// <inheritdoc />
    public int Size => 1;

    /// <inheritdoc />
    public void AllReduceSum(Span<float> values) { }

    /// <inheritdoc />
    public void AllReduceSum(Span<double> values) { }

    /// <inheritdoc />
    public void Broadcast(Span<float> values, int root) => CheckRoot(root);

    /// <inheritdoc />
    public void Broadcast(Span<ulong> values, int root) => CheckRoot(root);

    /// <inheritdoc />
    public void AllGather(ReadOnlySpan<ulong> local, Span<ulong> all)
    {
        if (all.Length != local.Length)
            throw new ArgumentException($"AllGather: the output holds {all.Length} values; expected {local.Length} (the local length times 1 rank).", nameof(all));
        local.CopyTo(all);
    }

    /// <inheritdoc />
    public void Barrier() { }

    /// <inheritdoc />
    public void Abort(int exitCode) => Environment.Exit(exitCode);

    private static void CheckRoot(int root)
    {
        if (root != 0) throw new ArgumentOutOfRangeException(nameof(root), root, "Expected root 0: the group has one rank.");
    }
}
