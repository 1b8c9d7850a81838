using Spdf.Gpt.Data;
using Spdf.Gpt.Training;
using Spdf.Sparsity;
using Spdf.Tensors;
using Spdf.Tensors.Serialization;

namespace Spdf.Gpt.Tests;

public class TrainerTests
{
    private static readonly GptConfig Cfg = GptConfig.Tiny with { VocabSize = 40, ContextLength = 16, Dropout = 0.1f };

    private static TokenStream Stream()
    {
        var g = new Generator(11);
        // A learnable stream: a repeated pattern with some noise.
        var tokens = Enumerable.Range(0, 3000).Select(i => g.NextFloat() < 0.1f ? g.NextInt(40) : i % 13 + i / 100 % 3).ToArray();
        return TokenStream.FromArray(tokens, 40);
    }

    private sealed record Run(GptModel Model, SparsifiedModel Sparsity, Trainer Trainer, TrainingStage Pretrain, TrainingStage Finetune);

    private static Run Make(string? dir, int checkpointInterval = 0, SparseWeightStorage storage = SparseWeightStorage.Dense)
    {
        var model = new GptModel(Cfg, new Generator(5));
        var sparsity = Sparsifier.Apply(model, new SparsityConfig(SparsityConfig.Default(0.75).Groups) { Storage = storage });
        foreach (var l in sparsity.Layers) l.Layer.KernelMode = SparseKernelMode.Compressed;
        var (train, val) = Stream().Split(0.1);
        var trainer = new Trainer(model, new TrainerOptions { CheckpointDirectory = dir, KeepCheckpoints = 10 }, sparsity);
        var pre = new TrainingStage
        {
            Name = "pretrain", Data = new WindowSampler(train, 4, 16, 1), Steps = 6, LearningRate = 3e-3, WarmupSteps = 2,
            Validation = () => WindowSampler.Sequential(val, 4, 16, 2), EvalInterval = 3, CheckpointInterval = checkpointInterval,
        };
        var fine = pre with { Name = "finetune", Data = new WindowSampler(train, 4, 16, 2), Steps = 5, LearningRate = 1e-3, GradientAccumulation = 2 };
        return new Run(model, sparsity, trainer, pre, fine);
    }

    private static List<double> Losses(Trainer t) => t.TrainLoss.Select(p => p.Loss).ToList();

    [Fact]
    public void TrainingLowersTheLossAndRunsThePhases()
    {
        var r = Make(null);
        var pre = r.Trainer.Run(r.Pretrain with { Steps = 30 });
        pre.TrainLoss.Should().HaveCount(30);
        pre.TrainLoss[^1].Loss.Should().BeLessThan(pre.TrainLoss[0].Loss);
        pre.ValidationLoss.Should().HaveCount(10);
        foreach (var l in r.Sparsity.Layers) l.Layer.Weight.AsReadOnlySpan().ToArray().Count(w => w != 0).Should().Be(l.Layer.Mask.KeptCount);
        r.Trainer.Densify();
        r.Sparsity.Phase.Should().Be(SparsityPhase.DenseFinetune);
        r.Model.Blocks[0].Mlp.UpProjection.Should().NotBeOfType<SparseLinear>();
        var fine = r.Trainer.Run(r.Finetune);
        fine.TrainLoss.Should().HaveCount(5);
        r.Model.Blocks[0].Mlp.UpProjection.Weight.AsReadOnlySpan().ToArray().Count(w => w == 0).Should().BeLessThan(r.Model.Blocks[0].Mlp.UpProjection.Weight.Numel / 2, "dropped weights learn again");
        r.Trainer.GlobalStep.Should().Be(35);
    }

    private sealed class ListLogger : Microsoft.Extensions.Logging.ILogger
    {
        public List<string> Lines { get; } = [];
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(Microsoft.Extensions.Logging.LogLevel logLevel) => true;
        public void Log<TState>(Microsoft.Extensions.Logging.LogLevel logLevel, Microsoft.Extensions.Logging.EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            lock (Lines) Lines.Add(formatter(state, exception));
        }
    }

    [Fact]
    public void ProfileStepsLogsWhereTheStepsSpentTheirTime()
    {
        var model = new GptModel(Cfg, new Generator(5));
        var sparsity = Sparsifier.Apply(model, SparsityConfig.Default(0.75));
        foreach (var l in sparsity.Layers) l.Layer.KernelMode = SparseKernelMode.Compressed;
        var log = new ListLogger();
        var trainer = new Trainer(model, new TrainerOptions { ProfileSteps = 3 }, sparsity, log);
        trainer.Run(new TrainingStage { Name = "pretrain", Data = new WindowSampler(Stream(), 4, 16, 1), Steps = 6, LearningRate = 1e-3 });
        var profile = log.Lines.Where(l => l.Contains("where 3 training steps spent their time", StringComparison.Ordinal)).ToList();
        profile.Should().ContainSingle("three steps after the warm-up, logged once");
        profile[0].Should().Contain("SparseLinear").And.Contain("CausalSelfAttention").And.Contain("[AdamW.step]");
        using (var probe = Spdf.Tensors.Autograd.OpProfiler.TryStart()) probe.Should().NotBeNull("the trainer left no profiler running");
        ((Action)(() => new TrainerOptions { ProfileSteps = -1 }.Validate())).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*ProfileSteps*");
    }

    [Fact]
    public void WeightDecayAppliesToMatricesOnly()
    {
        var r = Make(null);
        r.Trainer.Optimizer.Groups[0].Parameters.Should().OnlyContain(p => p.Rank >= 2);
        r.Trainer.Optimizer.Groups[1].Parameters.Should().OnlyContain(p => p.Rank < 2).And.NotBeEmpty();
    }

    [Fact]
    public void CompressedStorageTrainsAsDenseStorage()
    {
        var runs = new[] { SparseWeightStorage.Dense, SparseWeightStorage.Compressed }.Select(storage =>
        {
            var r = Make(null, storage: storage);
            r.Trainer.Run(r.Pretrain);
            r.Trainer.Densify();
            r.Trainer.Run(r.Finetune);
            return (Losses: Losses(r.Trainer), Weights: r.Model.StateDict().ToDictionary(kv => kv.Key, kv => kv.Value.ToArray()));
        }).ToList();
        runs[1].Losses.Should().Equal(runs[0].Losses, (a, b) => Math.Abs(a - b) < 1e-4 * (1 + Math.Abs(b)));
        runs[1].Weights.Keys.Should().BeEquivalentTo(runs[0].Weights.Keys);
        foreach (var kv in runs[0].Weights)
            runs[1].Weights[kv.Key].Should().Equal(kv.Value, (a, b) => Math.Abs(a - b) <= 1e-4f * (1 + Math.Abs(b)), kv.Key);
    }

    [Fact]
    public void CompressedWeightsDecayAsMatrices()
    {
        var r = Make(null, storage: SparseWeightStorage.Compressed);
        var values = r.Sparsity.Layers.Select(l => l.Layer.WeightValues!).ToList();
        r.Trainer.Optimizer.Groups[0].Parameters.Should().Contain(values);
        r.Trainer.Optimizer.Groups[1].Parameters.Should().NotContain(values);
    }

    [Fact]
    public void DynamicSparsityOverCompressedStorageIsRefusedBeforeTraining()
    {
        var r = Make(null, storage: SparseWeightStorage.Compressed);
        var stage = r.Pretrain with { SparsityAlgorithm = new Spdf.Sparsity.Algorithms.RigL(0.3, every: 2, endStep: 4) };
        var act = () => r.Trainer.Run(stage);
        act.Should().Throw<ArgumentException>().WithMessage("*'rigl'*stores only its kept weights*SparseWeightStorage.Dense*");
        r.Trainer.GlobalStep.Should().Be(0);
    }

    [Theory]
    [InlineData(SparseWeightStorage.Dense)]
    [InlineData(SparseWeightStorage.Compressed)]
    public void ResumingFromAnyCheckpointReproducesTheUninterruptedLosses(SparseWeightStorage storage)
    {
        var dir = Directory.CreateTempSubdirectory("spdf-resume").FullName;
        try
        {
            var full = Make(dir, checkpointInterval: 2, storage: storage);
            full.Trainer.Run(full.Pretrain);
            full.Trainer.Densify(OptimizerStateOnDensify.Reset);
            full.Trainer.Run(full.Finetune);
            var expected = Losses(full.Trainer);
            var expectedVal = full.Trainer.ValidationLoss.Select(p => p.Loss).ToList();
            expected.Should().HaveCount(11);
            var ckpts = Directory.GetDirectories(dir, "ckpt-*").Order().ToList();
            ckpts.Select(Path.GetFileName).Should().Contain(["ckpt-00000002", "ckpt-00000004", "ckpt-00000006", "ckpt-00000008", "ckpt-00000010", "ckpt-00000011"]);
            Trainer.LatestCheckpoint(dir).Should().EndWith("ckpt-00000011");

            foreach (var ckpt in new[] { "ckpt-00000002", "ckpt-00000006", "ckpt-00000008" })
            {
                var resumed = Make(null, storage: storage);
                resumed.Trainer.Resume(Path.Combine(dir, ckpt));
                resumed.Trainer.Run(resumed.Pretrain);
                resumed.Trainer.Densify(OptimizerStateOnDensify.Reset);
                resumed.Trainer.Run(resumed.Finetune);
                Losses(resumed.Trainer).Should().Equal(expected, $"resuming from {ckpt} replays the same batches, dropout masks and updates");
                resumed.Trainer.ValidationLoss.Select(p => p.Loss).Should().Equal(expectedVal);
            }
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void NonFiniteLossStopsWithTheStepOrIsSkipped()
    {
        var r = Make(null);
        r.Trainer.Run(r.Pretrain with { Steps = 2 });
        r.Model.Blocks[0].AttentionNorm.Weight!.AsSpan()[0] = float.NaN;
        var act = () => r.Trainer.Run(r.Pretrain with { Name = "again", Steps = 3 });
        act.Should().Throw<TrainingDivergedException>().WithMessage("*stage 'again' at step 1*").Which.Step.Should().Be(1);

        var s = Make(null);
        var skipping = new Trainer(s.Model, new TrainerOptions { OnNonFinite = NonFinitePolicy.Skip }, s.Sparsity);
        s.Model.Blocks[0].AttentionNorm.Weight!.AsSpan()[0] = float.NaN;
        var res = skipping.Run(s.Pretrain with { Steps = 3, Validation = null });
        res.SkippedSteps.Should().Be(3);
        res.TrainLoss.Should().BeEmpty();
    }

    [Fact]
    public void BadStagesAndCorruptCheckpointsAreRejected()
    {
        var r = Make(null);
        FluentActions.Invoking(() => r.Trainer.Run(r.Pretrain with { LearningRate = -1 })).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*LearningRate*");
        FluentActions.Invoking(() => r.Trainer.Run(r.Pretrain with { GradientAccumulation = 0 })).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*GradientAccumulation*");
        var dir = Directory.CreateTempSubdirectory("spdf-corrupt").FullName;
        try
        {
            var w = Make(dir);
            w.Trainer.Run(w.Pretrain with { Steps = 1 });
            var ckpt = Trainer.LatestCheckpoint(dir)!;
            File.WriteAllText(Path.Combine(ckpt, "trainer.json"), "{\"format\":\"spdf-trainer\",\"version\":1}");
            FluentActions.Invoking(() => Make(null).Trainer.Resume(ckpt)).Should().Throw<SpdfFormatException>().WithMessage("*global_step*");
            File.WriteAllText(Path.Combine(ckpt, "trainer.json"), "{not json");
            FluentActions.Invoking(() => Make(null).Trainer.Resume(ckpt)).Should().Throw<SpdfFormatException>().WithMessage("*invalid JSON*");
            File.WriteAllText(Path.Combine(dir, "latest"), "../../etc");
            FluentActions.Invoking(() => Trainer.LatestCheckpoint(dir)).Should().Throw<SpdfFormatException>();
        }
        finally { Directory.Delete(dir, true); }
    }
}

public class TrainerInputTests
{
    [Fact]
    public void MismatchedContextAndVocabularyAreRejectedBeforeAnyStep()
    {
        var model = new GptModel(new GptConfig(1, 16, 2, 8, 20), new Generator(1));
        var trainer = new Trainer(model);
        var longCtx = new WindowSampler(TokenStream.FromArray(Enumerable.Range(0, 100).Select(i => i % 20).ToArray(), 20), 2, 16, 1);
        FluentActions.Invoking(() => trainer.Run(new TrainingStage { Name = "a", Data = longCtx, Steps = 1 }))
            .Should().Throw<ArgumentException>().WithMessage("*context of 16 tokens exceeds the model's context length 8*");
        var wideVocab = new WindowSampler(TokenStream.FromArray(Enumerable.Range(0, 100).ToArray(), 100), 2, 8, 1);
        FluentActions.Invoking(() => trainer.Run(new TrainingStage { Name = "b", Data = wideVocab, Steps = 1 }))
            .Should().Throw<ArgumentException>().WithMessage("*vocabulary has 100 ids but the model's has 20*");
        trainer.GlobalStep.Should().Be(0);
    }
}
