using Microsoft.Extensions.Logging;
using Spectre.Console;
using Spdf.Gpt;
using Spdf.Gpt.Data;
using Spdf.Gpt.Evaluation;
using Spdf.Gpt.Generation;
using Spdf.Gpt.Tokenization;
using Spdf.Gpt.Training;
using Spdf.Sparsity;
using Spdf.Sparsity.Algorithms;
using Spdf.Sparsity.Flops;
using Spdf.Tensors;

namespace Spdf.Demo;

/// <summary>Sizes of a demo run.</summary>
public sealed record DemoSettings
{
    public required bool Quick { get; init; }
    public required string OutputDirectory { get; init; }
    public string? CorpusFile { get; init; }
    public string? TaskFile { get; init; }
    public ulong Seed { get; init; } = 2026;
    /// <summary>The command line that started the run, for the report.</summary>
    public string Command { get; init; } = "dotnet run -c Release --project samples/Spdf.Demo";
    public IReadOnlyList<double> Sparsities { get; init; } = [0.5, 0.75];
    /// <summary>The MPI group when started under mpiexec (every run's batch is split over its ranks), or null.</summary>
    public Spdf.Sparsity.Distributed.ICommunicator? World { get; init; }
    /// <summary>Set on ranks other than 0, whose output folder is their own temporary one.</summary>
    public bool RankFolder { get; init; }
    public int Rank => World?.Rank ?? 0;
    public int Ranks => World?.Size ?? 1;

    /// <summary>Sequences per rank and step: the batch split over the ranks (the global batch stays <see cref="Batch"/>).</summary>
    public int BatchPerRank => Batch % Ranks == 0 ? Batch / Ranks
        : throw new ArgumentException($"The batch of {Batch} sequences does not split over {Ranks} ranks; run with a number of ranks that divides {Batch}.");

    public GptConfig Model(int vocab) => Quick ? new GptConfig(2, 64, 4, 192, vocab, Dropout: 0f) : new GptConfig(4, 128, 4, 128, vocab, Dropout: 0f);
    public int VocabSize => Quick ? 512 : 1024;
    public int Batch => Quick ? 8 : 16;
    public int PretrainSteps => Quick ? 150 : 800;
    public int FinetuneSteps => Quick ? 100 : 600;
    public int Documents => Quick ? 600 : 12000;
    public int TrainExamples => Quick ? 200 : 1500;
    public int TestExamples => Quick ? 12 : 100;

    /// <summary>A text file of more data for SAT's continual pre-training; null: generated (another seed), or the
    /// <see cref="CorpusFile"/>'s training split again when that was given.</summary>
    public string? ContinualCorpusFile { get; init; }
    /// <summary>Documents generated for continual pre-training.</summary>
    public int ContinualDocuments => Quick ? 300 : 6000;
    /// <summary>Steps of continual pre-training (each of dense, SAT ladder, SAT constant).</summary>
    public int ContinualSteps => Quick ? 60 : 400;
    /// <summary>Whether the main job runs the SAT rows (continual pre-training and fine-tuning, dense vs SAT).</summary>
    public bool Sat { get; init; } = true;
    /// <summary>Runs only the dense pre-training and fine-tuning and the SAT rows.</summary>
    public bool SatOnly { get; init; }
    /// <summary>SAT's unit score (random, magnitude, wanda, activation).</summary>
    public string SatScore { get; init; } = "activation";
    /// <summary>SAT's selection of kept units.</summary>
    public Spdf.Sparsity.Omission.UnitSelection SatSelection { get; init; } = Spdf.Sparsity.Omission.UnitSelection.Sampled;
    /// <summary>SAT's choices for continual pre-training.</summary>
    public SatChoice SatContinual { get; init; } = SatChoice.ContinualDefault;
    /// <summary>SAT's choices for fine-tuning.</summary>
    public SatChoice SatFinetune { get; init; } = SatChoice.FinetuneDefault;
}

/// <summary>What SAT omits and how much, for one kind of run.</summary>
/// <param name="Units">"both" (MLP channels and attention heads), "channels" or "heads".</param>
/// <param name="LadderRate">The ladder's first rate, held for the first half of the run; then 3 even rungs down to dense.</param>
/// <param name="ConstantRate">The constant rate SAT is compared at.</param>
/// <param name="DenseFinal">The share of the run the ladder ends dense.</param>
public sealed record SatChoice(string Units, double LadderRate, double ConstantRate, double DenseFinal)
{
    /// <summary>The main job's continual pre-training: channels and heads, a ladder from 0.75, a dense tenth.</summary>
    public static SatChoice ContinualDefault { get; } = new("both", LadderRate: 0.75, ConstantRate: 0.5, DenseFinal: 0.1);

    /// <summary>The main job's fine-tuning: MLP channels only (omitting some of 4 heads costs the task far more), a
    /// ladder from 0.9, a dense fifth.</summary>
    public static SatChoice FinetuneDefault { get; } = new("channels", LadderRate: 0.9, ConstantRate: 0.6, DenseFinal: 0.2);

    /// <summary>The ladder over <paramref name="steps"/>.</summary>
    public Spdf.Sparsity.Omission.OmissionSchedule Ladder(int steps) =>
        Spdf.Sparsity.Omission.OmissionSchedule.Ladder(LadderRate, steps / 2, 3, steps, Math.Max(1, (int)Math.Round(steps * DenseFinal)));

    /// <summary>The units in words.</summary>
    public string UnitsText => Units switch { "channels" => "MLP channels", "heads" => "attention heads", _ => "MLP channels and attention heads" };
}

/// <summary>One run of the SAT rows: continual pre-training or fine-tuning, dense or with SAT's omission.</summary>
/// <param name="Stage">"continual pre-training" or "fine-tuning".</param>
/// <param name="Name">dense, SAT ladder or SAT constant.</param>
/// <param name="Schedule">The omission schedule in words ("none" for dense).</param>
/// <param name="Seconds">Wall time of the training steps (validation included, evaluation by generation not).</param>
/// <param name="TokensPerSecond">Training tokens (loss targets) per second.</param>
/// <param name="FlopsSaved">Share of the dense run's training FLOPs that omission saved.</param>
/// <param name="ValLoss">Final validation loss.</param>
/// <param name="Bleu">BLEU after fine-tuning (NaN for continual pre-training).</param>
/// <param name="RougeL">ROUGE-L after fine-tuning (NaN for continual pre-training).</param>
/// <param name="Curve">Training loss per step.</param>
public sealed record SatResult(string Stage, string Name, string Schedule, double Seconds, double TokensPerSecond, double FlopsSaved,
    double ValLoss, double Bleu, double RougeL, IReadOnlyList<LossPoint> Curve);

/// <summary>One run's results.</summary>
public sealed record RunResult(string Name, double Sparsity, double PretrainFlops, double PretrainSeconds, double ValLoss, double FinetuneValLoss,
    double Bleu, double RougeL, string Kernels, IReadOnlyList<LossPoint> PretrainCurve, IReadOnlyList<LossPoint> FinetuneCurve,
    IReadOnlyList<(string MeaningRepresentation, string Output)> Samples, double PeakMb = double.NaN)
{
    /// <summary>The fine-tuning stage's outcome (time, tokens, FLOPs).</summary>
    public StageResult? Finetune { get; init; }
}

/// <summary>A pre-trained model, kept so that several fine-tunings start from the same weights.</summary>
internal sealed record Pretrained(double Sparsity, Dictionary<string, Tensor> State, double Flops, double Seconds, double ValLoss,
    IReadOnlyList<LossPoint> Curve, SparsityReport? Report, SparseWeightStorage Storage, double PeakMb = double.NaN);

/// <summary>
/// The process's peak resident memory (Linux's <c>VmHWM</c>), which <see cref="Reset"/> sets back to the current resident
/// size (writing 5 to <c>/proc/self/clear_refs</c>), so that each run's peak is its own. NaN where neither is available.
/// </summary>
internal static class PeakMemory
{
    public static void Reset()
    {
        try { File.WriteAllText("/proc/self/clear_refs", "5"); } catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }

    public static double Mb()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
                if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                    return long.Parse(line.AsSpan(6).Trim().TrimEnd("kB").Trim(), System.Globalization.CultureInfo.InvariantCulture) / 1024.0;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException) { }
        return double.NaN;
    }
}

/// <summary>
/// The SPDF experiment at small scale (Thangarasa et al. 2023): pre-train the same GPT dense and at each sparsity
/// for the same tokens; fine-tune each on the data-to-text task densely (SPDF: Densify) and, for the sparse ones,
/// also with the mask kept; evaluate validation loss, BLEU and ROUGE-L.
/// </summary>
public sealed class Workflow(DemoSettings settings, ILogger logger)
{
    public const string DenseRun = "dense", SpdfRun = "sparse-pretrain+dense-finetune", SparseFinetuneRun = "sparse-pretrain+sparse-finetune",
        GmpRun = "sparse-finetune-gmp", GmpSquareHeadRun = "sparse-finetune-gmp+squarehead", RigLRun = "rigl-pretrain+dense-finetune";

    public BpeTokenizer Tokenizer { get; private set; } = null!;
    public IReadOnlyList<E2EExample> TrainExamples { get; private set; } = [];
    public IReadOnlyList<E2EExample> TestExamples { get; private set; } = [];
    public GptConfig Config { get; private set; } = null!;
    public List<RunResult> Results { get; } = [];
    public List<(double Sparsity, SparsityReport Report)> SparsityReports { get; } = [];
    /// <summary>The SAT rows (continual pre-training and fine-tuning, dense vs SAT ladder vs SAT constant).</summary>
    public List<SatResult> SatResults { get; } = [];
    /// <summary>Where continual pre-training's data came from, for the report.</summary>
    public string ContinualData { get; private set; } = "";
    private TokenStream _train = null!, _val = null!, _more = null!, _moreVal = null!;

    /// <summary>Data, tokenizer and token files (generated unless files were given), written under the output folder.</summary>
    public void PrepareData()
    {
        string dataDir = Path.Combine(settings.OutputDirectory, "data");
        Directory.CreateDirectory(dataDir);
        var gen = new RestaurantData(settings.Seed);
        List<string> docs;
        if (settings.CorpusFile is { } corpus)
        {
            docs = TokenFile.SplitDocuments(TokenFile.ReadCorpus(corpus)).ToList(); // strict UTF-8, as --task is read
        }
        else
        {
            docs = gen.Corpus(settings.Documents);
            Spdf.Tensors.Serialization.AtomicFile.WriteAllText(Path.Combine(dataDir, "corpus.txt"), string.Join("\n\n", docs) + "\n");
        }
        if (settings.TaskFile is { } task)
        {
            var all = E2EDataset.Load(task).ToList();
            if (all.Count < 2) throw new ArgumentException($"The task '{task}' has {all.Count} meaning representations; expected at least 2 (train and test).");
            int test = Math.Clamp(all.Count / 10, 1, settings.TestExamples);
            TestExamples = all.TakeLast(test).ToList();
            TrainExamples = all.Take(all.Count - test).ToList();
        }
        else
        {
            TestExamples = gen.Task(settings.TestExamples);
            TrainExamples = gen.Task(settings.TrainExamples, TestExamples.Select(e => e.MeaningRepresentation).ToHashSet());
            E2EDataset.Save(Path.Combine(dataDir, "e2e_train.csv"), TrainExamples);
            E2EDataset.Save(Path.Combine(dataDir, "e2e_test.csv"), TestExamples);
        }
        var taskText = TrainExamples.SelectMany(e => e.References.Select(r => E2EDataset.Prompt(e.MeaningRepresentation) + r));
        Tokenizer = BpeTokenizer.Train(docs.Concat(taskText), settings.VocabSize);
        Tokenizer.Save(Path.Combine(dataDir, "tokenizer.json"));
        string tokens = Path.Combine(dataDir, "corpus.tokens");
        TokenFile.Write(tokens, TokenFile.EncodeDocuments(Tokenizer, docs), Tokenizer.VocabSize);
        var stream = TokenFile.Open(tokens);
        (_train, _val) = stream.Split(0.05);
        PrepareContinualData(dataDir, gen);
        Config = settings.Model(Tokenizer.VocabSize);
        FitTaskToContext();
        if (_val.Length < Config.ContextLength + 1)
            throw new ArgumentException($"The corpus encodes to {stream.Length} tokens; the validation split needs at least {Config.ContextLength + 1}. Give a longer corpus.");
        if (settings.Sat && _moreVal.Length < Config.ContextLength + 1)
            throw new ArgumentException($"The continual pre-training corpus encodes to {_more.Length + _moreVal.Length} tokens; its validation split needs at least {Config.ContextLength + 1}. Give a longer --continual-corpus.");
        logger.LogInformation("Data: {Docs} documents, {Tokens} tokens, {Train} train / {Test} test MRs, vocabulary {Vocab}",
            docs.Count, stream.Length, TrainExamples.Count, TestExamples.Count, Tokenizer.VocabSize);
    }

    /// <summary>
    /// More data for SAT's continual pre-training, encoded with the tokenizer the model was pre-trained with: a file,
    /// documents generated with another seed, or (with a <c>--corpus</c> and no <c>--continual-corpus</c>) the corpus's
    /// training split again.
    /// </summary>
    private void PrepareContinualData(string dataDir, RestaurantData gen)
    {
        List<string>? more = null;
        if (settings.ContinualCorpusFile is { } file)
        {
            more = TokenFile.SplitDocuments(TokenFile.ReadCorpus(file)).ToList();
            ContinualData = $"the corpus `{Path.GetFileName(file)}`";
        }
        else if (settings.CorpusFile is null)
        {
            more = new RestaurantData(settings.Seed + 1).Corpus(settings.ContinualDocuments);
            Spdf.Tensors.Serialization.AtomicFile.WriteAllText(Path.Combine(dataDir, "corpus_continual.txt"), string.Join("\n\n", more) + "\n");
            ContinualData = $"{settings.ContinualDocuments:N0} more generated documents (seed {settings.Seed + 1}), none of them seen in pre-training";
        }
        if (more is null)
        {
            (_more, _moreVal) = (_train, _val);
            ContinualData = "the pre-training corpus's training split again (give --continual-corpus for new data)";
            return;
        }
        string tokens = Path.Combine(dataDir, "corpus_continual.tokens");
        TokenFile.Write(tokens, TokenFile.EncodeDocuments(Tokenizer, more), Tokenizer.VocabSize);
        (_more, _moreVal) = TokenFile.Open(tokens).Split(0.05);
    }

    /// <summary>Task references held out because prompt + reference did not fit the context (0 when all fit).</summary>
    public int HeldOutReferences { get; private set; }

    /// <summary>The largest context the job grows to for its task: twice the configured one.</summary>
    private const int MaxContextGrowth = 2;

    /// <summary>
    /// Makes the task fit the model: another corpus gives another tokenizer, and the same sentences may encode to more
    /// tokens than the configured context holds. The context grows (to a multiple of 16, at most twice the configured one)
    /// to hold the longest prompt + reference; references still longer are held out and counted in the report. Fails only
    /// when no training or no test example is left.
    /// </summary>
    private void FitTaskToContext()
    {
        int Length(E2EExample e, string r) => E2EDataset.Encode(Tokenizer, e.MeaningRepresentation, r).Tokens.Length;
        int longest = TrainExamples.Concat(TestExamples).SelectMany(e => e.References.Select(r => Length(e, r))).Max();
        if (longest <= Config.ContextLength + 1) return;
        int limit = MaxContextGrowth * Config.ContextLength;
        int context = Math.Min(limit, (longest - 1 + 15) / 16 * 16);
        logger.LogWarning("The task's longest sequence has {Longest} tokens with this corpus's tokenizer; context {Old} -> {New}", longest, Config.ContextLength, context);
        Config = Config with { ContextLength = context };
        if (longest <= context + 1) return;
        int held = 0;
        List<E2EExample> Fit(IEnumerable<E2EExample> examples) => examples.Select(e =>
        {
            var kept = e.References.Where(r => Length(e, r) <= context + 1).ToList();
            held += e.References.Count - kept.Count;
            return e with { References = kept };
        }).Where(e => e.References.Count > 0).ToList();
        TrainExamples = Fit(TrainExamples);
        TestExamples = Fit(TestExamples);
        HeldOutReferences = held;
        logger.LogWarning("Held out {Held} task references longer than the context of {Context} tokens", held, context);
        if (TrainExamples.Count == 0 || TestExamples.Count == 0)
            throw new ArgumentException($"Every task reference of the {(TrainExamples.Count == 0 ? "training" : "test")} examples is longer than the context of {context} tokens (the limit is twice the configured context); shorten the task's sentences or give a model with a longer context.");
    }

    /// <summary>The model, sparsified at <paramref name="sparsity"/>: static masks keep only their kept weights
    /// (compressed storage: less memory, faster steps); dynamic ones (RigL) need the dense weight.</summary>
    private (GptModel Model, SparsifiedModel? Handle) Build(double sparsity, SparseWeightStorage storage)
    {
        var model = new GptModel(Config, new Generator(settings.Seed));
        return (model, sparsity > 0 ? Sparsifier.Apply(model, SparsityFor(sparsity, storage)) : null);
    }

    /// <summary>The paper's layers at <paramref name="sparsity"/>, with kernels chosen by rule, not by timing: the report
    /// repeats bit for bit for a given seed (docs/reliability.md).</summary>
    private SparsityConfig SparsityFor(double sparsity, SparseWeightStorage storage = SparseWeightStorage.Dense) =>
        new(SparsityConfig.Default(sparsity, settings.Seed).Groups, settings.Seed) { Storage = storage, KernelMode = SparseKernelMode.Heuristic };

    /// <summary>RigL for pre-training: drop 30% (cosine-decayed) every 1/16 of the run until 3/4 of it.</summary>
    private RigL PretrainRigL() => new(0.3, every: Math.Max(1, settings.PretrainSteps / 16), endStep: settings.PretrainSteps * 3 / 4);

    internal Pretrained Pretrain(double sparsity, IProgress<TrainingProgress> progress, bool rigl = false)
    {
        var storage = rigl ? SparseWeightStorage.Dense : SparseWeightStorage.Compressed;
        PeakMemory.Reset();
        var (model, handle) = Build(sparsity, storage);
        var trainer = new Trainer(model, new TrainerOptions { LogInterval = 50, Communicator = settings.World }, handle, logger, progress);
        int ctx = Config.ContextLength, batch = settings.Batch;
        var stage = new TrainingStage
        {
            Name = "pretrain",
            Data = WindowSampler.ForRank(_train, settings.BatchPerRank, ctx, settings.Seed, settings.Rank, settings.Ranks),
            Steps = settings.PretrainSteps,
            LearningRate = 2e-3,
            MinLearningRate = 2e-4,
            WarmupSteps = Math.Max(1, settings.PretrainSteps / 20),
            WeightDecay = 0.1,
            Validation = () => WindowSampler.Sequential(_val, batch, ctx, maxBatches: settings.Quick ? 2 : 8),
            EvalInterval = Math.Max(1, settings.PretrainSteps / 10),
            SparsityAlgorithm = rigl ? PretrainRigL() : null,
        };
        var result = trainer.Run(stage);
        double flops = FlopCounter.ForTransformer(Config.ToTransformerShape(ctx), sparsity).TrainPerStep((long)batch * ctx, sparse: sparsity > 0) * stage.Steps;
        var report = handle?.Report();
        if (report is not null && !rigl) SparsityReports.Add((sparsity, report));
        var state = model.StateDict().ToDictionary(kv => kv.Key, kv => kv.Value.CloneDetached());
        return new Pretrained(sparsity, state, flops, result.Seconds, result.FinalValidationLoss, result.TrainLoss, report, storage, PeakMemory.Mb());
    }

    /// <summary>How a pre-trained model is fine-tuned.</summary>
    internal sealed record FinetuneKind(string Name, bool Densify, double GmpTarget = 0, GptModel? Teacher = null, SatOptions? Sat = null);

    internal (RunResult Run, GptModel Model) Finetune(Pretrained pre, FinetuneKind kind, IProgress<TrainingProgress> progress, IProgress<int> evalProgress)
    {
        bool gmp = kind.GmpTarget > 0;
        PeakMemory.Reset();
        var (model, handle) = Build(pre.Sparsity, pre.Storage);
        model.LoadStateDict(pre.State);
        if (gmp) handle = Sparsifier.Apply(model, SparsityFor(0.0)); // dense, ready to be pruned
        var trainer = new Trainer(model, new TrainerOptions { LogInterval = 50, Communicator = settings.World }, handle, logger, progress);
        if (handle is not null && !gmp)
        {
            if (kind.Densify) trainer.Densify(OptimizerStateOnDensify.Reset);
            else trainer.FreezeMask();
        }
        int ft = settings.FinetuneSteps;
        // Gradual magnitude pruning during fine-tuning (Kurtic et al. 2023): cubic from 0 to the target between 10% and
        // 60% of the steps, every 1/20 of them; the rest of the run recovers at the final sparsity.
        var algorithm = gmp ? GradualMagnitudePruning.Cubic(0, kind.GmpTarget, Math.Max(1, ft / 10), ft * 6 / 10, Math.Max(1, ft / 20)) : null;
        int ctx = Config.ContextLength, batch = settings.Batch;
        var result = trainer.Run(new TrainingStage
        {
            Name = "finetune",
            // Each rank fine-tunes on its own share of the MRs (all of them in one process).
            Data = new E2EBatcher(Tokenizer, TrainExamples.Where((_, i) => i % settings.Ranks == settings.Rank), settings.BatchPerRank, ctx, settings.Seed + 1),
            Steps = settings.FinetuneSteps,
            LearningRate = 1e-3,
            MinLearningRate = 1e-4,
            WarmupSteps = Math.Max(1, settings.FinetuneSteps / 20),
            WeightDecay = 0.1,
            Validation = () => Take(new E2EBatcher(Tokenizer, TestExamples, batch, ctx, 7), Math.Max(1, TestExamples.Sum(e => e.References.Count) / batch)),
            EvalInterval = Math.Max(1, settings.FinetuneSteps / 5),
            SparsityAlgorithm = algorithm,
            Distillation = kind.Teacher is null ? null : new DistillationOptions(kind.Teacher, Gain: 1.0),
            Omission = kind.Sat,
        });
        var scores = DataToTextEvaluation.Evaluate(model, Tokenizer, TestExamples, maxNewTokens: 64, evalProgress);
        string name = kind.Name;
        double sparsity = gmp ? kind.GmpTarget : pre.Sparsity;
        string kernels = gmp ? "dense (pruned while fine-tuning)" : pre.Report is null ? "dense" : string.Join(", ", pre.Report.Rows.GroupBy(r => r.Kernel).Select(g => $"{g.Key} ×{g.Count()}"));
        var run = new RunResult(name, sparsity, pre.Flops, pre.Seconds, pre.ValLoss, result.FinalValidationLoss, scores.Bleu, scores.RougeL,
            kernels, pre.Curve, result.TrainLoss, scores.Outputs.Take(3).ToList(), Math.Max(pre.PeakMb, PeakMemory.Mb())) { Finetune = result };
        logger.LogInformation("{Name} @ {Sparsity:P0}: val loss {Val:F3}, fine-tune val loss {Ft:F3}, BLEU {Bleu:F2}, ROUGE-L {Rouge:F2}",
            name, sparsity, run.ValLoss, run.FinetuneValLoss, run.Bleu, run.RougeL);
        return (run, model);
    }

    /// <summary>SAT's options for a run of <paramref name="steps"/>: the ladder, or the constant rate.</summary>
    internal SatOptions SatFor(SatChoice choice, bool ladder, int steps) =>
        new(ladder ? choice.Ladder(steps) : Spdf.Sparsity.Omission.OmissionSchedule.Constant(choice.ConstantRate))
        {
            Scorer = Spdf.Sparsity.Omission.UnitScorers.FromName(settings.SatScore), Selection = settings.SatSelection, Seed = settings.Seed,
            Channels = choice.Units != "heads", Heads = choice.Units != "channels",
        };

    /// <summary>Continual pre-training of the dense pre-trained model on more data, dense or with SAT.</summary>
    internal SatResult Continue(Pretrained dense, string name, SatOptions? sat, IProgress<TrainingProgress> progress)
    {
        var model = new GptModel(Config, new Generator(settings.Seed));
        model.LoadStateDict(dense.State);
        var trainer = new Trainer(model, new TrainerOptions { LogInterval = 50, Communicator = settings.World }, null, logger, progress);
        int ctx = Config.ContextLength, steps = settings.ContinualSteps;
        var result = trainer.Run(new TrainingStage
        {
            Name = "continual",
            Data = WindowSampler.ForRank(_more, settings.BatchPerRank, ctx, settings.Seed + 2, settings.Rank, settings.Ranks),
            Steps = steps,
            LearningRate = 1e-3,
            MinLearningRate = 1e-4,
            WarmupSteps = Math.Max(1, steps / 20),
            WeightDecay = 0.1,
            Validation = () => WindowSampler.Sequential(_moreVal, settings.Batch, ctx, maxBatches: settings.Quick ? 2 : 8),
            EvalInterval = Math.Max(1, steps / 5),
            Omission = sat,
        });
        var run = new SatResult("continual pre-training", name, sat?.Schedule.ToString() ?? "none", result.Seconds, result.Tokens / Math.Max(1e-9, result.Seconds),
            result.FlopsSaved, result.FinalValidationLoss, double.NaN, double.NaN, result.TrainLoss);
        logger.LogInformation("SAT continual pre-training, {Name}: {Seconds:F1} s, validation loss {Val:F4}, {Saved:P1} of the FLOPs saved", name, run.Seconds, run.ValLoss, run.FlopsSaved);
        return run;
    }

    /// <summary>A fine-tuning run as a row of the SAT table.</summary>
    private static SatResult SatRow(RunResult r, string name, SatOptions? sat) =>
        new("fine-tuning", name, sat?.Schedule.ToString() ?? "none", r.Finetune!.Seconds, r.Finetune.Tokens / Math.Max(1e-9, r.Finetune.Seconds),
            r.Finetune.FlopsSaved, r.FinetuneValLoss, r.Bleu, r.RougeL, r.FinetuneCurve);

    /// <summary>SAT's rows: continual pre-training and fine-tuning of the dense pre-trained model, each dense, with
    /// the ladder and at a constant rate.</summary>
    private void RunSat(ProgressContext ctx, Pretrained densePre, RunResult denseFinetune)
    {
        foreach (var (name, ladder) in new[] { ("dense", (bool?)null), ("SAT ladder", true), ("SAT constant", false) })
        {
            var sat = ladder is { } l ? SatFor(settings.SatContinual, l, settings.ContinualSteps) : null;
            var task = ctx.AddTask($"continue {name,-13}", maxValue: settings.ContinualSteps);
            SatResults.Add(Continue(densePre, name, sat,
                new SyncProgress<TrainingProgress>(p => { task.Value = p.Step; task.Description = $"continue {name,-13} loss {p.Loss:F3}"; })));
        }
        SatResults.Add(SatRow(denseFinetune, "dense", null));
        foreach (var (name, ladder) in new[] { ("SAT ladder", true), ("SAT constant", false) })
        {
            var sat = SatFor(settings.SatFinetune, ladder, settings.FinetuneSteps);
            FinetuneTask(ctx, densePre, new FinetuneKind($"dense-pretrain+{name.ToLowerInvariant().Replace(' ', '-')}-finetune", true, Sat: sat), name, out var run);
            SatResults.Add(SatRow(run, name, sat));
        }
    }

    private static IEnumerable<(IntTensor, IntTensor)> Take(E2EBatcher b, int n)
    {
        for (int i = 0; i < n; i++) yield return b.Next();
    }

    private Pretrained PretrainTask(ProgressContext ctx, double sparsity, string label, bool rigl)
    {
        var pt = ctx.AddTask($"pre-train {label,-12}", maxValue: settings.PretrainSteps);
        return Pretrain(sparsity, new SyncProgress<TrainingProgress>(p => { pt.Value = p.Step; pt.Description = $"pre-train {label,-12} loss {p.Loss:F3}"; }), rigl);
    }

    private GptModel FinetuneTask(ProgressContext ctx, Pretrained pre, FinetuneKind kind, string label)
    {
        var model = FinetuneTask(ctx, pre, kind, label, out var run);
        Results.Add(run);
        return model;
    }

    private GptModel FinetuneTask(ProgressContext ctx, Pretrained pre, FinetuneKind kind, string label, out RunResult result)
    {
        var ft = ctx.AddTask($"fine-tune {label,-12}", maxValue: settings.FinetuneSteps + TestExamples.Count);
        var (run, model) = Finetune(pre, kind,
            new SyncProgress<TrainingProgress>(p => { ft.Value = p.Step; ft.Description = $"fine-tune {label,-12} loss {p.Loss:F3}"; }),
            new SyncProgress<int>(i => { ft.Value = settings.FinetuneSteps + i; ft.Description = $"evaluate  {label,-12} {i}/{TestExamples.Count}"; }));
        result = run;
        return model;
    }

    /// <summary>Runs everything with Spectre progress bars.</summary>
    public void Run()
    {
        var levels = new[] { 0.0 }.Concat(settings.Sparsities).ToList();
        AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                if (settings.SatOnly)
                {
                    var pre = PretrainTask(ctx, 0, "dense", rigl: false);
                    FinetuneTask(ctx, pre, new FinetuneKind(DenseRun, true), "dense");
                    RunSat(ctx, pre, Results[0]);
                    return;
                }
                Pretrained? densePre = null;
                GptModel? denseFinetuned = null;
                foreach (double s in levels)
                {
                    var pre = PretrainTask(ctx, s, s == 0 ? "dense" : $"{s:P0} sparse", rigl: false);
                    if (s == 0) densePre = pre;
                    foreach (bool densify in s == 0 ? new[] { true } : new[] { true, false })
                    {
                        var kind = new FinetuneKind(s == 0 ? DenseRun : densify ? SpdfRun : SparseFinetuneRun, densify);
                        var model = FinetuneTask(ctx, pre, kind, s == 0 ? "dense" : densify ? $"{s:P0} → dense" : $"{s:P0} sparse");
                        if (s == 0) denseFinetuned = model;
                    }
                }
                // Neighbours of SPDF at equal sparsity: dense pre-training then gradual magnitude pruning while fine-tuning
                // (with and without SquareHead distillation from the dense fine-tuned model), and RigL pre-training.
                foreach (double s in settings.Sparsities)
                {
                    FinetuneTask(ctx, densePre!, new FinetuneKind(GmpRun, true, s), $"GMP {s:P0}");
                    FinetuneTask(ctx, densePre!, new FinetuneKind(GmpSquareHeadRun, true, s, denseFinetuned), $"GMP+SqH {s:P0}");
                }
                double rs = settings.Sparsities.Max();
                var riglPre = PretrainTask(ctx, rs, $"RigL {rs:P0}", rigl: true);
                FinetuneTask(ctx, riglPre, new FinetuneKind(RigLRun, true), $"RigL {rs:P0} → dense");
                if (settings.Sat) RunSat(ctx, densePre!, Results.First(r => r.Name == DenseRun));
            });
    }
}

/// <summary>An <see cref="IProgress{T}"/> that calls back on the reporting thread (Progress&lt;T&gt; posts asynchronously).</summary>
internal sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
