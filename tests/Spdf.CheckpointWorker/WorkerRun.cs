using Spdf.Gpt.Data;
using Spdf.Gpt.Training;
using Spdf.Sparsity;
using Spdf.Tensors;

namespace Spdf.Gpt.CheckpointWorker;

/// <summary>The run the worker executes; the test builds the same one to load checkpoints in-process.</summary>
public sealed class WorkerRun
{
    public const int PretrainSteps = 40, FinetuneSteps = 30;

    private WorkerRun(Trainer trainer, TrainingStage pretrain, TrainingStage finetune)
    {
        Trainer = trainer;
        Pretrain = pretrain;
        Finetune = finetune;
    }

    public Trainer Trainer { get; }
    public TrainingStage Pretrain { get; }
    public TrainingStage Finetune { get; }

    public static WorkerRun Create(string? checkpointDirectory)
    {
        var cfg = new GptConfig(2, 32, 2, 16, 48, Dropout: 0.1f);
        var model = new GptModel(cfg, new Generator(5));
        var sparsity = Sparsifier.Apply(model, SparsityConfig.Default(0.5, seed: 3));
        foreach (var l in sparsity.Layers) l.Layer.KernelMode = SparseKernelMode.Compressed; // no timing-based choice
        var g = new Generator(9);
        var tokens = Enumerable.Range(0, 4000).Select(i => g.NextFloat() < 0.2f ? g.NextInt(48) : i % 17 + i / 250 % 4).ToArray();
        var (train, val) = TokenStream.FromArray(tokens, 48).Split(0.1);
        var trainer = new Trainer(model, new TrainerOptions { CheckpointDirectory = checkpointDirectory, KeepCheckpoints = 3 }, sparsity);
        var pre = new TrainingStage
        {
            Name = "pretrain", Data = new WindowSampler(train, 4, 16, 1), Steps = PretrainSteps, LearningRate = 3e-3, WarmupSteps = 4,
            Validation = () => WindowSampler.Sequential(val, 4, 16, 2), EvalInterval = 10, CheckpointInterval = 1,
        };
        var fine = pre with { Name = "finetune", Data = new WindowSampler(train, 4, 16, 2), Steps = FinetuneSteps, LearningRate = 1e-3, GradientAccumulation = 2 };
        return new WorkerRun(trainer, pre, fine);
    }

    public void Execute()
    {
        Trainer.Run(Pretrain);
        Trainer.Densify(OptimizerStateOnDensify.Reset);
        Trainer.Run(Finetune);
    }
}
