using Spdf.Gpt;
using Spdf.Sparsity;
using Spdf.Tensors;
using Spdf.Tensors.Optim;

namespace Spdf.Gpt.Tests;

public class GptModelTests
{
    private static IntTensor Ids(int b, int t, int v, ulong seed)
    {
        var g = new Generator(seed);
        return new IntTensor(Enumerable.Range(0, b * t).Select(_ => g.NextInt(v)).ToArray(), new Shape(b, t));
    }

    [Fact]
    public void FusedSparseMlpTrainsLikeTheLayersOneAfterTheOther()
    {
        // Two identical 75%-sparse models on the compressed kernels, one with its MLPs fused: the same loss and
        // gradients (up to the order of float sums) at 4 × 40 = 160 tokens (three token blocks, the last partial).
        var cfg = new GptConfig(2, 32, 2, 40, 61);
        (GptModel Model, SparsifiedModel Handle) Make(bool fused)
        {
            var model = new GptModel(cfg, new Generator(3)) { FusedSparseMlp = fused };
            var handle = Sparsifier.Apply(model, SparsityConfig.Default(0.75, seed: 1));
            foreach (var l in handle.Layers) l.Layer.KernelMode = SparseKernelMode.Compressed;
            return (model, handle);
        }
        var (fusedModel, _) = Make(true);
        var (plain, _) = Make(false);
        fusedModel.FusedSparseMlp.Should().BeTrue();
        var mlp = fusedModel.Blocks[0].Mlp;
        (SparseMlp.TryForwardGelu(mlp.UpProjection, mlp.DownProjection, Tensor.Randn(new Shape(160, 32), new Generator(1))) is null)
            .Should().Be(!System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated, "these MLPs take the fused op where AVX-512 runs it");
        plain.FusedSparseMlp.Should().BeFalse();
        var idx = Ids(4, 40, cfg.VocabSize, 5);
        var targets = new IntTensor(Ids(4, 40, cfg.VocabSize, 6).Data, new Shape(160));
        var lf = fusedModel.Loss(idx, targets); lf.Backward();
        var lp = plain.Loss(idx, targets); lp.Backward();
        lf.Item().Should().BeApproximately(lp.Item(), 1e-5f);
        var pf = fusedModel.NamedParameters().ToList();
        var pp = plain.NamedParameters().ToList();
        pf.Select(p => p.Item1).Should().Equal(pp.Select(p => p.Item1));
        for (int i = 0; i < pf.Count; i++)
        {
            var a = pf[i].Item2.Grad!.ToArray();
            var b = pp[i].Item2.Grad!.ToArray();
            for (int j = 0; j < a.Length; j++) a[j].Should().BeApproximately(b[j], 1e-4f * (1 + Math.Abs(b[j])), $"{pf[i].Item1}[{j}]");
        }
    }

    [Fact]
    public void ParameterNamesFollowHuggingFaceGpt2()
    {
        var model = new GptModel(GptConfig.Tiny);
        var names = model.NamedParameters().Select(p => p.Name).ToList();
        names.Should().StartWith(["transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.ln_1.weight", "transformer.h.0.ln_1.bias",
            "transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_attn.bias", "transformer.h.0.attn.c_proj.weight"]);
        names.Should().Contain("transformer.h.1.mlp.c_fc.weight").And.Contain("transformer.ln_f.bias");
        names.Should().NotContain(n => n.StartsWith("lm_head", StringComparison.Ordinal), "the head is tied to wte");
        var c = GptConfig.Tiny;
        long expected = (long)c.VocabSize * c.EmbeddingSize + (long)c.ContextLength * c.EmbeddingSize
            + c.Layers * (12L * c.EmbeddingSize * c.EmbeddingSize + 13L * c.EmbeddingSize) + 2L * c.EmbeddingSize;
        model.ParameterCount().Should().Be(expected);
    }

    [Fact]
    public void TheFusedHeadAndLossEqualTheLogitsThenTheLoss()
    {
        var cfg = new GptConfig(2, 24, 3, 16, 67);
        var g = new Generator(8);
        var idx = new IntTensor(Enumerable.Range(0, 3 * 16).Select(_ => g.NextInt(67)).ToArray(), new Shape(3, 16));
        var tgt = new IntTensor(Enumerable.Range(0, 3 * 16).Select(i => i % 5 == 0 ? Functional.IgnoreIndex : g.NextInt(67)).ToArray(), new Shape(3 * 16));
        var fused = new GptModel(cfg, new Generator(1)) { HeadLossChunk = 7 };   // several chunks, the last one short
        var plain = new GptModel(cfg, new Generator(1)) { FusedHeadLoss = false };
        var lf = fused.Loss(idx, tgt); lf.Backward();
        var lp = plain.Loss(idx, tgt); lp.Backward();
        lf.Item().Should().BeApproximately(lp.Item(), 1e-5f);
        foreach (var ((name, p), (_, q)) in fused.NamedParameters().Zip(plain.NamedParameters()))
        {
            var a = p.Grad!.ToArray(); var b = q.Grad!.ToArray();
            for (int i = 0; i < a.Length; i++) a[i].Should().BeApproximately(b[i], 1e-5f + 1e-4f * Math.Abs(b[i]), $"{name}[{i}]");
        }
    }

    [Fact]
    public void ForwardGivesLogitsPerPositionAndIsCausal()
    {
        var model = new GptModel(GptConfig.Tiny, new Generator(1));
        var ids = Ids(2, 10, GptConfig.Tiny.VocabSize, 3);
        var logits = model.Forward(ids);
        logits.Shape.Should().Be(new Shape(2, 10, GptConfig.Tiny.VocabSize));
        // Changing the last token must not change earlier positions' logits.
        var changed = new IntTensor((int[])ids.Data.Clone(), ids.Shape);
        changed.Data[9] = (changed.Data[9] + 1) % GptConfig.Tiny.VocabSize;
        var logits2 = model.Forward(changed);
        int v = GptConfig.Tiny.VocabSize;
        for (int i = 0; i < 9 * v; i++) logits2.AsReadOnlySpan()[i].Should().Be(logits.AsReadOnlySpan()[i]);
    }

    [Fact]
    public void DefaultSparsityConfigSelectsThePapersLayers()
    {
        var model = new GptModel(GptConfig.Tiny);
        var handle = Sparsifier.Apply(model, SparsityConfig.Default(0.75));
        handle.Layers.Select(l => l.Name).Should().Equal(
            "transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj", "transformer.h.0.mlp.c_fc", "transformer.h.0.mlp.c_proj",
            "transformer.h.1.attn.c_attn", "transformer.h.1.attn.c_proj", "transformer.h.1.mlp.c_fc", "transformer.h.1.mlp.c_proj");
        model.Blocks[0].Attention.QkvProjection.Should().BeOfType<SparseLinear>();
    }

    [Fact]
    public void SparseTrainingThenDensifyLearnsARepeatedSequence()
    {
        var cfg = GptConfig.Tiny with { VocabSize = 32, ContextLength = 16 };
        var model = new GptModel(cfg, new Generator(2));
        var handle = Sparsifier.Apply(model, SparsityConfig.Default(0.5, seed: 4));
        var opt = new AdamW(model.Parameters(), 3e-3, weightDecay: 0);
        var seq = Enumerable.Range(0, 17).Select(i => (i * 7) % 32).ToArray();
        var x = new IntTensor(seq[..16], new Shape(1, 16));
        var y = new IntTensor(seq[1..], new Shape(16));
        float first = 0, afterSparse = 0;
        for (int step = 0; step < 60; step++)
        {
            if (step == 40) { Transitions.Densify(handle, opt, step: step); }
            opt.ZeroGrad();
            var loss = model.Loss(x, y);
            if (step == 0) first = loss.Item();
            if (step == 39) afterSparse = loss.Item();
            loss.Backward();
            opt.Step();
        }
        afterSparse.Should().BeLessThan(first * 0.5f);
        model.Loss(x, y).Item().Should().BeLessThan(afterSparse);
    }

    [Fact]
    public void BadConfigsAndInputsAreRejected()
    {
        ((Action)(() => new GptModel(GptConfig.Tiny with { Heads = 5 }))).Should().Throw<ArgumentException>().WithMessage("*EmbeddingSize 64 is not divisible by Heads 5*");
        ((Action)(() => GptConfig.FromPreset("gpt5"))).Should().Throw<ArgumentException>().WithMessage("*'gpt5'*gpt2-small*");
        var model = new GptModel(GptConfig.Tiny);
        ((Action)(() => model.Forward(Ids(1, 65, 10, 1)))).Should().Throw<ArgumentException>().WithMessage("*65 exceeds*context length 64*");
    }
}
