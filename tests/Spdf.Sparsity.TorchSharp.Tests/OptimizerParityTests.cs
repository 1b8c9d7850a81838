using TorchSharp;
using static Spdf.Sparsity.TorchSharp.Tests.TorchTestUtil;
using static TorchSharp.torch;
using SpdfTensor = Spdf.Tensors.Tensor;

namespace Spdf.Sparsity.TorchSharp.Tests;

/// <summary>Spdf.Tensors' optimizers against TorchSharp's (PyTorch's semantics) on identical weights and gradients.</summary>
public class OptimizerParityTests
{
    private static float[] Grad(int step, int n) => Enumerable.Range(0, n).Select(i => MathF.Sin(step * 1.3f + i) * (1 + i % 3)).ToArray();

    [Theory]
    [InlineData("adamw")]
    [InlineData("sgd-momentum")]
    public void NStepsAResetAndMStepsEqualLibTorch(string kind)
    {
        // SPDF's "fresh optimizer for fine-tuning": after a reset the state (moments, momentum, AdamW's bias-correction
        // step) restarts in both engines. beta2 = 0.95, where an optimizer-wide step count gave updates 0.45x PyTorch's.
        const int n = 12, before = 7, after = 4;
        var init = Enumerable.Range(0, n).Select(i => (float)Math.Cos(i) * 0.5f).ToArray();
        var ours = new Spdf.Tensors.Nn.Parameter(SpdfTensor.From((float[])init.Clone()));
        Spdf.Tensors.Optim.Optimizer ourOpt = kind == "adamw"
            ? new Spdf.Tensors.Optim.AdamW([ours], learningRate: 0.05, beta2: 0.95, weightDecay: 0.1)
            : new Spdf.Tensors.Optim.Sgd([ours], learningRate: 0.05, momentum: 0.9, weightDecay: 0.1);
        var theirs = new global::TorchSharp.Modules.Parameter(tensor(init));
        optim.Optimizer theirOpt = kind == "adamw"
            ? optim.AdamW([theirs], lr: 0.05, beta2: 0.95, weight_decay: 0.1)
            : optim.SGD([theirs], learningRate: 0.05, momentum: 0.9, weight_decay: 0.1);
        for (int t = 1; t <= before + after; t++)
        {
            if (t == before + 1)
            {
                ourOpt.ResetState(ours);
                OptimizerStates.Reset(theirOpt, theirs);
            }
            var g = Grad(t, n);
            ours.Grad = SpdfTensor.From(g);
            theirs.grad = tensor(g);
            ourOpt.Step();
            theirOpt.step();
            Close(ours.ToArray(), F(theirs), 2e-6, 1e-7, $"{kind} weights after step {t}");
        }
    }
}
