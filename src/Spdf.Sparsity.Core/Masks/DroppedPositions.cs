using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Spdf.Sparsity.Kernels;

namespace Spdf.Sparsity.Masks;

/// <summary>
/// The dropped positions of a mask as packed bits (one per weight, row-major, 64 to a word), to write one value at exactly
/// those positions of any array of the mask's shape: a weight, its gradient or an optimizer moment. One vectorised pass
/// that reads 1 bit of mask per element (a float mask costs 32) and writes whatever the array held there before, NaN and
/// ∞ included; large arrays are split over <see cref="KernelThreads"/>.
/// </summary>
public sealed class DroppedPositions
{
    private const int ChunkWords = 1024; // 65,536 elements per parallel piece
    private readonly ulong[] _bits;

    /// <summary>The dropped positions of <paramref name="mask"/>.</summary>
    public DroppedPositions(SparsityMask mask) : this((mask ?? throw new ArgumentNullException(nameof(mask))).Values) { }

    /// <summary>The positions where <paramref name="mask"/> (0 = dropped, anything else kept, as in <see cref="SparsityMask.Values"/>) is 0.</summary>
    public DroppedPositions(ReadOnlySpan<float> mask)
    {
        Length = mask.Length;
        _bits = new ulong[(mask.Length + 63) / 64];
        int count = 0;
        for (int w = 0; w < _bits.Length; w++)
        {
            ulong word = 0;
            int start = w * 64, end = Math.Min(start + 64, mask.Length);
            for (int i = start; i < end; i++)
                if (mask[i] == 0) word |= 1UL << (i - start);
            _bits[w] = word;
            count += BitOperations.PopCount(word);
        }
        Count = count;
    }

    /// <summary>The number of positions (the mask's element count).</summary>
    public int Length { get; }

    /// <summary>How many positions are dropped.</summary>
    public int Count { get; }

    /// <summary>Whether the flat (row-major) position is dropped.</summary>
    public bool Contains(int index)
    {
        if ((uint)index >= (uint)Length) throw new ArgumentOutOfRangeException(nameof(index), index, $"The position must be in [0, {Length}).");
        return (_bits[index >> 6] & (1UL << (index & 63))) != 0;
    }

    /// <summary>Writes <paramref name="value"/> at every dropped position of <paramref name="values"/>; kept positions are untouched.</summary>
    /// <exception cref="ArgumentException">The length differs from the mask's.</exception>
    public unsafe void Fill(Span<float> values, float value)
    {
        if (values.Length != Length)
            throw new ArgumentException($"Cannot fill the dropped positions of a mask of {Length} elements in {values.Length} values.", nameof(values));
        if (Count == 0) return;
        fixed (float* p = values)
        {
            nint at = (nint)p;
            int words = _bits.Length, chunks = (words + ChunkWords - 1) / ChunkWords;
            if (chunks == 1) FillWords((float*)at, 0, words, value);
            else KernelThreads.For(chunks, c => FillWords((float*)at, c * ChunkWords, Math.Min(words, (c + 1) * ChunkWords), value));
        }
    }

    private unsafe void FillWords(float* values, int from, int to, float value)
    {
        var bits = _bits;
        int full = Length / 64; // words whose 64 positions all exist
        for (int w = from; w < to; w++)
        {
            ulong word = bits[w];
            if (word == 0) continue;
            float* at = values + (long)w * 64;
            if (w >= full)
            {
                for (int i = 0; i < Length - w * 64; i++) if ((word & (1UL << i)) != 0) at[i] = value;
            }
            else if (word == ulong.MaxValue) new Span<float>(at, 64).Fill(value);
            else if (Vector512.IsHardwareAccelerated)
                for (int g = 0; g < 4; g++) Select16(at + g * 16, (int)(word >> (g * 16)) & 0xFFFF, value);
            else if (Vector256.IsHardwareAccelerated)
                for (int g = 0; g < 8; g++) Select8(at + g * 8, (int)(word >> (g * 8)) & 0xFF, value);
            else
                for (int i = 0; i < 64; i++) if ((word & (1UL << i)) != 0) at[i] = value;
        }
    }

    private static readonly Vector512<int> Lane16 = Vector512.Create(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768);
    private static readonly Vector256<int> Lane8 = Vector256.Create(1, 2, 4, 8, 16, 32, 64, 128);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Select16(float* at, int bits, float value)
    {
        if (bits == 0) return;
        var dropped = Vector512.Equals(Vector512.Create(bits) & Lane16, Lane16).AsSingle();
        Vector512.ConditionalSelect(dropped, Vector512.Create(value), Vector512.Load(at)).Store(at);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Select8(float* at, int bits, float value)
    {
        if (bits == 0) return;
        var dropped = Vector256.Equals(Vector256.Create(bits) & Lane8, Lane8).AsSingle();
        Vector256.ConditionalSelect(dropped, Vector256.Create(value), Vector256.Load(at)).Store(at);
    }
}
