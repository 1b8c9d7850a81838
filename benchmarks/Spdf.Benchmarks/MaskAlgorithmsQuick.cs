using System.Diagnostics;
using Spdf.Sparsity;
using Spdf.Sparsity.Algorithms;
using Spdf.Sparsity.Masks;
using Spdf.Sparsity.Schedules;

namespace Spdf.Benchmarks;

/// <summary>
/// <c>mask-algorithms</c>: one mask update of each algorithm of the engine-free core (GMP per layer and global, SET, RigL,
/// and drawing ERK-distributed random masks) at real model sizes, over plain arrays: the time and the managed memory it
/// allocates. <c>--preset gpt2-small</c> takes GPT-2 Small's 48 sparse matrices (85 M weights); <c>--preset gpt3-xl</c>
/// takes one GPT-3 XL block's four (50 M weights: 2048 → 6144, 2048 → 2048, 2048 → 8192, 8192 → 2048). One JSON line per
/// algorithm.
/// </summary>
internal static class MaskAlgorithmsQuick
{
    private sealed class ArrayWeight(string name, float[] values, float[] gradient, SparsityMask mask) : ISparseWeight
    {
        public string Name { get; } = name;
        public int Rows => Mask.Rows;
        public int Cols => Mask.Cols;
        public int KeptCount => Mask.KeptCount;
        public SparsityMask Mask { get; private set; } = mask;
        public ReadOnlySpan<float> Weight => values;
        public SparseWeightStorage Storage => SparseWeightStorage.Dense;
        public string Initializer => "random";
        public string Kernel => "none";
        public bool CaptureDenseGradient { get; set; }
        public ReadOnlySpan<float> DenseGradient => gradient;
        public void ClearDenseGradient() { }
        public void SetMask(SparsityMask mask) { Mask = mask; mask.Apply(values); }
    }

    private sealed class Model(IReadOnlyList<ISparseWeight> weights) : SparseModelHandle("uniform")
    {
        public override IReadOnlyList<ISparseWeight> Weights { get; } = weights;
        protected override long ModelParameterCount() => Weights.Sum(w => (long)w.Rows * w.Cols);
        public override int Densify(OptimizerStateOnDensify state = OptimizerStateOnDensify.Keep, long step = 0) => throw new NotSupportedException();
        public override void FreezeMask(long step = 0) => throw new NotSupportedException();
    }

    private static (int Rows, int Cols)[] Shapes(string preset) => preset switch
    {
        // [out, in] as Linear stores them
        "gpt2-small" => Enumerable.Range(0, 12).SelectMany(_ => new[] { (2304, 768), (768, 768), (3072, 768), (768, 3072) }).ToArray(),
        "gpt3-xl" => [(6144, 2048), (2048, 2048), (8192, 2048), (2048, 8192)],
        _ => throw new ArgumentException($"Unknown preset '{preset}'; expected gpt2-small or gpt3-xl."),
    };

    /// <summary>The model at <paramref name="sparsity"/> (random masks with exact counts), weights and gradients drawn from a seeded stream.</summary>
    private static Model Build((int Rows, int Cols)[] shapes, double sparsity)
    {
        var rng = new SparsityRandom(7);
        var weights = new List<ISparseWeight>();
        for (int i = 0; i < shapes.Length; i++)
        {
            var (rows, cols) = shapes[i];
            var w = new float[rows * cols];
            var g = new float[rows * cols];
            var r = new Random(i);
            for (int j = 0; j < w.Length; j++) { w[j] = (float)(r.NextDouble() - 0.5); g[j] = (float)(r.NextDouble() - 0.5); }
            var mask = sparsity == 0 ? SparsityMask.Dense(rows, cols) : MaskInitializers.Random.Create(w, rows, cols, sparsity, rng);
            mask.Apply(w);
            weights.Add(new ArrayWeight($"w{i}", w, g, mask));
        }
        return new Model(weights);
    }

    private static (double Seconds, double AllocatedMb) Measure(Action update)
    {
        GC.Collect();
        long before = GC.GetTotalAllocatedBytes(precise: true);
        var clock = Stopwatch.StartNew();
        update();
        double seconds = clock.Elapsed.TotalSeconds;
        return (seconds, (GC.GetTotalAllocatedBytes(precise: true) - before) / 1e6);
    }

    public static void Run(Dictionary<string, string> o)
    {
        string preset = o.TryGetValue("preset", out var p) ? p : "gpt2-small";
        var shapes = Shapes(preset);
        long weights = shapes.Sum(s => (long)s.Rows * s.Cols);
        var algorithms = (o.TryGetValue("algorithms", out var a) ? a : "gmp,gmp-global,set,rigl,erk").Split(',');
        foreach (var name in algorithms)
        {
            // Pruning starts dense; the dynamic algorithms start at the 75% they keep.
            var model = Build(shapes, name.StartsWith("gmp", StringComparison.Ordinal) ? 0.0 : 0.75);
            Action update = name switch
            {
                "gmp" => () => new GradualMagnitudePruning(SparsitySchedules.Constant(0.75), new UpdateSchedule(1, 1, 1)).Update(model, 1),
                "gmp-global" => () => new GradualMagnitudePruning(SparsitySchedules.Constant(0.75), new UpdateSchedule(1, 1, 1), global: true).Update(model, 1),
                "set" => () => new SparseEvolutionaryTraining(SparsitySchedules.Constant(0.3), new UpdateSchedule(1, 1, 10), seed: 1).Update(model, 1),
                "rigl" => () => new RigL(0.3, every: 1, endStep: 10).Update(model, 1),
                "erk" => () =>
                {
                    var sparsities = SparsityDistributions.Erk.Distribute(shapes, 0.75);
                    var rng = new SparsityRandom(3);
                    for (int i = 0; i < shapes.Length; i++)
                        model.Weights[i].SetMask(MaskInitializers.Random.Create(model.Weights[i].Weight, shapes[i].Rows, shapes[i].Cols, sparsities[i], rng));
                },
                _ => throw new ArgumentException($"Unknown algorithm '{name}'; expected gmp, gmp-global, set, rigl or erk."),
            };
            var (seconds, allocated) = Measure(update);
            long kept = model.Weights.Sum(w => (long)w.KeptCount);
            Quick.Emit(new Dictionary<string, object>
            {
                ["op"] = "mask_update", ["algorithm"] = name, ["preset"] = preset, ["matrices"] = shapes.Length, ["weights"] = weights,
                ["seconds"] = Math.Round(seconds, 3), ["allocated_mb"] = Math.Round(allocated, 1), ["mask_mb"] = Math.Round(weights * 4 / 1e6, 1),
                ["sparsity_after"] = Math.Round(1 - (double)kept / weights, 4),
            });
        }
    }
}
