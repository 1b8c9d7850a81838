using Spdf.Sparsity.Algorithms;
using Spdf.Tensors;
using Spdf.Tensors.Nn;
using Spdf.Tensors.Optim;

namespace Spdf.Sparsity.Tests;

/// <summary>The engine-free <see cref="SparsityController"/> driving a Spdf.Tensors model.</summary>
public class ControllerTests
{
    private static (TinyBlock Model, SparsifiedModel Handle, AdamW Opt, SparsityController Controller) Make(SparsityConfig config)
    {
        var model = new TinyBlock();
        var g = new Generator(4);
        foreach (var p in model.Parameters()) Init.Normal(p, 0, 0.5f, g);
        var handle = Sparsifier.Apply(model, config);
        var opt = new AdamW(model.Parameters(), 1e-2);
        handle.Optimizer = opt;
        return (model, handle, opt, new SparsityController(handle));
    }

    private static void Step(TinyBlock model, AdamW opt, SparsityController c, long step)
    {
        c.BeginStep(step);
        var x = Tensor.Randn(new Shape(16, 8), new Generator((ulong)step));
        opt.ZeroGrad();
        (model.Forward(x) * model.Forward(x)).Mean().Backward();
        c.BeforeOptimizerStep(step);
        opt.Step();
        c.AfterOptimizerStep(step);
    }

    [Fact]
    public void RigLUpdateStepsCaptureDenseGradientsAndMoveMasksWithConstantCounts()
    {
        var rigl = new RigL(0.3, every: 2, endStep: 10);
        var (model, handle, opt, c) = Make(new SparsityConfig([new SparsityGroup("*weight", 0.75)], seed: 3) { Algorithm = rigl });
        var kept = handle.Layers.Select(l => l.Layer.KeptCount).ToArray();
        var before = handle.Layers.Select(l => l.Layer.Mask.Values.ToArray()).ToList();
        c.NeedsDenseGradient(1).Should().BeFalse();
        c.NeedsDenseGradient(2).Should().BeTrue();
        Step(model, opt, c, 1);
        handle.Layers.Should().OnlyContain(l => l.Layer.DenseGradient == null, "no capture outside update steps");
        Step(model, opt, c, 2);
        handle.Layers.Should().OnlyContain(l => !l.Layer.CaptureDenseGradient, "capture ends before the optimizer step");
        handle.Layers.Select(l => l.Layer.KeptCount).Should().Equal(kept);
        handle.Layers.Select(l => l.Layer.Mask.Values).Zip(before).Should().Contain(p => !p.First.SequenceEqual(p.Second), "RigL moved a mask");
    }

    [Fact]
    public void ScheduledDensifyHappensAfterItsStepAndStopsMaskUpdates()
    {
        var gmp = GradualMagnitudePruning.Cubic(0.5, 0.9, startStep: 1, endStep: 6, every: 1);
        var (model, handle, opt, c) = Make(new SparsityConfig([new SparsityGroup("*weight", 0.5)], seed: 3) { Algorithm = gmp });
        c.DensifyAtStep = 3;
        c.DensifyState = OptimizerStateOnDensify.Reset;
        Step(model, opt, c, 1);
        Step(model, opt, c, 2);
        handle.Phase.Should().Be(SparsityPhase.SparsePretrain);
        Step(model, opt, c, 3);
        handle.Phase.Should().Be(SparsityPhase.DenseFinetune);
        handle.Layers.Should().BeEmpty();
        c.ActiveAlgorithm.Should().BeNull();
        handle.Transitions.Should().ContainSingle().Which.Should().Be("densify(reset-optimizer-state) at step 3");
        model.mlp.c_fc.Should().BeOfType<Linear>();
        var zeros = model.mlp.c_fc.Weight.AsReadOnlySpan().ToArray().Count(v => v == 0);
        zeros.Should().BePositive();
        Step(model, opt, c, 4);
        var w = model.mlp.c_fc.Weight.AsReadOnlySpan().ToArray();
        var grad = model.mlp.c_fc.Weight.Grad!.AsReadOnlySpan().ToArray();
        w.Where((v, i) => v == 0 && grad[i] != 0).Should().BeEmpty("every weight with a gradient learns again");
        w.Count(v => v == 0).Should().BeLessThan(zeros);
    }

    [Fact]
    public void FreezeMaskAtAStepEndsTheConfigsAlgorithm()
    {
        var gmp = GradualMagnitudePruning.Cubic(0.5, 0.9, startStep: 1, endStep: 8, every: 1);
        var (model, handle, opt, c) = Make(new SparsityConfig([new SparsityGroup("*weight", 0.5)], seed: 3) { Algorithm = gmp });
        c.FreezeMaskAtStep = 2;
        Step(model, opt, c, 1);
        Step(model, opt, c, 2);
        handle.Phase.Should().Be(SparsityPhase.SparseFinetune);
        var sparsity = handle.Report().LayerSparsity;
        Step(model, opt, c, 3);
        handle.Report().LayerSparsity.Should().Be(sparsity, "a frozen mask does not change");
        c.Algorithm = gmp; // named explicitly, an algorithm runs in sparse fine-tuning too
        Step(model, opt, c, 4);
        handle.Report().LayerSparsity.Should().BeGreaterThan(sparsity);
    }

    [Fact]
    public void StepsAreCountedFromOne()
    {
        var (_, _, _, c) = Make(SparsityConfig.Default(0.5));
        FluentActions.Invoking(() => c.BeginStep(0)).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*counted from 1*");
    }

    private sealed class RecordingOmission(Spdf.Sparsity.Omission.OmissionSchedule schedule) : Spdf.Sparsity.Omission.IUnitOmission
    {
        public List<long> Steps { get; } = [];
        public Spdf.Sparsity.Omission.OmissionSchedule Schedule => schedule;
        public double Rate { get; private set; }
        public void BeginStep(long step) { Steps.Add(step); Rate = Schedule.RateAt(step); }
    }

    [Fact]
    public void TheControllerDrivesUnitOmissionWithOrWithoutMasks()
    {
        var ladder = Spdf.Sparsity.Omission.OmissionSchedule.Ladder(0.5, firstPhaseSteps: 2, rungs: 1, totalSteps: 5, denseFinalSteps: 1);
        var dense = new SparsityController { Omission = new RecordingOmission(ladder) };
        dense.Model.Should().BeNull();
        dense.ActiveAlgorithm.Should().BeNull();
        var rates = new List<double>();
        for (long step = 1; step <= 5; step++)
        {
            dense.BeginStep(step);
            rates.Add(dense.Omission!.Rate);
            dense.BeforeOptimizerStep(step);
            dense.AfterOptimizerStep(step).Should().Be(default(SparsityStepResult), "a model without masks has nothing to update");
        }
        rates.Should().Equal(0.5, 0.5, 0.25, 0.25, 0.0);
        ((RecordingOmission)dense.Omission!).Steps.Should().Equal(1, 2, 3, 4, 5);

        var (model, handle, opt, masked) = Make(new SparsityConfig([new SparsityGroup("*weight", 0.75)], seed: 3));
        var omission = new RecordingOmission(Spdf.Sparsity.Omission.OmissionSchedule.Constant(0.25));
        masked.Omission = omission;
        Step(model, opt, masked, 1);
        omission.Steps.Should().Equal(1);
        omission.Rate.Should().Be(0.25);
        FluentActions.Invoking(() => dense.BeginStep(0)).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*counted from 1*");
    }
}
