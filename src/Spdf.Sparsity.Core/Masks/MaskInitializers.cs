namespace Spdf.Sparsity.Masks;

/// <summary>Creates a mask for one weight <c>[rows, cols]</c> (row-major) at a target sparsity.</summary>
/// <param name="weight">The weight's values, row-major.</param>
/// <param name="rows">Rows (output features).</param>
/// <param name="cols">Columns (input features).</param>
/// <param name="sparsity">Fraction of weights to hold at zero, in [0, 1).</param>
/// <param name="random">The config's seeded stream (drawn from layer by layer, in name order).</param>
public delegate SparsityMask MaskFactory(ReadOnlySpan<float> weight, int rows, int cols, double sparsity, SparsityRandom random);

/// <summary>Creates a mask for one weight at a target sparsity.</summary>
public interface IMaskInitializer
{
    /// <summary>A short name for reports and checkpoint metadata (e.g. "random", "magnitude", "2:4").</summary>
    string Name { get; }

    /// <summary>Creates the mask for the row-major weight <paramref name="weight"/> <c>[rows, cols]</c> at <paramref name="sparsity"/>.</summary>
    SparsityMask Create(ReadOnlySpan<float> weight, int rows, int cols, double sparsity, SparsityRandom random);
}

/// <summary>
/// The mask initialisers: uniform random (the SPDF paper's choice), magnitude (top-k by |w|), from zeros, N:M,
/// checkerboard, and a user delegate. All that take a sparsity keep exactly <c>k = round((1 − s)·n)</c> weights.
/// </summary>
public static class MaskInitializers
{
    /// <summary>Uniform random: exactly k weights kept per tensor, chosen uniformly with the given stream (SPDF §3).</summary>
    public static IMaskInitializer Random { get; } = new Delegating("random", (w, rows, cols, s, g) =>
    {
        int n = w.Length, k = KeptCount(n, s);
        var idx = new int[n];
        for (int i = 0; i < n; i++) idx[i] = i;
        var m = new float[n];
        for (int i = 0; i < k; i++)
        {
            int j = i + g.NextInt(n - i);   // partial Fisher–Yates
            (idx[i], idx[j]) = (idx[j], idx[i]);
            m[idx[i]] = 1f;
        }
        return new SparsityMask(m, rows, cols);
    });

    /// <summary>Magnitude: keeps the k weights of largest |w| (ties broken by lower index).</summary>
    public static IMaskInitializer Magnitude { get; } = new Delegating("magnitude", (w, rows, cols, s, _) =>
        new SparsityMask(TopK(w, KeptCount(w.Length, s)), rows, cols));

    /// <summary>From zeros: keeps exactly the non-zero weights; the sparsity argument is ignored.</summary>
    public static IMaskInitializer FromZeros { get; } = new Delegating("from-zeros", (w, rows, cols, _, _) =>
    {
        var m = new float[w.Length];
        for (int i = 0; i < m.Length; i++) m[i] = w[i] != 0 ? 1f : 0f;
        return new SparsityMask(m, rows, cols);
    });

    /// <summary>A checkerboard: (row + column) even is kept; the sparsity argument is ignored (always 50%).</summary>
    public static IMaskInitializer Checkerboard { get; } = new Delegating("checkerboard", (w, rows, cols, _, _) =>
    {
        var m = new float[w.Length];
        for (int i = 0; i < m.Length; i++) m[i] = ((i / cols) + (i % cols)) % 2 == 0 ? 1f : 0f;
        return new SparsityMask(m, rows, cols);
    });

    /// <summary>
    /// N:M structured sparsity along the input (last) dimension: in every group of <paramref name="m"/> consecutive
    /// weights, the <paramref name="n"/> of largest |w| are kept (e.g. 2:4). The sparsity argument is ignored.
    /// </summary>
    /// <exception cref="ArgumentException">N is not in [0, M], or M is not positive.</exception>
    public static IMaskInitializer NofM(int n, int m)
    {
        if (m <= 0) throw new ArgumentOutOfRangeException(nameof(m), m, "M of an N:M pattern must be positive.");
        if (n < 0 || n > m) throw new ArgumentException($"N:M pattern {n}:{m} has N outside [0, M={m}].", nameof(n));
        return new Delegating($"{n}:{m}", (w, rows, cols, _, _) =>
        {
            if (cols % m != 0)
                throw new ArgumentException($"N:M pattern {n}:{m} needs the input dimension to be divisible by {m}; the weight has shape [{rows}, {cols}].", "weight");
            var mask = new float[w.Length];
            for (int g0 = 0; g0 < mask.Length; g0 += m) TopK(w.Slice(g0, m), n).CopyTo(mask.AsSpan(g0, m));
            return new SparsityMask(mask, rows, cols);
        });
    }

    /// <summary>A user-supplied initialiser; the result's shape is checked against the weight.</summary>
    public static IMaskInitializer Custom(string name, MaskFactory create)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(create);
        return new Delegating(name, create);
    }

    /// <summary>The number of kept weights for n weights at sparsity s: <c>round((1 − s)·n)</c>, ties to even.</summary>
    public static int KeptCount(int n, double sparsity)
    {
        SparsityGuard.Sparsity(sparsity, nameof(sparsity));
        return (int)Math.Round((1.0 - sparsity) * n, MidpointRounding.ToEven);
    }

    private static float[] TopK(ReadOnlySpan<float> w, int k)
    {
        var order = new int[w.Length];
        for (int i = 0; i < order.Length; i++) order[i] = i;
        var mags = new float[w.Length];
        for (int i = 0; i < mags.Length; i++) mags[i] = float.IsNaN(w[i]) ? -1f : Math.Abs(w[i]);
        Array.Sort(order, (a, b) => mags[b] != mags[a] ? mags[b].CompareTo(mags[a]) : a.CompareTo(b));
        var m = new float[w.Length];
        for (int i = 0; i < k; i++) m[order[i]] = 1f;
        return m;
    }

    private sealed class Delegating(string name, MaskFactory create) : IMaskInitializer
    {
        public string Name { get; } = name;

        public SparsityMask Create(ReadOnlySpan<float> weight, int rows, int cols, double sparsity, SparsityRandom random)
        {
            ArgumentNullException.ThrowIfNull(random);
            if (rows < 0 || cols < 0 || (long)rows * cols != weight.Length)
                throw new ArgumentException($"A weight of shape [{rows}, {cols}] needs {(long)rows * cols} values; got {weight.Length}.", nameof(weight));
            SparsityGuard.Sparsity(sparsity, nameof(sparsity));
            var mask = create(weight, rows, cols, sparsity, random) ?? throw new InvalidOperationException($"Mask initialiser '{Name}' returned no mask.");
            mask.CheckShape(rows, cols, nameof(weight));
            return mask;
        }
    }
}
