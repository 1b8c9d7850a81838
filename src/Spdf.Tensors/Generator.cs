using Spdf.Shared;

namespace Spdf.Tensors;

/// <summary>
/// A seeded pseudo-random generator (xoshiro256** seeded through SplitMix64), the engine's
/// counterpart of <c>torch.Generator</c>. The same seed gives the same stream on every machine.
/// Not thread-safe: use one generator per thread.
/// </summary>
public sealed class Generator
{
    private Xoshiro256 _state;
    private float? _spareNormal;

    /// <summary>Creates a generator from a seed.</summary>
    public Generator(ulong seed) => ManualSeed(seed);

    /// <summary>The process-wide default generator used when none is passed (seed 0 until <see cref="ManualSeed"/>).</summary>
    public static Generator Default { get; } = new(0);

    /// <summary>Re-seeds the generator; the stream restarts.</summary>
    public void ManualSeed(ulong seed)
    {
        _state.Seed(seed);
        _spareNormal = null;
    }

    /// <summary>Captures the full state so that a run can be resumed exactly.</summary>
    public ulong[] GetState()
    {
        var (s0, s1, s2, s3) = _state.State;
        return [s0, s1, s2, s3, _spareNormal is float f ? 1UL << 32 | BitConverter.SingleToUInt32Bits(f) : 0UL];
    }

    /// <summary>Restores a state captured by <see cref="GetState"/>.</summary>
    /// <exception cref="ArgumentException">The state does not have 5 words.</exception>
    public void SetState(ulong[] state)
    {
        ArgumentNullException.ThrowIfNull(state);
        if (state.Length != 5) throw new ArgumentException($"Generator state has {state.Length} words; expected 5.", nameof(state));
        _state.SetState(state[0], state[1], state[2], state[3]);
        _spareNormal = (state[4] >> 32) != 0 ? BitConverter.UInt32BitsToSingle((uint)state[4]) : null;
    }

    /// <summary>The next 64 uniformly distributed bits.</summary>
    public ulong NextUInt64() => _state.NextUInt64();

    /// <summary>A uniform float in [0, 1).</summary>
    public float NextFloat() => (NextUInt64() >> 40) * (1.0f / (1 << 24));

    /// <summary>A uniform double in [0, 1).</summary>
    public double NextDouble() => _state.NextDouble();

    /// <summary>A uniform integer in [0, <paramref name="maxExclusive"/>), without modulo bias.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxExclusive"/> is not positive.</exception>
    public int NextInt(int maxExclusive) => _state.NextInt(maxExclusive);

    /// <summary>A standard normal sample (Box–Muller; pairs are cached).</summary>
    public float NextNormal()
    {
        if (_spareNormal is float s) { _spareNormal = null; return s; }
        double u1 = 1.0 - NextDouble(), u2 = NextDouble();
        double r = Math.Sqrt(-2.0 * Math.Log(u1));
        _spareNormal = (float)(r * Math.Sin(2 * Math.PI * u2));
        return (float)(r * Math.Cos(2 * Math.PI * u2));
    }
}
