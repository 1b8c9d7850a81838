using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Spdf.Sparsity;
using Spdf.Sparsity.Distributed;
using Spdf.Sparsity.Flops;
using Spdf.Tensors;
using Spdf.Tensors.Autograd;
using Spdf.Tensors.Nn;
using Spdf.Tensors.Optim;
using Spdf.Tensors.Serialization;

namespace Spdf.Gpt.Training;

/// <summary>
/// Trains a <see cref="GptModel"/> through one or more <see cref="TrainingStage"/>s with AdamW (weight decay on
/// rank ≥ 2 weights only), warmup + cosine learning rates, gradient accumulation and clipping, periodic validation
/// and atomic checkpoints. Sparse pre-training, <see cref="Densify"/> and fine-tuning are one run:
/// <code>
/// var trainer = new Trainer(model, options, sparsity, logger);
/// trainer.TryResume();                       // continues a stopped run where it stopped, if any
/// trainer.Run(pretrain);                     // skipped when a resumed run had finished it
/// trainer.Densify();                         // SPDF: the zeroed weights may learn again
/// trainer.Run(finetune);
/// </code>
/// A checkpoint holds the weights (and masks), the optimizer state, the data position, the dropout generator, the
/// step, the stage, the sparsity phase and the kernels chosen; resuming from step k reproduces the uninterrupted
/// run's losses exactly on the same machine (see docs/reliability.md for what determinism needs).
/// </summary>
public sealed partial class Trainer
{
    private const string Format = "spdf-trainer";
    private readonly ILogger _log;
    private readonly List<LossPoint> _train = [];
    private readonly List<LossPoint> _val = [];
    private readonly List<string> _completed = [];
    private readonly ParameterGroup _decay, _noDecay;
    private string? _resumeStage;
    private long _resumeStageStep;
    private ulong[]? _resumeDataState;
    private int _skipped;

    /// <summary>Creates a trainer (and its AdamW optimizer) for a model, optionally with its sparsity handle.</summary>
    public Trainer(GptModel model, TrainerOptions? options = null, SparsifiedModel? sparsity = null, ILogger? logger = null,
        IProgress<TrainingProgress>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        Options = options ?? new TrainerOptions();
        Options.Validate();
        if (sparsity is not null && !ReferenceEquals(sparsity.Model, model))
            throw new ArgumentException("The sparsity handle belongs to a different model.", nameof(sparsity));
        Model = model;
        Sparsity = sparsity;
        Progress = progress;
        Communicator = Options.Communicator;
        // One log for the group: rank 0's (every rank's exceptions still surface on that rank).
        _log = Communicator is { Rank: > 0 } ? NullLogger.Instance : logger ?? NullLogger.Instance;
        // Matrices decay, vectors (biases, norms) do not; a compressed sparse weight is a matrix kept as its values.
        var compressed = model.NamedModules().Select(m => (m.Module as SparseLinear)?.WeightValues).OfType<Parameter>().ToHashSet(ReferenceEqualityComparer.Instance);
        bool Decays(Parameter p) => p.Rank >= 2 || compressed.Contains(p);
        var ps = model.Parameters().ToList();
        // Each stage sets the learning rate and the matrices' decay before its first step; until then the stage defaults.
        _decay = new ParameterGroup(ps.Where(Decays), weightDecay: TrainingStage.DefaultWeightDecay);
        _noDecay = new ParameterGroup(ps.Where(p => !Decays(p)), weightDecay: 0);
        Optimizer = new AdamW([_decay, _noDecay], TrainingStage.DefaultLearningRate, Options.Beta1, Options.Beta2, Options.Eps);
        if (sparsity is not null) sparsity.Optimizer = Optimizer;
        _controller = sparsity is null ? new SparsityController() : new SparsityController(sparsity);
        _controller.Communicator = Communicator;
        if (Communicator is { Size: > 1 } group)
        {
            DataParallel.BroadcastParameters(model, group); // every rank starts from rank 0's weights
            if (Options.VerifyReplicas) DataParallel.VerifyReplicas(model, group);
        }
    }

    private GradientReducer? _reducer; // built for the current masks; null after a mask update or transition
    private string? _resumeOmission; // SAT's schedule of the stage being resumed
    private long _loggedBytes = -1;

    /// <summary>The data-parallel group (<see cref="TrainerOptions.Communicator"/>), or null.</summary>
    public ICommunicator? Communicator { get; }

    /// <summary>The gradient bytes each rank puts into the reduction per step with the current masks (all 0 for one
    /// process). Sparse layers send only their kept gradients.</summary>
    public GradientTraffic GradientBytesPerStep
    {
        get
        {
            if (Communicator is not { Size: > 1 }) return default;
            var r = Reducer();
            return new(r.BytesPerStep, r.DenseBytesPerStep, r.SparseLayerBytesPerStep, r.SparseLayerDenseBytesPerStep);
        }
    }

    private GradientReducer Reducer()
    {
        if (_reducer is null)
        {
            _reducer = DataParallel.CreateReducer(Model, Sparsity, Communicator!, Options.BucketBytes);
            if (_reducer.BytesPerStep == _loggedBytes) return _reducer; // e.g. SET and RigL keep the kept count
            _loggedBytes = _reducer.BytesPerStep;
            LogReducer(_log, Communicator!.Size, _reducer.BytesPerStep / 1048576.0, _reducer.DenseBytesPerStep / 1048576.0, _reducer.Gradients.Count);
        }
        return _reducer;
    }

    private readonly SparsityController _controller; // mask updates and SAT's omission around each optimizer step

    /// <summary>The model.</summary>
    public GptModel Model { get; }

    /// <summary>The sparsity handle, or null for a dense model.</summary>
    public SparsifiedModel? Sparsity { get; }

    /// <summary>The optimizer.</summary>
    public AdamW Optimizer { get; }

    /// <summary>Run settings.</summary>
    public TrainerOptions Options { get; }

    /// <summary>Where progress goes.</summary>
    public IProgress<TrainingProgress>? Progress { get; set; }

    /// <summary>Optimizer steps over every stage.</summary>
    public long GlobalStep { get; private set; }

    /// <summary>Stages finished (restored by a resume).</summary>
    public IReadOnlyList<string> CompletedStages => _completed;

    /// <summary>Training loss per step of every stage so far.</summary>
    public IReadOnlyList<LossPoint> TrainLoss => _train;

    /// <summary>Validation losses of every stage so far.</summary>
    public IReadOnlyList<LossPoint> ValidationLoss => _val;

    /// <summary>The sparsity phase's name ("dense" without a handle).</summary>
    public string Phase => Sparsity?.Phase.ToString() ?? "dense";

    /// <summary>
    /// Runs a stage to its end (or from where a resumed checkpoint stopped in it). A stage already finished, per
    /// <see cref="CompletedStages"/>, returns at once with its restored curves.
    /// </summary>
    /// <exception cref="TrainingDivergedException">A loss or gradient is not finite and <see cref="TrainerOptions.OnNonFinite"/> is Throw.</exception>
    /// <exception cref="OperationCanceledException">Cancelled; a checkpoint is written first when the trainer has a folder.</exception>
    public StageResult Run(TrainingStage stage, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(stage);
        stage.Validate();
        var cfg = Model.Config;
        if (stage.Data.ContextLength > cfg.ContextLength)
            throw new ArgumentException($"Stage '{stage.Name}': the data's context of {stage.Data.ContextLength} tokens exceeds the model's context length {cfg.ContextLength}.", nameof(stage));
        if (stage.Data.VocabSize > cfg.VocabSize)
            throw new ArgumentException($"Stage '{stage.Name}': the data's vocabulary has {stage.Data.VocabSize} ids but the model's has {cfg.VocabSize}; the tokenizer and the model do not match.", nameof(stage));
        if (stage.Distillation is { } teacherCheck && teacherCheck.Teacher.Config != cfg with { Dropout = teacherCheck.Teacher.Config.Dropout })
            throw new ArgumentException($"Stage '{stage.Name}': the teacher's config {teacherCheck.Teacher.Config} does not match the student's {cfg}; SquareHead compares hidden states layer by layer.", nameof(stage));
        if (stage.SparsityAlgorithm is not null && Sparsity is null)
            throw new ArgumentException($"Stage '{stage.Name}' has a sparsity algorithm but the trainer has no sparsity handle; sparsify the model (at 0% to prune a dense one) and pass the handle.", nameof(stage));
        // The config's algorithm drives sparse pre-training; a frozen mask (FreezeMask) stays frozen unless the stage names
        // one. The controller decides which is in force (SparsityController.ActiveAlgorithm).
        _controller.Algorithm = stage.SparsityAlgorithm;
        var algorithm = _controller.ActiveAlgorithm;
        if (algorithm is not null && Sparsity!.Layers.FirstOrDefault(l => l.Layer.Storage == SparseWeightStorage.Compressed) is { } fixedMask)
            throw new ArgumentException($"Stage '{stage.Name}': sparsity algorithm '{algorithm.Name}' changes masks, but layer '{fixedMask.Name}' stores only its kept weights (SparseWeightStorage.Compressed, a fixed mask); sparsify with SparseWeightStorage.Dense for dynamic sparsity.", nameof(stage));
        if (_completed.Contains(stage.Name))
        {
            LogStageSkipped(_log, stage.Name);
            return Result(stage.Name, 0, 0);
        }
        long step = 0;
        if (_resumeStage == stage.Name)
        {
            string? now = OmissionJson(stage);
            if (now != _resumeOmission)
                throw new ArgumentException($"Stage '{stage.Name}' resumes a run whose omission schedule was {_resumeOmission ?? "none"}; this stage gives {now ?? "none"}. Resume with the same TrainingStage.Omission.", nameof(stage));
            step = _resumeStageStep;
            if (_resumeDataState is not null) stage.Data.SetState(_resumeDataState);
            _resumeStage = null;
            _resumeDataState = null;
        }
        else if (stage.ResetOptimizer) Optimizer.ResetState();
        _decay.WeightDecay = stage.WeightDecay;
        LogStageStarted(_log, stage.Name, step, stage.Steps, Phase);
        var clock = Stopwatch.StartNew();
        long tokens = 0;
        double? lastVal = _val.LastOrDefault(v => v.Stage == stage.Name)?.Loss;
        var parameters = Model.Parameters().ToList();
        using var sat = stage.Omission is { } omission ? new SatOmission(Model, omission) : null;
        _controller.Omission = sat;
        double flopSparsity = FlopSparsity(), flops = 0, denseFlops = 0;
        var flopReport = FlopCounter.ForTransformer(Model.Config.ToTransformerShape(), flopSparsity);
        Model.Train();
        if (stage.Distillation is { } distill) distill.Teacher.Eval();
        OpProfiler? profiler = null;
        long firstStep = step; // profiling starts after one warm-up step of this call
        try
        {
            while (step < stage.Steps)
            {
                if (Options.ProfileSteps > 0 && step == firstStep + 1) profiler = OpProfiler.TryStart();
                profiler?.Mark();
                if (cancellationToken.IsCancellationRequested)
                {
                    if (Options.CheckpointDirectory is not null) SaveCheckpoint(stage, step);
                    cancellationToken.ThrowIfCancellationRequested();
                }
                double lr = stage.LearningRateAt(step);
                Optimizer.SetLearningRate(lr);
                Optimizer.ZeroGrad(setToNone: false); // accumulate into last step's arrays: no new gradient memory
                double lossSum = 0;
                long positions = 0;
                _controller.BeginStep(step + 1); // SAT's rate for the step; RigL's dense gradients
                for (int micro = 0; micro < stage.GradientAccumulation; micro++)
                {
                    var (x, y) = stage.Data.Next();
                    positions += x.Data.Length * (long)(Communicator?.Size ?? 1);
                    using (TensorScope.Enter()) // activations go back to the pool after the backward pass
                    {
                        Tensor loss;
                        if (stage.Distillation is { } d)
                        {
                            // The student's loss through the fused head; the teacher's blocks only (no head, no logits).
                            var (task, hidden) = Model.LossWithHidden(x, y);
                            IReadOnlyList<Tensor> teacherHidden;
                            using (GradMode.NoGrad()) teacherHidden = d.Teacher.HiddenStates(x);
                            lossSum += task.Item();
                            loss = task + SquareHead.Loss(hidden, teacherHidden, d.Epsilon) * (float)d.Gain;
                        }
                        else
                        {
                            loss = Model.Loss(x, y);
                            lossSum += loss.Item();
                        }
                        (stage.GradientAccumulation == 1 ? loss : loss * (1f / stage.GradientAccumulation)).Backward();
                    }
                    tokens += y.Data.Count(t => t != Functional.IgnoreIndex) * (long)(Communicator?.Size ?? 1); // the group's tokens
                }
                _controller.BeforeOptimizerStep(step + 1);
                if (Communicator is { Size: > 1 } group)
                {
                    Reducer().AverageGradients(); // every rank now holds the group's mean gradient
                    Span<double> sum = [lossSum];
                    group.AllReduceSum(sum);      // the group's mean loss: every rank logs, skips and stops alike
                    lossSum = sum[0] / group.Size;
                }
                double meanLoss = lossSum / stage.GradientAccumulation;
                double norm = stage.GradClip > 0 ? GradClip.ClipGradNorm(parameters, stage.GradClip) : GradClip.GradNorm(parameters);
                step++;
                GlobalStep++;
                if (!double.IsFinite(meanLoss) || !double.IsFinite(norm))
                {
                    if (Options.OnNonFinite == NonFinitePolicy.Throw)
                        throw new TrainingDivergedException(stage.Name, step, meanLoss, norm);
                    _skipped++;
                    LogSkipped(_log, stage.Name, step, meanLoss, norm);
                    Optimizer.ZeroGrad();
                }
                else
                {
                    Optimizer.Step();
                    _train.Add(new LossPoint(stage.Name, step, GlobalStep, meanLoss));
                    // what the step computed (the student's forward and backward: SAT's kept units, the masks' kept
                    // weights), and what the dense model would have
                    flops += sat?.StepFlops(positions, flopSparsity) ?? flopReport.TrainPerStep(positions, sparse: true);
                    denseFlops += flopReport.TrainPerStep(positions, sparse: false);
                    if (Sparsity is not null)
                    {
                        var active = _controller.ActiveAlgorithm;
                        var done = _controller.AfterOptimizerStep(step);
                        if (done.MasksChanged > 0) LogMaskUpdate(_log, active!.Name, stage.Name, step, done.MasksChanged, Sparsity!.Report().LayerSparsity);
                        if (done.MasksChanged > 0 || done.Transition is not null)
                        {
                            flopSparsity = FlopSparsity();
                            flopReport = FlopCounter.ForTransformer(Model.Config.ToTransformerShape(), flopSparsity);
                            _reducer = null; // the kept places changed
                            if (Options.VerifyReplicas && Communicator is { Size: > 1 } g) DataParallel.VerifyReplicas(Model, g);
                        }
                    }
                }
                bool last = step == stage.Steps;
                if (stage.Validation is not null && (last || (stage.EvalInterval > 0 && step % stage.EvalInterval == 0)))
                {
                    lastVal = Evaluation.Perplexity.Loss(Model, stage.Validation());
                    _val.Add(new LossPoint(stage.Name, step, GlobalStep, lastVal.Value));
                    LogValidation(_log, stage.Name, step, lastVal.Value, Math.Exp(lastVal.Value));
                }
                double tps = tokens / Math.Max(1e-9, clock.Elapsed.TotalSeconds);
                if (step % Options.LogInterval == 0 || last)
                {
                    LogStep(_log, stage.Name, step, stage.Steps, meanLoss, lr, norm, tps);
                    if (sat is not null)
                        LogOmission(_log, stage.Name, step, sat.Rate, string.Join(" ", sat.KeptChannels.Zip(sat.KeptHeads, (c, h) => $"{c}/{h}")),
                            Model.Blocks[0].Mlp.UpProjection.OutFeatures, Model.Config.Heads, denseFlops > 0 ? flops / denseFlops : 1);
                }
                Progress?.Report(new TrainingProgress(stage.Name, step, stage.Steps, meanLoss, lr, lastVal, tps, Phase));
                int profiled = (int)(step - firstStep - 1);
                if (profiler is not null && (profiled == Options.ProfileSteps || last))
                {
                    profiler.Dispose();
                    LogProfile(_log, stage.Name, profiled, profiler.Format(profiled));
                    profiler = null;
                }
                if (last) _completed.Add(stage.Name);
                if (Options.CheckpointDirectory is not null && (last || (stage.CheckpointInterval > 0 && step % stage.CheckpointInterval == 0)))
                    SaveCheckpoint(stage, step);
            }
        }
        finally
        {
            profiler?.Dispose();        // a failed or cancelled step leaves no profiler running
            _controller.Omission = null; // the stage's omission ends with it
        }
        if (stage.Steps == 0) _completed.Add(stage.Name);
        return Result(stage.Name, clock.Elapsed.TotalSeconds, tokens) with { Flops = flops, DenseFlops = denseFlops };
    }

    private StageResult Result(string name, double seconds, long tokens) =>
        new(name, _train.Where(p => p.Stage == name).ToList(), _val.Where(p => p.Stage == name).ToList(), seconds, tokens, _skipped);

    /// <summary>
    /// The share of the blocks' attention and MLP weights held at zero while masks apply (0 after Densify): the sparse
    /// layers' zeroed weights over all <c>12·C²·L</c> such weights, which is what the FLOP counter's uniform sparsity means.
    /// </summary>
    private double FlopSparsity()
    {
        if (Sparsity is null || Sparsity.Phase == SparsityPhase.DenseFinetune) return 0;
        var c = Model.Config;
        double blockWeights = 12.0 * c.EmbeddingSize * c.EmbeddingSize * c.Layers;
        var blockLayers = Model.Blocks.SelectMany(b => new Module[] { b.Attention.QkvProjection, b.Attention.OutputProjection, b.Mlp.UpProjection, b.Mlp.DownProjection })
            .ToHashSet(ReferenceEqualityComparer.Instance);
        var names = Model.NamedModules().Where(m => blockLayers.Contains(m.Module)).Select(m => m.Name).ToHashSet();
        double zeroed = Sparsity.Report().Rows.Where(r => names.Contains(r.Name)).Sum(r => (double)(r.Numel - r.Kept));
        return Math.Clamp(zeroed / blockWeights, 0, 0.999);
    }

    /// <summary>
    /// The SPDF transition: every sparse layer becomes dense with its dropped weights at 0, trainable from the next
    /// step (see <see cref="Transitions.Densify"/>). A no-op when a resumed run is already past it.
    /// </summary>
    /// <exception cref="InvalidOperationException">The trainer has no sparsity handle.</exception>
    public void Densify(OptimizerStateOnDensify state = OptimizerStateOnDensify.Keep)
    {
        var s = Sparsity ?? throw new InvalidOperationException("Densify needs the trainer to hold the model's sparsity handle (the SparsifiedModel from Sparsifier.Apply).");
        if (s.Phase == SparsityPhase.DenseFinetune) return;
        int n = Transitions.Densify(s, Optimizer, state, GlobalStep);
        _reducer = null;
        LogPhase(_log, "densify", n, GlobalStep);
    }

    /// <summary>Keeps the masks for fine-tuning (sparse fine-tuning); a no-op when already done.</summary>
    /// <exception cref="InvalidOperationException">The trainer has no sparsity handle, or the model was densified.</exception>
    public void FreezeMask()
    {
        var s = Sparsity ?? throw new InvalidOperationException("FreezeMask needs the trainer to hold the model's sparsity handle.");
        if (s.Phase == SparsityPhase.SparseFinetune) return;
        Transitions.FreezeMask(s, GlobalStep);
        _reducer = null;
        LogPhase(_log, "freeze-mask", s.Layers.Count, GlobalStep);
    }

    // ---------------------------------------------------------------- checkpoints

    private void SaveCheckpoint(TrainingStage stage, long stageStep)
    {
        string root = Options.CheckpointDirectory!;
        var dataStates = GatherDataStates(stage.Data.GetState());
        if (Communicator is { Rank: > 0 }) return; // rank 0 writes the group's checkpoint
        string path = SaveCheckpoint(root, stage.Name, OmissionJson(stage), stageStep, dataStates);
        LogCheckpoint(_log, path, GlobalStep);
    }

    /// <summary>Every rank's data position, rank by rank (a collective in data-parallel training).</summary>
    private ulong[][] GatherDataStates(ulong[] local)
    {
        if (Communicator is not { Size: > 1 } group) return [local];
        var lengths = new ulong[group.Size];
        group.AllGather([(ulong)local.Length], lengths);
        if (lengths.Any(l => l != (ulong)local.Length))
            throw new InvalidOperationException($"The ranks' data sources have positions of different lengths ({string.Join(", ", lengths)} words); every rank must train on the same kind of data source.");
        var all = new ulong[local.Length * group.Size];
        group.AllGather(local, all);
        return Enumerable.Range(0, group.Size).Select(r => all.AsSpan(r * local.Length, local.Length).ToArray()).ToArray();
    }

    /// <summary>The stage's SAT schedule in its checkpoint form, or null.</summary>
    private static string? OmissionJson(TrainingStage stage) => stage.Omission?.Schedule.ToJson().ToJsonString();

    private string SaveCheckpoint(string root, string stage, string? omissionJson, long stageStep, ulong[][] dataStates)
    {
        Directory.CreateDirectory(root);
        foreach (var stale in Directory.GetDirectories(root, ".ckpt-*.tmp"))   // left by a process killed mid-write
            try { Directory.Delete(stale, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        string name = $"ckpt-{GlobalStep:D8}";
        string final = Path.Combine(root, name);
        string tmp = Path.Combine(root, $".{name}.{Guid.NewGuid():N}.tmp");
        Directory.CreateDirectory(tmp);
        try
        {
            var meta = Sparsity?.CheckpointMetadata() ?? [];
            SafeTensors.Save(Path.Combine(tmp, "model.safetensors"), Model.StateDict(), meta);
            SafeTensors.Save(Path.Combine(tmp, "optimizer.safetensors"), Optimizer.StateDict());
            AtomicFile.WriteAllText(Path.Combine(tmp, "trainer.json"), StateJson(stage, omissionJson, stageStep, dataStates));
            if (Directory.Exists(final)) Directory.Delete(final, recursive: true);
            Directory.Move(tmp, final);
        }
        catch
        {
            try { Directory.Delete(tmp, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
        AtomicFile.WriteAllText(Path.Combine(root, "latest"), name + "\n");
        var old = Directory.GetDirectories(root, "ckpt-*").Select(Path.GetFileName).Where(n => n is not null && n.Length == 13)
            .Order(StringComparer.Ordinal).ToList();
        for (int i = 0; i < old.Count - Options.KeepCheckpoints; i++)
            if (old[i] != name) Directory.Delete(Path.Combine(root, old[i]!), recursive: true);
        return final;
    }

    private string StateJson(string stage, string? omissionJson, long stageStep, ulong[][] dataStates)
    {
        var kernels = new JsonObject();
        if (Sparsity is not null)
            foreach (var l in Sparsity.Layers) kernels[l.Name] = l.Layer.Kernel;
        var o = new JsonObject
        {
            ["format"] = Format,
            ["version"] = 1,
            ["global_step"] = GlobalStep,
            ["stage"] = stage,
            ["stage_step"] = stageStep,
            ["completed_stages"] = new JsonArray(_completed.Select(s => (JsonNode)JsonValue.Create(s)!).ToArray()),
            ["phase"] = Sparsity?.Phase.ToString() ?? "dense",
            ["omission_schedule"] = omissionJson,
            ["omission_activations"] = ActivationsJson(),
            ["skipped_steps"] = _skipped,
            ["ranks"] = dataStates.Length,
            ["data_state"] = Words(dataStates[0]), // rank 0's; every rank's below
            ["data_states"] = new JsonArray(dataStates.Select(d => (JsonNode)Words(d)).ToArray()),
            ["model_rng"] = new JsonArray(Model.Rng.GetState().Select(u => (JsonNode)JsonValue.Create(u.ToString(CultureInfo.InvariantCulture))!).ToArray()),
            ["kernels"] = kernels,
            ["train_loss"] = Curve(_train),
            ["val_loss"] = Curve(_val),
        };
        return o.ToJsonString(new JsonSerializerOptions { WriteIndented = true });

        static JsonArray Words(ulong[] w) => new(w.Select(u => (JsonNode)JsonValue.Create(u.ToString(CultureInfo.InvariantCulture))!).ToArray());

        static JsonArray Curve(List<LossPoint> c) => new(c.Select(p => (JsonNode)new JsonArray(p.Stage, p.Step, p.GlobalStep, p.Loss.ToString("R", CultureInfo.InvariantCulture))).ToArray());
    }

    /// <summary>SAT's activation statistics per block (the previous steps' inputs to the activation score), or null.</summary>
    private JsonObject? ActivationsJson()
    {
        var o = new JsonObject();
        for (int l = 0; l < Model.Blocks.Count; l++)
        {
            if (Model.Blocks[l].Attention.ActivationStats is { } a) o[$"{l}.attn"] = Floats(a);
            if (Model.Blocks[l].Mlp.ActivationStats is { } m) o[$"{l}.mlp"] = Floats(m);
        }
        return o.Count == 0 ? null : o;

        static JsonArray Floats(float[] v) => new(v.Select(f => (JsonNode)JsonValue.Create(f)).ToArray());
    }

    /// <summary>The newest checkpoint folder under <paramref name="root"/> (per its <c>latest</c> pointer), or null.</summary>
    public static string? LatestCheckpoint(string root)
    {
        ArgumentException.ThrowIfNullOrEmpty(root);
        string pointer = Path.Combine(root, "latest");
        if (!File.Exists(pointer)) return null;
        string name = File.ReadAllText(pointer).Trim();
        if (name.Length == 0 || name.IndexOfAny(Path.GetInvalidFileNameChars()) >= 0 || name.Contains("..", StringComparison.Ordinal))
            throw new SpdfFormatException($"{pointer}: expected a checkpoint folder name, found '{name}'.");
        string dir = Path.Combine(root, name);
        return Directory.Exists(dir) ? dir : throw new SpdfFormatException($"{pointer}: names '{name}', which does not exist.");
    }

    /// <summary>Resumes from the newest checkpoint in <see cref="TrainerOptions.CheckpointDirectory"/>; returns false when there is none.</summary>
    public bool TryResume()
    {
        if (Options.CheckpointDirectory is null) return false;
        var dir = LatestCheckpoint(Options.CheckpointDirectory);
        if (dir is null) return false;
        Resume(dir);
        return true;
    }

    /// <summary>
    /// Restores a checkpoint folder: weights, masks, optimizer state, step, stage position, data position, dropout
    /// generator, sparsity phase (densifying or freezing masks as the run had) and the kernels chosen.
    /// </summary>
    /// <exception cref="SpdfFormatException">A file is missing or malformed; the message names it. The files are parsed
    /// before anything changes; a checkpoint that parses but does not fit the model (other shapes) can leave the model
    /// partly loaded, so build a fresh model after such a failure.</exception>
    public void Resume(string checkpointDirectory)
    {
        ArgumentException.ThrowIfNullOrEmpty(checkpointDirectory);
        string stateFile = Path.Combine(checkpointDirectory, "trainer.json");
        if (!File.Exists(stateFile)) throw new SpdfFormatException($"{checkpointDirectory}: no trainer.json; not a trainer checkpoint.");
        JsonNode root;
        try { root = JsonNode.Parse(File.ReadAllText(stateFile)) ?? throw new SpdfFormatException($"{stateFile}: empty."); }
        catch (JsonException e) { throw new SpdfFormatException($"{stateFile}: invalid JSON at line {e.LineNumber + 1}: {e.Message}", e); }
        try
        {
            if ((string?)root["format"] != Format) throw new SpdfFormatException($"{stateFile}: $.format: expected \"{Format}\".");
            if ((int?)root["version"] != 1) throw new SpdfFormatException($"{stateFile}: $.version: expected 1.");
            long global = (long?)root["global_step"] ?? throw Missing("global_step");
            string stage = (string?)root["stage"] ?? throw Missing("stage");
            long stageStep = (long?)root["stage_step"] ?? throw Missing("stage_step");
            string phase = (string?)root["phase"] ?? throw Missing("phase");
            var completed = (root["completed_stages"] as JsonArray ?? throw Missing("completed_stages")).Select(n => (string?)n ?? throw Missing("completed_stages[]")).ToList();
            int ranks = (int?)root["ranks"] ?? 1;
            int size = Communicator?.Size ?? 1, rank = Communicator?.Rank ?? 0;
            if (ranks != size)
                throw new SpdfFormatException($"{stateFile}: $.ranks: the checkpoint was written by a data-parallel run of {ranks} rank(s), each with its own data position; this run has {size}. Resume with the same number of ranks (mpiexec -n {ranks}).");
            var dataState = ranks == 1 ? Words(root["data_state"], "data_state")
                : Words((root["data_states"] as JsonArray ?? throw Missing("data_states")) is { } states && states.Count == ranks ? states[rank] : throw Missing("data_states"), $"data_states[{rank}]");
            var rng = Words(root["model_rng"], "model_rng");
            if (global < 0 || stageStep < 0) throw new SpdfFormatException($"{stateFile}: negative step.");
            var trainCurve = Curve(root["train_loss"], "train_loss").ToList();
            var valCurve = Curve(root["val_loss"], "val_loss").ToList();
            int skipped = (int?)root["skipped_steps"] ?? 0;
            var activations = ParseActivations(root["omission_activations"]);
            foreach (var f in new[] { "model.safetensors", "optimizer.safetensors" })
                if (!File.Exists(Path.Combine(checkpointDirectory, f))) throw new SpdfFormatException($"{checkpointDirectory}: {f} is missing; the checkpoint is incomplete.");
            var (weights, _) = SafeTensors.Load(Path.Combine(checkpointDirectory, "model.safetensors"));
            var (opt, _) = SafeTensors.Load(Path.Combine(checkpointDirectory, "optimizer.safetensors"));
            // Everything above is parsed before anything changes, so a malformed file leaves the trainer as it was
            // (the phase, weights and optimizer below are each validated as they load).

            // Phase first: the state dict's keys depend on it (masks exist only while sparse).
            if (Sparsity is null && phase != "dense")
                throw new SpdfFormatException($"{stateFile}: the checkpoint is of a sparse run (phase {phase}); pass the model's sparsity handle to the trainer.");
            if (Sparsity is not null)
            {
                if (!Enum.TryParse<SparsityPhase>(phase, out var p)) throw new SpdfFormatException($"{stateFile}: $.phase: unknown phase '{phase}'.");
                if (p == SparsityPhase.DenseFinetune && Sparsity.Phase != SparsityPhase.DenseFinetune) Transitions.Densify(Sparsity, Optimizer, OptimizerStateOnDensify.Keep, global);
                else if (p == SparsityPhase.SparseFinetune && Sparsity.Phase == SparsityPhase.SparsePretrain) Transitions.FreezeMask(Sparsity, global);
                else if (p != Sparsity.Phase) throw new SpdfFormatException($"{stateFile}: phase {p}, but the model is already in phase {Sparsity.Phase}.");
            }
            try { Model.LoadStateDict(weights); }
            catch (ArgumentException e) { throw new SpdfFormatException($"{checkpointDirectory}/model.safetensors: {e.Message}", e); }
            try { Optimizer.LoadStateDict(opt); }
            catch (ArgumentException e) { throw new SpdfFormatException($"{checkpointDirectory}/optimizer.safetensors: {e.Message}", e); }
            if (Sparsity is not null && root["kernels"] is JsonObject kernels)
                foreach (var l in Sparsity.Layers.Where(l => l.Layer.KernelMode != SparseKernelMode.Heuristic)) // the rule chooses as before by itself
                    l.Layer.KernelMode = (string?)kernels[l.Name] switch
                    {
                        "csr" => SparseKernelMode.Compressed,
                        "masked-dense" => SparseKernelMode.MaskedDense,
                        _ => l.Layer.KernelMode,
                    };
            try { Model.Rng.SetState(rng); }
            catch (ArgumentException e) { throw new SpdfFormatException($"{stateFile}: $.model_rng: {e.Message}", e); }
            _train.Clear(); _train.AddRange(trainCurve);
            _val.Clear(); _val.AddRange(valCurve);
            _completed.Clear(); _completed.AddRange(completed);
            _skipped = skipped;
            GlobalStep = global;
            _resumeStage = completed.Contains(stage) ? null : stage;
            _resumeStageStep = stageStep;
            _resumeDataState = dataState;
            _resumeOmission = (string?)root["omission_schedule"];
            for (int l = 0; l < Model.Blocks.Count; l++)
            {
                Model.Blocks[l].Attention.ActivationStats = activations[l].Attention;
                Model.Blocks[l].Mlp.ActivationStats = activations[l].Mlp;
            }
            _reducer = null;
            LogResumed(_log, checkpointDirectory, stage, stageStep, global);
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or OverflowException or ArgumentException)
        {
            throw new SpdfFormatException($"{stateFile}: {e.Message}", e);
        }

        SpdfFormatException Missing(string key) => new($"{stateFile}: $.{key}: missing or of the wrong type.");

        (float[]? Attention, float[]? Mlp)[] ParseActivations(JsonNode? node)
        {
            var stats = new (float[]?, float[]?)[Model.Blocks.Count];
            if (node is null) return stats;
            if (node is not JsonObject o) throw Missing("omission_activations");
            foreach (var (key, value) in o)
            {
                var parts = key.Split('.');
                if (parts.Length != 2 || !int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int l) || l >= stats.Length || parts[1] is not ("attn" or "mlp"))
                    throw new SpdfFormatException($"{stateFile}: $.omission_activations.{key}: expected '<block>.attn' or '<block>.mlp' for one of the model's {stats.Length} blocks.");
                bool attn = parts[1] == "attn";
                int expected = attn ? Model.Config.Heads : Model.Blocks[l].Mlp.UpProjection.OutFeatures;
                var v = (value as JsonArray ?? throw Missing($"omission_activations.{key}")).Select(f => (float?)f ?? throw Missing($"omission_activations.{key}[]")).ToArray();
                if (v.Length != expected)
                    throw new SpdfFormatException($"{stateFile}: $.omission_activations.{key}: {v.Length} values; the model's block has {expected} {(attn ? "heads" : "MLP channels")}.");
                if (attn) stats[l].Item1 = v; else stats[l].Item2 = v;
            }
            return stats;
        }

        ulong[] Words(JsonNode? n, string key) => (n as JsonArray ?? throw Missing(key))
            .Select(v => ulong.Parse((string?)v ?? throw Missing(key), NumberStyles.None, CultureInfo.InvariantCulture)).ToArray();

        IEnumerable<LossPoint> Curve(JsonNode? n, string key) => (n as JsonArray ?? throw Missing(key)).Select(v =>
        {
            if (v is not JsonArray { Count: 4 } a) throw Missing(key + "[]");
            return new LossPoint((string?)a[0] ?? throw Missing(key), (long?)a[1] ?? throw Missing(key), (long?)a[2] ?? throw Missing(key),
                double.Parse((string?)a[3] ?? throw Missing(key), NumberStyles.Float, CultureInfo.InvariantCulture));
        }).ToList();
    }

    // ---------------------------------------------------------------- logging

    [LoggerMessage(EventId = 1, Level = LogLevel.Information, Message = "Stage {Stage}: starting at step {Step} of {Steps} (phase {Phase})")]
    private static partial void LogStageStarted(ILogger logger, string stage, long step, int steps, string phase);

    [LoggerMessage(EventId = 2, Level = LogLevel.Information, Message = "Stage {Stage}: already completed in the resumed run; skipped")]
    private static partial void LogStageSkipped(ILogger logger, string stage);

    [LoggerMessage(EventId = 3, Level = LogLevel.Information, Message = "{Stage} step {Step}/{Steps}: loss {Loss:F4}, lr {LearningRate:E2}, grad norm {GradNorm:F3}, {TokensPerSecond:F0} tok/s")]
    private static partial void LogStep(ILogger logger, string stage, long step, int steps, double loss, double learningRate, double gradNorm, double tokensPerSecond);

    [LoggerMessage(EventId = 4, Level = LogLevel.Information, Message = "{Stage} step {Step}: validation loss {Loss:F4}, perplexity {Perplexity:F2}")]
    private static partial void LogValidation(ILogger logger, string stage, long step, double loss, double perplexity);

    [LoggerMessage(EventId = 5, Level = LogLevel.Information, Message = "Checkpoint written to {Path} at global step {Step}")]
    private static partial void LogCheckpoint(ILogger logger, string path, long step);

    [LoggerMessage(EventId = 6, Level = LogLevel.Information, Message = "Resumed from {Path}: stage {Stage} step {StageStep}, global step {Step}")]
    private static partial void LogResumed(ILogger logger, string path, string stage, long stageStep, long step);

    [LoggerMessage(EventId = 7, Level = LogLevel.Warning, Message = "{Stage} step {Step}: non-finite loss {Loss} or gradient norm {GradNorm}; update skipped")]
    private static partial void LogSkipped(ILogger logger, string stage, long step, double loss, double gradNorm);

    [LoggerMessage(EventId = 9, Level = LogLevel.Information, Message = "{Algorithm} updated {Layers} masks at {Stage} step {Step}; sparse layers now {Sparsity:P1} sparse")]
    private static partial void LogMaskUpdate(ILogger logger, string algorithm, string stage, long step, int layers, double sparsity);

    [LoggerMessage(EventId = 10, Level = LogLevel.Information, Message = "{Stage}: where {Steps} training steps spent their time (per step)\n{Table}")]
    private static partial void LogProfile(ILogger logger, string stage, int steps, string table);

    [LoggerMessage(EventId = 11, Level = LogLevel.Information, Message = "Data-parallel over {Ranks} ranks: {Megabytes:F2} MB of gradients reduced per step and rank ({DenseMegabytes:F2} MB if every weight were dense), {Tensors} tensors")]
    private static partial void LogReducer(ILogger logger, int ranks, double megabytes, double denseMegabytes, int tensors);

    [LoggerMessage(EventId = 12, Level = LogLevel.Information, Message = "{Stage} step {Step}: SAT omission rate {Rate:F3}; kept channels/heads per block: {Kept} (of {Channels}/{Heads}); the stage so far computed {FlopShare:P1} of its dense FLOPs")]
    private static partial void LogOmission(ILogger logger, string stage, long step, double rate, string kept, int channels, int heads, double flopShare);

    [LoggerMessage(EventId = 8, Level = LogLevel.Information, Message = "Phase change: {Transition} ({Layers} layers) at global step {Step}")]
    private static partial void LogPhase(ILogger logger, string transition, int layers, long step);
}
