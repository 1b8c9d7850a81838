using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace Spdf.Sparsity.Distributed;

/// <summary>The gradient buffer of one parameter, as its engine holds it (row-major, valid until the optimizer step).</summary>
public delegate Span<float> GradientBuffer();

/// <summary>
/// One parameter's gradient as <see cref="GradientReducer"/> averages it: whole, or, for a weight with a static mask
/// shared by every rank, only at its kept places (index-free on the wire: every rank packs the same places in the same order).
/// </summary>
public sealed class ReducedGradient
{
    private ReducedGradient(string name, int length, GradientBuffer gradient, int[]? kept, long denseLength)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        Name = name;
        Length = length;
        Gradient = gradient ?? throw new ArgumentNullException(nameof(gradient));
        Kept = kept;
        DenseLength = denseLength;
    }

    /// <summary>The parameter's name (for messages).</summary>
    public string Name { get; }

    /// <summary>Elements of the gradient buffer.</summary>
    public int Length { get; }

    /// <summary>Reads the gradient buffer.</summary>
    public GradientBuffer Gradient { get; }

    /// <summary>The kept places in ascending order, or null for a gradient reduced whole.</summary>
    public int[]? Kept { get; }

    /// <summary>Values that travel per step: the kept count, or the length.</summary>
    public int PackedLength => Kept?.Length ?? Length;

    /// <summary>The elements of the weight as a dense layer holds it (a compressed layer's <c>rows × cols</c>).</summary>
    public long DenseLength { get; }

    /// <summary>Whether this is a sparse weight's gradient (masked, or a compressed layer's kept values).</summary>
    public bool IsSparse => Kept is not null || DenseLength != Length;

    /// <summary>
    /// A gradient reduced whole (dense layers, biases, norms, embeddings; a compressed layer's kept values, with
    /// <paramref name="denseLength"/> its <c>rows × cols</c> for the byte counts).
    /// </summary>
    public static ReducedGradient Dense(string name, int length, GradientBuffer gradient, long? denseLength = null)
    {
        if (denseLength < length) throw new ArgumentOutOfRangeException(nameof(denseLength), denseLength, $"Expected at least the length {length}.");
        return new(name, length, gradient, null, denseLength ?? length);
    }

    /// <summary>
    /// A masked weight's gradient, reduced at its kept places only (<paramref name="mask"/> non-zero); its dropped places
    /// must hold 0 on every rank (the bindings' gradients do after <see cref="SparsityController.BeforeOptimizerStep"/>) and are left as they are.
    /// </summary>
    /// <exception cref="ArgumentException">The mask's length is not <paramref name="length"/>.</exception>
    public static ReducedGradient Masked(string name, int length, GradientBuffer gradient, ReadOnlySpan<float> mask)
    {
        if (mask.Length != length)
            throw new ArgumentException($"The mask of '{name}' has {mask.Length} elements; expected {length}, the gradient's length.", nameof(mask));
        int count = 0;
        foreach (var m in mask) if (m != 0) count++;
        var kept = new int[count];
        for (int i = 0, k = 0; i < mask.Length; i++) if (mask[i] != 0) kept[k++] = i;
        return new(name, length, gradient, kept, length);
    }
}

/// <summary>
/// Averages gradients across the ranks of a data-parallel group after the backward pass, as PyTorch's
/// <c>DistributedDataParallel</c> does, engine-free: gradients are packed in order into buckets of
/// <see cref="BucketBytes"/> (large messages, few collectives), each bucket is summed across ranks and scaled by
/// 1 / ranks, and unpacked. A masked weight sends only its kept values (the mask is the same on every rank, so no
/// index travels): at 75% sparsity its traffic is a quarter of the dense gradient's. A dense gradient larger than a
/// bucket is reduced in place, without a copy. Build one per set of masks: after a mask update or a transition, build anew.
/// </summary>
public sealed class GradientReducer
{
    private readonly float[] _bucket;
    private readonly List<(int Entry, int Start, int Count, int Offset)> _segments = [];

    /// <summary>Creates a reducer for <paramref name="gradients"/>, listed in the same order on every rank.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The bucket is smaller than 4 KiB.</exception>
    public GradientReducer(ICommunicator communicator, IReadOnlyList<ReducedGradient> gradients, int bucketBytes = DefaultBucketBytes)
    {
        Communicator = communicator ?? throw new ArgumentNullException(nameof(communicator));
        Gradients = gradients ?? throw new ArgumentNullException(nameof(gradients));
        if (bucketBytes < 4096) throw new ArgumentOutOfRangeException(nameof(bucketBytes), bucketBytes, "Expected a bucket of at least 4096 bytes.");
        BucketBytes = bucketBytes;
        long packed = gradients.Sum(g => (long)g.PackedLength);
        _bucket = communicator.Size == 1 ? [] : new float[(int)Math.Min(bucketBytes / sizeof(float), Math.Max(1, packed))];
        BytesPerStep = communicator.Size == 1 ? 0 : packed * sizeof(float);
        DenseBytesPerStep = communicator.Size == 1 ? 0 : gradients.Sum(g => g.DenseLength) * sizeof(float);
        SparseLayerBytesPerStep = communicator.Size == 1 ? 0 : gradients.Where(g => g.IsSparse).Sum(g => (long)g.PackedLength) * sizeof(float);
        SparseLayerDenseBytesPerStep = communicator.Size == 1 ? 0 : gradients.Where(g => g.IsSparse).Sum(g => g.DenseLength) * sizeof(float);
    }

    /// <summary>PyTorch DDP's default bucket: 25 MiB.</summary>
    public const int DefaultBucketBytes = 25 << 20;

    /// <summary>The group.</summary>
    public ICommunicator Communicator { get; }

    /// <summary>The gradients averaged, in order.</summary>
    public IReadOnlyList<ReducedGradient> Gradients { get; }

    /// <summary>The most bytes packed into one collective.</summary>
    public int BucketBytes { get; }

    /// <summary>Bytes each rank puts into the reduction per step (0 for a group of one).</summary>
    public long BytesPerStep { get; }

    /// <summary>What <see cref="BytesPerStep"/> would be if every gradient were reduced whole.</summary>
    public long DenseBytesPerStep { get; }

    /// <summary>The part of <see cref="BytesPerStep"/> that the sparse weights send.</summary>
    public long SparseLayerBytesPerStep { get; }

    /// <summary>What the sparse weights would send if they were dense.</summary>
    public long SparseLayerDenseBytesPerStep { get; }

    /// <summary>Collectives issued by the last <see cref="AverageGradients"/>.</summary>
    public int CollectivesLastStep { get; private set; }

    /// <summary>Replaces every gradient by its mean over the ranks (a no-op for a group of one). Every rank must call it.</summary>
    public void AverageGradients()
    {
        CollectivesLastStep = 0;
        if (Communicator.Size == 1) return;
        float scale = 1f / Communicator.Size;
        int used = 0;
        for (int e = 0; e < Gradients.Count; e++)
        {
            var entry = Gradients[e];
            var g = entry.Gradient();
            if (g.Length != entry.Length)
                throw new InvalidOperationException($"The gradient of '{entry.Name}' has {g.Length} elements; expected {entry.Length} (the reducer was built for other parameters; build it anew after a transition).");
            if (entry.Kept is null && entry.Length >= _bucket.Length)
            {
                Flush(ref used, scale);
                Average(Communicator, g);
                CollectivesLastStep++;
                continue;
            }
            for (int done = 0; done < entry.PackedLength;)
            {
                int take = Math.Min(entry.PackedLength - done, _bucket.Length - used);
                var dst = _bucket.AsSpan(used, take);
                if (entry.Kept is { } kept) for (int i = 0; i < take; i++) dst[i] = g[kept[done + i]];
                else g.Slice(done, take).CopyTo(dst);
                _segments.Add((e, done, take, used));
                used += take;
                done += take;
                if (used == _bucket.Length) Flush(ref used, scale);
            }
        }
        Flush(ref used, scale);
    }

    private void Flush(ref int used, float scale)
    {
        if (used == 0) return;
        var b = _bucket.AsSpan(0, used);
        Communicator.AllReduceSum(b);
        TensorPrimitives.Multiply(b, scale, b);
        CollectivesLastStep++;
        foreach (var (e, start, count, offset) in _segments)
        {
            var entry = Gradients[e];
            var g = entry.Gradient();
            var src = _bucket.AsSpan(offset, count);
            if (entry.Kept is { } kept) for (int i = 0; i < count; i++) g[kept[start + i]] = src[i];
            else src.CopyTo(g.Slice(start, count));
        }
        _segments.Clear();
        used = 0;
    }

    /// <summary>Replaces <paramref name="values"/> by their mean over the ranks, in place (chunks of at most 2^28 elements per collective).</summary>
    public static void Average(ICommunicator communicator, Span<float> values)
    {
        ArgumentNullException.ThrowIfNull(communicator);
        if (communicator.Size == 1) return;
        for (int start = 0; start < values.Length; start += 1 << 28)
        {
            var chunk = values.Slice(start, Math.Min(1 << 28, values.Length - start));
            communicator.AllReduceSum(chunk);
            TensorPrimitives.Multiply(chunk, 1f / communicator.Size, chunk);
        }
    }
}

/// <summary>
/// Checks that every rank of a group holds the same values (weights, masks, optimizer state): each rank hashes its
/// tensors, the hashes are gathered, and every rank compares them with rank 0's, so that all ranks throw together.
/// </summary>
public static class ReplicaCheck
{
    /// <summary>A 64-bit hash of the values' bits (FNV-1a over 32-bit words, then a final mix).</summary>
    public static ulong Hash(ReadOnlySpan<float> values)
    {
        ulong h = 14695981039346656037UL ^ (ulong)values.Length;
        foreach (var w in MemoryMarshal.Cast<float, uint>(values)) h = (h ^ w) * 1099511628211UL;
        h ^= h >> 33; h *= 0xff51afd7ed558ccdUL; h ^= h >> 33;
        return h;
    }

    /// <summary>Compares each named hash across the ranks.</summary>
    /// <exception cref="InvalidOperationException">A rank's value differs from rank 0's; the message names the first such tensor and rank (the same on every rank).</exception>
    public static void Verify(ICommunicator communicator, IReadOnlyList<string> names, ReadOnlySpan<ulong> hashes, string what)
    {
        ArgumentNullException.ThrowIfNull(communicator);
        ArgumentNullException.ThrowIfNull(names);
        if (names.Count != hashes.Length) throw new ArgumentException($"{names.Count} names for {hashes.Length} hashes; expected one hash per name.", nameof(hashes));
        if (communicator.Size == 1) return;
        var all = new ulong[hashes.Length * communicator.Size];
        communicator.AllGather(hashes, all);
        for (int r = 1; r < communicator.Size; r++)
            for (int i = 0; i < hashes.Length; i++)
                if (all[r * hashes.Length + i] != all[i])
                    throw new InvalidOperationException($"Data-parallel replicas differ: {what} '{names[i]}' on rank {r} is not rank 0's. Every rank must build the same model and masks (same config and seeds) and take the same steps.");
    }
}
