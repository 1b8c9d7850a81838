using Spdf.Shared;

namespace Spdf.Sparsity;

/// <summary>
/// The seeded random stream that draws masks and regrowth positions (xoshiro256** seeded through SplitMix64, the same
/// stream as <c>Spdf.Tensors.Generator</c>): the same seed gives the same masks on every machine and in every engine.
/// Not thread-safe.
/// </summary>
public sealed class SparsityRandom
{
    private Xoshiro256 _state;

    /// <summary>Creates a stream from a seed.</summary>
    public SparsityRandom(ulong seed) => _state.Seed(seed);

    /// <summary>A uniform integer in [0, <paramref name="maxExclusive"/>).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxExclusive"/> is not positive.</exception>
    public int NextInt(int maxExclusive) => _state.NextInt(maxExclusive);

    /// <summary>A uniform double in [0, 1).</summary>
    public double NextDouble() => _state.NextDouble();
}
