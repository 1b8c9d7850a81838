using FluentAssertions;
using Spdf.Sparsity.Algorithms;
using Spdf.Sparsity.Masks;
using Spdf.Sparsity.Schedules;
using Xunit;
using Xunit.Abstractions;

namespace Spdf.Sparsity.Tests;

/// <summary>An engine-free sparse weight over plain arrays, as a binding would expose one.</summary>
internal sealed class ArrayWeight(string name, float[] weight, SparsityMask mask) : ISparseWeight
{
    public string Name { get; } = name;
    public int Rows => Mask.Rows;
    public int Cols => Mask.Cols;
    public int KeptCount => Mask.KeptCount;
    public SparsityMask Mask { get; private set; } = mask;
    public float[] Values { get; } = weight;
    public ReadOnlySpan<float> Weight => Values;
    public SparseWeightStorage Storage => SparseWeightStorage.Dense;
    public string Initializer => "test";
    public string Kernel => "none";
    public bool CaptureDenseGradient { get; set; }
    public float[]? Gradient { get; set; }
    public ReadOnlySpan<float> DenseGradient => Gradient;
    public void ClearDenseGradient() => Gradient = null;
    public void SetMask(SparsityMask mask) { Mask = mask; mask.Apply(Values); }
}

internal sealed class ArrayModel(IReadOnlyList<ArrayWeight> layers) : SparseModelHandle("uniform")
{
    public override IReadOnlyList<ISparseWeight> Weights { get; } = layers;
    protected override long ModelParameterCount() => Weights.Sum(w => (long)w.Rows * w.Cols);
    public override int Densify(OptimizerStateOnDensify state = OptimizerStateOnDensify.Keep, long step = 0) => throw new NotSupportedException();
    public override void FreezeMask(long step = 0) => throw new NotSupportedException();
}

public class GlobalMagnitudeTests(ITestOutputHelper output)
{
    private static ArrayModel Model(int seed, (int Rows, int Cols)[] shapes, double sparsity, bool ties)
    {
        var rng = new Random(seed);
        var layers = shapes.Select((s, li) =>
        {
            var w = new float[s.Rows * s.Cols];
            for (int i = 0; i < w.Length; i++)
                w[i] = ties ? (rng.Next(7) - 3) * 0.25f : (float)(rng.NextDouble() - 0.5); // many equal magnitudes, zeros, signs
            if (ties && w.Length > 3) { w[1] = float.NaN; w[2] = -0f; }
            var mask = new float[w.Length];
            for (int i = 0; i < mask.Length; i++) mask[i] = rng.NextDouble() < sparsity ? 0f : 1f;
            var m = new SparsityMask(mask, s.Rows, s.Cols);
            m.Apply(w);
            return new ArrayWeight($"l{li}", w, m);
        }).ToList();
        return new ArrayModel(layers);
    }

    /// <summary>The definition: kept weights ordered by |w| descending (NaN lowest, as float.CompareTo), then layer, then index.</summary>
    private static HashSet<(int, int)> Reference(ArrayModel model, long keep)
    {
        var all = model.Weights.SelectMany((l, li) => Enumerable.Range(0, l.Rows * l.Cols).Where(i => l.Mask.Values[i] != 0)
            .Select(i => (Layer: li, Index: i, Mag: MathF.Abs(((ArrayWeight)l).Values[i])))).ToList();
        return all.OrderByDescending(x => x.Mag).ThenBy(x => x.Layer).ThenBy(x => x.Index).Take((int)keep).Select(x => (x.Layer, x.Index)).ToHashSet();
    }

    [Theory]
    [InlineData(1, 0.3, false, 0.5)]
    [InlineData(2, 0.0, true, 0.5)]
    [InlineData(3, 0.5, true, 0.8)]
    [InlineData(4, 0.2, true, 0.999)]
    [InlineData(5, 0.0, false, 0.0001)]
    public void KeepsTheSameWeightsAsSortingThemAll(int seed, double initial, bool ties, double target)
    {
        var shapes = new[] { (7, 13), (16, 16), (1, 5), (33, 9) };
        var model = Model(seed, shapes, initial, ties);
        long total = shapes.Sum(s => (long)s.Item1 * s.Item2);
        long keep = (long)Math.Round((1 - target) * total);
        var expected = Reference(model, keep);
        long before = model.Weights.Sum(l => (long)l.KeptCount);
        var gmp = new GradualMagnitudePruning(SparsitySchedules.Constant(target), new UpdateSchedule(1, 1, 1), global: true);
        gmp.Update(model, 1);
        var actual = model.Weights.SelectMany((l, li) => Enumerable.Range(0, l.Rows * l.Cols).Where(i => l.Mask.Values[i] != 0).Select(i => (li, i))).ToHashSet();
        if (keep >= before) actual.Count.Should().Be((int)before, "GMP never regrows");
        else actual.Should().BeEquivalentTo(expected);
    }

    [Fact]
    public void PruningEverythingLeavesEmptyMasks()
    {
        var model = Model(9, [(4, 4), (3, 5)], 0.0, false);
        MagnitudeSelection.KeepLargest(model.Weights, 0).Should().Be(2);
        model.Weights.Should().OnlyContain(l => l.KeptCount == 0);
    }

    [Fact]
    public void AtGpt2SmallsSizeItAllocatesLittleMoreThanTheNewMasks()
    {
        // GPT-2 Small's 48 sparse matrices (12 blocks: c_attn 768→2304, c_proj 768→768, c_fc 768→3072, c_proj 3072→768):
        // 85 million weights. Sorting them as tuples took over a gigabyte; the selection allocates the new masks (4 bytes a
        // weight, which SetMask keeps) and two 65,536-bin histograms.
        var shapes = Enumerable.Range(0, 12).SelectMany(_ => new[] { (2304, 768), (768, 768), (3072, 768), (768, 3072) }).ToArray();
        var rng = new Random(11);
        var layers = shapes.Select((s, li) =>
        {
            var w = new float[s.Item1 * s.Item2];
            for (int i = 0; i < w.Length; i++) w[i] = (float)(rng.NextDouble() - 0.5);
            return new ArrayWeight($"l{li}", w, SparsityMask.Dense(s.Item1, s.Item2));
        }).ToList();
        var model = new ArrayModel(layers);
        long total = shapes.Sum(s => (long)s.Item1 * s.Item2);
        total.Should().BeGreaterThan(84_000_000);
        var gmp = new GradualMagnitudePruning(SparsitySchedules.Constant(0.5), new UpdateSchedule(1, 1, 1), global: true);
        long allocated = GC.GetAllocatedBytesForCurrentThread();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        gmp.Update(model, 1).Should().Be(48);
        clock.Stop();
        allocated = GC.GetAllocatedBytesForCurrentThread() - allocated;
        long masks = total * sizeof(float);
        output.WriteLine($"global GMP over {total:N0} weights: {clock.Elapsed.TotalSeconds:F2} s, {allocated / 1e6:F0} MB allocated ({masks / 1e6:F0} MB of it the new masks)");
        allocated.Should().BeLessThan(masks + 16_000_000, "beyond the new masks, only histograms and per-layer bookkeeping");
        model.Weights.Sum(l => (long)l.KeptCount).Should().Be(total / 2);
    }

    [Theory]
    [InlineData(0.25)] // more to grow than half the free places: a partial shuffle of their list
    [InlineData(0.75)] // fewer: positions drawn at random, no list
    public void SetGrowsOnlyWherePreviouslyDroppedAndKeepsCounts(double sparsity)
    {
        ArrayModel Build() => Model(21, [(40, 50), (7, 300)], sparsity, ties: false);
        var model = Build();
        var before = model.Weights.Select(l => l.Mask.Values.ToArray()).ToList();
        var counts = model.Weights.Select(l => l.KeptCount).ToList();
        var set = new SparseEvolutionaryTraining(SparsitySchedules.Constant(0.3), new UpdateSchedule(1, 1, 10), seed: 9);
        set.Update(model, 1).Should().Be(2);
        for (int li = 0; li < model.Weights.Count; li++)
        {
            var l = model.Weights[li];
            l.KeptCount.Should().Be(counts[li]);
            var now = l.Mask.Values;
            int grown = 0, dropped = 0;
            for (int i = 0; i < now.Length; i++)
            {
                if (now[i] != 0 && before[li][i] == 0) grown++;
                if (now[i] == 0 && before[li][i] != 0) dropped++;
            }
            grown.Should().Be((int)Math.Round(0.3 * counts[li]), "as many grow as were dropped, all at places dropped before the update");
            dropped.Should().Be(grown);
        }
        var again = Build();
        set.Update(again, 1);
        again.Weights.Select(l => l.Mask.Values).Should().BeEquivalentTo(model.Weights.Select(l => l.Mask.Values), o => o.WithStrictOrdering(), "seeded per step");
    }
}
