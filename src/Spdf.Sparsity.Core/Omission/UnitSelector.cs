namespace Spdf.Sparsity.Omission;

/// <summary>How the kept units are chosen from their scores.</summary>
public enum UnitSelection
{
    /// <summary>The units with the largest scores (ties: the lower index).</summary>
    TopK,

    /// <summary>Units drawn without replacement with probability in proportion to their scores (seeded; a unit with
    /// score 0 is drawn only when fewer units than needed have a positive score).</summary>
    Sampled,
}

/// <summary>Chooses which units (MLP channels, attention heads) a step keeps: <c>ceil((1 − rate) · n)</c> of them.</summary>
public static class UnitSelector
{
    /// <summary>The units kept of <paramref name="units"/> at omission rate <paramref name="rate"/>: <c>ceil((1 − rate) · n)</c>, at least 1.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The rate is outside [0, 1), or there are no units.</exception>
    public static int KeptCount(int units, double rate)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(units);
        if (!(rate >= 0 && rate < 1)) throw new ArgumentOutOfRangeException(nameof(rate), rate, "Expected an omission rate in [0, 1).");
        return Math.Clamp((int)Math.Ceiling((1 - rate) * units - 1e-9), 1, units);
    }

    /// <summary>
    /// Writes the indices of the <paramref name="kept"/>.Length units to keep, ascending, into <paramref name="kept"/>.
    /// <see cref="UnitSelection.Sampled"/> uses Efraimidis–Spirakis keys <c>u^(1/score)</c> from a stream seeded by
    /// <paramref name="seed"/>: the same seed gives the same units on every machine and every rank.
    /// </summary>
    /// <exception cref="ArgumentException">More units asked for than scored, or a score is negative or not finite.</exception>
    public static void Select(ReadOnlySpan<float> scores, UnitSelection mode, ulong seed, Span<int> kept)
    {
        int n = scores.Length, k = kept.Length;
        if (k > n || k == 0) throw new ArgumentException($"Asked to keep {k} of {n} units; expected 1 to {n}.", nameof(kept));
        for (int i = 0; i < n; i++)
            if (!(scores[i] >= 0) || float.IsInfinity(scores[i]))
                throw new ArgumentException($"Unit {i} has score {scores[i]}; expected a finite score ≥ 0.", nameof(scores));
        var keys = new double[n];
        if (mode == UnitSelection.TopK) for (int i = 0; i < n; i++) keys[i] = scores[i];
        else
        {
            var rng = new SparsityRandom(seed);
            for (int i = 0; i < n; i++)
            {
                double u = rng.NextDouble();
                // log(u) / w orders as u^(1/w); a zero score sorts below every positive one, among themselves at random
                keys[i] = scores[i] > 0 ? Math.Log(Math.Max(u, double.Epsilon)) / scores[i] : -1e300 * (1 + u);
            }
        }
        var order = Enumerable.Range(0, n).ToArray();
        Array.Sort(order, (a, b) => keys[b] != keys[a] ? keys[b].CompareTo(keys[a]) : a.CompareTo(b));
        order.AsSpan(0, k).CopyTo(kept);
        kept.Sort();
    }

    /// <summary>A seed for one layer's selection at one step, mixed from the run's seed (SplitMix64's finaliser).</summary>
    public static ulong SeedFor(ulong seed, long step, int layer)
    {
        ulong z = seed + 0x9E3779B97F4A7C15UL * (ulong)(step + 1) + 0xBF58476D1CE4E5B9UL * (ulong)(layer + 1);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
