using Spdf.Sparsity;
using Spdf.Sparsity.Masks;
using Spdf.Tensors;
using Spdf.Tensors.Optim;
using Spdf.Tensors.Serialization;

namespace Spdf.Gpt.Tests;

/// <summary>
/// Compares a small GPT against PyTorch on identical weights and batches (tests/fixtures/make_gpt_fixtures.py,
/// Debian's python3-torch): logits, loss, every gradient and the weights after two AdamW steps, dense and with 75%
/// masks. Tolerance: |a − b| ≤ atol + rtol·|b| with rtol 1e-3 and atol 1e-5 (gradients and weights), 1e-4/1e-5 (logits).
/// </summary>
public class TorchGptParityTests
{
    private static readonly GptConfig Cfg = new(2, 32, 4, 16, 64);

    private static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "fixtures", name);

    private static void Close(Tensor actual, Tensor expected, double rtol, double atol, string what)
    {
        actual.Shape.Should().Be(expected.Shape, what);
        var a = actual.AsReadOnlySpan();
        var e = expected.AsReadOnlySpan();
        for (int i = 0; i < a.Length; i++)
            if (Math.Abs(a[i] - e[i]) > atol + rtol * Math.Abs(e[i]))
                throw new Xunit.Sdk.XunitException($"{what}[{i}]: {a[i]} vs PyTorch {e[i]} (rtol {rtol}, atol {atol})");
    }

    private static IntTensor Ids(Tensor t) => new(t.AsReadOnlySpan().ToArray().Select(v => (int)v).ToArray(), t.Shape);

    [Theory]
    [InlineData("gpt_parity_dense.safetensors", false)]
    [InlineData("gpt_parity_sparse75.safetensors", true)]
    public void MatchesPyTorch(string file, bool sparse)
    {
        var fx = SafeTensors.Load(Fixture(file)).Tensors;
        var model = new GptModel(Cfg);
        model.LoadStateDict(fx.Where(kv => kv.Key.StartsWith("after.", StringComparison.Ordinal))
            .ToDictionary(kv => kv.Key["after.".Length..], kv => kv.Value), strict: true); // shapes/names check
        SparsifiedModel? handle = null;
        if (sparse)
        {
            handle = Sparsifier.Apply(model, SparsityConfig.Default(0.75));
            foreach (var l in handle.Layers)
            {
                l.Layer.SetMask((fx["mask." + l.Name + ".weight"]).ToMask());
                l.Layer.KernelMode = SparseKernelMode.Compressed;
            }
        }
        // Initial weights: the HF fixture holds the dense ones; loading into a sparse model applies its masks.
        HuggingFaceGpt2.LoadInto(model, Fixture("gpt2_hf.safetensors"));
        var logits = model.Forward(Ids(fx["idx0"]));
        Close(logits, fx["logits"], 1e-4, 1e-5, "logits");
        var loss = model.Loss(Ids(fx["idx0"]), Ids(fx["tgt0"]));
        Close(loss, fx["loss"], 1e-5, 1e-6, "loss");
        loss.Backward();
        foreach (var (name, p) in model.NamedParameters())
            Close(p.Grad!, fx["grad." + name], 1e-3, 1e-5, "grad." + name);

        var ps = model.Parameters().ToList();
        var opt = new AdamW([new ParameterGroup(ps.Where(p => p.Rank >= 2), weightDecay: 0.1), new ParameterGroup(ps.Where(p => p.Rank < 2), weightDecay: 0)],
            3e-3, 0.9, 0.95, 1e-8);
        var losses = new List<float>();
        foreach (var (i, t) in new[] { ("idx0", "tgt0"), ("idx1", "tgt1") })
        {
            opt.ZeroGrad();
            var l = model.Loss(Ids(fx[i]), Ids(fx[t]));
            losses.Add(l.Item());
            l.Backward();
            opt.Step();
        }
        Close(Tensor.From(losses.ToArray()), fx["losses"], 1e-5, 1e-6, "losses");
        foreach (var (name, p) in model.NamedParameters())
            Close(p, fx["after." + name], 1e-3, 1e-5, "after." + name);
        if (handle is not null)
            foreach (var l in handle.Layers)
            {
                var w = l.Layer.Weight.AsReadOnlySpan();
                var m = l.Layer.Mask.Values.AsSpan();
                for (int i = 0; i < w.Length; i++) if (m[i] == 0) w[i].Should().Be(0f);
            }
    }

    [Fact]
    public void LoadsAHuggingFaceGpt2FileAndWritesTheSameLayout()
    {
        var path = Fixture("gpt2_hf.safetensors");
        var (original, meta) = SafeTensors.Load(path);
        var model = HuggingFaceGpt2.Load(path, heads: 4);
        model.Config.Should().Be(Cfg);
        var fx = SafeTensors.Load(Fixture("gpt_parity_dense.safetensors")).Tensors;
        double sum = model.Forward(Ids(fx["idx0"])).AsReadOnlySpan().ToArray().Sum(v => (double)v);
        sum.Should().BeApproximately(double.Parse(meta["logits_sum"], System.Globalization.CultureInfo.InvariantCulture), 1e-3);

        var outPath = Path.Combine(Path.GetTempPath(), $"hf-{Guid.NewGuid():N}.safetensors");
        try
        {
            HuggingFaceGpt2.Save(model, outPath);
            var (written, wmeta) = SafeTensors.Load(outPath);
            wmeta["format"].Should().Be("pt");
            var expected = original.Where(kv => !kv.Key.EndsWith(".attn.bias", StringComparison.Ordinal)).ToList();
            written.Keys.Should().BeEquivalentTo(expected.Select(kv => kv.Key));
            foreach (var (k, t) in expected)
            {
                written[k].Shape.Should().Be(t.Shape, k);
                written[k].AsReadOnlySpan().SequenceEqual(t.AsReadOnlySpan()).Should().BeTrue(k);
            }
        }
        finally { File.Delete(outPath); }
    }

    [Fact]
    public void CompressedSparseModelsLoadAndWriteHuggingFaceFiles()
    {
        var path = Fixture("gpt2_hf.safetensors");
        GptModel Sparse(SparseWeightStorage storage)
        {
            var m = new GptModel(Cfg);
            Sparsifier.Apply(m, new SparsityConfig(SparsityConfig.Default(0.75, seed: 3).Groups, 3) { Storage = storage });
            HuggingFaceGpt2.LoadInto(m, path);
            return m;
        }
        var dense = Sparse(SparseWeightStorage.Dense);
        var compressed = Sparse(SparseWeightStorage.Compressed);
        var ids = Ids(SafeTensors.Load(Fixture("gpt_parity_dense.safetensors")).Tensors["idx0"]);
        var expected = dense.Forward(ids).ToArray();
        var got = compressed.Forward(ids).ToArray();
        for (int i = 0; i < expected.Length; i++) got[i].Should().BeApproximately(expected[i], 1e-4f * (1 + Math.Abs(expected[i])));

        var a = Path.Combine(Path.GetTempPath(), $"hf-{Guid.NewGuid():N}.safetensors");
        var b = Path.Combine(Path.GetTempPath(), $"hf-{Guid.NewGuid():N}.safetensors");
        try
        {
            HuggingFaceGpt2.Save(dense, a);
            HuggingFaceGpt2.Save(compressed, b);
            var (wa, _) = SafeTensors.Load(a);
            var (wb, _) = SafeTensors.Load(b);
            wb.Keys.Should().BeEquivalentTo(wa.Keys, "the file has the Hugging Face layout whatever the storage");
            foreach (var (k, t) in wa) wb[k].AsReadOnlySpan().SequenceEqual(t.AsReadOnlySpan()).Should().BeTrue(k);
        }
        finally { File.Delete(a); File.Delete(b); }
    }

    [Fact]
    public void WrongShapesInAHuggingFaceFileAreNamed()
    {
        var model = new GptModel(Cfg with { EmbeddingSize = 64 });
        FluentActions.Invoking(() => HuggingFaceGpt2.LoadInto(model, Fixture("gpt2_hf.safetensors")))
            .Should().Throw<SpdfFormatException>().WithMessage("*transformer.*shape*");
    }
}
