using Spdf.Sparsity.Kernels;
using Spdf.Sparsity.Masks;
using Spdf.Tensors;
using Spdf.Tensors.Autograd;
using Spdf.Tensors.Nn;

namespace Spdf.Sparsity.Tests;

/// <summary>How <see cref="KernelChoice.Faster"/> decides: the kernels take turns, each judged by its fastest call, and
/// short passes are repeated until each kernel has run <see cref="KernelChoice.MinimumMilliseconds"/>.</summary>
public class KernelChoiceTests
{
    [Fact]
    public void TheClearlyFasterKernelIsChosenEitherWay()
    {
        static void Slow() => Thread.Sleep(2);
        static void Quick() { }
        KernelChoice.Faster(Slow, Quick).Should().Be(SparseKernelMode.Compressed);
        KernelChoice.Faster(Quick, Slow).Should().Be(SparseKernelMode.MaskedDense);
    }

    [Fact]
    public void LongPassesRunThreeTurnsAfterAWarmUpAndShortOnesRunLonger()
    {
        int a = 0, b = 0;
        KernelChoice.Faster(() => { a++; Thread.Sleep(3); }, () => { b++; Thread.Sleep(3); });
        (a, b).Should().Be((4, 4), "one warm-up call and three turns each, as before, when each pass is longer than the minimum time");
        a = b = 0;
        KernelChoice.Faster(() => a++, () => b++);
        a.Should().Be(b).And.BeGreaterThan(4, "passes far shorter than the minimum time are repeated").And.BeLessThanOrEqualTo(65);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void TheRuleHandsOverAtItsCrossoverAndTheCrossoverFallsWithTokens(bool training)
    {
        const int In = 40, Out = 25; // 1,000 weights: kept / 1,000 is the density
        double previous = double.MaxValue;
        foreach (long tokens in new long[] { 1, 16, 256, 512, 1024, 2048, 4096, 1 << 20 })
        {
            double crossover = KernelChoice.CrossoverDensity(tokens, In, Out, training);
            crossover.Should().BeInRange(0.75, 1.0).And.BeLessThanOrEqualTo(previous, "more tokens per pass make the dense GEMM relatively cheaper");
            previous = crossover;
            long atCrossover = (long)Math.Floor(crossover * 1000);
            KernelChoice.ByRule(tokens, In, Out, atCrossover, training).Should().Be(SparseKernelMode.Compressed);
            KernelChoice.ByRule(tokens, In, Out, 0, training).Should().Be(SparseKernelMode.Compressed);
            if (atCrossover < 1000) KernelChoice.ByRule(tokens, In, Out, atCrossover + 1, training).Should().Be(SparseKernelMode.MaskedDense);
        }
        KernelChoice.CrossoverDensity(2048, In, Out, training).Should().BeLessThan(KernelChoice.CrossoverDensity(16, In, Out, training));
    }

    [Fact]
    public void TheRuleNamesABadCount()
    {
        var act = () => KernelChoice.ByRule(64, 40, 25, 1001, training: true);
        act.Should().Throw<ArgumentOutOfRangeException>().WithMessage("*1001*[0, 1000]*");
        var tokens = () => KernelChoice.CrossoverDensity(0, 40, 25, training: true);
        tokens.Should().Throw<ArgumentOutOfRangeException>().WithMessage("*tokens*");
    }

    /// <summary>A layer in Heuristic mode takes the rule's kernel, for training and inference passes, and applies the
    /// rule again when a mask change alters its density (as magnitude pruning does), without timing anything.</summary>
    [Fact]
    public void AHeuristicLayerTakesTheRulesKernelAndAppliesItAgainAfterAMaskChange()
    {
        const int In = 16, Out = 24, Tokens = 2048; // crossover 0.79 for training, 0.86 for inference at 2,048 tokens
        var g = new Generator(7);
        var x = Tensor.Randn(new Shape(Tokens, In), g);
        var layer = SparseLinear.FromLinear(new Linear(In, Out, generator: g), MaskInitializers.Random.Create(new Tensor(new float[In * Out], new Shape(Out, In)), 0.0, new SparsityRandom(1)));
        layer.KernelMode = SparseKernelMode.Heuristic;
        foreach (double sparsity in new[] { 0.0, 0.1, 0.15, 0.2, 0.25, 0.5, 0.75, 0.9 })
        {
            layer.SetMask(MaskInitializers.Random.Create(layer.Weight, sparsity, new SparsityRandom(2)));
            foreach (bool training in new[] { true, false })
            {
                layer.KernelMode = SparseKernelMode.Heuristic; // forget the choice of the other pass kind
                using (training ? null : GradMode.NoGrad()) layer.Forward(x);
                string expected = KernelChoice.ByRule(Tokens, In, Out, layer.KeptCount, training) == SparseKernelMode.Compressed ? "csr" : "masked-dense";
                layer.Kernel.Should().Be(expected, $"sparsity {sparsity}, {(training ? "training" : "inference")}");
            }
        }
        // Between the two kinds of pass the choices differ (so the test sees the pass kind enter), and a density change
        // alone re-applies the rule: 0.8 density trains masked-dense, 0.25 compressed.
        layer.SetMask(MaskInitializers.Random.Create(layer.Weight, 0.2, new SparsityRandom(3)));
        layer.KernelMode = SparseKernelMode.Heuristic;
        layer.Forward(x);
        layer.Kernel.Should().Be("masked-dense");
        layer.SetMask(MaskInitializers.Random.Create(layer.Weight, 0.75, new SparsityRandom(4)));
        layer.Forward(x);
        layer.Kernel.Should().Be("csr");
    }

    [Fact]
    public void TheSparsifierSetsTheConfigsKernelMode()
    {
        var heuristic = Sparsifier.Apply(new TinyLm(), new SparsityConfig(SparsityConfig.Default(0.5).Groups) { KernelMode = SparseKernelMode.Heuristic });
        heuristic.Layers.Should().NotBeEmpty().And.OnlyContain(l => l.Layer.KernelMode == SparseKernelMode.Heuristic);
        Sparsifier.Apply(new TinyLm(), SparsityConfig.Default(0.5)).Layers.Should().OnlyContain(l => l.Layer.KernelMode == SparseKernelMode.Auto);
    }
}
