namespace Spdf.Shared;

/// <summary>
/// xoshiro256** (Blackman &amp; Vigna 2018) seeded through SplitMix64: the random stream behind both
/// <c>Spdf.Tensors.Generator</c> and the sparsity core's <c>SparsityRandom</c>, written once and compiled into each
/// assembly (it is internal), so that the same seed draws the same masks in every engine.
/// </summary>
internal struct Xoshiro256
{
    private ulong _s0, _s1, _s2, _s3;

    /// <summary>Restarts the stream from <paramref name="seed"/>.</summary>
    public void Seed(ulong seed)
    {
        ulong x = seed;
        _s0 = SplitMix(ref x); _s1 = SplitMix(ref x); _s2 = SplitMix(ref x); _s3 = SplitMix(ref x);
    }

    /// <summary>The four state words.</summary>
    public readonly (ulong, ulong, ulong, ulong) State => (_s0, _s1, _s2, _s3);

    /// <summary>Restores four state words.</summary>
    public void SetState(ulong s0, ulong s1, ulong s2, ulong s3) => (_s0, _s1, _s2, _s3) = (s0, s1, s2, s3);

    private static ulong SplitMix(ref ulong x)
    {
        ulong z = x += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>The next 64 uniformly distributed bits.</summary>
    public ulong NextUInt64()
    {
        ulong result = ulong.RotateLeft(_s1 * 5, 7) * 9;
        ulong t = _s1 << 17;
        _s2 ^= _s0; _s3 ^= _s1; _s1 ^= _s2; _s0 ^= _s3; _s2 ^= t;
        _s3 = ulong.RotateLeft(_s3, 45);
        return result;
    }

    /// <summary>A uniform integer in [0, <paramref name="maxExclusive"/>) (multiply-shift on the high 32 bits).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxExclusive"/> is not positive.</exception>
    public int NextInt(int maxExclusive)
    {
        if (maxExclusive <= 0) throw new ArgumentOutOfRangeException(nameof(maxExclusive), maxExclusive, "Expected a positive bound.");
        return (int)(((NextUInt64() >> 32) * (ulong)maxExclusive) >> 32);
    }

    /// <summary>A uniform double in [0, 1).</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));
}
