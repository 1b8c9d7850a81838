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

    private static void Close(float[] a, float[] b, double rtol, double atol, string what)
    {
        a.Length.Should().Be(b.Length, what);
        for (int i = 0; i < a.Length; i++)
            if (!(Math.Abs(a[i] - b[i]) <= atol + rtol * Math.Abs(b[i])))
                throw new Xunit.Sdk.XunitException($"{what}[{i}]: Spdf.Tensors {a[i]} vs LibTorch {b[i]} (rtol {rtol}, atol {atol})");
    }

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

        Close(logitsS.AsReadOnlySpan().ToArray(), F(logitsT), 1e-4, 1e-6, "logits");
        Close([lossS.Item()], [lossT.item<float>()], 1e-5, 1e-6, "loss");
        var torchParams = nano.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in spdf.NamedParameters())
            Close(p.Grad!.AsReadOnlySpan().ToArray(), F(torchParams[name].grad!), 1e-4, 1e-5, "grad." + name);
    }
}
