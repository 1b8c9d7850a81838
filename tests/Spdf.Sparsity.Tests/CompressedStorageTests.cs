using Spdf.Sparsity.Masks;
using Spdf.Tensors;
using Spdf.Tensors.Nn;
using Spdf.Tensors.Optim;

namespace Spdf.Sparsity.Tests;

/// <summary>
/// A layer that keeps only its kept weights (<see cref="SparseWeightStorage.Compressed"/>) must compute, train, save and
/// densify exactly as the dense-storage layer with the same weight and mask (the masked-dense reference).
/// </summary>
public class CompressedStorageTests
{
    private static (SparseLinear Dense, SparseLinear Compressed) Pair(int inF, int outF, double sparsity, bool bias, ulong seed)
    {
        var g = new Generator(seed);
        var linear = new Linear(inF, outF, bias, g);
        var mask = MaskInitializers.Random.Create(linear.Weight, sparsity, new SparsityRandom(g.NextUInt64()));
        var compressed = SparseLinear.FromLinear(linear, new SparsityMask((float[])mask.Values.Clone(), mask.Rows, mask.Cols), SparseWeightStorage.Compressed);
        var dense = SparseLinear.FromLinear(Linear.FromParameters(new Parameter(Copy(linear.Weight)), bias ? new Parameter(Copy(linear.Bias!)) : null), mask);
        return (dense, compressed);
    }

    private static SparsityConfig Config(double sparsity, SparseWeightStorage storage, ulong seed = 0) =>
        new(SparsityConfig.Default(sparsity, seed).Groups, seed) { Storage = storage };

    private static Tensor Copy(Tensor t) => new(t.ToArray(), t.Shape);

    private static void Same(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected, string what, float tol = 2e-4f)
    {
        actual.Length.Should().Be(expected.Length, what);
        for (int i = 0; i < actual.Length; i++)
            actual[i].Should().BeApproximately(expected[i], tol * (1 + Math.Abs(expected[i])), $"{what}[{i}]");
    }

    private static float[] Gathered(float[] dense, int[] positions) => positions.Select(p => dense[p]).ToArray();

    [Theory]
    [InlineData(1, 37, 19, 0.75, true, SparseKernelMode.Compressed)]      // decode (SpMV)
    [InlineData(70, 37, 19, 0.75, true, SparseKernelMode.Compressed)]
    [InlineData(130, 200, 33, 0.9, false, SparseKernelMode.Compressed)]   // two panels
    [InlineData(70, 40, 300, 0.75, true, SparseKernelMode.Compressed)]    // Wᵀ in three panels (its padded values gathered from W's)
    [InlineData(65, 24, 40, 0.5, true, SparseKernelMode.MaskedDense)]     // the reference kernel over compressed storage
    [InlineData(9, 16, 16, 0.0, true, SparseKernelMode.Compressed)]
    public void ForwardAndGradientsMatchDenseStorage(int tokens, int inF, int outF, double sparsity, bool bias, SparseKernelMode mode)
    {
        var (dense, compressed) = Pair(inF, outF, sparsity, bias, 3);
        dense.KernelMode = SparseKernelMode.MaskedDense;
        compressed.KernelMode = mode;
        compressed.Storage.Should().Be(SparseWeightStorage.Compressed);
        compressed.WeightValues!.Shape.Should().Be(new Shape(compressed.KeptCount));
        compressed.Mask.Values.ToArray().Should().Equal(dense.Mask.Values.ToArray(), "the packed mask unpacks to the same mask");
        var g = new Generator(4);
        var x = Tensor.Randn(new Shape(tokens, inF), g);
        x.RequiresGrad = true;
        var dy = Tensor.Randn(new Shape(tokens, outF), g);

        var yd = dense.Forward(x); yd.Backward(dy);
        var dxDense = x.Grad!.ToArray(); x.Grad = null;
        var yc = compressed.Forward(x); yc.Backward(dy);

        Same(yc.AsReadOnlySpan(), yd.AsReadOnlySpan(), "y");
        Same(x.Grad!.AsReadOnlySpan(), dxDense, "dx");
        var positions = compressed.KeptPositions();
        Same(compressed.WeightValues.Grad!.AsReadOnlySpan(), Gathered(dense.Weight.Grad!.ToArray(), positions), "dW at kept");
        if (bias) Same(compressed.Bias!.Grad!.AsReadOnlySpan(), dense.Bias!.Grad!.AsReadOnlySpan(), "db");
        Same(compressed.ToDenseWeight().AsReadOnlySpan(), dense.Weight.AsReadOnlySpan(), "dense weight", 0);
    }

    [Fact]
    public void AdamWTrainsBothStoragesAlike()
    {
        var (dense, compressed) = Pair(48, 30, 0.75, true, 5);
        dense.KernelMode = compressed.KernelMode = SparseKernelMode.Compressed;
        var optD = new AdamW(dense.Parameters(), 0.01, weightDecay: 0.1);
        var optC = new AdamW(compressed.Parameters(), 0.01, weightDecay: 0.1);
        var x = Tensor.Randn(new Shape(66, 48), new Generator(6));
        for (int step = 0; step < 4; step++)
        {
            foreach (var (layer, opt) in new[] { (dense, (Optimizer)optD), (compressed, optC) })
            {
                opt.ZeroGrad(setToNone: false);
                layer.Forward(x).Pow(2f).Sum().Backward();
                opt.Step();
            }
        }
        Same(compressed.ToDenseWeight().AsReadOnlySpan(), dense.Weight.AsReadOnlySpan(), "weight after 4 steps", 1e-5f);
        Same(compressed.Forward(x).AsReadOnlySpan(), dense.Forward(x).AsReadOnlySpan(), "y after 4 steps", 1e-5f); // Wᵀ refreshed too
        optC.State(compressed.WeightValues!)["exp_avg"].Numel.Should().Be(compressed.KeptCount, "moments exist only for kept weights");
    }

    [Fact]
    public void MemoryFallsWithDensity()
    {
        var (dense, compressed) = Pair(256, 128, 0.75, false, 7);
        compressed.ParameterCount().Should().Be(compressed.KeptCount);
        dense.ParameterCount().Should().Be(256 * 128);
        compressed.HasDenseWeight.Should().BeFalse();
        var act = () => compressed.Weight;
        act.Should().Throw<InvalidOperationException>().WithMessage("*keeps no dense [128, 256] weight*");
    }

    [Fact]
    public void DensifyMovesTheOptimizerStateToTheKeptPositions()
    {
        var initial = new TinyBlock().StateDict(); // TinyBlock draws from the global generator: both runs start from this
        Module MakeModel(SparseWeightStorage storage, out SparsifiedModel handle)
        {
            var model = new TinyBlock();
            model.LoadStateDict(initial);
            handle = Sparsifier.Apply(model, Config(0.75, storage, seed: 2));
            return model;
        }
        var runs = new[] { SparseWeightStorage.Dense, SparseWeightStorage.Compressed }.Select(storage =>
        {
            var model = MakeModel(storage, out var handle);
            var opt = new AdamW(model.Parameters(), 0.02, weightDecay: 0.05);
            var x = Tensor.Randn(new Shape(20, 8), new Generator(9));
            void Step()
            {
                opt.ZeroGrad();
                ((TinyBlock)model).Forward(x).Pow(2f).Mean().Backward();
                opt.Step();
            }
            Step(); Step();
            var values = handle.Layers[0].Layer.WeightValues;
            Transitions.Densify(handle, opt);
            if (values is not null) opt.Parameters.Should().NotContain(values);
            Step(); Step();
            return model.StateDict().ToDictionary(kv => kv.Key, kv => kv.Value.ToArray());
        }).ToList();
        runs[1].Keys.Should().BeEquivalentTo(runs[0].Keys, "after Densify both are plain dense models");
        foreach (var kv in runs[0]) Same(runs[1][kv.Key], kv.Value, kv.Key, 1e-5f);
    }

    [Fact]
    public void StateDictRoundTripsThroughTheLoadedMask()
    {
        var (_, a) = Pair(40, 24, 0.75, true, 11);
        var (_, b) = Pair(40, 24, 0.75, true, 12); // another mask with the same kept count
        b.Mask.Values.ToArray().Should().NotEqual(a.Mask.Values.ToArray());
        var values = b.WeightValues!;
        b.LoadStateDict(a.StateDict());
        b.WeightValues.Should().BeSameAs(values, "optimizers keep training the same parameter");
        var x = Tensor.Randn(new Shape(70, 40), new Generator(1));
        b.KernelMode = a.KernelMode = SparseKernelMode.Compressed;
        Same(b.Forward(x).AsReadOnlySpan(), a.Forward(x).AsReadOnlySpan(), "y", 0);
        b.KernelMode = SparseKernelMode.MaskedDense;
        Same(b.Forward(x).AsReadOnlySpan(), a.Forward(x).AsReadOnlySpan(), "y (masked-dense)", 1e-5f);
        a.StateDict().Keys.Should().BeEquivalentTo("weight_values", "weight_mask_bits", "bias");
    }

    [Fact]
    public void CorruptMaskBitsAreRefused()
    {
        var (_, a) = Pair(20, 10, 0.5, false, 2);
        var sd = a.StateDict().ToDictionary(kv => kv.Key, kv => new Tensor(kv.Value.ToArray(), kv.Value.Shape));
        var bits = sd["weight_mask_bits"].AsSpan();
        bits[0] = 1.5f;
        var (_, b) = Pair(20, 10, 0.5, false, 3);
        ((Action)(() => b.LoadStateDict(sd))).Should().Throw<ArgumentException>().WithMessage("*weight_mask_bits[0] is 1.5*whole number*");
        bits[0] = 0; // now one kept weight fewer than weight_values holds
        ((Action)(() => b.LoadStateDict(sd))).Should().Throw<ArgumentException>().WithMessage("*mask keeps*weight_values has*");
    }

    [Fact]
    public void MaskChangesAreRefusedWithAReason()
    {
        var (_, c) = Pair(16, 8, 0.5, true, 1);
        var set = () => c.SetMask(c.Mask);
        set.Should().Throw<NotSupportedException>().WithMessage("*compressed storage*SparseWeightStorage.Dense*");
        var config = new SparsityConfig(SparsityConfig.Default(0.5).Groups)
        {
            Storage = SparseWeightStorage.Compressed,
            Algorithm = new Algorithms.SparseEvolutionaryTraining(Schedules.SparsitySchedules.Constant(0.2), new Schedules.UpdateSchedule(1, 1, 10)),
        };
        var apply = () => Sparsifier.Apply(new TinyBlock(), config);
        apply.Should().Throw<ArgumentException>().WithMessage("*'set'*Compressed*Dense*");
    }

    [Fact]
    public void ReplaceParameterChecksItsArguments()
    {
        var p = new Parameter(new Shape(3));
        var opt = new AdamW([p], 0.1);
        var other = new Parameter(new Shape(2, 2));
        ((Action)(() => opt.ReplaceParameter(p, other))).Should().Throw<ArgumentException>().WithMessage("*shape [3]*[2, 2]*positions*");
        ((Action)(() => opt.ReplaceParameter(p, other, [0, 1]))).Should().Throw<ArgumentException>().WithMessage("*2 positions*3 elements*");
        ((Action)(() => opt.ReplaceParameter(p, other, [0, 1, 4]))).Should().Throw<ArgumentException>().WithMessage("*Position 4*4 elements*");
        ((Action)(() => opt.ReplaceParameter(other, p))).Should().Throw<ArgumentException>().WithMessage("*already optimized*");
        opt.ReplaceParameter(p, other, [0, 1, 3]);
        opt.Parameters.Should().ContainSingle().Which.Should().BeSameAs(other);
    }

    [Fact]
    public void ReportCountsCompressedWeightsAsDense()
    {
        var model = new TinyBlock();
        long dense = model.ParameterCount();
        var handle = Sparsifier.Apply(model, Config(0.75, SparseWeightStorage.Compressed));
        model.ParameterCount().Should().BeLessThan(dense);
        var report = handle.Report();
        report.ModelParameters.Should().Be(dense);
        report.Rows.Should().OnlyContain(r => r.Storage == SparseWeightStorage.Compressed);
        report.ToString().Should().Contain("compressed storage");
    }
}
