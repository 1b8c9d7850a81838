using Spdf.Tensors.Nn;
using Spdf.Tensors.Optim;

namespace Spdf.Tensors.Tests;

public class OptimTests
{
    private static Parameter P(params float[] v) => new(Tensor.From(v));

    [Fact]
    public void AdamWMatchesTheFormulaByHand()
    {
        var p = P(1f, -2f);
        var opt = new AdamW([p], learningRate: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01);
        p.Grad = Tensor.From([0.5f, -1f]);
        opt.Step();
        // step 1: m = 0.1 g, v = 0.001 g², m̂ = g, v̂ = g²: p ← p(1 − lr·wd) − lr·sign(g)
        p[0].Should().BeApproximately(1f * (1 - 0.001f) - 0.1f, 1e-6f);
        p[1].Should().BeApproximately(-2f * (1 - 0.001f) + 0.1f, 1e-6f);
        opt.State(p)["exp_avg"][0].Should().BeApproximately(0.05f, 1e-7f);
        opt.State(p)["exp_avg"][1].Should().BeApproximately(-0.1f, 1e-7f);
    }

    [Theory]
    [InlineData("adamw", false)]
    [InlineData("adamw", true)]
    [InlineData("sgd", false)]
    public void StepPositionsUpdateOnlyThosePlacesAndLeaveTheRestWithTheirMoments(string kind, bool sparseSupport)
    {
        // Two parameters with the same values and gradients: one updated everywhere, one only at StepPositions.
        var values = Enumerable.Range(0, 12).Select(i => 0.1f * (i - 5)).ToArray();
        var grads = Enumerable.Range(0, 12).Select(i => 0.03f * (i % 5 - 2) + 0.013f).ToArray();
        Parameter Make() => new(Tensor.From(values.ToArray()).Reshape(3, 4)) { SparseSupport = sparseSupport ? [0, 1, 2, 4, 5, 7, 8, 10, 11] : null };
        var all = Make(); var some = Make();
        Optimizer Opt(Parameter p) => kind == "adamw" ? new AdamW([p], 0.05, weightDecay: 0.1) : new Sgd([p], 0.05, momentum: 0.9, weightDecay: 0.1);
        var optAll = Opt(all); var optSome = Opt(some);
        int[] positions = [1, 2, 3, 8, 9, 10];
        for (int step = 0; step < 3; step++)
        {
            var before = some.ToArray();
            var momentBefore = optSome.State(some).ToDictionary(kv => kv.Key, kv => kv.Value.ToArray());
            all.Grad = Tensor.From(grads.ToArray()).Reshape(3, 4);
            some.Grad = Tensor.From(grads.ToArray()).Reshape(3, 4);
            some.StepPositions = step == 1 ? null : positions; // the middle step updates everything
            optAll.Step(); optSome.Step();
            bool Updatable(int i) => !sparseSupport || some.SparseSupport!.Contains(i);
            if (step == 1)
            {
                for (int i = 0; i < 12; i++) if (Updatable(i)) some.AsReadOnlySpan()[i].Should().NotBe(before[i], $"a null StepPositions updates every place ({i})");
                continue;
            }
            if (step == 0)
                foreach (int i in positions) some.AsReadOnlySpan()[i].Should().Be(all.AsReadOnlySpan()[i], $"place {i} takes the plain update");
            for (int i = 0; i < 12; i++)
                if (!positions.Contains(i)) some.AsReadOnlySpan()[i].Should().Be(before[i], $"place {i} was not computed this step");
            foreach (var (name, m) in optSome.State(some))
                if (momentBefore.TryGetValue(name, out var mb) && m.Numel == 12)
                    for (int i = 0; i < 12; i++)
                        if (!positions.Contains(i)) m.AsReadOnlySpan()[i].Should().Be(mb[i], $"{name} at place {i} is left as it was");
        }
        FluentActions.Invoking(() => some.StepPositions = [3, 3]).Should().Throw<ArgumentException>().WithMessage("*StepPositions entry 1 is 3*ascending*");
    }

    [Fact]
    public void SgdMomentumAndNesterov()
    {
        var p = P(1f);
        var opt = new Sgd([p], learningRate: 0.1, momentum: 0.9);
        p.Grad = Tensor.From([1f]); opt.Step();   // buf = 1; p = 0.9
        p.Grad = Tensor.From([1f]); opt.Step();   // buf = 1.9; p = 0.71
        p[0].Should().BeApproximately(0.71f, 1e-6f);
        var q = P(1f);
        var nes = new Sgd([q], learningRate: 0.1, momentum: 0.9, nesterov: true);
        q.Grad = Tensor.From([1f]); nes.Step();   // buf = 1; g = 1 + 0.9 = 1.9; q = 0.81
        q[0].Should().BeApproximately(0.81f, 1e-6f);
    }

    [Fact]
    public void WarmupCosineSchedule()
    {
        var s = new WarmupCosineSchedule(1.0, warmupSteps: 10, totalSteps: 110, minLearningRate: 0.1);
        s.LearningRate(0).Should().BeApproximately(0.1, 1e-12);
        s.LearningRate(9).Should().BeApproximately(1.0, 1e-12);
        s.LearningRate(60).Should().BeApproximately(0.55, 1e-12);
        s.LearningRate(110).Should().Be(0.1);
        var lin = new LinearSchedule(1.0, 0.0, totalSteps: 10);
        lin.LearningRate(5).Should().BeApproximately(0.5, 1e-12);
        var opt = new Sgd([P(0f)], 1.0);
        s.Apply(opt, 60).Should().BeApproximately(0.55, 1e-12);
        opt.Groups[0].LearningRate.Should().BeApproximately(0.55, 1e-12);
    }

    [Fact]
    public void ClipGradNormScalesToMaxNorm()
    {
        var a = P(0f, 0f); var b = P(0f);
        a.Grad = Tensor.From([3f, 0f]); b.Grad = Tensor.From([4f]);
        GradClip.ClipGradNorm([a, b], 1.0).Should().BeApproximately(5.0, 1e-9);
        a.Grad[0].Should().BeApproximately(0.6f, 1e-5f);
        b.Grad[0].Should().BeApproximately(0.8f, 1e-5f);
    }

    [Fact]
    public void GradNormMatchesADoubleSumOverLongAndHugeGradients()
    {
        // Runs of 1,024 summed in float, then in double: equal to a plain double sum within float rounding, across run
        // boundaries, and finite where the squares pass float's range.
        var g = new Generator(4);
        var a = P(new float[3001]); var b = P(new float[5]);
        a.Grad = Tensor.Randn(new Shape(3001), g); b.Grad = Tensor.From([1e20f, -3e19f, 2f, 0f, 1f]);
        double Expected(Parameter p) => p.Grad!.AsReadOnlySpan().ToArray().Sum(v => (double)v * v);
        GradClip.GradNorm([a]).Should().BeApproximately(Math.Sqrt(Expected(a)), 1e-5 * Math.Sqrt(Expected(a)));
        double both = GradClip.GradNorm([a, b]);
        double.IsFinite(both).Should().BeTrue("squares of 1e20 overflow float but not the norm");
        both.Should().BeApproximately(Math.Sqrt(Expected(a) + Expected(b)), 1e-6 * Math.Sqrt(Expected(b)));
        b.Grad = Tensor.From([1f, float.NaN, 0f, 0f, 0f]);
        double.IsNaN(GradClip.GradNorm([a, b])).Should().BeTrue();
    }

    private static float[] Grad(int step, int i) => [MathF.Sin(step * 1.3f + i), MathF.Cos(step * 0.7f - i) * 0.1f, step % 3 - 1f];

    /// <summary>Runs <paramref name="steps"/> steps from step <paramref name="from"/> with deterministic gradients.</summary>
    private static void Run(Optimizer opt, Parameter p, int from, int steps)
    {
        for (int t = from; t < from + steps; t++) { p.Grad = Tensor.From(Grad(t, 0)); opt.Step(); }
    }

    [Fact]
    public void AResetRestartsAdamWsBiasCorrectionAsAFreshOptimizerWould()
    {
        // N steps, reset, M steps must equal a fresh AdamW on the weights after N steps (beta2 = 0.95, where an optimizer-wide
        // step count made the first updates after a reset about 0.45x PyTorch's).
        var p = P(0.5f, -1f, 2f);
        var opt = new AdamW([p], learningRate: 0.05, beta2: 0.95, weightDecay: 0.1);
        Run(opt, p, 1, 7);
        opt.ParameterStep(p).Should().Be(7);
        var fresh = P(p.ToArray());
        opt.ResetState(p);
        opt.ParameterStep(p).Should().Be(0);
        var freshOpt = new AdamW([fresh], learningRate: 0.05, beta2: 0.95, weightDecay: 0.1);
        Run(opt, p, 8, 3);
        Run(freshOpt, fresh, 8, 3);
        p.ToArray().Should().Equal(fresh.ToArray());
        opt.State(p)["exp_avg_sq"].ToArray().Should().Equal(freshOpt.State(fresh)["exp_avg_sq"].ToArray());
        opt.ParameterStep(p).Should().Be(3);
        opt.StepCount.Should().Be(10);
    }

    [Fact]
    public void EachParameterCountsItsOwnStepsAsPyTorchDoes()
    {
        // A parameter without a gradient in a step takes no step: its bias correction follows its own count.
        var a = P(1f, 2f, 3f); var b = P(1f, 2f, 3f);
        var opt = new AdamW([a, b], learningRate: 0.1);
        a.Grad = Tensor.From(Grad(1, 0)); opt.Step();            // b has no gradient yet
        a.Grad = Tensor.From(Grad(2, 0)); b.Grad = Tensor.From(Grad(1, 0)); opt.Step();
        opt.ParameterStep(a).Should().Be(2);
        opt.ParameterStep(b).Should().Be(1);
        var alone = P(1f, 2f, 3f);
        var aloneOpt = new AdamW([alone], learningRate: 0.1);
        alone.Grad = Tensor.From(Grad(1, 0)); aloneOpt.Step();
        b.ToArray().Should().Equal(alone.ToArray(), "b's first step is a first step, whatever the optimizer's count");
    }

    [Fact]
    public void AResetRestartsSgdMomentumAsAFreshOptimizerWould()
    {
        var p = P(0.5f, -1f, 2f);
        var opt = new Sgd([p], learningRate: 0.05, momentum: 0.9, weightDecay: 0.01);
        Run(opt, p, 1, 5);
        var fresh = P(p.ToArray());
        opt.ResetState(p);
        var freshOpt = new Sgd([fresh], learningRate: 0.05, momentum: 0.9, weightDecay: 0.01);
        Run(opt, p, 6, 3);
        Run(freshOpt, fresh, 6, 3);
        p.ToArray().Should().Equal(fresh.ToArray());
    }

    [Fact]
    public void TheStateDictKeepsStepCountsExactlyPastWhatAFloatHolds()
    {
        var p = P(1f, 2f);
        var opt = new AdamW([p], 0.1);
        p.Grad = Tensor.From([1f, 1f]); opt.Step();
        var sd = opt.StateDict();
        const long big = (1L << 24) + 3; // 16,777,219: a float32 holds 16,777,220
        sd["state.0.step"] = Tensor.From([(float)(big >> 24), (float)(big & 0xFFFFFF)]);
        sd["step"] = Tensor.From([(float)(big >> 24), (float)(big & 0xFFFFFF)]);
        var p2 = P(1f, 2f);
        var opt2 = new AdamW([p2], 0.1);
        opt2.LoadStateDict(sd);
        opt2.ParameterStep(p2).Should().Be(big);
        opt2.StepCount.Should().Be(big);
        p2.Grad = Tensor.From([1f, 1f]); opt2.Step();
        var again = new AdamW([P(1f, 2f)], 0.1);
        again.LoadStateDict(opt2.StateDict());
        again.ParameterStep(again.Parameters.Single()).Should().Be(big + 1);

        // A checkpoint of the older layout (one float step, no per-parameter steps): every parameter had taken every step.
        var old = new OrderedDictionary<string, Tensor> { ["state.0.exp_avg"] = Tensor.From([0.1f, 0.1f]), ["state.0.exp_avg_sq"] = Tensor.From([0.01f, 0.01f]), ["step"] = Tensor.Scalar(5f) };
        var p3 = P(1f, 2f);
        var opt3 = new AdamW([p3], 0.1);
        opt3.LoadStateDict(old);
        opt3.ParameterStep(p3).Should().Be(5);

        sd["state.0.step"] = Tensor.From([1.5f, 2f]);
        FluentActions.Invoking(() => new AdamW([P(1f, 2f)], 0.1).LoadStateDict(sd)).Should().Throw<ArgumentException>()
            .WithMessage("*'state.0.step' holds [1.5, 2]*step count as [count / 2^24, count mod 2^24]*");
    }

    [Fact]
    public void StateDictRoundTrips()
    {
        var p = P(1f, 2f);
        var opt = new AdamW([p], 0.1);
        p.Grad = Tensor.From([1f, 1f]); opt.Step();
        var sd = opt.StateDict();
        var p2 = P(1f, 2f);
        var opt2 = new AdamW([p2], 0.1);
        opt2.LoadStateDict(sd);
        opt2.StepCount.Should().Be(1);
        opt2.State(p2)["exp_avg_sq"].ToArray().Should().Equal(opt.State(p)["exp_avg_sq"].ToArray());
    }

    [Theory]
    [InlineData(double.NaN)]
    [InlineData(-1.0)]
    [InlineData(double.PositiveInfinity)]
    public void BadLearningRateIsRejectedWithItsValue(double lr)
    {
        var act = () => new AdamW([P(1f)], learningRate: lr);
        act.Should().Throw<ArgumentOutOfRangeException>().WithMessage("*learning rate*").Which.ActualValue.Should().Be(lr);
    }

    [Fact]
    public void BadHyperParametersAreRejected()
    {
        ((Action)(() => new AdamW([P(1f)], beta1: 1.0))).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*β1*");
        ((Action)(() => new AdamW(Array.Empty<Parameter>()))).Should().Throw<ArgumentException>().WithMessage("*empty parameter list*");
        var p = P(1f);
        ((Action)(() => new AdamW([new ParameterGroup([p]), new ParameterGroup([p])]))).Should().Throw<ArgumentException>().WithMessage("*more than one parameter group*");
        ((Action)(() => new Sgd([p], 0.1, nesterov: true))).Should().Throw<ArgumentException>().WithMessage("*Nesterov*");
    }
}
