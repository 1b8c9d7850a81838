using Spdf.Sparsity.Flops;
using Spdf.Sparsity.Masks;
using Spdf.Sparsity.Schedules;
using Spdf.Tensors;

namespace Spdf.Sparsity.Tests;

public class ScheduleAndFlopTests
{
    [Fact]
    public void CubicFollowsZhuAndGupta()
    {
        var s = SparsitySchedules.Cubic(0.0, 0.8, startStep: 100, endStep: 1100);
        s.ValueAt(0).Should().Be(0);
        s.ValueAt(100).Should().Be(0);
        s.ValueAt(600).Should().BeApproximately(0.8 + (0 - 0.8) * Math.Pow(0.5, 3), 1e-12);
        s.ValueAt(1100).Should().Be(0.8);
        s.ValueAt(5000).Should().Be(0.8);
        // monotone, and front-loaded: half the way in time is 7/8 of the way in sparsity
        Enumerable.Range(100, 1000).Select(t => s.ValueAt(t)).Should().BeInAscendingOrder();
    }

    [Fact]
    public void LinearCosineConstantAndCycling()
    {
        SparsitySchedules.Linear(0.5, 0.9, 0, 100).ValueAt(25).Should().BeApproximately(0.6, 1e-12);
        var cos = SparsitySchedules.Cosine(0.3, 0.0, 0, 100);
        cos.ValueAt(50).Should().BeApproximately(0.15, 1e-12);
        cos.ValueAt(100).Should().Be(0);
        SparsitySchedules.Constant(0.75).ValueAt(12345).Should().Be(0.75);
        var cyc = SparsitySchedules.Cycling(SparsitySchedules.Linear(0, 0.5, 0, 10), period: 10);
        cyc.ValueAt(5).Should().BeApproximately(0.25, 1e-12);
        cyc.ValueAt(15).Should().BeApproximately(0.25, 1e-12);
    }

    [Fact]
    public void UpdateScheduleEveryKStepsBetweenStartAndEnd()
    {
        var u = new UpdateSchedule(every: 100, startStep: 50, endStep: 450);
        u.Steps().Should().Equal(50, 150, 250, 350, 450);
        u.IsUpdateStep(150).Should().BeTrue();
        u.IsUpdateStep(151).Should().BeFalse();
        u.IsUpdateStep(550).Should().BeFalse();
    }

    [Fact]
    public void BadSchedulesAreRejected()
    {
        ((Action)(() => SparsitySchedules.Cubic(0, 1.0, 0, 10))).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*Sparsity 1 is outside [0, 1)*");
        ((Action)(() => SparsitySchedules.Linear(0, 0.5, 10, 10))).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*end step must be after the start step 10*");
        ((Action)(() => new UpdateSchedule(0, 0, 10))).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*interval must be positive*");
    }

    [Fact]
    public void Gpt3XlAt75PercentNeedsAbout2Point5TimesFewerTrainingFlops()
    {
        var r = FlopCounter.ForTransformer(new TransformerShape(24, 2048, 2048, 50257), 0.75);
        // Hand count per token: matmuls 24·24·C² = 2.416e9, attention 24·4·T·C = 4.03e8, head 2·C·V = 2.06e8; ×3 for training.
        r.ForwardPerTokenDense.Should().BeApproximately(24 * 24.0 * 2048 * 2048 + 24 * 4.0 * 2048 * 2048 + 2.0 * 2048 * 50257, 1);
        r.ForwardPerTokenSparse.Should().BeApproximately(0.25 * 24 * 24.0 * 2048 * 2048 + 24 * 4.0 * 2048 * 2048 + 2.0 * 2048 * 50257, 1);
        r.TrainPerTokenDense.Should().Be(3 * r.ForwardPerTokenDense);
        r.Reduction.Should().BeInRange(2.4, 2.6, "the SPDF paper reports about 2.5x for GPT-3 XL at 75% sparsity");
        r.ToString().Should().Contain("h.*.mlp.c_fc").And.Contain("reduction");
    }

    [Fact]
    public void ModuleCounterUsesEachLayersOwnDensity()
    {
        var model = new TinyLm();
        var handle = Sparsifier.Apply(model, SparsityConfig.Default(0.5, initializer: MaskInitializers.Magnitude));
        var r = ModelFlops.ForModule(model);
        r.Layers.Should().HaveCount(9);
        r.Layers.Single(l => l.Name == "h.0.mlp.c_fc").ForwardSparse.Should().Be(2.0 * 8 * 32 * 0.5);
        r.Layers.Single(l => l.Name == "lm_head").Density.Should().Be(1);
        r.Sparsity.Should().BeApproximately(0.5, 1e-9);
        _ = handle;
    }
}
