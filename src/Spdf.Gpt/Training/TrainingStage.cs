using Spdf.Gpt.Data;
using Spdf.Tensors;
using Spdf.Tensors.Optim;

namespace Spdf.Gpt.Training;

/// <summary>
/// One stage of training (pre-training, fine-tuning, …): its data, length and optimisation hyper-parameters
/// (nanoGPT's defaults: AdamW, warmup then cosine decay to <see cref="MinLearningRate"/>, clipping at 1.0).
/// A <see cref="Trainer"/> runs stages one after another; the sparsity phase may change between them.
/// </summary>
public sealed record TrainingStage
{
    /// <summary>Name, unique within a run (e.g. "pretrain", "finetune"); recorded in checkpoints so that a resumed run skips finished stages.</summary>
    public required string Name { get; init; }

    /// <summary>Training batches.</summary>
    public required IBatchSource Data { get; init; }

    /// <summary>Optimizer steps in this stage.</summary>
    public required int Steps { get; init; }

    /// <summary>The default peak learning rate, nanoGPT's: 6e-4.</summary>
    public const double DefaultLearningRate = 6e-4;

    /// <summary>The default AdamW weight decay on matrices, nanoGPT's: 0.1.</summary>
    public const double DefaultWeightDecay = 0.1;

    /// <summary>Peak learning rate (default <see cref="DefaultLearningRate"/>).</summary>
    public double LearningRate { get; init; } = DefaultLearningRate;

    /// <summary>Learning rate at the end of the cosine decay (default 6e-5).</summary>
    public double MinLearningRate { get; init; } = 6e-5;

    /// <summary>Linear warmup steps (default 0).</summary>
    public int WarmupSteps { get; init; }

    /// <summary>AdamW weight decay, applied to weights of rank ≥ 2 only (default <see cref="DefaultWeightDecay"/>).</summary>
    public double WeightDecay { get; init; } = DefaultWeightDecay;

    /// <summary>Micro-batches whose gradients are summed per step (default 1).</summary>
    public int GradientAccumulation { get; init; } = 1;

    /// <summary>Clip the global gradient norm to this value; 0 turns clipping off (default 1).</summary>
    public double GradClip { get; init; } = 1.0;

    /// <summary>Validation batches (a fresh enumeration per evaluation), or null for none.</summary>
    public Func<IEnumerable<(IntTensor Inputs, IntTensor Targets)>>? Validation { get; init; }

    /// <summary>Evaluate every this many steps (and at the end); 0 evaluates only at the end.</summary>
    public int EvalInterval { get; init; }

    /// <summary>Write a checkpoint every this many steps (and at the end) when the trainer has a checkpoint folder; 0 only at the end.</summary>
    public int CheckpointInterval { get; init; }

    /// <summary>
    /// A mask-update algorithm for this stage (gradual magnitude pruning, SET, RigL), overriding the sparsity config's;
    /// steps are counted from 1 within the stage. Needs a sparse model (for pruning a dense one, sparsify it at 0% first).
    /// </summary>
    public Spdf.Sparsity.Algorithms.ISparsityAlgorithm? SparsityAlgorithm { get; init; }

    /// <summary>Distil a teacher with SquareHead during this stage (Kurtic et al. 2023), or null.</summary>
    public DistillationOptions? Distillation { get; init; }

    /// <summary>Restart every optimizer moment at this stage's start (e.g. for fine-tuning with a new learning rate).</summary>
    public bool ResetOptimizer { get; init; }

    /// <summary>
    /// Sparsity-accelerated training (SAT) for this stage: each step computes only the kept MLP channels and attention
    /// heads of every block (<see cref="SatOmission"/>), at the rate the schedule gives for the stage's step. Null: the
    /// whole model every step. The schedule is written into checkpoints; a resumed stage must give the same one.
    /// </summary>
    public SatOptions? Omission { get; init; }

    /// <summary>Throws when a setting is out of range.</summary>
    /// <exception cref="ArgumentException">A setting is out of range; the message names it, its value and what was expected.</exception>
    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(Name)) throw new ArgumentException("A stage needs a name.", nameof(Name));
        ArgumentNullException.ThrowIfNull(Data, nameof(Data));
        if (Steps < 0) throw new ArgumentOutOfRangeException(nameof(Steps), Steps, "Expected ≥ 0 steps.");
        if (!(LearningRate > 0) || double.IsInfinity(LearningRate)) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "Expected a finite learning rate > 0.");
        if (!(MinLearningRate >= 0 && MinLearningRate <= LearningRate)) throw new ArgumentOutOfRangeException(nameof(MinLearningRate), MinLearningRate, $"Expected a value in [0, LearningRate = {LearningRate}].");
        if (WarmupSteps < 0) throw new ArgumentOutOfRangeException(nameof(WarmupSteps), WarmupSteps, "Expected ≥ 0.");
        if (!(WeightDecay >= 0) || double.IsInfinity(WeightDecay)) throw new ArgumentOutOfRangeException(nameof(WeightDecay), WeightDecay, "Expected a finite weight decay ≥ 0.");
        if (GradientAccumulation < 1) throw new ArgumentOutOfRangeException(nameof(GradientAccumulation), GradientAccumulation, "Expected ≥ 1.");
        if (!(GradClip >= 0) || double.IsInfinity(GradClip)) throw new ArgumentOutOfRangeException(nameof(GradClip), GradClip, "Expected a finite value ≥ 0 (0 = off).");
        if (EvalInterval < 0) throw new ArgumentOutOfRangeException(nameof(EvalInterval), EvalInterval, "Expected ≥ 0.");
        if (CheckpointInterval < 0) throw new ArgumentOutOfRangeException(nameof(CheckpointInterval), CheckpointInterval, "Expected ≥ 0.");
        if (Distillation is { } d)
        {
            ArgumentNullException.ThrowIfNull(d.Teacher, nameof(Distillation));
            if (!(d.Gain >= 0) || double.IsInfinity(d.Gain)) throw new ArgumentOutOfRangeException(nameof(Distillation), d.Gain, "Expected a finite distillation gain ≥ 0.");
        }
    }

    /// <summary>The learning rate at a step of this stage: linear warmup, then cosine decay to the minimum.</summary>
    /// <remarks><see cref="WarmupCosineSchedule"/> (nanoGPT's <c>get_lr</c>); a stage no longer than its warmup holds the peak after it.</remarks>
    public double LearningRateAt(long step) =>
        Steps > WarmupSteps ? new WarmupCosineSchedule(LearningRate, WarmupSteps, Steps, MinLearningRate).LearningRate(step)
        : step < WarmupSteps ? LearningRate * (step + 1) / WarmupSteps : LearningRate;
}

/// <summary>What the trainer does when a step's loss or gradient norm is not finite.</summary>
public enum NonFinitePolicy
{
    /// <summary>Stop with a <see cref="TrainingDivergedException"/> naming the step (default); the last checkpoint is intact.</summary>
    Throw,
    /// <summary>Skip the update (no weight or moment changes), count it and go on.</summary>
    Skip,
}

/// <summary>Settings shared by every stage of a run.</summary>
public sealed record TrainerOptions
{
    /// <summary>Folder for checkpoints (<c>ckpt-00000100/</c> folders and a <c>latest</c> pointer); null writes none.</summary>
    public string? CheckpointDirectory { get; init; }

    /// <summary>Checkpoints kept (oldest removed first); default 2.</summary>
    public int KeepCheckpoints { get; init; } = 2;

    /// <summary>Log a line every this many steps (default 10).</summary>
    public int LogInterval { get; init; } = 10;

    /// <summary>AdamW β₁ (default 0.9).</summary>
    public double Beta1 { get; init; } = 0.9;

    /// <summary>AdamW β₂ (default 0.95, as GPT-3 and nanoGPT).</summary>
    public double Beta2 { get; init; } = 0.95;

    /// <summary>AdamW ε (default 1e-8).</summary>
    public double Eps { get; init; } = 1e-8;

    /// <summary>What to do on a non-finite loss or gradient.</summary>
    public NonFinitePolicy OnNonFinite { get; init; } = NonFinitePolicy.Throw;

    /// <summary>
    /// Times this many training steps of each stage op by op, after the stage's first step (a warm-up), and logs where
    /// they spent their time (<see cref="Spdf.Tensors.Autograd.OpProfiler"/>; validation run during those steps counts
    /// too). 0 (default) profiles nothing; nothing is profiled while another profiler runs.
    /// </summary>
    public int ProfileSteps { get; init; }

    /// <summary>
    /// The data-parallel group (e.g. <c>Spdf.Mpi.MpiCommunicator</c> under <c>mpiexec -n N</c>), or null for one
    /// process. Every rank builds the same model and stages, each with its own shard of the data
    /// (<see cref="WindowSampler.ForRank"/>); the trainer broadcasts rank 0's weights at the start, averages
    /// gradients after each backward pass (only the kept values of masked weights), and writes checkpoints from rank 0
    /// with every rank's data position. Each stage's batch is per rank: the global batch is ranks × batch. Validation
    /// runs on every rank (the same batches, the same loss); a checkpoint is a collective, so cancellation must reach every
    /// rank at the same step. Gradients are averaged after the whole backward pass (not overlapped with it).
    /// </summary>
    public Spdf.Sparsity.Distributed.ICommunicator? Communicator { get; init; }

    /// <summary>Bytes per gradient collective in data-parallel training (default 25 MiB, as PyTorch DDP).</summary>
    public int BucketBytes { get; init; } = Spdf.Sparsity.Distributed.GradientReducer.DefaultBucketBytes;

    /// <summary>Data-parallel debugging: after the start and after every mask update, check that every rank holds the
    /// same weights and masks (throws on every rank, naming the tensor, when not). Costs a hash of the model.</summary>
    public bool VerifyReplicas { get; init; }

    /// <summary>Throws when a setting is out of range.</summary>
    public void Validate()
    {
        if (KeepCheckpoints < 1) throw new ArgumentOutOfRangeException(nameof(KeepCheckpoints), KeepCheckpoints, "Expected ≥ 1.");
        if (LogInterval < 1) throw new ArgumentOutOfRangeException(nameof(LogInterval), LogInterval, "Expected ≥ 1.");
        if (!(Beta1 >= 0 && Beta1 < 1)) throw new ArgumentOutOfRangeException(nameof(Beta1), Beta1, "Expected a value in [0, 1).");
        if (!(Beta2 >= 0 && Beta2 < 1)) throw new ArgumentOutOfRangeException(nameof(Beta2), Beta2, "Expected a value in [0, 1).");
        if (!(Eps > 0)) throw new ArgumentOutOfRangeException(nameof(Eps), Eps, "Expected > 0.");
        if (ProfileSteps < 0) throw new ArgumentOutOfRangeException(nameof(ProfileSteps), ProfileSteps, "Expected ≥ 0.");
        if (BucketBytes < 4096) throw new ArgumentOutOfRangeException(nameof(BucketBytes), BucketBytes, "Expected ≥ 4096 bytes.");
    }
}

/// <summary>Gradient bytes one rank puts into the reduction per data-parallel step.</summary>
/// <param name="Bytes">All gradients, as sent.</param>
/// <param name="DenseBytes">All gradients if every weight were dense.</param>
/// <param name="SparseLayerBytes">The sparse layers' part of <paramref name="Bytes"/> (their kept gradients only).</param>
/// <param name="SparseLayerDenseBytes">The sparse layers' gradients if they were dense.</param>
public readonly record struct GradientTraffic(long Bytes, long DenseBytes, long SparseLayerBytes, long SparseLayerDenseBytes);

/// <summary>A point of a loss curve.</summary>
/// <param name="Stage">Stage name.</param>
/// <param name="Step">Step within the stage (1-based: the loss of the step's batch before the update).</param>
/// <param name="GlobalStep">Step over the whole run.</param>
/// <param name="Loss">Mean loss.</param>
public sealed record LossPoint(string Stage, long Step, long GlobalStep, double Loss);

/// <summary>Progress of a running stage.</summary>
/// <param name="Stage">Stage name.</param>
/// <param name="Step">Steps done in the stage.</param>
/// <param name="Steps">Steps in the stage.</param>
/// <param name="Loss">Last step's loss.</param>
/// <param name="LearningRate">Last step's learning rate.</param>
/// <param name="ValidationLoss">Last validation loss, if any.</param>
/// <param name="TokensPerSecond">Training throughput of the stage so far.</param>
/// <param name="Phase">Sparsity phase ("dense" without a sparsity handle).</param>
public sealed record TrainingProgress(string Stage, long Step, long Steps, double Loss, double LearningRate, double? ValidationLoss, double TokensPerSecond, string Phase);

/// <summary>The outcome of a stage.</summary>
/// <param name="Stage">Stage name.</param>
/// <param name="TrainLoss">Loss per step (this session's and, after a resume, the restored ones).</param>
/// <param name="ValidationLoss">Validation losses.</param>
/// <param name="Seconds">Wall time spent in this session.</param>
/// <param name="Tokens">Training tokens (non-ignored targets) processed in this session.</param>
/// <param name="SkippedSteps">Steps skipped for non-finite values.</param>
public sealed record StageResult(string Stage, IReadOnlyList<LossPoint> TrainLoss, IReadOnlyList<LossPoint> ValidationLoss, double Seconds, long Tokens, int SkippedSteps)
{
    /// <summary>The last validation loss, or NaN.</summary>
    public double FinalValidationLoss => ValidationLoss.Count > 0 ? ValidationLoss[^1].Loss : double.NaN;

    /// <summary>
    /// Training FLOPs this session's steps computed (<see cref="Spdf.Sparsity.Flops.FlopCounter"/>'s convention, over the
    /// group's token positions): the masks' kept weights while they apply and, under SAT, only the kept channels and heads.
    /// Skipped steps and a distillation teacher's forward passes are not counted.
    /// </summary>
    public double Flops { get; init; }

    /// <summary>What the same steps would have computed with the dense model and no omission.</summary>
    public double DenseFlops { get; init; }

    /// <summary>The share of the dense FLOPs that sparsity and omission saved (0 for a dense stage).</summary>
    public double FlopsSaved => DenseFlops > 0 ? 1 - Flops / DenseFlops : 0;
}

/// <summary>Training produced a non-finite loss or gradient.</summary>
public sealed class TrainingDivergedException : Exception
{
    /// <summary>Creates the exception.</summary>
    public TrainingDivergedException(string stage, long step, double loss, double gradNorm)
        : base($"Training diverged in stage '{stage}' at step {step}: loss {loss}, gradient norm {gradNorm}. " +
               "Lower the learning rate, clip gradients, or set TrainerOptions.OnNonFinite = Skip; the last checkpoint is intact.")
    {
        Stage = stage;
        Step = step;
        Loss = loss;
    }

    /// <summary>Creates the exception.</summary>
    public TrainingDivergedException() : base("Training diverged.") { Stage = ""; }

    /// <summary>Creates the exception.</summary>
    public TrainingDivergedException(string message) : base(message) { Stage = ""; }

    /// <summary>Creates the exception.</summary>
    public TrainingDivergedException(string message, Exception inner) : base(message, inner) { Stage = ""; }

    /// <summary>The stage.</summary>
    public string Stage { get; }

    /// <summary>The step (1-based within the stage).</summary>
    public long Step { get; }

    /// <summary>The loss.</summary>
    public double Loss { get; }
}
