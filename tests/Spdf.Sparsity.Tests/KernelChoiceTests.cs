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
        const int In = 16, Out = 24, Tokens = 2048; // a small layer: crossover 0.85 for training, 0.9 for inference
        var g = new Generator(7);
        var x = Tensor.Randn(new Shape(Tokens, In), g);
        var layer = SparseLinear.FromLinear(new Linear(In, Out, generator: g), MaskInitializers.Random.Create(new Tensor(new float[In * Out], new Shape(Out, In)), 0.0, new SparsityRandom(1)));
        string Pass(bool training)
        {
            layer.KernelMode = SparseKernelMode.Heuristic; // forget the choice of the other kind of pass
            using (training ? null : GradMode.NoGrad()) layer.Forward(x);
            return layer.Kernel;
        }
        foreach (double sparsity in new[] { 0.0, 0.05, 0.1, 0.125, 0.15, 0.2, 0.5, 0.75, 0.9 })
        {
            layer.SetMask(MaskInitializers.Random.Create(layer.Weight, sparsity, new SparsityRandom(2)));
            foreach (bool training in new[] { true, false })
            {
                string expected = KernelChoice.ByRule(Tokens, In, Out, layer.KeptCount, training) == SparseKernelMode.Compressed ? "csr" : "masked-dense";
                Pass(training).Should().Be(expected, $"sparsity {sparsity}, {(training ? "training" : "inference")}");
            }
        }
        // The kind of pass enters: at density 0.875 training runs masked-dense, inference compressed.
        layer.SetMask(MaskInitializers.Random.Create(layer.Weight, 0.125, new SparsityRandom(3)));
        (Pass(training: true), Pass(training: false)).Should().Be(("masked-dense", "csr"));
        // A density change alone applies the rule again (no KernelMode set in between): 0.9 trains masked-dense, 0.25 compressed.
        layer.SetMask(MaskInitializers.Random.Create(layer.Weight, 0.1, new SparsityRandom(4)));
        Pass(training: true).Should().Be("masked-dense");
        layer.SetMask(MaskInitializers.Random.Create(layer.Weight, 0.75, new SparsityRandom(5)));
        layer.Forward(x);
        layer.Kernel.Should().Be("csr");
    }

    [Fact]
    public void SmallLayersKeepTheCompressedKernelsToHigherDensities()
    {
        KernelChoice.CrossoverDensity(1 << 20, 128, 512, training: true).Should().Be(0.85);
        KernelChoice.CrossoverDensity(1 << 20, 512, 2048, training: true).Should().Be(0.75);
        KernelChoice.CrossoverDensity(1 << 20, 128, 512, training: false).Should().Be(0.9);
        KernelChoice.CrossoverDensity(1 << 20, 512, 2048, training: false).Should().Be(0.8);
    }

    [Fact]
    public void TheSparsifierSetsTheConfigsKernelMode()
    {
        var heuristic = Sparsifier.Apply(new TinyLm(), new SparsityConfig(SparsityConfig.Default(0.5).Groups) { KernelMode = SparseKernelMode.Heuristic });
        heuristic.Layers.Should().NotBeEmpty().And.OnlyContain(l => l.Layer.KernelMode == SparseKernelMode.Heuristic);
        Sparsifier.Apply(new TinyLm(), SparsityConfig.Default(0.5)).Layers.Should().OnlyContain(l => l.Layer.KernelMode == SparseKernelMode.Auto);
    }
}
