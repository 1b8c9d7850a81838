using Spdf.Sparsity.Distributed;
using Spdf.Tests.Shared;
using TorchSharp;
using static Spdf.Sparsity.TorchSharp.Tests.TorchTestUtil;
using static TorchSharp.torch;

namespace Spdf.Sparsity.TorchSharp.Tests;

/// <summary>
/// Data-parallel training of a TorchSharp model (<see cref="TorchDataParallel"/>) over a group of two ranks on threads:
/// after broadcasting rank 0's weights, averaging each step's gradients (kept values only for the 75%-sparse weights)
/// gives the training of one model on both ranks' batches together, on every rank.
/// </summary>
public class DataParallelTests
{
    private static readonly SparsityConfig Config = SparsityConfig.Default(0.75, seed: 9);

    private static void Train(SwappableNet model, TorchSparseModel sparse, SparsityController controller, GradientReducer? reducer,
        optim.Optimizer opt, Func<int, (Tensor X, Tensor Y)> batch, int steps)
    {
        for (int step = 1; step <= steps; step++)
        {
            controller.BeginStep(step);
            opt.zero_grad();
            var (x, y) = batch(step);
            using (var loss = (model.call(x) - y).pow(2).mean()) loss.backward();
            controller.BeforeOptimizerStep(step);
            reducer?.AverageGradients();
            opt.step();
            controller.AfterOptimizerStep(step);
        }
        _ = sparse;
    }

    [Fact]
    public void TwoRanksTrainAsOneModelOnBothBatches()
    {
        var models = new[] { new SwappableNet(), new SwappableNet() }; // different initial weights: rank 0's are broadcast
        var reference = new SwappableNet();
        using (no_grad())
            foreach (var ((_, p), (_, q)) in reference.named_parameters().Zip(models[0].named_parameters())) p.copy_(q);
        var data = new Generator(77);
        var xs = Enumerable.Range(0, 6).Select(_ => randn([16, 12], generator: data)).ToArray(); // [step-1][rank]: steps 1..3, ranks 0..1
        var ys = Enumerable.Range(0, 6).Select(_ => randn([16, 6], generator: data)).ToArray();
        var traffic = new long[2][];
        ThreadGroup.OnRanks(2, world =>
        {
            var model = models[world.Rank];
            var opt = optim.AdamW(model.parameters(), lr: 1e-2, weight_decay: 0.1);
            var sparse = TorchSparsifier.Apply(model, Config, opt);
            TorchDataParallel.BroadcastParameters(model, world);
            var reducer = TorchDataParallel.CreateReducer(model, sparse, world, bucketBytes: 4096);
            Train(model, sparse, new SparsityController(sparse) { Communicator = world }, reducer, opt, s => (xs[(s - 1) * 2 + world.Rank], ys[(s - 1) * 2 + world.Rank]), 3);
            TorchDataParallel.VerifyReplicas(model, world);
            traffic[world.Rank] = [reducer.SparseLayerBytesPerStep, reducer.SparseLayerDenseBytesPerStep, reducer.CollectivesLastStep];
        });
        var refOpt = optim.AdamW(reference.parameters(), lr: 1e-2, weight_decay: 0.1);
        var refSparse = TorchSparsifier.Apply(reference, Config, refOpt);
        Train(reference, refSparse, new SparsityController(refSparse), null, refOpt, s => (cat([xs[(s - 1) * 2], xs[(s - 1) * 2 + 1]]), cat([ys[(s - 1) * 2], ys[(s - 1) * 2 + 1]])), 3);
        foreach (var ((name, p), (_, q)) in reference.named_parameters().Zip(models[1].named_parameters()))
        {
            Close(F(q), F(p), 1e-4, 1e-6, $"rank 1's {name}");
        }
        foreach (var ((name, p), (_, q)) in models[0].named_parameters().Zip(models[1].named_parameters()))
            F(q).Should().Equal(F(p), $"every rank holds the same {name}");
        traffic[0][0].Should().Be(traffic[0][1] / 4, "the 75%-sparse weights send their kept quarter");
        traffic[0][2].Should().BeGreaterThan(1, "a 4 KiB bucket splits the gradients");
    }

    [Fact]
    public void AParameterWithoutAGradientIsNamed()
    {
        var model = new SwappableNet();
        var reducer = TorchDataParallel.CreateReducer(model, null, SingleProcess.Instance);
        ThreadGroup.OnRanks(2, world =>
        {
            var m = new SwappableNet();
            var r = TorchDataParallel.CreateReducer(m, null, world);
            r.Invoking(x => x.AverageGradients()).Should().Throw<InvalidOperationException>().WithMessage("*'fc1.weight' has no gradient*");
        });
        reducer.BytesPerStep.Should().Be(0);
    }
}
