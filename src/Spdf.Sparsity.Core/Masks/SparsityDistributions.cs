namespace Spdf.Sparsity.Masks;

/// <summary>Chooses a sparsity per layer so that the whole model reaches a global target.</summary>
public interface ISparsityDistribution
{
    /// <summary>A short name for reports.</summary>
    string Name { get; }

    /// <summary>Per-layer sparsities for weights of the given shapes <c>[out, in]</c> (rows, cols) at a global sparsity.</summary>
    double[] Distribute(IReadOnlyList<(int Rows, int Cols)> shapes, double globalSparsity);
}

/// <summary>Sparsity distributions: uniform (the SPDF paper's choice) and Erdős–Rényi-Kernel (Evci et al. 2020).</summary>
public static class SparsityDistributions
{
    /// <summary>Every layer at the global sparsity.</summary>
    public static ISparsityDistribution Uniform { get; } = new UniformDistribution();

    /// <summary>
    /// Erdős–Rényi(-Kernel): layer density ∝ <c>Σ dims / Π dims</c> (for a linear layer <c>(in + out)/(in·out)</c>),
    /// scaled so that the total kept count meets the target; layers that would exceed density 1 are made dense and the
    /// rest re-scaled (RigL's <c>get_sparsities</c>, Evci et al. 2020, §3).
    /// </summary>
    public static ISparsityDistribution Erk { get; } = new ErkDistribution();

    private sealed class UniformDistribution : ISparsityDistribution
    {
        public string Name => "uniform";

        public double[] Distribute(IReadOnlyList<(int Rows, int Cols)> shapes, double globalSparsity)
        {
            ArgumentNullException.ThrowIfNull(shapes);
            SparsityGuard.Sparsity(globalSparsity, nameof(globalSparsity));
            return shapes.Select(_ => globalSparsity).ToArray();
        }
    }

    private sealed class ErkDistribution : ISparsityDistribution
    {
        public string Name => "erk";

        public double[] Distribute(IReadOnlyList<(int Rows, int Cols)> shapes, double globalSparsity)
        {
            ArgumentNullException.ThrowIfNull(shapes);
            SparsityGuard.Sparsity(globalSparsity, nameof(globalSparsity));
            int L = shapes.Count;
            var n = shapes.Select(s => (double)s.Rows * s.Cols).ToArray();
            var raw = shapes.Select(s => ((double)s.Rows + s.Cols) / Math.Max(1.0, (double)s.Rows * s.Cols)).ToArray();
            var dense = new bool[L];
            double total = n.Sum();
            double keep = (1 - globalSparsity) * total;
            while (true)
            {
                double denseKept = 0, weighted = 0;
                for (int i = 0; i < L; i++)
                {
                    if (dense[i]) denseKept += n[i];
                    else weighted += raw[i] * n[i];
                }
                double eps = weighted == 0 ? 0 : (keep - denseKept) / weighted;
                bool changed = false;
                for (int i = 0; i < L; i++)
                {
                    if (!dense[i] && eps * raw[i] > 1) { dense[i] = true; changed = true; }
                }
                if (changed) continue;
                return Enumerable.Range(0, L).Select(i => dense[i] ? 0.0 : Math.Clamp(1 - eps * raw[i], 0, 0.999999)).ToArray();
            }
        }
    }
}
