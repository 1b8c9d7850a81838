using Spdf.Tensors;

namespace Spdf.Sparsity.Masks;

/// <summary>Creates a mask for one weight at a target sparsity.</summary>
public interface IMaskInitializer
{
    /// <summary>A short name for reports and checkpoint metadata (e.g. "random", "magnitude", "2:4").</summary>
    string Name { get; }

    /// <summary>Creates the mask for <paramref name="weight"/> <c>[out, in]</c> (or any shape) at <paramref name="sparsity"/>.</summary>
    SparsityMask Create(Tensor weight, double sparsity, Generator generator);
}

/// <summary>
/// The mask initialisers: uniform random (the SPDF paper's choice), magnitude (top-k by |w|), from zeros, N:M,
/// checkerboard, and a user delegate. All that take a sparsity keep exactly <c>k = round((1 − s)·n)</c> weights.
/// </summary>
public static class MaskInitializers
{
    /// <summary>Uniform random: exactly k weights kept per tensor, chosen uniformly with the given generator (SPDF §3).</summary>
    public static IMaskInitializer Random { get; } = new Delegating("random", (w, s, g) =>
    {
        int n = w.Numel, k = KeptCount(n, s);
        var idx = new int[n];
        for (int i = 0; i < n; i++) idx[i] = i;
        var m = new float[n];
        for (int i = 0; i < k; i++)
        {
            int j = i + g.NextInt(n - i);   // partial Fisher–Yates
            (idx[i], idx[j]) = (idx[j], idx[i]);
            m[idx[i]] = 1f;
        }
        return new SparsityMask(new Tensor(m, w.Shape));
    });

    /// <summary>Magnitude: keeps the k weights of largest |w| (ties broken by lower index).</summary>
    public static IMaskInitializer Magnitude { get; } = new Delegating("magnitude", (w, s, _) => TopK(w.AsReadOnlySpan(), w.Shape, KeptCount(w.Numel, s)));

    /// <summary>From zeros: keeps exactly the non-zero weights; the sparsity argument is ignored.</summary>
    public static IMaskInitializer FromZeros { get; } = new Delegating("from-zeros", (w, _, _) =>
    {
        var m = new float[w.Numel];
        var v = w.AsReadOnlySpan();
        for (int i = 0; i < m.Length; i++) m[i] = v[i] != 0 ? 1f : 0f;
        return new SparsityMask(new Tensor(m, w.Shape));
    });

    /// <summary>A checkerboard over a 2-D weight: (row + column) even is kept; the sparsity argument is ignored (always 50%).</summary>
    public static IMaskInitializer Checkerboard { get; } = new Delegating("checkerboard", (w, _, _) =>
    {
        int cols = w.Shape[-1];
        var m = new float[w.Numel];
        for (int i = 0; i < m.Length; i++) m[i] = ((i / cols) + (i % cols)) % 2 == 0 ? 1f : 0f;
        return new SparsityMask(new Tensor(m, w.Shape));
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
        return new Delegating($"{n}:{m}", (w, _, _) =>
        {
            int cols = w.Shape[-1];
            if (cols % m != 0)
                throw new ArgumentException($"N:M pattern {n}:{m} needs the input dimension to be divisible by {m}; the weight has shape {w.Shape}.", "weight");
            var mask = new float[w.Numel];
            var v = w.AsReadOnlySpan();
            for (int g0 = 0; g0 < mask.Length; g0 += m)
            {
                var sub = TopK(v.Slice(g0, m), new Shape(m), n).Values.AsReadOnlySpan();
                sub.CopyTo(mask.AsSpan(g0, m));
            }
            return new SparsityMask(new Tensor(mask, w.Shape));
        });
    }

    /// <summary>A user-supplied initialiser; the result's shape is checked against the weight.</summary>
    public static IMaskInitializer Custom(string name, Func<Tensor, double, Generator, SparsityMask> create)
    {
        ArgumentNullException.ThrowIfNull(create);
        return new Delegating(name, create);
    }

    /// <summary>The number of kept weights for n weights at sparsity s: <c>round((1 − s)·n)</c>, ties to even.</summary>
    public static int KeptCount(int n, double sparsity)
    {
        SparsityGuard.Sparsity(sparsity, nameof(sparsity));
        return (int)Math.Round((1.0 - sparsity) * n, MidpointRounding.ToEven);
    }

    private static SparsityMask TopK(ReadOnlySpan<float> w, Shape shape, int k)
    {
        var order = new int[w.Length];
        for (int i = 0; i < order.Length; i++) order[i] = i;
        var mags = new float[w.Length];
        for (int i = 0; i < mags.Length; i++) mags[i] = float.IsNaN(w[i]) ? -1f : Math.Abs(w[i]);
        Array.Sort(order, (a, b) => mags[b] != mags[a] ? mags[b].CompareTo(mags[a]) : a.CompareTo(b));
        var m = new float[w.Length];
        for (int i = 0; i < k; i++) m[order[i]] = 1f;
        return new SparsityMask(new Tensor(m, shape));
    }

    private sealed class Delegating(string name, Func<Tensor, double, Generator, SparsityMask> create) : IMaskInitializer
    {
        public string Name { get; } = name;

        public SparsityMask Create(Tensor weight, double sparsity, Generator generator)
        {
            ArgumentNullException.ThrowIfNull(weight);
            ArgumentNullException.ThrowIfNull(generator);
            SparsityGuard.Sparsity(sparsity, nameof(sparsity));
            var mask = create(weight, sparsity, generator);
            mask.CheckShape(weight.Shape, nameof(weight));
            return mask;
        }
    }
}
