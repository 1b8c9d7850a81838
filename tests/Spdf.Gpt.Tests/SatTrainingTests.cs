using Spdf.Gpt.Data;
using Spdf.Gpt.Training;
using Spdf.Sparsity.Omission;
using Spdf.Tensors;

namespace Spdf.Gpt.Tests;

/// <summary>
/// Sparsity-accelerated training driven by the trainer (#22): rate 0 is the dense step exactly; a rate keeps
/// ceil((1 − rate)·n) channels and heads per block; omitted units' weights are left as they are by the optimizer;
/// every score runs; a run resumed in the middle of a ladder rung continues exactly, and only with the same schedule.
/// </summary>
public class SatTrainingTests
{
    private static readonly GptConfig Config = new(2, 24, 3, 16, 64);   // 96 channels, 3 heads of 8 per block

    private static TokenStream Stream()
    {
        var g = new Generator(3);
        // learnable: a repeated pattern with some noise
        return TokenStream.FromArray(Enumerable.Range(0, 3000).Select(i => g.NextFloat() < 0.1f ? g.NextInt(64) : i % 13 + i / 100 % 3).ToArray(), 64);
    }

    private static TrainingStage Stage(SatOptions? sat, int steps = 4, int checkpointInterval = 0) => new()
    {
        Name = "sat", Data = new WindowSampler(Stream(), 3, 16, 5), Steps = steps, LearningRate = 3e-3, WarmupSteps = 1,
        Omission = sat, CheckpointInterval = checkpointInterval,
    };

    [Fact]
    public void RateZeroIsTheDenseStepExactly()
    {
        var a = new GptModel(Config, new Generator(1));
        var b = new GptModel(Config, new Generator(1));
        var ra = new Trainer(a).Run(Stage(null));
        var rb = new Trainer(b).Run(Stage(new SatOptions(OmissionSchedule.Constant(0))));
        rb.TrainLoss.Select(p => p.Loss).Should().Equal(ra.TrainLoss.Select(p => p.Loss));
        foreach (var ((name, p), (_, q)) in a.NamedParameters().Zip(b.NamedParameters()))
            q.AsReadOnlySpan().ToArray().Should().Equal(p.AsReadOnlySpan().ToArray(), name);
    }

    [Fact]
    public void ARateKeepsItsShareOfUnitsAndTheOptimizerLeavesTheOthersAsTheyAre()
    {
        var model = new GptModel(Config, new Generator(2));
        var before = model.Blocks[1].Mlp.UpProjection.Weight.ToArray();
        var beforeOut = model.Blocks[1].Attention.OutputProjection.Weight.ToArray();
        var fresh = model;
        using var driver = new SatOmission(fresh, new SatOptions(OmissionSchedule.Constant(0.5)));
        var opt = new Spdf.Tensors.Optim.AdamW(fresh.Parameters(), 1e-2);
        var (x, y) = new WindowSampler(Stream(), 3, 16, 5).Next();
        driver.BeginStep(1);
        fresh.Loss(x, y).Backward();
        driver.KeptChannels.Should().Equal(48, 48);
        driver.KeptHeads.Should().Equal(2, 2);  // ceil(1.5)
        var kept = fresh.Blocks[1].Mlp.KeptChannels!;
        var keptHeads = fresh.Blocks[1].Attention.KeptHeads!;
        opt.Step();
        var after = fresh.Blocks[1].Mlp.UpProjection.Weight.AsReadOnlySpan();
        for (int c = 0; c < 96; c++)
        {
            bool changed = !after.Slice(c * 24, 24).SequenceEqual(before.AsSpan(c * 24, 24));
            changed.Should().Be(kept.Contains(c), $"channel {c} was {(kept.Contains(c) ? "kept" : "omitted")}");
        }
        var outAfter = fresh.Blocks[1].Attention.OutputProjection.Weight.AsReadOnlySpan();
        for (int h = 0; h < 3; h++)
            for (int r = 0; r < 24; r++)
                for (int i = 0; i < 8; i++)
                    if (!keptHeads.Contains(h)) outAfter[r * 24 + h * 8 + i].Should().Be(beforeOut[r * 24 + h * 8 + i], $"head {h} was omitted");
        fresh.Eval();
        fresh.Loss(x, y);
        fresh.Blocks[1].Mlp.KeptChannels.Should().BeNull("evaluation runs the whole model");
    }

    [Fact]
    public void TheMagnitudeScoreKeepsTheUnitsWithTheLargestWeights()
    {
        var model = new GptModel(Config, new Generator(8));
        using var driver = new SatOmission(model, new SatOptions(OmissionSchedule.Constant(0.75)));
        var (x, y) = new WindowSampler(Stream(), 2, 16, 5).Next();
        driver.BeginStep(1);
        model.Loss(x, y);
        var mlp = model.Blocks[0].Mlp;
        var up = mlp.UpProjection.Weight.ToArray(); var down = mlp.DownProjection.Weight.ToArray();
        var score = Enumerable.Range(0, 96).Select(u =>
            Enumerable.Range(0, 24).Sum(j => Math.Abs(up[u * 24 + j])) + Enumerable.Range(0, 24).Sum(r => Math.Abs(down[r * 96 + u]))).ToArray();
        mlp.KeptChannels.Should().Equal(Enumerable.Range(0, 96).OrderByDescending(u => score[u]).Take(24).Order());
        var attn = model.Blocks[0].Attention;
        var qkv = attn.QkvProjection.Weight.ToArray(); var o = attn.OutputProjection.Weight.ToArray();
        var headScore = Enumerable.Range(0, 3).Select(h =>
            Enumerable.Range(0, 3).Sum(part => Enumerable.Range(0, 8).Sum(i => Enumerable.Range(0, 24).Sum(j => Math.Abs(qkv[(part * 24 + h * 8 + i) * 24 + j]))))
            + Enumerable.Range(0, 24).Sum(r => Enumerable.Range(0, 8).Sum(i => Math.Abs(o[r * 24 + h * 8 + i])))).ToArray();
        attn.KeptHeads.Should().Equal([Enumerable.Range(0, 3).OrderByDescending(h => headScore[h]).First()]);
    }

    [Fact]
    public void TheFlopCountIsWhatTheStepComputed()
    {
        var model = new GptModel(Config, new Generator(8));
        var driver = new SatOmission(model, new SatOptions(OmissionSchedule.Constant(0.5)));
        var (x, y) = new WindowSampler(Stream(), 2, 16, 5).Next();
        driver.BeginStep(1);
        model.Loss(x, y);
        long tokens = 32;
        double c = 24, t = 16, v = 64, l = 2;
        // per token: MLP 2·(2·C·4C)·½, QKV 2·C·3C·⅔, projection 2·C·C·⅔, attention 4·T·C·⅔ (2 of 3 heads), LM head 2·C·V
        double perToken = l * (2 * 2 * c * 4 * c * 0.5 + (2 * c * 3 * c + 2 * c * c + 4 * t * c) * 2 / 3) + 2 * c * v;
        driver.StepFlops(tokens).Should().BeApproximately(3 * perToken * tokens, 1e-6 * perToken);
        var dense = Spdf.Sparsity.Flops.FlopCounter.ForTransformer(Config.ToTransformerShape(16), 0).TrainPerStep(tokens, sparse: false);
        driver.Dispose();
        using var none = new SatOmission(model, new SatOptions(OmissionSchedule.Constant(0)));
        none.BeginStep(1);
        model.Loss(x, y);
        none.StepFlops(tokens).Should().Be(dense, "rate 0 computes the dense step");
        FluentActions.Invoking(() => Spdf.Sparsity.Flops.FlopCounter.ForTransformer(Config.ToTransformerShape(16), 0, 0, 1)).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*kept share of MLP channels*");
    }

    [Fact]
    public void TheTrainerCountsTheFlopsEachStageComputedAndWhatItSaved()
    {
        const int steps = 3; long positions = 3 * 16;                     // the stage's batch: 3 windows of 16
        var counter = Spdf.Sparsity.Flops.FlopCounter.ForTransformer(Config.ToTransformerShape(16), 0);
        double dense = steps * counter.TrainPerStep(positions, sparse: false);
        var plain = new Trainer(new GptModel(Config, new Generator(1))).Run(Stage(null, steps));
        plain.Flops.Should().BeApproximately(dense, 1e-9 * dense);
        plain.DenseFlops.Should().BeApproximately(dense, 1e-9 * dense);
        plain.FlopsSaved.Should().Be(0);

        var sat = new Trainer(new GptModel(Config, new Generator(1))).Run(Stage(new SatOptions(OmissionSchedule.Constant(0.5)), steps));
        double c = 24, t = 16, v = 64, l = 2;
        double perToken = l * (2 * 2 * c * 4 * c * 0.5 + (2 * c * 3 * c + 2 * c * c + 4 * t * c) * 2 / 3) + 2 * c * v; // as counted by hand above
        sat.Flops.Should().BeApproximately(steps * 3 * perToken * positions, 1e-6 * sat.Flops);
        sat.DenseFlops.Should().BeApproximately(dense, 1e-9 * dense);
        sat.FlopsSaved.Should().BeApproximately(1 - 3 * perToken * positions * steps / dense, 1e-9);

        var model = new GptModel(Config, new Generator(1));
        var handle = Spdf.Sparsity.Sparsifier.Apply(model, Spdf.Sparsity.SparsityConfig.Default(0.75, 1));
        var trainer = new Trainer(model, new TrainerOptions(), handle);
        var sparse = trainer.Run(Stage(null, steps));
        var at75 = Spdf.Sparsity.Flops.FlopCounter.ForTransformer(Config.ToTransformerShape(16), 0.75);
        sparse.Flops.Should().BeApproximately(steps * at75.TrainPerStep(positions, sparse: true), 1e-6 * sparse.Flops, "every block matrix keeps 25%");
        trainer.Densify();
        var after = trainer.Run(Stage(null, steps) with { Name = "finetune" });
        after.Flops.Should().BeApproximately(after.DenseFlops, 1e-9 * after.Flops, "a densified model computes every weight");
    }

    [Fact]
    public void SatComposesWithSpdfMaskedFineTuningKeepsDroppedWeightsAtZeroAndDensifiedFineTuningTrainsThemAll()
    {
        const int steps = 3; long positions = 3 * 16;
        var model = new GptModel(Config, new Generator(5));
        var handle = Spdf.Sparsity.Sparsifier.Apply(model, Spdf.Sparsity.SparsityConfig.Default(0.75, 2)); // masked, dense storage
        var trainer = new Trainer(model, new TrainerOptions(), handle);
        trainer.Run(Stage(null, steps) with { Name = "pretrain" });
        trainer.FreezeMask();                                                    // sparse fine-tuning, with SAT
        var sat = new SatOptions(OmissionSchedule.Constant(0.5));
        var masked = trainer.Run(Stage(sat, steps) with { Name = "sparse-ft" });
        masked.TrainLoss.Should().OnlyContain(p => double.IsFinite(p.Loss));
        foreach (var l in handle.Layers)
        {
            var w = l.Layer.Weight.AsReadOnlySpan(); var m = l.Layer.Mask.Values;
            for (int i = 0; i < w.Length; i++)
                if (m[i] == 0) w[i].Should().Be(0f, $"{l.Name}[{i}] is dropped: SAT's kept units skip it");
        }
        double c = 24, t = 16, v = 64, layers = 2;
        // 75% of each block matrix dropped, half the channels and 2 of 3 heads kept: the products shrink by both
        double perToken = layers * (0.25 * (2 * 2 * c * 4 * c * 0.5 + (2 * c * 3 * c + 2 * c * c) * 2 / 3) + 4 * t * c * 2 / 3) + 2 * c * v;
        masked.Flops.Should().BeApproximately(steps * 3 * perToken * positions, 1e-6 * masked.Flops);

        var weights = handle.Layers.Select(l => (l.Layer.Weight, Mask: l.Layer.Mask.Values.ToArray())).ToList(); // Densify keeps these parameters
        trainer.Densify();                                                       // SPDF's dense fine-tuning, with SAT
        var dense = trainer.Run(Stage(sat, steps) with { Name = "dense-ft" });
        dense.TrainLoss.Should().OnlyContain(p => double.IsFinite(p.Loss));
        foreach (var (w, mask) in weights)
            w.AsReadOnlySpan().ToArray().Where((x, i) => mask[i] == 0 && x != 0).Should().NotBeEmpty("after Densify the weights that were dropped learn again, in the kept units");
        dense.FlopsSaved.Should().BeApproximately(1 - 3 * (layers * (2 * 2 * c * 4 * c * 0.5 + (2 * c * 3 * c + 2 * c * c + 4 * t * c) * 2 / 3) + 2 * c * v) * positions * steps / dense.DenseFlops, 1e-9);
    }

    [Theory]
    [InlineData("random", UnitSelection.TopK)]
    [InlineData("magnitude", UnitSelection.Sampled)]
    [InlineData("wanda", UnitSelection.TopK)]
    [InlineData("activation", UnitSelection.TopK)]
    public void EveryScoreTrains(string scorer, UnitSelection selection)
    {
        var model = new GptModel(Config, new Generator(4));
        var sat = new SatOptions(OmissionSchedule.Constant(0.5)) { Scorer = UnitScorers.FromName(scorer), Selection = selection, Seed = 3 };
        var r = new Trainer(model).Run(Stage(sat, steps: 5));
        r.TrainLoss.Should().HaveCount(5).And.OnlyContain(p => double.IsFinite(p.Loss));
        r.TrainLoss[^1].Loss.Should().BeLessThan(r.TrainLoss[0].Loss);
        model.Blocks[0].Mlp.KeptChannels.Should().BeNull("the stage's end detaches the omission");
        model.Blocks[0].Mlp.UpProjection.Weight.StepPositions.Should().BeNull();
    }

    [Fact]
    public void AResumeInTheMiddleOfARungContinuesExactlyAndOnlyWithTheSameSchedule()
    {
        var ladder = new SatOptions(OmissionSchedule.Ladder(0.5, firstPhaseSteps: 2, rungs: 3, totalSteps: 12, denseFinalSteps: 1)) { Scorer = UnitScorers.InputNormTimesWeight };
        var dir = Directory.CreateTempSubdirectory("spdf-sat").FullName;
        try
        {
            var full = new GptModel(Config, new Generator(6));
            var reference = new Trainer(full, new TrainerOptions { CheckpointDirectory = dir, KeepCheckpoints = 10 }).Run(Stage(ladder, 12, checkpointInterval: 2));
            var resumedModel = new GptModel(Config, new Generator(99));
            var resumed = new Trainer(resumedModel, new TrainerOptions());
            resumed.Resume(Path.Combine(dir, "ckpt-00000006"));                 // step 6: inside the second rung (steps 6-8)
            var rest = resumed.Run(Stage(ladder, 12));
            rest.TrainLoss.Select(p => p.Loss).Should().Equal(reference.TrainLoss.Select(p => p.Loss), "the resumed run reproduces every step");
            foreach (var ((name, p), (_, q)) in full.NamedParameters().Zip(resumedModel.NamedParameters()))
                q.AsReadOnlySpan().ToArray().Should().Equal(p.AsReadOnlySpan().ToArray(), name);
            var other = new Trainer(new GptModel(Config, new Generator(6)));
            other.Resume(Path.Combine(dir, "ckpt-00000006"));
            FluentActions.Invoking(() => other.Run(Stage(new SatOptions(OmissionSchedule.Constant(0.5)), 12))).Should().Throw<ArgumentException>()
                .WithMessage("*omission schedule was*ladder*this stage gives*constant*same TrainingStage.Omission*");
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void AResumeWithTheActivationScoreRestoresThePreviousStepsStatistics()
    {
        var sat = new SatOptions(OmissionSchedule.Constant(0.5)) { Scorer = UnitScorers.Activation };
        var dir = Directory.CreateTempSubdirectory("spdf-sat-act").FullName;
        try
        {
            var full = new GptModel(Config, new Generator(6));
            var reference = new Trainer(full, new TrainerOptions { CheckpointDirectory = dir, KeepCheckpoints = 10 }).Run(Stage(sat, 8, checkpointInterval: 4));
            var resumedModel = new GptModel(Config, new Generator(99));
            var resumed = new Trainer(resumedModel, new TrainerOptions());
            resumed.Resume(Path.Combine(dir, "ckpt-00000004"));
            resumed.Run(Stage(sat, 8)).TrainLoss.Select(p => p.Loss).Should().Equal(reference.TrainLoss.Select(p => p.Loss),
                "step 5 scores its units by step 4's activations, which the checkpoint holds");
            foreach (var ((name, p), (_, q)) in full.NamedParameters().Zip(resumedModel.NamedParameters()))
                q.AsReadOnlySpan().ToArray().Should().Equal(p.AsReadOnlySpan().ToArray(), name);

            string json = Path.Combine(dir, "ckpt-00000004", "trainer.json");
            var root = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(json))!;
            root["omission_activations"]!["1.mlp"] = new System.Text.Json.Nodes.JsonArray(1f, 2f);
            File.WriteAllText(json, root.ToJsonString());
            FluentActions.Invoking(() => new Trainer(new GptModel(Config, new Generator(6))).Resume(Path.Combine(dir, "ckpt-00000004")))
                .Should().Throw<Spdf.Tensors.Serialization.SpdfFormatException>().WithMessage("*omission_activations.1.mlp: 2 values; the model's block has 96 MLP channels*");
        }
        finally { Directory.Delete(dir, true); }
    }
}
