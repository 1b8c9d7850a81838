using Spdf.Sparsity.Algorithms;
using TorchSharp;
using TorchSharp.Modules;
using static Spdf.Sparsity.TorchSharp.Tests.TorchTestUtil;
using static TorchSharp.torch;

namespace Spdf.Sparsity.TorchSharp.Tests;

/// <summary>The masked path, for any TorchSharp model: dropped weights, gradients and optimizer moments stay exactly 0.</summary>
public class MaskedPathTests
{
    internal static void Train(nn.Module<Tensor, Tensor> model, optim.Optimizer opt, SparsityController? c, int steps, long from = 1, int inF = 12, int outF = 6, Action<long>? afterBackward = null)
    {
        var gen = new Generator(1234);
        for (long step = from; step < from + steps; step++)
        {
            c?.BeginStep(step);
            opt.zero_grad();
            using var x = randn([16, inF], generator: gen);
            using var y = randn([16, outF], generator: gen);
            using var loss = (model.call(x) - y).pow(2).mean();
            loss.backward();
            afterBackward?.Invoke(step);
            c?.BeforeOptimizerStep(step);
            opt.step();
            c?.AfterOptimizerStep(step);
        }
    }

    public static TheoryData<string> Optimizers => new() { "adamw", "adam", "sgd-momentum" };

    private static optim.Optimizer Make(string kind, nn.Module model) => kind switch
    {
        "adamw" => optim.AdamW(model.parameters(), lr: 1e-2, weight_decay: 0.1),
        "adam" => optim.Adam(model.parameters(), lr: 1e-2, weight_decay: 0.1),
        _ => optim.SGD(model.parameters(), learningRate: 1e-2, momentum: 0.9, weight_decay: 0.1),
    };

    [Theory]
    [MemberData(nameof(Optimizers))]
    public void DroppedWeightsGradientsAndMomentsStayExactlyZeroUnderWeightDecay(string kind)
    {
        manual_seed(1);
        var model = new SealedMlp();
        var opt = Make(kind, model);
        var sparse = TorchSparsifier.Apply(model, SparsityConfig.Default(0.75, seed: 5), opt);
        sparse.Layers.Should().HaveCount(2).And.OnlyContain(l => l.Kernel.StartsWith("masked-dense: field"), "fields typed Linear cannot be swapped");
        var c = new SparsityController(sparse);
        // A NaN gradient at a dropped place must not reach the optimizer.
        Train(model, opt, c, 5, afterBackward: step =>
        {
            if (step != 3) return;
            var w = sparse.Layers[0];
            int dropped = Array.IndexOf(F(w.MaskTensor), 0f);
            using var _ = no_grad();
            w.Weight.grad!.view(-1)[dropped] = float.NaN;
        });
        foreach (var l in sparse.Layers)
        {
            var m = F(l.MaskTensor);
            var w = F(l.Weight);
            var g = F(l.Weight.grad!);
            var kept = m.Count(v => v == 1f);
            kept.Should().Be((int)Math.Round(0.25 * m.Length));
            for (int i = 0; i < m.Length; i++)
                if (m[i] == 0) { w[i].Should().Be(0f); g[i].Should().Be(0f); }
            w.Where((v, i) => m[i] == 1 && v != 0).Should().NotBeEmpty("kept weights train");
            var states = OptimizerStates.Tensors(opt, l.Weight).ToList();
            states.Should().NotBeEmpty();
            foreach (var s in states.Where(s => s.shape.SequenceEqual(l.Weight.shape)))
            {
                var sv = F(s);
                for (int i = 0; i < m.Length; i++) if (m[i] == 0) sv[i].Should().Be(0f, $"{kind} state of dropped {l.Name}[{i}]");
                sv.Should().OnlyContain(v => float.IsFinite(v));
            }
        }
    }

    [Theory]
    [InlineData("adamw")]
    [InlineData("adam-amsgrad")]
    public void SecondMomentsRaisedForTheStepChangeNoResultAndAreZeroAfterIt(string kind)
    {
        // The binding writes 1 at dropped places of Adam's / AdamW's second moments before the step (LibTorch's sqrt is slow
        // on exact zeros) and 0 after it. Reference: the same model trained with plain TorchSharp, gradients masked by hand.
        optim.Optimizer Make(nn.Module m) => kind == "adamw"
            ? optim.AdamW(m.parameters(), lr: 1e-2, weight_decay: 0.1)
            : optim.Adam(m.parameters(), lr: 1e-2, weight_decay: 0.1, amsgrad: true);
        manual_seed(1);
        var model = new SealedMlp();
        var opt = Make(model);
        var sparse = TorchSparsifier.Apply(model, SparsityConfig.Default(0.75, seed: 5), opt);
        var reference = new SealedMlp();
        CopyState(model, reference); // masked weights and the mask buffers
        var refOpt = Make(reference);
        var masks = sparse.Layers.Select(l => l.MaskTensor.clone()).ToArray();
        var refWeights = new[] { reference.fc1.weight!, reference.fc2.weight! };
        var c = new SparsityController(sparse);
        Train(model, opt, c, 6);
        Train(reference, refOpt, null, 6, afterBackward: _ =>
        {
            using var __ = no_grad();
            for (int i = 0; i < 2; i++) refWeights[i].grad!.mul_(masks[i]);
        });
        Close(F(model.fc1.weight!), F(reference.fc1.weight!), 0, 0, "fc1.weight");
        Close(F(model.fc2.weight!), F(reference.fc2.weight!), 0, 0, "fc2.weight");
        Close(F(model.fc2.bias!), F(reference.fc2.bias!), 0, 0, "fc2.bias");
        for (int i = 0; i < 2; i++)
        {
            var ours = OptimizerStates.Tensors(opt, sparse.Layers[i].Weight).Select(F).ToList();
            var theirs = OptimizerStates.Tensors(refOpt, refWeights[i]).Select(F).ToList();
            ours.Should().HaveCount(theirs.Count);
            for (int k = 0; k < ours.Count; k++) Close(ours[k], theirs[k], 0, 0, $"{kind} state {k} of layer {i}");
        }

        // One more step, looked at between the hooks: 1 at the dropped places during the step, exactly 0 after it.
        var gen = new Generator(99);
        c.BeginStep(7);
        opt.zero_grad();
        using (var loss = (model.call(randn([16, 12], generator: gen)) - randn([16, 6], generator: gen)).pow(2).mean()) loss.backward();
        c.BeforeOptimizerStep(7);
        foreach (var l in sparse.Layers)
        {
            var mask = F(l.MaskTensor);
            foreach (var v in OptimizerStates.SecondMoments(opt, l.Weight))
                F(v).Where((x, j) => mask[j] == 0).Should().OnlyContain(x => x == 1f, "dropped second moments are raised for the step");
        }
        opt.step();
        c.AfterOptimizerStep(7);
        foreach (var l in sparse.Layers)
        {
            var mask = F(l.MaskTensor);
            foreach (var v in OptimizerStates.SecondMoments(opt, l.Weight))
                F(v).Where((x, j) => mask[j] == 0).Should().OnlyContain(x => x == 0f, $"{kind} second moment of dropped {l.Name} after the step");
        }
    }

    [Fact]
    public void MasksAreSavedWithTheStateDictUnderTheSpdfTensorsNames()
    {
        manual_seed(2);
        var model = new SealedMlp();
        var sparse = TorchSparsifier.Apply(model, SparsityConfig.Default(0.5, seed: 1));
        var sd = model.state_dict();
        sd.Keys.Should().Contain(["fc1.weight", "fc1.bias", "fc1.weight_mask", "fc2.weight_mask"]);
        // Loading another mask through the state dict is seen once the handle is told.
        var other = new SealedMlp();
        var otherSparse = TorchSparsifier.Apply(other, SparsityConfig.Default(0.5, seed: 9));
        model.load_state_dict(other.state_dict());
        sparse.OnStateLoaded();
        F(sparse.Layers[0].MaskTensor).Should().Equal(F(otherSparse.Layers[0].MaskTensor));
        sparse.Layers[0].Mask.Values.Should().Equal(F(otherSparse.Layers[0].MaskTensor));
    }

    [Fact]
    public void TheSameConfigDrawsTheSameMasksInBothEngines()
    {
        manual_seed(3);
        var torchModel = new SealedMlp();
        var tensorsModel = new TensorsMlp();
        var a = TorchSparsifier.Apply(torchModel, SparsityConfig.Default(0.75, seed: 11));
        var b = Sparsifier.Apply(tensorsModel, SparsityConfig.Default(0.75, seed: 11));
        for (int i = 0; i < 2; i++) F(a.Layers[i].MaskTensor).Should().Equal(b.Layers[i].Layer.Mask.Values);
    }

    [Fact]
    public void ReportSaysSparsityPerLayerAndWhyALayerKeepsTheMaskedPath()
    {
        manual_seed(4);
        var model = new SealedMlp();
        var sparse = TorchSparsifier.Apply(model, new SparsityConfig([new SparsityGroup("fc1.weight", 0.75), new SparsityGroup("fc2.weight", 0.5)]));
        var report = sparse.Report();
        report.Rows.Select(r => r.Name).Should().Equal("fc1", "fc2");
        report.Rows[0].Sparsity.Should().BeApproximately(0.75, 1e-9);
        report.Rows[1].Sparsity.Should().BeApproximately(0.5, 1e-9);
        report.ModelParameters.Should().Be(12 * 40 + 40 + 40 * 6 + 6);
        report.ToString().Should().Contain("masked-dense: field 'fc1' of SealedMlp is typed Linear");
    }

    [Fact]
    public void GradualMagnitudePruningAndRigLRunThroughTheController()
    {
        manual_seed(5);
        var model = new SealedMlp();
        var opt = optim.AdamW(model.parameters(), lr: 1e-2);
        var gmp = GradualMagnitudePruning.Cubic(0.0, 0.8, startStep: 2, endStep: 6, every: 2);
        var sparse = TorchSparsifier.Apply(model, new SparsityConfig([new SparsityGroup("*weight", 0.0)]) { Algorithm = gmp }, opt);
        Train(model, opt, new SparsityController(sparse), 8);
        sparse.Report().LayerSparsity.Should().BeApproximately(0.8, 0.01);
        foreach (var l in sparse.Layers)
        {
            var m = F(l.MaskTensor); var w = F(l.Weight);
            for (int i = 0; i < m.Length; i++) if (m[i] == 0) w[i].Should().Be(0f);
        }

        manual_seed(6);
        var model2 = new SealedMlp();
        var opt2 = optim.AdamW(model2.parameters(), lr: 1e-2);
        var rigl = new RigL(0.3, every: 2, endStep: 10);
        var sparse2 = TorchSparsifier.Apply(model2, new SparsityConfig([new SparsityGroup("*weight", 0.75)], seed: 2) { Algorithm = rigl }, opt2);
        var before = sparse2.Layers.Select(l => F(l.MaskTensor)).ToList();
        var kept = sparse2.Layers.Select(l => l.KeptCount).ToList();
        Train(model2, opt2, new SparsityController(sparse2), 4);
        sparse2.Layers.Select(l => l.KeptCount).Should().Equal(kept);
        sparse2.Layers.Select(l => F(l.MaskTensor)).Zip(before).Should().Contain(p => !p.First.SequenceEqual(p.Second), "RigL moved a mask");
        foreach (var l in sparse2.Layers)
        {
            var m = F(l.MaskTensor); var w = F(l.Weight);
            for (int i = 0; i < m.Length; i++) if (m[i] == 0) w[i].Should().Be(0f);
            foreach (var s in OptimizerStates.Tensors(opt2, l.Weight).Where(s => s.shape.SequenceEqual(l.Weight.shape)))
            {
                var sv = F(s);
                for (int i = 0; i < m.Length; i++) if (m[i] == 0) sv[i].Should().Be(0f, "a grown weight starts with zero moments, a dropped one keeps none");
            }
        }
    }

    [Fact]
    public void SparseEvolutionaryTrainingKeepsCountsAndTheInvariants()
    {
        manual_seed(9);
        var model = new SwappableNet();
        var opt = optim.SGD(model.parameters(), learningRate: 1e-2, momentum: 0.9, weight_decay: 0.1);
        var set = new SparseEvolutionaryTraining(Schedules.SparsitySchedules.Constant(0.3), new Schedules.UpdateSchedule(2, 2, 8), seed: 4);
        var sparse = TorchSparsifier.Apply(model, new SparsityConfig([new SparsityGroup("*weight", 0.8)], seed: 1) { Algorithm = set }, opt);
        foreach (var l in sparse.Layers) if (l.Layer is { } layer) layer.KernelMode = SparseKernelMode.Compressed;
        var kept = sparse.Layers.Select(l => l.KeptCount).ToList();
        var before = sparse.Layers.Select(l => F(l.MaskTensor)).ToList();
        Train(model, opt, new SparsityController(sparse), 6);
        sparse.Layers.Select(l => l.KeptCount).Should().Equal(kept);
        sparse.Layers.Select(l => F(l.MaskTensor)).Zip(before).Should().OnlyContain(p => !p.First.SequenceEqual(p.Second), "SET moved every mask");
        foreach (var l in sparse.Layers)
        {
            var m = F(l.MaskTensor); var w = F(l.Weight);
            w.Where((v, i) => m[i] == 0 && v != 0).Should().BeEmpty($"{l.Name}: dropped weights are 0");
            foreach (var st in OptimizerStates.Tensors(opt, l.Weight).Where(st => st.shape.SequenceEqual(l.Weight.shape)))
                F(st).Where((v, i) => m[i] == 0 && v != 0).Should().BeEmpty($"{l.Name}: dropped momentum is 0");
        }
    }

    [Fact]
    public void PruningATrainedModelKeepsTheLargestWeightsAndZeroesTheirMomentsElsewhere()
    {
        manual_seed(8);
        var model = new SealedMlp();
        var opt = optim.AdamW(model.parameters(), lr: 1e-2, weight_decay: 0.1);
        Train(model, opt, null, 3); // dense training: every moment is non-zero
        var before = F(model.fc1.weight!);
        var sparse = TorchSparsifier.Apply(model, new SparsityConfig([new SparsityGroup("*weight", 0.6, Masks.MaskInitializers.Magnitude)]), opt);
        var m = F(sparse.Layers[0].MaskTensor);
        float threshold = before.Where((_, i) => m[i] == 1).Min(MathF.Abs);
        before.Where((v, i) => m[i] == 0).Should().OnlyContain(v => MathF.Abs(v) <= threshold, "magnitude pruning keeps the largest weights");
        foreach (var s in OptimizerStates.Tensors(opt, sparse.Layers[0].Weight).Where(s => s.shape.SequenceEqual(sparse.Layers[0].Weight.shape)))
        {
            var sv = F(s);
            sv.Where((v, i) => m[i] == 0 && v != 0).Should().BeEmpty("pruned weights keep no moments");
            sv.Where((v, i) => m[i] == 1 && v != 0).Should().NotBeEmpty("kept weights keep theirs");
        }
        Train(model, opt, new SparsityController(sparse), 3, from: 4);
        F(model.fc1.weight!).Where((v, i) => m[i] == 0 && v != 0).Should().BeEmpty();
    }

    [Fact]
    public void BadInputIsNamed()
    {
        manual_seed(7);
        FluentActions.Invoking(() => TorchSparsifier.Apply(new SealedMlp(), new SparsityConfig([new SparsityGroup("fc9.weight", 0.5)])))
            .Should().Throw<ArgumentException>().WithMessage("*'fc9.weight' match no Linear weight*fc1.weight, fc2.weight*");
        FluentActions.Invoking(() => new SparsityGroup("fc1.weight", 1.0)).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*Sparsity 1 is outside [0, 1)*");
        var doubleModel = new SealedMlp();
        doubleModel.to(ScalarType.Float64);
        FluentActions.Invoking(() => TorchSparsifier.Apply(doubleModel, SparsityConfig.Default(0.5)))
            .Should().Throw<ArgumentException>().WithMessage("*layer 'fc1'*dtype Float64*float32*");
        var metaModel = new SealedMlp();
        metaModel.to(new Device(DeviceType.META)); // stands in for a GPU, which this machine lacks
        FluentActions.Invoking(() => TorchSparsifier.Apply(metaModel, SparsityConfig.Default(0.5)))
            .Should().Throw<ArgumentException>().WithMessage("*layer 'fc1'*on device meta*CPU*");
        var twice = new SealedMlp();
        TorchSparsifier.Apply(twice, SparsityConfig.Default(0.5));
        FluentActions.Invoking(() => TorchSparsifier.Apply(twice, SparsityConfig.Default(0.5)))
            .Should().Throw<ArgumentException>().WithMessage("*'fc1' is already sparse*");
        FluentActions.Invoking(() => TorchSparsifier.Apply(new SealedMlp(), new SparsityConfig([new SparsityGroup("*weight", 0.5)]) { Storage = SparseWeightStorage.Compressed }))
            .Should().Throw<ArgumentException>().WithMessage("*Compressed*not available for TorchSharp*");
    }
}

/// <summary>The same MLP in Spdf.Tensors.</summary>
internal sealed class TensorsMlp : Spdf.Tensors.Nn.Module<Spdf.Tensors.Tensor, Spdf.Tensors.Tensor>
{
    public Spdf.Tensors.Nn.Linear fc1 = new(12, 40), fc2 = new(40, 6);
    public TensorsMlp() => RegisterComponents();
    public override Spdf.Tensors.Tensor Forward(Spdf.Tensors.Tensor x) => fc2.Forward(fc1.Forward(x).Gelu());
}
