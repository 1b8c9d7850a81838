using System.Collections.Concurrent;
using System.Runtime.CompilerServices;

namespace Spdf.Sparsity.Kernels;

/// <summary>
/// A pooled float buffer whose first element sits on a 64-byte boundary (one cache line, one 512-bit vector). The
/// sparse kernels load one activation vector per multiply-add; when the token blocks are not cache-line aligned every
/// such load spans two lines, and SpMM and SDDMM run 1.4–1.5× slower (measured: 10.4–10.9 against 15.0–16.0 ms for
/// the 75% SpMM of a 2048×768→3072 layer). A plain array's data starts wherever the GC put it, so which of the two
/// speeds a process got used to be chance. Buffers live on the pinned object heap (they never move, so the offset stays
/// valid) and go back to a bounded pool on <see cref="Dispose"/>.
/// </summary>
public sealed class AlignedBuffer : IDisposable
{
    private const int AlignFloats = 16;                        // 64 bytes
    private const long MaxPooledBytes = 512L << 20;            // beyond this, returned buffers are left to the GC
    private static long _pooledBytes;
    private static long _allocatedBytes;

    /// <summary>Bytes of buffers this process has allocated so far (pool misses; pinned, so they stay until collected).</summary>
    public static long AllocatedBytes => Interlocked.Read(ref _allocatedBytes);

    /// <summary>The pooled storage: a pinned array and the offset of its first 64-byte-aligned element.</summary>
    private sealed class Block
    {
        public readonly float[] Array;
        public readonly int Offset;
        public readonly int Capacity;

        public Block(int capacity)
        {
            Array = GC.AllocateUninitializedArray<float>(capacity + AlignFloats - 1, pinned: true);
            Interlocked.Add(ref _allocatedBytes, 4L * Array.Length);
            Offset = AlignedOffset(Array);
            Capacity = capacity;
        }
    }

    private static readonly ConcurrentDictionary<int, ConcurrentBag<Block>> Pool = new();

    // Each Rent is a new lease on a pooled block: after Dispose this lease has no block, so a second Dispose (a stale
    // owner) cannot give back a block that someone else has rented since, nor reach its memory.
    private Block? _block;

    private AlignedBuffer(Block block, int length) { _block = block; Length = length; }

    /// <summary>
    /// The capacity a request of <paramref name="length"/> elements is served from: the length rounded up to an eighth of
    /// its power of two (at most 12.5% more). Buffers whose lengths differ a little (one sparse layer's padded values
    /// against the next one's, since every random mask pads its runs differently) then share one pooled buffer instead of
    /// each keeping its own.
    /// </summary>
    internal static int CapacityFor(int length)
    {
        if (length <= 1024) return 1024;
        int step = (int)(System.Numerics.BitOperations.RoundUpToPowerOf2((uint)length) / 16); // an eighth of the power of two below
        return (int)Math.Min(int.MaxValue - AlignFloats, ((long)length + step - 1) / step * step);
    }

    private static unsafe int AlignedOffset(float[] pinned)
    {
        long address = (long)Unsafe.AsPointer(ref pinned[0]);
        return (int)((64 - address % 64) % 64) / sizeof(float);
    }

    /// <summary>Elements.</summary>
    public int Length { get; }

    /// <summary>The buffer (contents arbitrary after <see cref="Rent"/>).</summary>
    /// <exception cref="ObjectDisposedException">The buffer was given back.</exception>
    public Span<float> Span
    {
        get
        {
            var block = _block ?? throw new ObjectDisposedException(nameof(AlignedBuffer), "This aligned buffer was given back to the pool; rent another.");
            return block.Array.AsSpan(block.Offset, Length);
        }
    }

    /// <summary>A buffer of exactly <paramref name="length"/> elements (from a pooled one of up to 12.5% more), 64-byte aligned; dispose it to give it back.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The length is not positive.</exception>
    public static AlignedBuffer Rent(int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        int capacity = CapacityFor(length);
        Block? block = null;
        if (Pool.TryGetValue(capacity, out var bag) && bag.TryTake(out block))
            Interlocked.Add(ref _pooledBytes, -4L * block.Array.Length);
        return new AlignedBuffer(block ?? new Block(capacity), length);
    }

    /// <summary>Gives the buffer back to the pool (once: later calls, from any owner, do nothing).</summary>
    public void Dispose()
    {
        var block = Interlocked.Exchange(ref _block, null);
        if (block is null) return;
        long bytes = 4L * block.Array.Length;
        if (Interlocked.Add(ref _pooledBytes, bytes) > MaxPooledBytes) { Interlocked.Add(ref _pooledBytes, -bytes); return; }
        Pool.GetOrAdd(block.Capacity, _ => []).Add(block);
    }
}
