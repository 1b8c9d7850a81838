using Spdf.Gpt.Data;
using Spdf.Gpt.Training;
using Spdf.Sparsity;
using Spdf.Sparsity.Algorithms;
using Spdf.Tensors;

namespace Spdf.Gpt.Tests;

public class DistillationTests
{
    [Fact]
    public void SquareHeadEqualsTheHandComputedValue()
    {
        var s1 = Tensor.From([1f, 2f, 3f, 4f], 2, 2);
        var t1 = Tensor.From([1f, 1f, 1f, 1f], 2, 2);
        var s2 = Tensor.From([0f, 0f], 1, 2);
        var t2 = Tensor.From([3f, 4f], 1, 2);
        // layer 1: mean((0,1,2,3)²) = 14/4 = 3.5, teacher mean square 1 → 3.5; layer 2: mean(9, 16) = 12.5 / 12.5 = 1.
        double eps = 1e-6;
        double expected = 3.5 / (1 + eps) + 12.5 / (12.5 + eps);
        SquareHead.Loss([s1, s2], [t1, t2], (float)eps).Item().Should().BeApproximately((float)expected, 1e-5f);
        FluentActions.Invoking(() => SquareHead.Loss([s1], [t1, t2])).Should().Throw<ArgumentException>().WithMessage("*got 1 and 2*");
    }

    [Fact]
    public void SquareHeadGradientPassesTheFiniteDifferenceCheck()
    {
        var g = new Generator(2);
        var s = Tensor.Randn(new Shape(3, 5), g);
        s.RequiresGrad = true;
        var t = Tensor.Randn(new Shape(3, 5), g);
        var s2 = Tensor.Randn(new Shape(2, 4), g);
        s2.RequiresGrad = true;
        var t2 = Tensor.Randn(new Shape(2, 4), g) * 3f;
        SquareHead.Loss([s, s2], [t, t2]).Backward();
        foreach (var (x, tt) in new[] { (s, t), (s2, t2) })
        {
            var analytic = x.Grad!.AsReadOnlySpan().ToArray();
            for (int i = 0; i < x.Numel; i++)
            {
                float orig = x.AsSpan()[i];
                const float h = 1e-2f;
                x.AsSpan()[i] = orig + h;
                double up = Eval();
                x.AsSpan()[i] = orig - h;
                double down = Eval();
                x.AsSpan()[i] = orig;
                double numeric = (up - down) / (2 * h);
                analytic[i].Should().BeApproximately((float)numeric, 2e-3f + 2e-3f * (float)Math.Abs(numeric), $"element {i}");
            }
        }

        double Eval()
        {
            using var _ = Spdf.Tensors.Autograd.GradMode.NoGrad();
            return SquareHead.Loss([s, s2], [t, t2]).Item();
        }
    }

    [Fact]
    public void TheTrainersFusedPathsEqualTheComposedOnes()
    {
        // The trainer distils through LossWithHidden (the loss with the head fused) and HiddenStates (the teacher's blocks
        // only): they must give what ForwardWithHidden and a cross-entropy on its logits give, gradients included.
        var model = new GptModel(Cfg, new Generator(5));
        var g = new Generator(6);
        var idx = new IntTensor(Enumerable.Range(0, 3 * 16).Select(_ => g.NextInt(Cfg.VocabSize)).ToArray(), new Shape(3, 16));
        var tgt = new IntTensor(Enumerable.Range(0, 3 * 16).Select(i => i % 5 == 0 ? Functional.IgnoreIndex : g.NextInt(Cfg.VocabSize)).ToArray(), new Shape(3, 16));
        float[][] Grads() => model.Parameters().Select(p => p.Grad!.AsReadOnlySpan().ToArray()).ToArray();

        var (logits, hidden) = model.ForwardWithHidden(idx);
        var composed = Functional.CrossEntropy(logits.Reshape(-1, Cfg.VocabSize), tgt);
        (composed + SquareHead.Loss(hidden, hidden.Select(h => h.Detach() * 0.5f).ToList())).Backward();
        var expected = Grads();
        var expectedHidden = hidden.Select(h => h.AsReadOnlySpan().ToArray()).ToList();
        foreach (var p in model.Parameters()) p.Grad = null;

        var (loss, hidden2) = model.LossWithHidden(idx, tgt);
        loss.Item().Should().BeApproximately(composed.Item(), 1e-5f);
        (loss + SquareHead.Loss(hidden2, hidden2.Select(h => h.Detach() * 0.5f).ToList())).Backward();
        var actual = Grads();
        for (int i = 0; i < expected.Length; i++)
            for (int j = 0; j < expected[i].Length; j++)
                actual[i][j].Should().BeApproximately(expected[i][j], 1e-5f + 1e-3f * Math.Abs(expected[i][j]), $"parameter {i}, element {j}");

        IReadOnlyList<Tensor> teacher;
        using (Spdf.Tensors.Autograd.GradMode.NoGrad()) teacher = model.HiddenStates(idx);
        teacher.Should().HaveCount(Cfg.Layers);
        for (int l = 0; l < Cfg.Layers; l++) teacher[l].AsReadOnlySpan().ToArray().Should().Equal(expectedHidden[l], $"layer {l}");
    }

    private static readonly GptConfig Cfg = new(2, 32, 2, 16, 40);

    private static TokenStream Stream()
    {
        var g = new Generator(11);
        return TokenStream.FromArray(Enumerable.Range(0, 2000).Select(i => g.NextFloat() < 0.1f ? g.NextInt(40) : i % 13 + i / 100 % 3).ToArray(), 40);
    }

    private static (Trainer Trainer, SparsifiedModel Handle, TrainingStage Stage) GmpRun(string? dir, GptModel teacher)
    {
        var model = new GptModel(Cfg, new Generator(5));
        model.LoadStateDict(teacher.StateDict());                                  // fine-tune from the "pre-trained" teacher
        var handle = Sparsifier.Apply(model, SparsityConfig.Default(0.0));          // dense, ready to prune
        foreach (var l in handle.Layers) l.Layer.KernelMode = SparseKernelMode.MaskedDense;
        var trainer = new Trainer(model, new TrainerOptions { CheckpointDirectory = dir, KeepCheckpoints = 20 }, handle);
        var stage = new TrainingStage
        {
            Name = "gmp-finetune", Data = new WindowSampler(Stream(), 4, 16, 3), Steps = 12, LearningRate = 1e-3, CheckpointInterval = 1,
            SparsityAlgorithm = GradualMagnitudePruning.Cubic(0.0, 0.75, startStep: 2, endStep: 10, every: 2),
            Distillation = new DistillationOptions(teacher, Gain: 1.0),
        };
        return (trainer, handle, stage);
    }

    [Fact]
    public void GmpWithSquareHeadFineTunesToTheTargetAndResumesExactly()
    {
        var teacher = new GptModel(Cfg, new Generator(5));
        new Trainer(teacher).Run(new TrainingStage { Name = "pre", Data = new WindowSampler(Stream(), 4, 16, 1), Steps = 20, LearningRate = 3e-3 });
        var dir = Directory.CreateTempSubdirectory("spdf-gmp").FullName;
        try
        {
            var (trainer, handle, stage) = GmpRun(dir, teacher);
            var result = trainer.Run(stage);
            foreach (var l in handle.Layers)
                l.Layer.Mask.KeptCount.Should().Be((int)Math.Round(0.25 * l.Layer.Weight.Numel), l.Name);
            result.TrainLoss.Should().HaveCount(12);
            var expected = trainer.TrainLoss.Select(p => p.Loss).ToList();

            // Resume from a checkpoint written right after a mask update (step 4) and from one between updates (step 7).
            foreach (var ckpt in new[] { "ckpt-00000004", "ckpt-00000007" })
            {
                var (resumed, rh, rstage) = GmpRun(null, teacher);
                resumed.Resume(Path.Combine(dir, ckpt));
                resumed.Run(rstage);
                resumed.TrainLoss.Select(p => p.Loss).Should().Equal(expected, $"resumed from {ckpt}");
                rh.Layers.Select(l => l.Layer.Mask.KeptCount).Should().Equal(handle.Layers.Select(l => l.Layer.Mask.KeptCount));
            }
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void RigLPretrainingKeepsTheSparsityAndLearns()
    {
        var model = new GptModel(Cfg, new Generator(5));
        var handle = Sparsifier.Apply(model, SparsityConfig.Default(0.75, seed: 1));
        var kept = handle.Layers.Select(l => l.Layer.Mask.KeptCount).ToList();
        var before = handle.Layers[0].Layer.Mask.Values.AsSpan().ToArray();
        var trainer = new Trainer(model, sparsity: handle);
        var r = trainer.Run(new TrainingStage
        {
            Name = "rigl", Data = new WindowSampler(Stream(), 4, 16, 1), Steps = 30, LearningRate = 3e-3,
            SparsityAlgorithm = new RigL(0.3, every: 5, endStep: 25),
        });
        handle.Layers.Select(l => l.Layer.Mask.KeptCount).Should().Equal(kept);
        handle.Layers[0].Layer.Mask.Values.AsSpan().ToArray().Should().NotEqual(before, "RigL moved the mask");
        r.TrainLoss[^1].Loss.Should().BeLessThan(r.TrainLoss[0].Loss);
        trainer.Densify();
        handle.Phase.Should().Be(SparsityPhase.DenseFinetune);
    }

    [Fact]
    public void AnAlgorithmInTheSparsityConfigDrivesTheTrainer()
    {
        var model = new GptModel(Cfg, new Generator(5));
        var config = new SparsityConfig([new SparsityGroup("re:(?!(.*\\.)?lm_head\\.).*weight", 0.75)], seed: 1)
        {
            Algorithm = new SparseEvolutionaryTraining(Spdf.Sparsity.Schedules.SparsitySchedules.Constant(0.2), new Spdf.Sparsity.Schedules.UpdateSchedule(3, 3, 12), seed: 4),
        };
        var handle = Sparsifier.Apply(model, config);
        handle.Algorithm.Should().BeSameAs(config.Algorithm);
        var kept = handle.Layers.Select(l => l.Layer.Mask.KeptCount).ToList();
        var before = handle.Layers.Select(l => l.Layer.Mask.Values.AsSpan().ToArray()).ToList();
        new Trainer(model, sparsity: handle).Run(new TrainingStage { Name = "set", Data = new WindowSampler(Stream(), 4, 16, 1), Steps = 12 });
        handle.Layers.Select(l => l.Layer.Mask.KeptCount).Should().Equal(kept);
        handle.Layers.Select(l => l.Layer.Mask.Values.AsSpan().ToArray()).Zip(before).Should().OnlyContain(p => !p.First.SequenceEqual(p.Second));
    }

    [Fact]
    public void AFrozenMaskStaysFrozenAndAMismatchedTeacherIsRejected()
    {
        var model = new GptModel(Cfg, new Generator(5));
        var config = new SparsityConfig([new SparsityGroup("re:(?!(.*\\.)?lm_head\\.).*weight", 0.75)], seed: 1)
        {
            Algorithm = new SparseEvolutionaryTraining(Spdf.Sparsity.Schedules.SparsitySchedules.Constant(0.2), new Spdf.Sparsity.Schedules.UpdateSchedule(1, 1, 100), seed: 4),
        };
        var handle = Sparsifier.Apply(model, config);
        var trainer = new Trainer(model, sparsity: handle);
        trainer.FreezeMask();
        var before = handle.Layers.Select(l => l.Layer.Mask.Values.AsSpan().ToArray()).ToList();
        trainer.Run(new TrainingStage { Name = "sparse-ft", Data = new WindowSampler(Stream(), 4, 16, 1), Steps = 3 });
        handle.Layers.Select(l => l.Layer.Mask.Values.AsSpan().ToArray()).Zip(before).Should().OnlyContain(p => p.First.SequenceEqual(p.Second));

        var wrongTeacher = new GptModel(Cfg with { Layers = 3 });
        FluentActions.Invoking(() => trainer.Run(new TrainingStage
            {
                Name = "distil", Data = new WindowSampler(Stream(), 4, 16, 1), Steps = 1, Distillation = new DistillationOptions(wrongTeacher),
            }))
            .Should().Throw<ArgumentException>().WithMessage("*teacher's config*does not match*");
        trainer.GlobalStep.Should().Be(3);
    }
}
