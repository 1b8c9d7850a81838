using System.Globalization;
using Spdf.Sparsity;
using Spdf.Sparsity.Kernels;
using Spdf.Sparsity.Masks;
using Spdf.Tensors;
using Spdf.Tensors.Autograd;
using Spdf.Tensors.Nn;

namespace Spdf.Benchmarks;

/// <summary>
/// <c>quick crossover</c>: where a whole <see cref="SparseLinear"/> layer (<c>width → 4·width</c>, dense weight storage
/// as magnitude pruning uses it) hands over from the masked-dense kernel to the compressed one, by density and tokens
/// per pass, for inference (forward, gradients off) and for training (forward and backward). Each point times both
/// kernels on the same layer in interleaved rounds; each JSON line says which was faster, what
/// <see cref="KernelChoice.ByRule"/> (the rule behind <see cref="SparseKernelMode.Heuristic"/>) picks there, and what
/// the rule's pick costs against the faster kernel. A summary line per width, tokens and pass gives the measured
/// crossover density (interpolated) and the rule's.
/// <code>
/// quick crossover [--widths 128,384,768] [--tokens 1,16,64,512,2048] [--density 0.1,...,0.9] [--seconds S] [--rounds R]
/// </code>
/// </summary>
internal static class CrossoverQuick
{
    public static void Run(Dictionary<string, string> o)
    {
        static int[] Ints(string s) => s.Split(',').Select(v => int.Parse(v, CultureInfo.InvariantCulture)).ToArray();
        var widths = Ints(o.TryGetValue("widths", out var w) ? w : "128,384,768");
        var tokenCounts = Ints(o.TryGetValue("tokens", out var t) ? t : "1,16,64,512,2048");
        var densities = (o.TryGetValue("density", out var d) ? d : "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9")
            .Split(',').Select(v => double.Parse(v, CultureInfo.InvariantCulture)).ToArray();
        foreach (double bad in densities.Where(v => !(v > 0 && v <= 1)))
            throw new ArgumentException($"--density: {bad} is outside (0, 1].");
        double secs = o.TryGetValue("seconds", out var sec) ? double.Parse(sec, CultureInfo.InvariantCulture) : 0.15;
        int rounds = Quick.Int(o, "rounds", 2);
        foreach (int width in widths)
            foreach (int n in tokenCounts)
                Measure(width, n, densities, secs, rounds);
    }

    private static void Measure(int width, int n, double[] densities, double secs, int rounds)
    {
        int k = width, m = 4 * width;
        var g = new Generator(1);
        var x = Tensor.Randn(new Shape(n, k), g); x.RequiresGrad = true;
        var dy = Tensor.Randn(new Shape(n, m), g);
        var ratios = new Dictionary<bool, List<(double Density, double Ratio)>> { [false] = [], [true] = [] };
        foreach (double density in densities)
        {
            var layer = SparseLinear.FromLinear(new Linear(k, m, generator: new Generator(2)),
                MaskInitializers.Random.Create(new Tensor(new float[m * k], new Shape(m, k)), 1 - density, new SparsityRandom(3)), SparseWeightStorage.Dense);
            void Forward() { using var s = TensorScope.Enter(); using var _ = GradMode.NoGrad(); layer.Forward(x); }
            void Step()
            {
                using var s = TensorScope.Enter();
                foreach (var p in layer.Parameters().Cast<Tensor>().Append(x)) if (p.Grad is null) p.Grad = null; else p.Grad.AsSpan().Clear();
                layer.Forward(x).Backward(dy);
            }
            foreach (bool training in new[] { false, true })
            {
                double dense = double.MaxValue, sparse = double.MaxValue;
                for (int r = 0; r < rounds; r++) // interleaved rounds; each kernel judged by its best median
                    foreach (var mode in new[] { SparseKernelMode.MaskedDense, SparseKernelMode.Compressed })
                    {
                        layer.KernelMode = mode;
                        double ms = Timing.MedianMs(training ? Step : Forward, secs, warmup: 2, minRuns: 5, warmupSeconds: 0.05);
                        if (mode == SparseKernelMode.Compressed) sparse = Math.Min(sparse, ms); else dense = Math.Min(dense, ms);
                    }
                var rule = KernelChoice.ByRule(n, k, m, layer.KeptCount, training);
                var faster = sparse < dense ? SparseKernelMode.Compressed : SparseKernelMode.MaskedDense;
                double ruleMs = rule == SparseKernelMode.Compressed ? sparse : dense;
                ratios[training].Add((density, dense / sparse));
                Quick.Emit(new Dictionary<string, object>
                {
                    ["op"] = "kernel_crossover", ["in"] = k, ["out"] = m, ["tokens"] = n, ["density"] = density,
                    ["pass"] = training ? "training" : "inference", ["masked_dense_ms"] = Math.Round(dense, 4), ["compressed_ms"] = Math.Round(sparse, 4),
                    ["speedup"] = Math.Round(dense / sparse, 3), ["faster"] = Name(faster), ["rule"] = Name(rule),
                    ["rule_cost"] = Math.Round(ruleMs / Math.Min(dense, sparse), 3),
                });
            }
        }
        foreach (bool training in new[] { false, true })
            Quick.Emit(new Dictionary<string, object>
            {
                ["op"] = "kernel_crossover_summary", ["in"] = k, ["out"] = m, ["tokens"] = n, ["pass"] = training ? "training" : "inference",
                ["measured_crossover_density"] = Math.Round(Crossover(ratios[training]), 3),
                ["rule_crossover_density"] = Math.Round(KernelChoice.CrossoverDensity(n, k, m, training), 3),
            });
    }

    /// <summary>The density where the speed-up falls through 1, interpolated between measured points (0 where the
    /// compressed kernel never pays, 1 where it always does).</summary>
    private static double Crossover(List<(double Density, double Ratio)> points)
    {
        var p = points.OrderBy(v => v.Density).ToList();
        if (p[0].Ratio < 1) return 0;
        for (int i = 1; i < p.Count; i++)
            if (p[i].Ratio < 1)
            {
                double a = Math.Log(p[i - 1].Ratio), b = Math.Log(p[i].Ratio);
                return p[i - 1].Density + (p[i].Density - p[i - 1].Density) * a / (a - b);
            }
        return 1;
    }

    private static string Name(SparseKernelMode mode) => mode == SparseKernelMode.Compressed ? "compressed" : "masked-dense";
}
