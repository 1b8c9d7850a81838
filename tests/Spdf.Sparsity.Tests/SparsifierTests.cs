using Spdf.Sparsity.Masks;
using Spdf.Tensors;
using Spdf.Tensors.Nn;
using Spdf.Tensors.Optim;
using Spdf.Tensors.Serialization;

namespace Spdf.Sparsity.Tests;

public class SparsifierTests
{
    private static IntTensor Ids() => new([1, 5, 7, 3, 2, 9], new Shape(2, 3));

    [Fact]
    public void DefaultSelectsAttentionAndMlpButNotHeadEmbeddingsOrNorms()
    {
        var model = new TinyLm();
        var handle = Sparsifier.Apply(model, SparsityConfig.Default(0.75));
        handle.Layers.Select(l => l.Name).Should().Equal(
            "h.0.attn.c_attn", "h.0.attn.c_proj", "h.0.mlp.c_fc", "h.0.mlp.c_proj",
            "h.1.attn.c_attn", "h.1.attn.c_proj", "h.1.mlp.c_fc", "h.1.mlp.c_proj");
        model.lm_head.Should().NotBeOfType<SparseLinear>();
        model.h[0].attn.c_attn.Should().BeOfType<SparseLinear>("the parent's field is updated");
        handle.Report().LayerSparsity.Should().BeApproximately(0.75, 1e-3);
        handle.Report().ToString().Should().Contain("h.1.mlp.c_fc").And.Contain("auto", "no kernel is chosen before the first forward pass");
    }

    [Fact]
    public void FirstMatchingGroupWinsAndRegexWorks()
    {
        var model = new TinyLm();
        var cfg = new SparsityConfig([
            new SparsityGroup("h.*.mlp.*.weight", 0.5, MaskInitializers.Magnitude),
            new SparsityGroup("re:h\\.\\d+\\.attn\\..*weight", 0.9)]);
        var handle = Sparsifier.Apply(model, cfg);
        handle.Layers.Single(l => l.Name == "h.0.mlp.c_fc").Layer.Mask.Sparsity.Should().BeApproximately(0.5, 1e-9);
        handle.Layers.Single(l => l.Name == "h.1.attn.c_attn").Layer.Mask.Sparsity.Should().BeApproximately(0.9, 0.01);
    }

    [Fact]
    public void PatternThatMatchesNothingIsAnError()
    {
        var act = () => Sparsifier.Apply(new TinyLm(), new SparsityConfig([new SparsityGroup("h.*.mlp.c_fcc.weight", 0.5)]));
        act.Should().Throw<ArgumentException>().WithMessage("*'h.*.mlp.c_fcc.weight' match no Linear weight*h.0.attn.c_attn.weight*");
        ((Action)(() => new SparsityGroup("x", 1.5))).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*1.5*[0, 1)*");
    }

    [Fact]
    public void MaskedWeightsGradientsAndMomentsStayExactlyZero()
    {
        var model = new TinyLm();
        var handle = Sparsifier.Apply(model, SparsityConfig.Default(0.75, seed: 3));
        var opt = new AdamW(model.Parameters(), 1e-2, weightDecay: 0.1);
        var targets = new IntTensor([2, 3, 4, 5, 6, 7], new Shape(6));
        for (int step = 0; step < 5; step++)
        {
            opt.ZeroGrad();
            var logits = model.Forward(Ids());
            var loss = Functional.CrossEntropy(logits.Reshape(6, 16), targets);
            loss.Backward();
            foreach (var l in handle.Layers)
            {
                var g = l.Layer.Weight.Grad!.AsReadOnlySpan();
                for (int i = 0; i < g.Length; i++) if (!l.Layer.Mask.IsKept(i)) g[i].Should().Be(0f);
            }
            opt.Step();
            foreach (var l in handle.Layers)
            {
                var w = l.Layer.Weight.AsReadOnlySpan();
                for (int i = 0; i < w.Length; i++) if (!l.Layer.Mask.IsKept(i)) w[i].Should().Be(0f);
                // AdamW keeps moments only for kept weights: masked places have none at all.
                opt.State(l.Layer.Weight)["exp_avg"].Numel.Should().Be(l.Layer.Mask.KeptCount);
                opt.State(l.Layer.Weight)["exp_avg_sq"].Numel.Should().Be(l.Layer.Mask.KeptCount);
            }
        }
    }

    [Fact]
    public void NaNGradientAtAMaskedPlaceDoesNotLeak()
    {
        var dense = new Linear(4, 3);
        var mask = (Tensor.From([1f, 0f, 1f, 0f, 0f, 1f, 1f, 0f, 1f, 1f, 0f, 0f], 3, 4)).ToMask();
        var sparse = SparseLinear.FromLinear(dense, mask);
        sparse.Weight[0, 1] = float.NaN; // corrupt a dropped weight: the masked forward must ignore it
        var y = sparse.Forward(Tensor.Ones(2, 4));
        y.ToArray().Should().OnlyContain(v => float.IsFinite(v));
        y.Backward(Tensor.Full(y.Shape, float.NaN));
        var g = sparse.Weight.Grad!.AsReadOnlySpan();
        for (int i = 0; i < g.Length; i++) if (!mask.IsKept(i)) g[i].Should().Be(0f);
    }

    [Fact]
    public void SparseForwardEqualsDenseForwardOnTheMaskedWeight()
    {
        var dense = new Linear(7, 5, generator: new Generator(4));
        var x = Tensor.Randn(new Shape(3, 7), new Generator(5));
        var mask = MaskInitializers.Random.Create(dense.Weight, 0.6, new SparsityRandom(6));
        var reference = dense.Weight.ToArray();
        mask.Apply(reference);
        var expected = Functional.Linear(x, new Tensor(reference, dense.Weight.Shape), dense.Bias);
        var sparse = SparseLinear.FromLinear(dense, mask);
        sparse.KernelMode = SparseKernelMode.MaskedDense; // the reference path is exact; the CSR path is compared within tolerance elsewhere
        sparse.Forward(x).ToArray().Should().Equal(expected.ToArray());
    }

    [Fact]
    public void MasksAndMetadataRoundTripThroughSafetensors()
    {
        var model = new TinyLm();
        var handle = Sparsifier.Apply(model, SparsityConfig.Default(0.5, seed: 9));
        var path = Path.Combine(Directory.CreateTempSubdirectory("spdf-ckpt").FullName, "model.safetensors");
        SafeTensors.Save(path, model.StateDict(), handle.CheckpointMetadata());
        var other = new TinyLm();
        var otherHandle = Sparsifier.Apply(other, SparsityConfig.Default(0.5, seed: 1234));
        var (tensors, meta) = SafeTensors.Load(path);
        tensors.Should().ContainKey("h.0.attn.c_attn.weight_mask");
        other.LoadStateDict(tensors);
        for (int i = 0; i < handle.Layers.Count; i++)
            otherHandle.Layers[i].Layer.Mask.Values.ToArray().Should().Equal(handle.Layers[i].Layer.Mask.Values.ToArray());
        meta["spdf.phase"].Should().Be("SparsePretrain");
        meta["spdf.layers"].Should().Contain("h.1.mlp.c_proj");
    }

    [Theory]
    [InlineData(OptimizerStateOnDensify.Keep)]
    [InlineData(OptimizerStateOnDensify.Reset)]
    public void DensifyMakesDroppedWeightsTrainableFromZero(OptimizerStateOnDensify state)
    {
        var model = new TinyLm();
        var handle = Sparsifier.Apply(model, SparsityConfig.Default(0.75, seed: 2));
        var opt = new AdamW(model.Parameters(), 1e-2);
        var targets = new IntTensor([2, 3, 4, 5, 6, 7], new Shape(6));
        void Step()
        {
            opt.ZeroGrad();
            Functional.CrossEntropy(model.Forward(Ids()).Reshape(6, 16), targets).Backward();
            opt.Step();
        }
        Step();
        var layer = handle.Layers[0];
        var mask = layer.Layer.Mask.Values.ToArray();
        var w = layer.Layer.Weight;
        var momentBefore = opt.State(w)["exp_avg"].ToArray();
        Transitions.Densify(handle, opt, state, step: 1).Should().Be(8);
        model.h[0].attn.c_attn.Should().NotBeOfType<SparseLinear>();
        model.h[0].attn.c_attn.Weight.Should().BeSameAs(w, "the parameter object is shared, so the optimizer still holds it");
        for (int i = 0; i < mask.Length; i++) if (mask[i] == 0) w.AsReadOnlySpan()[i].Should().Be(0f);
        if (state == OptimizerStateOnDensify.Keep) opt.State(w)["exp_avg"].ToArray().Should().Equal(momentBefore);
        else opt.State(w).Should().BeEmpty();
        Step();
        // After the first dense step the moments are dense; those of formerly dropped weights started from 0.
        opt.State(w)["exp_avg"].Numel.Should().Be(w.Numel);
        int moved = 0;
        for (int i = 0; i < mask.Length; i++) if (mask[i] == 0 && w.AsReadOnlySpan()[i] != 0f) moved++;
        moved.Should().BeGreaterThan(mask.Count(v => v == 0) / 2, "dropped weights learn after Densify");
        handle.Phase.Should().Be(SparsityPhase.DenseFinetune);
        handle.CheckpointMetadata()["spdf.transitions"].Should().Contain("densify");
        model.StateDict().Keys.Should().NotContain(k => k.EndsWith("weight_mask", StringComparison.Ordinal));
    }

    [Fact]
    public void PruneZeroesMomentsAtDroppedPlaces()
    {
        var model = new TinyLm();
        var opt = new AdamW(model.Parameters(), 1e-2);
        opt.ZeroGrad();
        Functional.CrossEntropy(model.Forward(Ids()).Reshape(6, 16), new IntTensor([1, 2, 3, 4, 5, 6], new Shape(6))).Backward();
        opt.Step();
        var handle = Transitions.Prune(model, SparsityConfig.Default(0.5, initializer: MaskInitializers.Magnitude), opt);
        foreach (var l in handle.Layers)
        {
            var m = opt.State(l.Layer.Weight)["exp_avg"].AsReadOnlySpan();
            for (int i = 0; i < m.Length; i++) if (!l.Layer.Mask.IsKept(i)) m[i].Should().Be(0f);
        }
    }
}

public class CompressedOptimizerStateTests
{
    [Fact]
    public void MomentsFollowTheMaskSurvivorsKeepTheirsNewcomersStartAtZero()
    {
        var g = new Generator(12);
        var layer = SparseLinear.FromLinear(new Linear(16, 8, true, g), MaskInitializers.Random.Create(Tensor.Zeros(8, 16), 0.5, new SparsityRandom(g.NextUInt64())));
        var opt = new AdamW(layer.Parameters(), 1e-2);
        var x = Tensor.Randn(new Shape(5, 16), g);
        void Step() { opt.ZeroGrad(); layer.Forward(x).Pow(2f).Sum().Backward(); opt.Step(); }
        Step();
        var oldSupport = layer.Weight.SparseSupport!;
        var oldM = opt.State(layer.Weight)["exp_avg"].ToArray();
        oldM.Length.Should().Be(64);
        var newMask = MaskInitializers.Random.Create(layer.Weight, 0.5, new SparsityRandom(99));
        layer.SetMask(newMask);
        var newSupport = layer.Weight.SparseSupport!;
        opt.ZeroGrad();
        layer.Forward(x).Pow(2f).Sum().Backward();
        // Before the update, conform the state exactly as Step does and compare with the remap by hand.
        var expected = new float[newSupport.Length];
        for (int j = 0; j < newSupport.Length; j++)
        {
            int i = Array.IndexOf(oldSupport, newSupport[j]);
            expected[j] = i >= 0 ? oldM[i] : 0f;
        }
        var m0 = opt.State(layer.Weight)["exp_avg"].ToArray();
        m0.Should().Equal(oldM, "the state conforms lazily, at the next step");
        opt.Step();
        var m1 = opt.State(layer.Weight)["exp_avg"].ToArray();
        m1.Length.Should().Be(newSupport.Length);
        var grad = layer.Weight.Grad!.AsReadOnlySpan();
        for (int j = 0; j < newSupport.Length; j++)
            m1[j].Should().BeApproximately(0.9f * expected[j] + 0.1f * grad[newSupport[j]], 1e-6f);
    }

    [Fact]
    public void CompressedStateRoundTripsThroughAStateDict()
    {
        var g = new Generator(13);
        var layer = SparseLinear.FromLinear(new Linear(12, 6, true, g), MaskInitializers.Random.Create(Tensor.Zeros(6, 12), 0.75, new SparsityRandom(g.NextUInt64())));
        var opt = new AdamW(layer.Parameters(), 1e-2);
        opt.ZeroGrad(); layer.Forward(Tensor.Ones(3, 12)).Sum().Backward(); opt.Step();
        var sd = opt.StateDict();
        sd["state.0.exp_avg"].Shape.Should().Be(new Shape(18));
        var opt2 = new AdamW(layer.Parameters(), 1e-2);
        opt2.LoadStateDict(sd);
        opt2.State(layer.Weight)["exp_avg_sq"].ToArray().Should().Equal(opt.State(layer.Weight)["exp_avg_sq"].ToArray());
        var bad = sd.ToDictionary(kv => kv.Key, kv => kv.Value);
        bad["state.0.exp_avg"] = Tensor.Zeros(5);
        ((Action)(() => opt2.LoadStateDict(bad))).Should().Throw<ArgumentException>().WithMessage("*shape [5]*18 kept*needs [18]*");
    }

    [Fact]
    public void BadSupportIsRejected()
    {
        var p = new Parameter(new Shape(2, 3));
        ((Action)(() => p.SparseSupport = [0, 2, 2])).Should().Throw<ArgumentException>().WithMessage("*entry 2 is 2*ascending*[0, 6)*");
        ((Action)(() => p.SparseSupport = [7])).Should().Throw<ArgumentException>().WithMessage("*entry 0 is 7*");
    }
}
