using Spdf.Gpt;
using TorchSharp;
using TorchSharpGpt;
using static Spdf.Sparsity.TorchSharp.Tests.TorchTestUtil;
using static TorchSharp.torch;
using ST = Spdf.Tensors;

namespace Spdf.Sparsity.TorchSharp.Tests;

/// <summary>
/// LibTorch 2.10 as the oracle: Spdf.Gpt (the Spdf.Tensors engine) and the TorchSharp sample's nanoGPT, on identical
/// weights and batches, give the same logits, loss and every gradient, dense and with the same 75% masks (each engine
/// draws them from the same config); and TorchSharp with Spdf's compressed kernels equals TorchSharp masked-dense.
/// Tolerance |a − b| ≤ 1e-4·|b| + 1e-6 (gradients 1e-4·|b| + 1e-5).
/// </summary>
public class GptParityTests
{
    private static readonly GptConfig Cfg = new(2, 64, 4, 32, 97);

    private static NanoGpt Nano() => new(new NanoGptConfig(Cfg.Layers, Cfg.EmbeddingSize, Cfg.Heads, Cfg.ContextLength, Cfg.VocabSize));

    [Theory]
    [InlineData(0.0, SparseKernelMode.Compressed)]
    [InlineData(0.75, SparseKernelMode.Compressed)]
    [InlineData(0.75, SparseKernelMode.MaskedDense)]
    public void SpdfGptAndTheTorchSharpGptAgree(double sparsity, SparseKernelMode torchKernel)
    {
        var spdf = new GptModel(Cfg, new ST.Generator(7));
        manual_seed(1);
        var nano = Nano();
        var state = spdf.StateDict();
        var torchState = nano.state_dict();
        torchState.Keys.Order().Should().Equal(state.Keys.Order(), "both models use Hugging Face GPT-2's names");
        using (no_grad())
            foreach (var (name, dst) in torchState) dst.copy_(tensor(state[name].AsReadOnlySpan().ToArray(), dst.shape));

        SparsifiedModel? sh = null; TorchSparseModel? th = null;
        if (sparsity > 0)
        {
            sh = Sparsifier.Apply(spdf, SparsityConfig.Default(sparsity, seed: 5));
            th = TorchSparsifier.Apply(nano, SparsityConfig.Default(sparsity, seed: 5));
            th.Layers.Select(l => l.Name).Should().Equal(sh.Layers.Select(l => l.Name));
            for (int i = 0; i < sh.Layers.Count; i++) F(th.Layers[i].MaskTensor).Should().Equal(sh.Layers[i].Layer.Mask.Values, "the same config draws the same masks");
            foreach (var l in sh.Layers) l.Layer.KernelMode = SparseKernelMode.Compressed;
            foreach (var l in th.Layers) l.Layer.Should().NotBeNull("nanoGPT's fields are swappable").And.Subject.As<TorchSparseLinear>().KernelMode = torchKernel;
        }

        var rng = new Random(3);
        int b = 2, t = 24;
        var ids = Enumerable.Range(0, b * t).Select(_ => rng.Next(Cfg.VocabSize)).ToArray();
        var tgt = Enumerable.Range(0, b * t).Select(i => i % 7 == 0 ? -100 : rng.Next(Cfg.VocabSize)).ToArray();

        var sIdx = new ST.IntTensor(ids, new ST.Shape(b, t));
        var sTgt = new ST.IntTensor(tgt, new ST.Shape(b * t));
        var logitsS = spdf.Forward(sIdx);
        var lossS = spdf.Loss(sIdx, sTgt);
        lossS.Backward();

        using var tIdx = tensor(ids.Select(v => (long)v).ToArray(), [b, t]);
        using var tTgt = tensor(tgt.Select(v => (long)v).ToArray(), [b, t]);
        using var logitsT = nano.call(tIdx);
        var lossT = nano.Loss(tIdx, tTgt);
        lossT.backward();
        th?.BeforeOptimizerStep(); // the masked layers' gradients are masked here, as the controller does

        Close(logitsS.AsReadOnlySpan().ToArray(), F(logitsT), 1e-4, 1e-6, "logits (Spdf.Tensors vs LibTorch)");
        Close([lossS.Item()], [lossT.item<float>()], 1e-5, 1e-6, "loss (Spdf.Tensors vs LibTorch)");
        var torchParams = nano.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in spdf.NamedParameters())
            Close(p.Grad!.AsReadOnlySpan().ToArray(), F(torchParams[name].grad!), 1e-4, 1e-5, "grad." + name + " (Spdf.Tensors vs LibTorch)");

        // Three AdamW steps in each engine (decay on matrices only), the TorchSharp one through the controller: the same
        // weights after each, and dropped weights still exactly 0.
        var ps = spdf.Parameters().ToList();
        var optS = new ST.Optim.AdamW([new ST.Optim.ParameterGroup(ps.Where(p => p.Rank >= 2), weightDecay: 0.1), new ST.Optim.ParameterGroup(ps.Where(p => p.Rank < 2), weightDecay: 0)],
            3e-3, 0.9, 0.95, 1e-8);
        var optT = optim.AdamW([
            new global::TorchSharp.Modules.AdamW.ParamGroup(nano.parameters().Where(p => p.dim() >= 2), new() { weight_decay = 0.1 }),
            new global::TorchSharp.Modules.AdamW.ParamGroup(nano.parameters().Where(p => p.dim() < 2), new() { weight_decay = 0 })], lr: 3e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8);
        if (th is not null) th.Optimizer = optT;
        var controller = th is null ? null : new SparsityController(th);
        optS.Step();                                   // the gradients above, in both engines
        controller?.BeforeOptimizerStep(1);
        optT.step();
        controller?.AfterOptimizerStep(1);
        for (int step = 2; step <= 3; step++)
        {
            optS.ZeroGrad();
            spdf.Loss(sIdx, sTgt).Backward();
            optS.Step();
            controller?.BeginStep(step);
            optT.zero_grad();
            nano.Loss(tIdx, tTgt).backward();
            controller?.BeforeOptimizerStep(step);
            optT.step();
            controller?.AfterOptimizerStep(step);
        }
        // Adam divides each moment by the root of the second one: where a gradient changes sign between steps the update
        // is a difference of nearly equal terms, and the engines' rounding (gradients equal to ~1e-6 relative) shows in a
        // few weights. A wrong bias correction, decay or learning rate would move most weights by a fraction of a step
        // (lr = 3e-3); so: every weight within a tenth of one step, and all but 0.1% within 1e-3 relative (+1e-5).
        long total = 0, loose = 0;
        foreach (var (name, p) in spdf.NamedParameters())
        {
            var ours = p.AsReadOnlySpan().ToArray();
            var theirs = F(torchParams[name]);
            bool keyBias = name.EndsWith("attn.c_attn.bias");
            for (int i = 0; i < ours.Length; i++)
            {
                // The key bias shifts every score of a query row alike, which softmax ignores: its gradient is 0 in exact
                // arithmetic, and Adam turns each engine's rounding noise into steps of the learning rate's size.
                if (keyBias && i >= Cfg.EmbeddingSize && i < 2 * Cfg.EmbeddingSize) continue;
                double d = Math.Abs(ours[i] - theirs[i]);
                if (d > 3e-4) throw new Xunit.Sdk.XunitException($"after 3 AdamW steps: {name}[{i}]: Spdf.Tensors {ours[i]} vs LibTorch {theirs[i]}: more than a tenth of a step apart");
                total++;
                if (d > 1e-5 + 1e-3 * Math.Abs(theirs[i])) loose++;
            }
        }
        loose.Should().BeLessThanOrEqualTo(total / 1000, $"{loose} of {total} weights differ by more than 1e-3 relative after 3 AdamW steps");
        if (th is not null)
            foreach (var l in th.Layers)
            {
                var mask = F(l.MaskTensor);
                F(l.Weight).Where((v, i) => mask[i] == 0 && v != 0).Should().BeEmpty();
            }
    }
}
