using System.Collections.Concurrent;
using Spdf.Sparsity.Distributed;

namespace Spdf.Tests.Shared;

/// <summary>
/// A data-parallel group of ranks on threads of one test process, with MPI's collective semantics: each collective waits
/// for every rank, then every rank reads the combined result. Linked into the test projects that test data-parallel
/// logic without MPI (real MPI: tests/Spdf.Mpi.Tests).
/// </summary>
internal sealed class ThreadGroup(int size)
{
    private readonly Barrier _barrier = new(size);
    private readonly object[] _slots = new object[size];
    public int Size { get; } = size;

    public ICommunicator Rank(int rank) => new Member(this, rank);

    private T[][] Exchange<T>(int rank, T[] mine)
    {
        _slots[rank] = mine;
        _barrier.SignalAndWait();
        var all = _slots.Select(s => (T[])s).ToArray();
        _barrier.SignalAndWait(); // everyone has read before the next collective writes
        return all;
    }

    private sealed class Member(ThreadGroup g, int rank) : ICommunicator
    {
        public int Rank => rank;
        public int Size => g.Size;
        public void AllReduceSum(Span<float> values)
        {
            var all = g.Exchange(rank, values.ToArray());
            for (int i = 0; i < values.Length; i++) { float s = 0; foreach (var a in all) s += a[i]; values[i] = s; }
        }
        public void AllReduceSum(Span<double> values)
        {
            var all = g.Exchange(rank, values.ToArray());
            for (int i = 0; i < values.Length; i++) { double s = 0; foreach (var a in all) s += a[i]; values[i] = s; }
        }
        public void Broadcast(Span<float> values, int root) => g.Exchange(rank, values.ToArray())[root].CopyTo(values);
        public void Broadcast(Span<ulong> values, int root) => g.Exchange(rank, values.ToArray())[root].CopyTo(values);
        public void AllGather(ReadOnlySpan<ulong> local, Span<ulong> all)
        {
            var parts = g.Exchange(rank, local.ToArray());
            for (int r = 0; r < parts.Length; r++) parts[r].CopyTo(all[(r * local.Length)..]);
        }
        public void Barrier() => g.Exchange(rank, Array.Empty<int>());
        public void Abort(int exitCode) => throw new InvalidOperationException("abort");
    }

    /// <summary>Runs <paramref name="body"/> on <paramref name="size"/> ranks, one thread each, and rethrows their failures.</summary>
    public static void OnRanks(int size, Action<ICommunicator> body)
    {
        var group = new ThreadGroup(size);
        var errors = new ConcurrentBag<Exception>();
        var threads = Enumerable.Range(0, size).Select(r => new Thread(() =>
        {
            try { body(group.Rank(r)); }
            catch (Exception e) { errors.Add(e); group._barrier.RemoveParticipant(); } // the others do not wait for a failed rank
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        if (!errors.IsEmpty) throw new AggregateException(errors);
    }
}
