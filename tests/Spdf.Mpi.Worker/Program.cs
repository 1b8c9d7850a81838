// The data-parallel worker of tests/Spdf.Mpi.Tests: trains a tiny GPT with the Spdf.Gpt trainer on MPI and writes, from
// rank 0, the loss of every step and the final weights. Run under mpiexec -n N, or alone with --emulate R: one process
// whose batch is the R ranks' batches put together (the single-process reference of an R-rank run).
//   mpiexec -n 2 dotnet Spdf.Mpi.Worker.dll --out DIR [--sparsity 0.75] [--steps 6] [--batch 2] [--storage dense|compressed]
//     [--algorithm rigl|set] [--ckpt DIR --ckpt-every K] [--kill-rank R --kill-step K] [--throw-rank R --throw-step K]
using System.Globalization;
using System.Text.Json;
using Spdf.Gpt;
using Spdf.Gpt.Data;
using Spdf.Gpt.Training;
using Spdf.Mpi;
using Spdf.Sparsity;
using Spdf.Sparsity.Algorithms;
using Spdf.Sparsity.Distributed;
using Spdf.Tensors;
using Spdf.Tensors.Serialization;

var o = new Dictionary<string, string>();
for (int i = 0; i + 1 < args.Length; i += 2) o[args[i].TrimStart('-')] = args[i + 1];
string Get(string k, string d) => o.TryGetValue(k, out var v) ? v : d;
int emulate = int.Parse(Get("emulate", "0"), CultureInfo.InvariantCulture);
if (emulate > 0) return Train(SingleProcess.Instance, emulate);
return MpiCommunicator.Run(args, world => Train(world, 0));

int Train(ICommunicator world, int emulated)
{
    double sparsity = double.Parse(Get("sparsity", "0"), CultureInfo.InvariantCulture);
    int steps = int.Parse(Get("steps", "6"), CultureInfo.InvariantCulture), batch = int.Parse(Get("batch", "2"), CultureInfo.InvariantCulture);
    string outDir = Get("out", ".");
    var cfg = new GptConfig(2, 32, 2, 16, 64);
    var model = new GptModel(cfg, new Generator((ulong)(7 + world.Rank))); // different on each rank: the trainer broadcasts rank 0's
    SparsifiedModel? handle = null;
    if (sparsity > 0)
    {
        ISparsityAlgorithm? algorithm = Get("algorithm", "") switch
        {
            "rigl" => new RigL(0.3, every: 2, endStep: steps),
            "set" => new SparseEvolutionaryTraining(Spdf.Sparsity.Schedules.SparsitySchedules.Constant(0.3), new Spdf.Sparsity.Schedules.UpdateSchedule(2, 0, steps), seed: 5),
            _ => null,
        };
        handle = Sparsifier.Apply(model, new SparsityConfig(SparsityConfig.Default(sparsity, seed: 3).Groups, 3)
        {
            Storage = Enum.Parse<SparseWeightStorage>(Get("storage", "dense"), ignoreCase: true),
            Algorithm = algorithm,
        });
    }
    var g = new Generator(11);
    var stream = TokenStream.FromArray(Enumerable.Range(0, 4096).Select(_ => g.NextInt(cfg.VocabSize)).ToArray(), cfg.VocabSize);
    IBatchSource data = emulated > 0
        ? new Concatenated(Enumerable.Range(0, emulated).Select(r => WindowSampler.ForRank(stream, batch, cfg.ContextLength, 5, r, emulated)).ToArray())
        : WindowSampler.ForRank(stream, batch, cfg.ContextLength, 5, world.Rank, world.Size);
    string? ckpt = o.TryGetValue("ckpt", out var c) ? c : null;
    var trainer = new Trainer(model, new TrainerOptions { Communicator = world, CheckpointDirectory = ckpt, VerifyReplicas = true, LogInterval = 1 }, handle);
    if (ckpt is not null) trainer.TryResume();
    int killRank = int.Parse(Get("kill-rank", "-1"), CultureInfo.InvariantCulture), killStep = int.Parse(Get("kill-step", "-1"), CultureInfo.InvariantCulture);
    int throwRank = int.Parse(Get("throw-rank", "-1"), CultureInfo.InvariantCulture), throwStep = int.Parse(Get("throw-step", "-1"), CultureInfo.InvariantCulture);
    trainer.Progress = new Now(p =>
    {
        if (world.Rank == killRank && p.Step == killStep) System.Diagnostics.Process.GetCurrentProcess().Kill(); // SIGKILL
        if (world.Rank == throwRank && p.Step == throwStep) throw new InvalidOperationException($"injected failure at step {p.Step}");
    });
    trainer.Run(new TrainingStage
    {
        Name = "pretrain", Data = data, Steps = steps, LearningRate = 3e-3, MinLearningRate = 3e-4, WarmupSteps = 1,
        CheckpointInterval = int.Parse(Get("ckpt-every", "0"), CultureInfo.InvariantCulture),
    });
    if (world.Rank != 0) return 0;
    Directory.CreateDirectory(outDir);
    var traffic = trainer.GradientBytesPerStep;
    File.WriteAllText(Path.Combine(outDir, "result.json"), JsonSerializer.Serialize(new
    {
        ranks = world.Size, emulated, losses = trainer.TrainLoss.Select(l => l.Loss).ToArray(),
        bytes = traffic.Bytes, dense = traffic.DenseBytes, sparse_layer_bytes = traffic.SparseLayerBytes, sparse_layer_dense_bytes = traffic.SparseLayerDenseBytes,
        kept = handle?.Layers.Select(l => l.Layer.Mask.Values.Select((v, i) => v != 0 ? i : -1).Where(i => i >= 0).Sum(i => (long)i)).ToArray(),
    }));
    SafeTensors.Save(Path.Combine(outDir, "model.safetensors"), model.StateDict());
    return 0;
}

sealed class Now(Action<TrainingProgress> act) : IProgress<TrainingProgress>
{
    public void Report(TrainingProgress value) => act(value);
}

/// <summary>The batches of several sources, one after another along the batch dimension.</summary>
sealed class Concatenated(WindowSampler[] parts) : IBatchSource
{
    public int ContextLength => parts[0].ContextLength;
    public int VocabSize => parts[0].VocabSize;
    public (IntTensor Inputs, IntTensor Targets) Next()
    {
        var batches = parts.Select(p => p.Next()).ToList();
        int rows = batches.Sum(b => b.Inputs.Shape[0]);
        return (new IntTensor(batches.SelectMany(b => b.Inputs.Data).ToArray(), new Shape(rows, ContextLength)),
                new IntTensor(batches.SelectMany(b => b.Targets.Data).ToArray(), new Shape(rows, ContextLength)));
    }
    public ulong[] GetState() => parts.SelectMany(p => p.GetState()).ToArray();
    public void SetState(ulong[] state)
    {
        int n = state.Length / parts.Length;
        for (int i = 0; i < parts.Length; i++) parts[i].SetState(state[(i * n)..((i + 1) * n)]);
    }
}
