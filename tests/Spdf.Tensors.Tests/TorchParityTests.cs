using Spdf.Tensors.Nn;
using Spdf.Tensors.Optim;
using Spdf.Tensors.Serialization;

namespace Spdf.Tensors.Tests;

/// <summary>
/// Compares against PyTorch on identical weights: tests/fixtures/make_torch_fixtures.py (Debian's python3-torch)
/// wrote the expected values. Tolerance: 1e-5 absolute + 1e-4 relative on forward values and gradients, 1e-4 on
/// weights after three AdamW steps (float32 summation order differs between OpenBLAS and our GEMM).
/// </summary>
public class TorchParityTests
{
    private sealed class Mlp : Module<Tensor, Tensor>
    {
        public readonly Linear fc1 = new(13, 32);
        public readonly LayerNorm ln = new(32);
        public readonly Linear fc2 = new(32, 5);
        public Mlp() => RegisterComponents();
        public override Tensor Forward(Tensor x) => fc2.Forward(ln.Forward(fc1.Forward(x).Gelu()));
    }

    private static readonly OrderedDictionary<string, Tensor> Fixture =
        SafeTensors.Load(Path.Combine(AppContext.BaseDirectory, "fixtures", "mlp_adamw.safetensors")).Tensors;

    private static void Close(Tensor actual, Tensor expected, double rtol, double atol, string what)
    {
        actual.Shape.Should().Be(expected.Shape, what);
        var a = actual.AsReadOnlySpan(); var e = expected.AsReadOnlySpan();
        for (int i = 0; i < a.Length; i++)
            ((double)Math.Abs(a[i] - e[i])).Should().BeLessThanOrEqualTo(atol + rtol * Math.Abs(e[i]), $"{what}[{i}]: {a[i]} vs torch {e[i]}");
    }

    [Theory]
    [InlineData("adamw")]
    [InlineData("sgd")]
    public void AResetMidRunMatchesPyTorchsFreshOptimizer(string kind)
    {
        // tests/fixtures/make_reset_fixture.py: 7 steps, a fresh PyTorch optimizer on the same weights, 4 more steps.
        var f = SafeTensors.Load(Path.Combine(AppContext.BaseDirectory, "fixtures", "optimizer_reset.safetensors")).Tensors;
        var grads = f["grads"].ToArray(); var after = f[$"{kind}.after"].ToArray();
        int n = f["init"].Numel, steps = grads.Length / n;
        var p = new Parameter(Tensor.From(f["init"].ToArray()));
        Optimizer opt = kind == "adamw"
            ? new AdamW([p], learningRate: 0.05, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1)
            : new Sgd([p], learningRate: 0.05, momentum: 0.9, weightDecay: 0.1);
        for (int t = 0; t < steps; t++)
        {
            if (t == 7) opt.ResetState(p);
            p.Grad = Tensor.From(grads.AsSpan(t * n, n).ToArray());
            opt.Step();
            Close(p, Tensor.From(after.AsSpan(t * n, n).ToArray()), 1e-5, 1e-6, $"{kind} weights after step {t + 1}");
        }
    }

    private static (Mlp Model, Tensor X, IntTensor Targets) Setup()
    {
        var model = new Mlp();
        model.LoadStateDict(Fixture.Where(kv => kv.Key.StartsWith("fc", StringComparison.Ordinal) || kv.Key.StartsWith("ln.", StringComparison.Ordinal))
                                   .ToDictionary(kv => kv.Key, kv => kv.Value));
        var targets = new IntTensor(Fixture["targets"].ToArray().Select(v => (int)v).ToArray(), new Shape(8));
        return (model, Fixture["x"], targets);
    }

    [Fact]
    public void ForwardLossAndEveryGradientMatchPyTorch()
    {
        var (model, x, targets) = Setup();
        var logits = model.Forward(x);
        var loss = Functional.CrossEntropy(logits, targets);
        Close(logits, Fixture["logits"], 1e-4, 1e-5, "logits");
        Close(loss, Fixture["loss"], 1e-5, 1e-6, "loss");
        loss.Backward();
        foreach (var (name, p) in model.NamedParameters())
            Close(p.Grad!, Fixture["grad." + name], 1e-3, 1e-5, "grad." + name);
    }

    [Fact]
    public void ThreeAdamWStepsMatchPyTorch()
    {
        var (model, x, targets) = Setup();
        var opt = new AdamW(model.Parameters(), learningRate: 1e-2, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.1);
        var losses = new List<float>();
        for (int step = 0; step < 3; step++)
        {
            opt.ZeroGrad();
            var loss = Functional.CrossEntropy(model.Forward(x), targets);
            loss.Backward();
            opt.Step();
            losses.Add(loss.Item());
        }
        Close(Tensor.From(losses.ToArray()), Fixture["losses"], 1e-5, 1e-6, "losses");
        foreach (var (name, p) in model.NamedParameters())
            Close(p, Fixture["after." + name], 1e-4, 1e-5, "after." + name);
    }
}
