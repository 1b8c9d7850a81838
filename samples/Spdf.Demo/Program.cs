// Spdf.Demo — the main job. Until the GPT workflow lands (issue: the main job), it runs the SPDF recipe on a
// generated classification task: a teacher network labels random inputs; a student MLP is trained dense, and with
// 75% static random sparsity followed either by Densify + dense fine-tuning (SPDF) or by fine-tuning with the mask kept.
using System.Diagnostics;
using Spectre.Console;
using Spdf.Sparsity;
using Spdf.Tensors;
using Spdf.Tensors.Autograd;
using Spdf.Tensors.Kernels.Cpu;
using Spdf.Tensors.Nn;
using Spdf.Tensors.Optim;

if (args.Length > 0 && args[0] == "flops")
{
    try { return FlopsCommand.Run(args[1..]); }
    catch (ArgumentException e) { Console.Error.WriteLine(e.Message); return 2; }
}
bool quick = args.Contains("--quick");
if (args.Contains("--help") || args.Contains("-h"))
{
    Console.WriteLine("Usage: dotnet run -c Release --project samples/Spdf.Demo [-- --quick]");
    Console.WriteLine("       dotnet run -c Release --project samples/Spdf.Demo -- flops [--preset gpt2-small|gpt3-xl|mini|tiny] [--sparsity S] [--ctx T] [--json]");
    return 0;
}

int inputs = 64, hidden = quick ? 128 : 512, classes = 10;
int trainSize = quick ? 2048 : 16384, testSize = 2048, batch = 128;
int pretrainSteps = quick ? 60 : 600, finetuneSteps = quick ? 30 : 300;

AnsiConsole.MarkupLine($"[bold]Spdf demo[/]: sparse pre-training and dense fine-tuning of an MLP ({inputs}→{hidden}→{hidden}→{classes}) on a teacher-labelled task");
AnsiConsole.MarkupLine($"GEMM micro-kernel: [green]{Gemm.KernelName}[/], threads: {Gemm.MaxThreads}");

// Data: a fixed random teacher labels Gaussian inputs; labels of the fine-tuning task come from a shifted teacher.
var gen = new Generator(2026);
var teacher = new Teacher(inputs, classes, gen);
var (xTrain, yTrain) = teacher.Sample(trainSize, gen, shift: 0f);
var (xTest, yTest) = teacher.Sample(testSize, gen, shift: 0f);
var (xTune, yTune) = teacher.Sample(trainSize / 2, gen, shift: 0.5f);
var (xTuneTest, yTuneTest) = teacher.Sample(testSize, gen, shift: 0.5f);

var results = new List<(string Name, double Sparsity, double PretrainSec, double PretrainAcc, double FinetuneAcc)>();
foreach (var (name, sparsity, denseFinetune) in new[] { ("dense", 0.0, true), ("sparse-pretrain+dense-finetune", 0.75, true), ("sparse-pretrain+sparse-finetune", 0.75, false) })
{
    var model = new Student(inputs, hidden, classes, new Generator(7));
    SparsifiedModel? handle = sparsity > 0 ? Sparsifier.Apply(model, SparsityConfig.Default(sparsity, seed: 11)) : null;
    var opt = new AdamW(model.Parameters(), learningRate: 2e-3, weightDecay: 0.01);
    double sec = 0;
    AnsiConsole.Progress().Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
        .Start(ctx =>
        {
            var task = ctx.AddTask($"{name}: pre-train", maxValue: pretrainSteps);
            var sw = Stopwatch.StartNew();
            Train(model, opt, xTrain, yTrain, pretrainSteps, batch, new Generator(1), () => task.Increment(1));
            sec = sw.Elapsed.TotalSeconds;
        });
    double preAcc = Accuracy(model, xTest, yTest);
    if (handle is not null)
    {
        if (denseFinetune) Transitions.Densify(handle, opt, OptimizerStateOnDensify.Keep, pretrainSteps);
        else Transitions.FreezeMask(handle, pretrainSteps);
    }
    Train(model, opt, xTune, yTune, finetuneSteps, batch, new Generator(2), () => { });
    double tuneAcc = Accuracy(model, xTuneTest, yTuneTest);
    if (handle is not null && !denseFinetune) AnsiConsole.WriteLine(handle.Report().ToString());
    results.Add((name, sparsity, sec, preAcc, tuneAcc));
}

var table = new Table().AddColumns("run", "sparsity", "pre-train s", "pre-train acc", "fine-tune acc");
foreach (var r in results)
    table.AddRow(r.Name, $"{r.Sparsity:P0}", $"{r.PretrainSec:F2}", $"{r.PretrainAcc:P1}", $"{r.FinetuneAcc:P1}");
AnsiConsole.Write(table);
if (results.Any(r => r.FinetuneAcc < 1.5 / classes))
{
    AnsiConsole.MarkupLine("[red]A run did not learn (accuracy near chance).[/]");
    return 1;
}
return 0;

static void Train(Student model, Optimizer opt, Tensor x, IntTensor y, int steps, int batch, Generator g, Action tick)
{
    model.Train();
    int n = y.Numel, d = x.Size(1);
    var xb = new float[batch * d];
    var yb = new int[batch];
    for (int step = 0; step < steps; step++)
    {
        for (int i = 0; i < batch; i++)
        {
            int j = g.NextInt(n);
            x.AsReadOnlySpan().Slice(j * d, d).CopyTo(xb.AsSpan(i * d, d));
            yb[i] = y.Data[j];
        }
        opt.ZeroGrad();
        var loss = Functional.CrossEntropy(model.Forward(new Tensor((float[])xb.Clone(), new Shape(batch, d))), new IntTensor((int[])yb.Clone(), new Shape(batch)));
        if (!float.IsFinite(loss.Item())) throw new InvalidOperationException($"Loss became {loss.Item()} at step {step}.");
        loss.Backward();
        GradClip.ClipGradNorm(model.Parameters(), 1.0);
        opt.Step();
        tick();
    }
}

static double Accuracy(Student model, Tensor x, IntTensor y)
{
    model.Eval();
    using var _ = GradMode.NoGrad();
    var (_, pred) = model.Forward(x).Max(-1);
    int ok = 0;
    for (int i = 0; i < y.Numel; i++) ok += pred.Data[i] == y.Data[i] ? 1 : 0;
    return (double)ok / y.Numel;
}

/// <summary>The model being trained: a plain MLP written against Spdf.Tensors, sparsified by name.</summary>
sealed class Student : Module<Tensor, Tensor>
{
    public Linear fc1, fc2, head;
    public Student(int i, int h, int c, Generator g)
    {
        fc1 = new Linear(i, h, generator: g);
        fc2 = new Linear(h, h, generator: g);
        head = new Linear(h, c, generator: g);
        RegisterModule("fc1", fc1);
        RegisterModule("fc2", fc2);
        RegisterModule("lm_head", head); // named like an output head, so the default config keeps it dense
    }
    public override Tensor Forward(Tensor x) => head.Forward(fc2.Forward(fc1.Forward(x).Gelu()).Gelu());
}

/// <summary>A fixed random two-layer network whose argmax gives the labels; <c>shift</c> moves the input distribution.</summary>
sealed class Teacher(int inputs, int classes, Generator g)
{
    private readonly Linear _a = new(inputs, 128, generator: g), _b = new(128, classes, generator: g);
    public (Tensor X, IntTensor Y) Sample(int n, Generator g, float shift)
    {
        var x = Tensor.Randn(new Shape(n, inputs), g) + shift;
        using var _ = GradMode.NoGrad();
        var (_, y) = _b.Forward(_a.Forward(x).Tanh() * 3f).Max(-1);
        return (x.Detach(), y);
    }
}
