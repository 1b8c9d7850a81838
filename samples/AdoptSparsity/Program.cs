// AdoptSparsity: your own model (here a small MLP classifier on generated data) adopts SPDF in a few lines:
// Sparsifier.Apply → sparse training → Transitions.Densify → dense fine-tuning, with the per-layer sparsity and the
// measured step time printed. Run: dotnet run -c Release --project samples/AdoptSparsity [-- --quick]
using System.Diagnostics;
using Spdf.Sparsity;
using Spdf.Tensors;
using Spdf.Tensors.Autograd;
using Spdf.Tensors.Nn;
using Spdf.Tensors.Optim;

bool quick = args.Contains("--quick");
int hidden = quick ? 256 : 1024, steps = quick ? 40 : 300;
var data = new TeacherTask(inputs: 64, classes: 10, seed: 2026);
var model = new Classifier(64, hidden, 10, new Generator(7));
double denseMs = StepMs(model, data);

// ---- the adoption: about thirty lines ------------------------------------------------------------------------
var config = new SparsityConfig([new SparsityGroup("fc*.weight", 0.75)], seed: 1); // fc1..fc3 at 75% zeros
var sparse = Sparsifier.Apply(model, config);                                      // Linear → SparseLinear, masks applied
var optimizer = new AdamW(model.Parameters(), learningRate: 2e-3, weightDecay: 0.01);
Train(model, optimizer, data, steps, shift: 0f);                                   // sparse pre-training
Console.WriteLine(sparse.Report());                                                // per-layer sparsity, bytes, kernel
double sparseMs = StepMs(model, data);
double preAccuracy = data.Accuracy(model, shift: 0f);

Transitions.Densify(sparse, optimizer, OptimizerStateOnDensify.Keep, steps);       // SPDF: zeros may learn again
Train(model, optimizer, data, steps / 2, shift: 0.5f);                             // dense fine-tuning on a shifted task
double tuneAccuracy = data.Accuracy(model, shift: 0.5f);
// ---------------------------------------------------------------------------------------------------------------

Console.WriteLine($"train step (batch 256): dense {denseMs:F1} ms, 75% sparse {sparseMs:F1} ms ({denseMs / sparseMs:F2}x)");
Console.WriteLine($"accuracy after sparse pre-training {preAccuracy:P1}; after dense fine-tuning on the shifted task {tuneAccuracy:P1}");
return tuneAccuracy > 0.2 ? 0 : 1;

static void Train(Classifier model, Optimizer opt, TeacherTask data, int steps, float shift)
{
    model.Train();
    var g = new Generator(1);
    for (int s = 0; s < steps; s++)
    {
        var (x, y) = data.Batch(256, g, shift);
        opt.ZeroGrad();
        var loss = Functional.CrossEntropy(model.Forward(x), y);
        loss.Backward();
        GradClip.ClipGradNorm(model.Parameters(), 1.0);
        opt.Step();
    }
}

static double StepMs(Classifier model, TeacherTask data)
{
    var g = new Generator(3);
    var times = new List<double>();
    for (int i = 0; i < 16; i++)
    {
        var (x, y) = data.Batch(256, g, 0f);
        var sw = Stopwatch.StartNew();
        Functional.CrossEntropy(model.Forward(x), y).Backward();
        if (i >= 4) times.Add(sw.Elapsed.TotalMilliseconds); // the first calls JIT-compile and pick each layer's kernel
        model.ZeroGrad();
    }
    return times.Order().ElementAt(times.Count / 2); // median
}

/// <summary>The user's model: a plain MLP written against Spdf.Tensors.</summary>
sealed class Classifier : Module<Tensor, Tensor>
{
    public Linear fc1, fc2, fc3, head;
    public Classifier(int i, int h, int c, Generator g)
    {
        fc1 = new Linear(i, h, generator: g);
        fc2 = new Linear(h, h, generator: g);
        fc3 = new Linear(h, h, generator: g);
        head = new Linear(h, c, generator: g);
        RegisterComponents();
    }
    public override Tensor Forward(Tensor x) => head.Forward(fc3.Forward(fc2.Forward(fc1.Forward(x).Gelu()).Gelu()).Gelu());
}

/// <summary>Generated data: a fixed random network labels Gaussian inputs; <c>shift</c> moves the inputs for fine-tuning.</summary>
sealed class TeacherTask(int inputs, int classes, ulong seed)
{
    private readonly Linear _a = new(inputs, 128, generator: new Generator(seed)), _b = new(128, classes, generator: new Generator(seed + 1));

    public (Tensor X, IntTensor Y) Batch(int n, Generator g, float shift)
    {
        var x = Tensor.Randn(new Shape(n, inputs), g) + shift;
        using var _ = GradMode.NoGrad();
        var (_, y) = _b.Forward(_a.Forward(x).Tanh() * 3f).Max(-1);
        return (x.Detach(), y);
    }

    public double Accuracy(Classifier model, float shift)
    {
        model.Eval();
        using var _ = GradMode.NoGrad();
        var (x, y) = Batch(4096, new Generator(99), shift);
        var (_, pred) = model.Forward(x).Max(-1);
        return (double)Enumerable.Range(0, y.Numel).Count(i => pred.Data[i] == y.Data[i]) / y.Numel;
    }
}
