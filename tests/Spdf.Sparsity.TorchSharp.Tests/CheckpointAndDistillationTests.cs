using Spdf.Gpt;
using Spdf.Gpt.Training;
using Spdf.Tensors.Serialization;
using TorchSharp;
using TorchSharpGpt;
using static Spdf.Sparsity.TorchSharp.Tests.TorchTestUtil;
using static TorchSharp.torch;
using ST = Spdf.Tensors;

namespace Spdf.Sparsity.TorchSharp.Tests;

/// <summary>Sparse checkpoints move between the engines; SquareHead gives the same loss and gradients in both.</summary>
public class CheckpointAndDistillationTests
{
    private static readonly GptConfig Cfg = new(2, 32, 4, 16, 61);

    private static NanoGpt Nano() => new(new NanoGptConfig(Cfg.Layers, Cfg.EmbeddingSize, Cfg.Heads, Cfg.ContextLength, Cfg.VocabSize));

    private static string TempFile() => Path.Combine(Path.GetTempPath(), $"spdf-{Guid.NewGuid():N}.safetensors");

    [Fact]
    public void ASparseCheckpointMovesBetweenTheEnginesWithItsMasks()
    {
        // Spdf.Tensors writes a 75%-sparse GPT; the TorchSharp GPT, sparsified with another seed, loads it and takes its masks.
        var spdf = new GptModel(Cfg, new ST.Generator(3));
        var sh = Sparsifier.Apply(spdf, SparsityConfig.Default(0.75, seed: 1));
        string a = TempFile(), b = TempFile();
        try
        {
            SafeTensors.Save(a, spdf.StateDict(), sh.CheckpointMetadata());
            manual_seed(4);
            var nano = Nano();
            var th = TorchSparsifier.Apply(nano, SparsityConfig.Default(0.75, seed: 99));
            var meta = TorchCheckpoint.Load(nano, a, th);
            meta["spdf.phase"].Should().Be("SparsePretrain");
            for (int i = 0; i < sh.Layers.Count; i++)
            {
                F(th.Layers[i].MaskTensor).Should().Equal(sh.Layers[i].Layer.Mask.Values);
                th.Layers[i].Layer!.KernelMode = SparseKernelMode.Compressed; // the CSR structures follow the loaded mask
            }
            var ids = Enumerable.Range(0, 2 * 12).Select(i => (i * 7) % Cfg.VocabSize).ToArray();
            var logitsS = spdf.Forward(new ST.IntTensor(ids, new ST.Shape(2, 12))).AsReadOnlySpan().ToArray();
            using var idx = tensor(ids.Select(v => (long)v).ToArray(), [2, 12]);
            Close(F(nano.call(idx)), logitsS, 1e-4f);

            // ... and back: TorchSharp writes, Spdf.Tensors reads the same names.
            TorchCheckpoint.Save(nano, b, th, new Dictionary<string, string> { ["note"] = "from TorchSharp" });
            var (tensors, meta2) = SafeTensors.Load(b);
            meta2["note"].Should().Be("from TorchSharp");
            meta2["spdf.layers"].Should().Contain("transformer.h.0.mlp.c_fc");
            tensors.Keys.Should().BeEquivalentTo(spdf.StateDict().Keys);
            var again = new GptModel(Cfg, new ST.Generator(5));
            Sparsifier.Apply(again, SparsityConfig.Default(0.75, seed: 7));
            again.LoadStateDict(tensors, strict: true);
            Close(again.Forward(new ST.IntTensor(ids, new ST.Shape(2, 12))).AsReadOnlySpan().ToArray(), logitsS, 1e-4f);
        }
        finally { File.Delete(a); File.Delete(b); }
    }

    [Fact]
    public void ABadCheckpointIsRefusedByNameAndTheFileIsKept()
    {
        manual_seed(4);
        var nano = Nano();
        string path = TempFile();
        try
        {
            TorchCheckpoint.Save(nano, path);
            var good = File.ReadAllBytes(path);
            // A dense checkpoint does not load into a sparsified model: the masks are missing.
            var sparse = Nano();
            TorchSparsifier.Apply(sparse, SparsityConfig.Default(0.5));
            FluentActions.Invoking(() => TorchCheckpoint.Load(sparse, path)).Should().Throw<SpdfFormatException>()
                .WithMessage("*weight_mask'*not in the checkpoint*sparsify after loading*");
            // A truncated file names the file and the place.
            File.WriteAllBytes(path, good.AsSpan(0, 20).ToArray());
            FluentActions.Invoking(() => TorchCheckpoint.Load(nano, path)).Should().Throw<SpdfFormatException>().WithMessage($"{path}: malformed safetensors file*");
            // A failed save (a non-float32 entry) leaves the existing file as it was.
            File.WriteAllBytes(path, good);
            var model = nn.Sequential(("0", nn.Linear(3, 3)));
            model.to(ScalarType.Float64);
            FluentActions.Invoking(() => TorchCheckpoint.Save(model, path)).Should().Throw<ArgumentException>().WithMessage("*'0.weight' has dtype Float64*");
            File.ReadAllBytes(path).Should().Equal(good);
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void SquareHeadMatchesSpdfTensorsLossAndGradient()
    {
        var gen = new Generator(2);
        using var s1 = randn([2, 5, 8], generator: gen).requires_grad_(true);
        using var s2 = randn([2, 5, 8], generator: gen).requires_grad_(true);
        using var t1 = randn([2, 5, 8], generator: gen);
        using var t2 = randn([2, 5, 8], generator: gen) * 3;
        var loss = TorchSquareHead.Loss([s1, s2], [t1, t2]);
        loss.backward();
        ST.Tensor S(Tensor t) { var x = new ST.Tensor(F(t), new ST.Shape(2, 5, 8)); x.RequiresGrad = true; return x; }
        var (a1, a2) = (S(s1), S(s2));
        var expected = SquareHead.Loss([a1, a2], [new ST.Tensor(F(t1), new ST.Shape(2, 5, 8)), new ST.Tensor(F(t2), new ST.Shape(2, 5, 8))]);
        expected.Backward();
        loss.item<float>().Should().BeApproximately(expected.Item(), 1e-5f * Math.Abs(expected.Item()));
        Close(F(s1.grad!), a1.Grad!.AsReadOnlySpan().ToArray(), 1e-4f);
        Close(F(s2.grad!), a2.Grad!.AsReadOnlySpan().ToArray(), 1e-4f);
        FluentActions.Invoking(() => TorchSquareHead.Loss([s1], [t1, t2])).Should().Throw<ArgumentException>().WithMessage("*one teacher state per student state; got 1 and 2*");
    }
}
