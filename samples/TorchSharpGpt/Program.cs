// A GPT written in plain TorchSharp (NanoGpt.cs, nanoGPT's shape) adopts Spdf in a handful of lines: the SPDF experiment
// of the main job (samples/Spdf.Demo) on its restaurant corpus and E2E-style data-to-text task, pre-training the same
// model dense and 75% sparse for the same tokens, then Densify and dense fine-tuning, with the main job's table rows.
// The model, optimizer and training loop are TorchSharp's; the data generator, BPE tokenizer and BLEU / ROUGE-L are
// borrowed from Spdf.Gpt and the demo so that the numbers are comparable.
//
//   dotnet run -c Release --project samples/TorchSharpGpt [-- --quick] [--sparsity 0.75] [--seed 2026]
// Data-parallel on MPI (each rank trains on its shard of every batch; gradients averaged, kept values only while sparse):
//   dotnet build -c Release samples/TorchSharpGpt && mpiexec -n 2 -bind-to core dotnet samples/TorchSharpGpt/bin/Release/net10.0/TorchSharpGpt.dll --quick
using System.Diagnostics;
using System.Globalization;
using Spdf.Demo;
using Spdf.Gpt.Data;
using Spdf.Gpt.Evaluation;
using Spdf.Gpt.Tokenization;
using Spdf.Mpi;
using Spdf.Sparsity;
using Spdf.Sparsity.Distributed;
using Spdf.Sparsity.Flops;
using Spdf.Sparsity.TorchSharp;
using TorchSharp;
using TorchSharpGpt;
using static TorchSharp.torch;

var inv = CultureInfo.InvariantCulture;
bool quick = args.Contains("--quick");
double sparsity = Arg("--sparsity", 0.75);
ulong seed = (ulong)Arg("--seed", 2026);
double Arg(string name, double dflt)
{
    int i = Array.IndexOf(args, name);
    if (i < 0) return dflt;
    if (i + 1 >= args.Length || !double.TryParse(args[i + 1], NumberStyles.Float, inv, out double v))
        throw new ArgumentException($"{name} needs a number; got '{(i + 1 < args.Length ? args[i + 1] : "")}'.");
    return v;
}
if (!(sparsity > 0 && sparsity < 1)) throw new ArgumentOutOfRangeException("--sparsity", sparsity, "Expected a sparsity in (0, 1).");
// Under mpiexec, an MPI group (rank 0 prints); alone, one process and MPI is never loaded.
return MpiCommunicator.LaunchedByMpiexec ? MpiCommunicator.Run(args, Experiment) : Experiment(SingleProcess.Instance);

int Experiment(ICommunicator world)
{
void Say(string line) { if (world.Rank == 0) Console.WriteLine(line); }

// The main job's sizes (samples/Spdf.Demo, DemoSettings).
int vocab = quick ? 512 : 1024, batch = quick ? 8 : 16, pretrainSteps = quick ? 150 : 800, finetuneSteps = quick ? 100 : 600;
int docsCount = quick ? 600 : 12000, trainCount = quick ? 200 : 1500, testCount = quick ? 12 : 100;
int layers = quick ? 2 : 4, embd = quick ? 64 : 128, heads = 4, ctx = quick ? 192 : 128;

// Data: the demo's generated corpus and task, its tokenizer.
var gen = new RestaurantData(seed);
var docs = gen.Corpus(docsCount);
var test = gen.Task(testCount);
var train = gen.Task(trainCount, test.Select(e => e.MeaningRepresentation).ToHashSet());
var tokenizer = BpeTokenizer.Train(docs.Concat(train.SelectMany(e => e.References.Select(r => E2EDataset.Prompt(e.MeaningRepresentation) + r))), vocab);
bool Fits(E2EExample e) => e.References.All(r => E2EDataset.Encode(tokenizer, e.MeaningRepresentation, r).Tokens.Length <= ctx + 1);
int heldOut = train.Count(e => !Fits(e)) + test.Count(e => !Fits(e));
train = train.Where(Fits).ToList();
test = test.Where(Fits).ToList();
var (trainTokens, valTokens) = TokenStream.FromArray(TokenFile.EncodeDocuments(tokenizer, docs), tokenizer.VocabSize).Split(0.05);
Say($"data: {docs.Count} documents, {trainTokens.Length + valTokens.Length} tokens, {train.Count} train / {test.Count} test MRs ({heldOut} over the context held out), vocabulary {tokenizer.VocabSize}");
var config = new NanoGptConfig(layers, embd, heads, ctx, tokenizer.VocabSize);
if (batch % world.Size != 0) throw new ArgumentException($"The batch of {batch} does not split over {world.Size} ranks.");
int batchPerRank = batch / world.Size; // the global batch stays the same

Tensor T(Spdf.Tensors.IntTensor t) => tensor(t.Data.Select(v => (long)v).ToArray(), t.Shape.ToArray().Select(d => (long)d).ToArray());

optim.Optimizer AdamW(NanoGpt model, double lr) => optim.AdamW(
[
    new TorchSharp.Modules.AdamW.ParamGroup(model.parameters().Where(p => p.dim() >= 2), new() { LearningRate = lr, weight_decay = 0.1 }),
    new TorchSharp.Modules.AdamW.ParamGroup(model.parameters().Where(p => p.dim() < 2), new() { LearningRate = lr, weight_decay = 0 }),
], lr: lr, beta1: 0.9, beta2: 0.95);

// One training loop for every stage: cosine learning rate after a linear warm-up, gradient clipping at 1, and Spdf's
// controller around the optimizer step when the model is sparse.
double Train(NanoGpt model, optim.Optimizer opt, SparsityController? controller, TorchSparseModel? sparse, IBatchSource data, int steps, double lr, double minLr, string label)
{
    model.train();
    TorchDataParallel.BroadcastParameters(model, world); // every rank starts from rank 0's weights
    var reducer = TorchDataParallel.CreateReducer(model, sparse, world); // static masks: built once per stage
    int warmup = Math.Max(1, steps / 20);
    var clock = Stopwatch.StartNew();
    double last = 0;
    for (long step = 1; step <= steps; step++)
    {
        double rate = step <= warmup ? lr * step / warmup : minLr + 0.5 * (lr - minLr) * (1 + Math.Cos(Math.PI * (step - warmup) / Math.Max(1, steps - warmup)));
        foreach (var g in opt.ParamGroups) g.LearningRate = rate;
        using var scope = NewDisposeScope();
        controller?.BeginStep(step);
        opt.zero_grad();
        var (x, y) = data.Next();
        var loss = model.Loss(T(x), T(y));
        loss.backward();
        controller?.BeforeOptimizerStep(step);
        reducer.AverageGradients(); // the group's mean gradient (a no-op in one process)
        nn.utils.clip_grad_norm_(model.parameters(), 1.0);
        opt.step();
        controller?.AfterOptimizerStep(step);
        last = loss.item<float>();
        if (step % Math.Max(1, steps / 4) == 0 || step == steps)
            Say($"  {label} step {step}/{steps}: loss {last:F3}, lr {rate:E2}, {clock.Elapsed.TotalSeconds:F1} s");
    }
    return clock.Elapsed.TotalSeconds;
}

double Evaluate(NanoGpt model, IEnumerable<(Spdf.Tensors.IntTensor, Spdf.Tensors.IntTensor)> batches)
{
    model.eval();
    using var _ = no_grad();
    double sum = 0; int n = 0;
    foreach (var (x, y) in batches)
    {
        using var scope = NewDisposeScope();
        sum += model.Loss(T(x), T(y)).item<float>();
        n++;
    }
    return sum / Math.Max(1, n);
}

string Generate(NanoGpt model, string prompt)
{
    model.eval();
    using var _ = no_grad();
    var ids = tokenizer.Encode(prompt, allowSpecial: false).Select(v => (long)v).ToList();
    int start = ids.Count;
    for (int i = 0; i < 64 && ids.Count < ctx; i++)
    {
        using var scope = NewDisposeScope();
        using var idx = tensor(ids.ToArray(), [1, ids.Count]);
        long next = model.call(idx)[0, -1].argmax().item<long>();
        if (next == tokenizer.EndOfTextId) break;
        ids.Add(next);
    }
    return tokenizer.Decode(ids.Skip(start).Select(v => (int)v).ToArray()).Trim();
}

IEnumerable<(Spdf.Tensors.IntTensor, Spdf.Tensors.IntTensor)> TestBatches()
{
    var b = new E2EBatcher(tokenizer, test, batch, ctx, 7);
    for (int i = 0, n = Math.Max(1, test.Sum(e => e.References.Count) / batch); i < n; i++) yield return b.Next();
}

var rows = new List<string>();
foreach (double s in new[] { 0.0, sparsity })
{
    string name = s == 0 ? "dense" : "sparse-pretrain+dense-finetune";
    manual_seed((long)seed);
    var model = new NanoGpt(config);
    var opt = AdamW(model, 2e-3);

    // Spdf, step 1: sparsify the model's attention and MLP weights (not the tied LM head) and let a controller keep the
    // masks around each optimizer step.
    TorchSparseModel? sparse = s > 0 ? TorchSparsifier.Apply(model, SparsityConfig.Default(s, seed), opt) : null;
    var controller = sparse is null ? null : new SparsityController(sparse) { Communicator = world };
    if (sparse is not null) Say(sparse.Report().ToString());

    double seconds = Train(model, opt, controller, sparse, WindowSampler.ForRank(trainTokens, batchPerRank, ctx, seed, world.Rank, world.Size), pretrainSteps, 2e-3, 2e-4, $"{name} pre-train");
    double valLoss = Evaluate(model, WindowSampler.Sequential(valTokens, batch, ctx, maxBatches: quick ? 2 : 8));
    double flops = FlopCounter.ForTransformer(new TransformerShape(layers, embd, ctx, tokenizer.VocabSize), s).TrainPerStep((long)batch * ctx, sparse: s > 0) * pretrainSteps;

    // Spdf, step 2 (SPDF): densify — the dropped weights start at 0.0 and learn during fine-tuning, with fresh moments.
    sparse?.Densify(OptimizerStateOnDensify.Reset, pretrainSteps);

    Train(model, opt, null, sparse, new E2EBatcher(tokenizer, train.Where((_, i) => i % world.Size == world.Rank), batchPerRank, ctx, seed + 1), finetuneSteps, 1e-3, 1e-4, $"{name} fine-tune");
    double ftLoss = Evaluate(model, TestBatches());
    var outputs = test.Select(e => Generate(model, E2EDataset.Prompt(e.MeaningRepresentation))).ToList();
    var refs = test.Select(e => e.References).ToList();
    double bleu = Bleu.Corpus(outputs, refs), rouge = RougeL.Corpus(outputs, refs);
    rows.Add(string.Create(inv, $"| {name} | {s:P0} | {flops / 1e12:F3} | {seconds:F1} | {valLoss:F3} | {ftLoss:F3} | {bleu:F2} | {rouge:F2} |"));
    Say($"{name}: e.g. \"{test[0].MeaningRepresentation}\" → \"{outputs[0]}\"");
    model.Dispose();
}

Say("");
Say("| run | sparsity | pre-train TFLOPs | pre-train s | val loss | fine-tune val loss | BLEU | ROUGE-L |");
Say("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
foreach (var r in rows) Say(r);
return 0;
}
