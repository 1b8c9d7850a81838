using Spdf.Sparsity.Algorithms;
using Spdf.Sparsity.Masks;
using Spdf.Sparsity.Schedules;
using Spdf.Tensors;
using Spdf.Tensors.Nn;
using Spdf.Tensors.Optim;

namespace Spdf.Sparsity.Tests;

public class AlgorithmTests
{
    private static (TinyBlock Model, SparsifiedModel Handle, AdamW Opt) Make(double sparsity)
    {
        var model = new TinyBlock();
        var g = new Generator(4);
        foreach (var p in model.Parameters()) Init.Normal(p, 0, 0.5f, g);
        var handle = Sparsifier.Apply(model, SparsityConfig.Default(sparsity, seed: 2));
        foreach (var l in handle.Layers) l.Layer.KernelMode = SparseKernelMode.Compressed;
        return (model, handle, new AdamW(model.Parameters(), 1e-2));
    }

    /// <summary>One training step on random data; with <paramref name="capture"/> the layers record dense gradients.</summary>
    private static void Step(TinyBlock model, SparsifiedModel handle, AdamW opt, int seed, bool capture = false)
    {
        foreach (var l in handle.Layers) l.Layer.CaptureDenseGradient = capture;
        var x = Tensor.Randn(new Shape(16, 8), new Generator((ulong)seed));
        opt.ZeroGrad();
        (model.Forward(x) * model.Forward(x)).Mean().Backward();
        opt.Step();
        foreach (var l in handle.Layers) l.Layer.CaptureDenseGradient = false;
    }

    private static void AssertInvariants(SparsifiedModel handle, AdamW opt)
    {
        foreach (var l in handle.Layers)
        {
            var w = l.Layer.Weight.AsReadOnlySpan();
            var m = l.Layer.Mask.Values.AsSpan();
            for (int i = 0; i < w.Length; i++) if (m[i] == 0) w[i].Should().Be(0f, $"{l.Name}[{i}] is dropped");
            if (l.Layer.Weight.Grad is { } gr)
                for (int i = 0; i < w.Length; i++) if (m[i] == 0) gr.AsReadOnlySpan()[i].Should().Be(0f);
        }
    }

    /// <summary>Right after an optimizer step the moments follow the current mask (they conform lazily, at each step).</summary>
    private static void AssertMoments(SparsifiedModel handle, AdamW opt)
    {
        foreach (var l in handle.Layers)
        {
            foreach (var (_, t) in opt.State(l.Layer.Weight))
                t.Numel.Should().Be(l.Layer.Mask.KeptCount, "moments are kept for kept weights only");
        }
    }

    [Fact]
    public void GradualMagnitudePruningHitsTheCubicScheduleExactly()
    {
        var (model, handle, opt) = Make(0.0);
        var gmp = GradualMagnitudePruning.Cubic(0.0, 0.8, startStep: 2, endStep: 10, every: 2);
        for (int step = 1; step <= 12; step++)
        {
            Step(model, handle, opt, step);
            AssertMoments(handle, opt);
            gmp.Update(handle, step);
            double target = gmp.Schedule.ValueAt(Math.Min(step, 10));
            if (step >= 2)
            {
                long lastUpdate = Math.Min(10, step - step % 2);
                double expected = gmp.Schedule.ValueAt(lastUpdate);
                foreach (var l in handle.Layers)
                    l.Layer.Mask.KeptCount.Should().Be((int)Math.Round((1 - expected) * l.Layer.Weight.Numel), $"step {step}, {l.Name}");
            }
            _ = target;
            AssertInvariants(handle, opt);
        }
        handle.Report().LayerSparsity.Should().BeApproximately(0.8, 0.01);
        // The survivors are the largest weights of the last update: the smallest kept |w| ≥ the largest pruned |w| at that time (pruned are 0 now).
        var probe = handle.Layers[0].Layer;
        probe.Weight.AsReadOnlySpan().ToArray().Count(v => v != 0).Should().BeLessThanOrEqualTo(probe.Mask.KeptCount);
    }

    [Fact]
    public void GlobalMagnitudePruningKeepsTheLargestWeightsOverAllLayers()
    {
        var (_, handle, _) = Make(0.0);
        var gmp = new GradualMagnitudePruning(SparsitySchedules.Constant(0.5), new UpdateSchedule(1, 1, 1), global: true);
        var all = handle.Layers.SelectMany(l => l.Layer.Weight.AsReadOnlySpan().ToArray()).Select(MathF.Abs).OrderDescending().ToList();
        long total = all.Count;
        float threshold = all[(int)(total / 2) - 1];
        gmp.Update(handle, 1).Should().BePositive();
        handle.Layers.Sum(l => (long)l.Layer.Mask.KeptCount).Should().Be(total / 2);
        foreach (var l in handle.Layers)
        {
            var w = l.Layer.Weight.AsReadOnlySpan();
            var m = l.Layer.Mask.Values.AsSpan();
            for (int i = 0; i < w.Length; i++)
                if (m[i] != 0) MathF.Abs(w[i]).Should().BeGreaterThanOrEqualTo(threshold);
        }
    }

    [Fact]
    public void SetKeepsKeptCountsAndMovesTheMask()
    {
        var (model, handle, opt) = Make(0.75);
        var counts = handle.Layers.Select(l => l.Layer.Mask.KeptCount).ToList();
        var set = new SparseEvolutionaryTraining(SparsitySchedules.Constant(0.3), new UpdateSchedule(2, 2, 100), seed: 5);
        var before = handle.Layers[0].Layer.Mask.Values.AsSpan().ToArray();
        for (int step = 1; step <= 6; step++)
        {
            Step(model, handle, opt, step);
            AssertMoments(handle, opt);
            set.Update(handle, step);
            handle.Layers.Select(l => l.Layer.Mask.KeptCount).Should().Equal(counts, $"SET keeps counts (step {step})");
            AssertInvariants(handle, opt);
        }
        handle.Layers[0].Layer.Mask.Values.AsSpan().ToArray().Should().NotEqual(before);
        // Newly grown weights start at 0 and with zero moments (they are at 0 right after an update, before the next step).
        Step(model, handle, opt, 7);
        var layer = handle.Layers[0].Layer;
        var old = layer.Mask.Values.AsSpan().ToArray();
        set.Update(handle, 8);
        var w = layer.Weight.AsReadOnlySpan();
        var m = layer.Mask.Values.AsSpan();
        int grown = 0;
        for (int i = 0; i < w.Length; i++) if (m[i] != 0 && old[i] == 0) { w[i].Should().Be(0f); grown++; }
        grown.Should().BePositive();
    }

    [Fact]
    public void RigLRegrowsWhereTheDenseGradientIsLargest()
    {
        // A hand-built layer: 2×4 weight, kept positions 0,1,2,3 (first row) with magnitudes 1,2,3,4; the dense gradient
        // is largest at position 6, then 5. Dropping half of the kept (fraction 0.5 at t = 0 → α/2·(1+cos 0) = α) drops
        // positions 0 and 1 and grows 6 and 5.
        var lin = new Linear(4, 2, hasBias: false);
        lin.Weight.AsSpan().Clear();
        float[] w = [1, -2, 3, 4, 0, 0, 0, 0];
        w.CopyTo(lin.Weight.AsSpan());
        var holder = new Holder(lin);
        var handle = Sparsifier.Apply(holder, new SparsityConfig([new SparsityGroup("fc.weight", 0.5, MaskInitializers.FromZeros)]));
        var layer = handle.Layers[0].Layer;
        layer.Mask.Values.AsSpan().ToArray().Should().Equal(1, 1, 1, 1, 0, 0, 0, 0);
        var rigl = new RigL(dropFraction: 0.5, every: 1, endStep: 1000);
        rigl.NeedsDenseGradient(1).Should().BeTrue();
        // Dense gradient of the weight for y = x·Wᵀ with loss sum(y ⊙ c): dW[o, i] = c[o]·Σx[i]; choose x, c so that |dW| is largest at 6 then 5.
        layer.CaptureDenseGradient = true;
        var x = Tensor.From([0f, 1f, 3f, 0.5f], 1, 4);
        var c = Tensor.From([0.1f, 1f], 1, 2);
        (holder.Forward(x) * c).Sum().Backward();
        layer.CaptureDenseGradient = false;
        layer.DenseGradient!.AsReadOnlySpan().ToArray().Should().Equal(0f, 0.1f, 0.3f, 0.05f, 0f, 1f, 3f, 0.5f);
        rigl.DropFractionAt(1).Should().BeApproximately(0.5, 1e-4);
        rigl.Update(handle, 1).Should().Be(1);
        layer.Mask.Values.AsSpan().ToArray().Should().Equal(0, 0, 1, 1, 0, 1, 1, 0);
        layer.Weight.AsReadOnlySpan().ToArray().Should().Equal(0, 0, 3, 4, 0, 0, 0, 0);
        layer.Mask.KeptCount.Should().Be(4);
    }

    [Fact]
    public void RigLKeepsCountsThroughTraining()
    {
        var (model, handle, opt) = Make(0.75);
        var counts = handle.Layers.Select(l => l.Layer.Mask.KeptCount).ToList();
        var rigl = new RigL(0.3, every: 2, endStep: 20);
        for (int step = 1; step <= 8; step++)
        {
            Step(model, handle, opt, step, capture: rigl.NeedsDenseGradient(step));
            AssertMoments(handle, opt);
            rigl.Update(handle, step);
            handle.Layers.Select(l => l.Layer.Mask.KeptCount).Should().Equal(counts);
            AssertInvariants(handle, opt);
        }
        FluentActions.Invoking(() => rigl.Update(handle, 10)).Should().Throw<InvalidOperationException>().WithMessage("*no dense gradient*");
    }

    private sealed class Holder : Module<Tensor, Tensor>
    {
        public Linear fc;
        public Holder(Linear l) { fc = l; RegisterComponents(); }
        public override Tensor Forward(Tensor x) => fc.Forward(x);
    }
}
