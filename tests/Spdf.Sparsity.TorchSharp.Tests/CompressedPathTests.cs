using TorchSharp;
using TorchSharp.Modules;
using static Spdf.Sparsity.TorchSharp.Tests.TorchTestUtil;
using static TorchSharp.torch;

namespace Spdf.Sparsity.TorchSharp.Tests;

/// <summary>The compressed path: swapped layers equal the masked-dense reference, and Densify puts the user's layers back.</summary>
public class CompressedPathTests
{
    private static (SwappableNet Model, TorchSparseModel Sparse) Make(double sparsity, bool compressed, ulong seed = 3)
    {
        manual_seed(10);
        var model = new SwappableNet();
        return (model, TorchSparsifier.Apply(model, SparsityConfig.Default(sparsity, seed), compressedKernels: compressed));
    }

    [Fact]
    public void SwapsFieldsSequentialAndModuleListButNotAFieldTypedLinear()
    {
        var (model, sparse) = Make(0.75, compressed: true);
        sparse.Layers.Select(l => l.Name).Should().Equal("fc1", "seq.0", "blocks.0", "head");
        model.Fc1.Should().BeOfType<TorchSparseLinear>();
        model.seq.named_children().Single(c => c.name == "0").module.Should().BeOfType<TorchSparseLinear>();
        model.blocks[0].Should().BeOfType<TorchSparseLinear>();
        model.head.Should().BeOfType<Linear>();
        sparse.Layers.Single(l => l.Name == "head").Kernel.Should().Be("masked-dense: field 'head' of SwappableNet is typed Linear");
        model.state_dict().Keys.Should().Contain(["fc1.weight", "fc1.bias", "fc1.weight_mask", "seq.0.weight", "seq.0.weight_mask", "blocks.0.weight", "blocks.0.weight_mask", "head.weight_mask"]);
        model.state_dict().Keys.Should().NotContain(k => k.Contains("Original"));
        foreach (var l in sparse.Layers) if (l.Layer is { } layer) layer.KernelMode = SparseKernelMode.Compressed;
        sparse.Report().ToString().Should().Contain("csr");
    }

    /// <summary>A config's Heuristic mode reaches the swapped layers, which take the rule's kernel on their first pass
    /// (no timing): at 111 tokens a training pass runs compressed up to density 0.97, so masked-dense only when dense.</summary>
    [Theory]
    [InlineData(0.0, "masked-dense")]
    [InlineData(0.75, "csr")]
    public void AHeuristicConfigGivesTheRulesKernel(double sparsity, string expected)
    {
        manual_seed(10);
        var model = new SwappableNet();
        var sparse = TorchSparsifier.Apply(model, new SparsityConfig(SparsityConfig.Default(sparsity, 3).Groups, 3) { KernelMode = SparseKernelMode.Heuristic }, compressedKernels: true);
        var swapped = sparse.Layers.Where(l => l.Layer is not null).ToList();
        swapped.Should().NotBeEmpty().And.OnlyContain(l => l.Layer!.KernelMode == SparseKernelMode.Heuristic && l.Kernel == "auto");
        using var x = randn(3, 37, 12).requires_grad_(true);
        using var y = model.call(x);
        foreach (var l in swapped)
        {
            var rule = Kernels.KernelChoice.ByRule(111, l.Layer!.InFeatures, l.Layer.OutFeatures, l.KeptCount, training: true);
            l.Kernel.Should().Be(rule == SparseKernelMode.Compressed ? "csr" : "masked-dense").And.Be(expected, l.Name);
        }
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(0.5)]
    [InlineData(0.75)]
    [InlineData(0.9)]
    [InlineData(0.99)]
    public void CompressedKernelsEqualTheMaskedDenseReference(double sparsity)
    {
        var (a, sa) = Make(sparsity, compressed: true);
        var (b, sb) = Make(sparsity, compressed: false);
        foreach (var l in sa.Layers) if (l.Layer is { } layer) layer.KernelMode = SparseKernelMode.Compressed;
        CopyState(a, b);
        var gen = new Generator(5);
        // [3, 37, 12]: token count not a multiple of the kernels' blocks; and a single token (the decode path).
        foreach (var shape in new long[][] { [3, 37, 12], [1, 12] })
        {
            using var xa = randn(shape, generator: gen).requires_grad_(true);
            using var xb = xa.detach().clone().requires_grad_(true);
            using var ya = a.call(xa);
            using var yb = b.call(xb);
            Close(F(ya), F(yb), 1e-5f);
            using var w = randn(ya.shape, generator: gen);
            (ya * w).sum().backward();
            (yb * w).sum().backward();
            foreach (var l in sa.Layers.Where(l => l.Layer is not null && sparsity > 0))
            {
                // Before any masking, only the compressed kernels give exact zeros at dropped places: the model ran them.
                var m = F(l.MaskTensor);
                var g = F(l.Weight.grad!);
                g.Where((v, i) => m[i] == 0 && v != 0).Should().BeEmpty($"{l.Name} ran the compressed kernels");
            }
            sa.BeforeOptimizerStep(); // the masked path's gradients are masked here, as the controller does
            sb.BeforeOptimizerStep();
            Close(F(xa.grad!), F(xb.grad!), 1e-5f);
            var pa = a.named_parameters().ToDictionary(p => p.name, p => p.parameter);
            foreach (var (name, p) in b.named_parameters())
            {
                Close(F(pa[name].grad!), F(p.grad!), 1e-5f);
                pa[name].grad!.zero_(); p.grad!.zero_();
            }
        }
        foreach (var l in sa.Layers.Where(l => l.Layer is not null))
        {
            var m = F(l.MaskTensor);
            l.Layer!.KernelMode = SparseKernelMode.Compressed;
            using var x = randn([5, l.Cols], generator: gen);
            using var y = l.Layer.call(x);
            y.sum().backward();
            var g = F(l.Weight.grad!);
            for (int i = 0; i < m.Length; i++) if (m[i] == 0) g[i].Should().Be(0f, "the compressed weight gradient exists only at kept places");
        }
    }

    [Fact]
    public void GradientsAccumulateOverBackwardPassesAsAutogradDoes()
    {
        var (a, sa) = Make(0.75, compressed: true);
        var (b, sb) = Make(0.75, compressed: false);
        foreach (var l in sa.Layers) if (l.Layer is { } layer) layer.KernelMode = SparseKernelMode.Compressed;
        CopyState(a, b);
        var gen = new Generator(8);
        for (int pass = 0; pass < 3; pass++) // the first pass creates the gradients, the next ones accumulate into them
        {
            using var x = randn([9, 12], generator: gen);
            using var w = randn([9, 6], generator: gen);
            (a.call(x) * w).sum().backward();
            (b.call(x) * w).sum().backward();
        }
        sa.BeforeOptimizerStep();
        sb.BeforeOptimizerStep();
        var pa = a.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in b.named_parameters()) Close(F(pa[name].grad!), F(p.grad!), 1e-5f);
    }

    [Fact]
    public void DensifyPutsTheUsersLayersBackAndDroppedWeightsLearn()
    {
        var (model, sparse) = Make(0.75, compressed: true);
        var opt = optim.AdamW(model.parameters(), lr: 1e-2, weight_decay: 0.1);
        sparse.Optimizer = opt;
        var c = new SparsityController(sparse);
        MaskedPathTests.Train(model, opt, c, 3);
        var zeroFc1 = F(sparse.Layers[0].Weight).Count(v => v == 0);
        zeroFc1.Should().BeGreaterThanOrEqualTo((int)(0.75 * 12 * 40));
        var fc1 = sparse.Layers[0].Weight;
        sparse.Densify(OptimizerStateOnDensify.Keep, step: 3).Should().Be(4);
        sparse.Phase.Should().Be(SparsityPhase.DenseFinetune);
        sparse.Transitions.Should().Equal("densify(keep-optimizer-state) at step 3");
        model.Fc1.Should().BeOfType<Linear>();
        model.blocks[0].Should().BeOfType<Linear>();
        model.state_dict().Keys.Should().NotContain(k => k.EndsWith("weight_mask"));
        MaskedPathTests.Train(model, opt, c, 2, from: 4);
        F(fc1).Count(v => v == 0).Should().BeLessThan(zeroFc1 / 10, "dropped weights learn again after Densify");
        FluentActions.Invoking(() => sparse.Densify()).Should().Throw<InvalidOperationException>().WithMessage("*already dense*");
    }

    [Fact]
    public void DensifyWithResetRestartsBiasCorrectionLikeAFreshOptimizer()
    {
        // N sparse steps, Densify(reset), M dense steps == the same weights after N steps, then a fresh AdamW for M steps.
        var (a, sa) = Make(0.75, compressed: true);
        var optA = optim.AdamW(a.parameters(), lr: 1e-2, beta1: 0.9, beta2: 0.95, weight_decay: 0.1);
        sa.Optimizer = optA;
        var c = new SparsityController(sa);
        MaskedPathTests.Train(a, optA, c, 4);
        sa.Densify(OptimizerStateOnDensify.Reset, step: 4);
        manual_seed(10);
        var b = new SwappableNet();
        CopyState(a, b);
        // Reset only the densified layers' state: the other parameters (none here outside the sparse layers' biases? the
        // head is sparse too) keep theirs; every parameter of this net belongs to a sparse layer, so all restart.
        var optB = optim.AdamW(b.parameters(), lr: 1e-2, beta1: 0.9, beta2: 0.95, weight_decay: 0.1);
        MaskedPathTests.Train(a, optA, null, 3, from: 5);
        MaskedPathTests.Train(b, optB, null, 3, from: 5);
        var pb = b.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in a.named_parameters()) Close(F(p), F(pb[name]), 1e-6f);
    }

    [Fact]
    public void AWrongInputIsNamed()
    {
        var (model, sparse) = Make(0.75, compressed: true);
        var layer = sparse.Layers[0].Layer!;
        FluentActions.Invoking(() => layer.call(ones([2, 5]))).Should().Throw<ArgumentException>().WithMessage("*last dimension 5*input size 12*");
        FluentActions.Invoking(() => layer.call(ones([2, 12], ScalarType.Float64))).Should().Throw<ArgumentException>().WithMessage("*'fc1'*dtype Float64*float32*");
        // Another device (LibTorch's "meta" device stands in for a GPU, which this machine lacks).
        using var meta = empty([2, 12], ScalarType.Float32, device: new Device(DeviceType.META));
        FluentActions.Invoking(() => layer.call(meta)).Should().Throw<ArgumentException>().WithMessage("*'fc1'*on device meta*CPU*");
        // A non-contiguous input is read through a contiguous copy.
        layer.KernelMode = SparseKernelMode.Compressed;
        using var x = randn([12, 4]).t();
        Close(F(layer.call(x)), F(nn.functional.linear(x.contiguous(), sparse.Layers[0].Weight, sparse.Layers[0].Bias)), 1e-5f);
    }
}
