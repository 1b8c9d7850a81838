using Spdf.Sparsity;
using Spdf.Tensors;

namespace Spdf.Gpt.Tests;

/// <summary>
/// Sparsity-accelerated training's omitted passes (#22): an MLP or attention layer that computes only its kept channels
/// or heads, as smaller dense products, equals the full layer with the omitted units' outputs zeroed — outputs and every
/// gradient — and omitted units get exactly zero gradient; with a masked sparse weight, dropped weights stay out too.
/// </summary>
public class OmissionTests
{
    private static void Close(ReadOnlySpan<float> a, ReadOnlySpan<float> b, string what, float tol = 2e-5f)
    {
        a.Length.Should().Be(b.Length, what);
        for (int i = 0; i < a.Length; i++)
            Math.Abs(a[i] - b[i]).Should().BeLessThanOrEqualTo(tol * (1 + Math.Abs(b[i])), $"{what}[{i}]: {a[i]} vs {b[i]}");
    }

    /// <summary>Runs <paramref name="forward"/>, back-propagates Σ y·r, and returns y and the gradients of x and the parameters.</summary>
    private static (float[] Y, float[] Dx, Dictionary<string, float[]> Grads) Pass(Tensors.Nn.Module module, Tensor x, Func<Tensor, Tensor> forward, Tensor r)
    {
        foreach (var p in module.Parameters()) p.Grad = null;
        var xi = new Tensor(x.ToArray(), x.Shape) { RequiresGrad = true };
        var y = forward(xi);
        (y * r).Sum().Backward();
        return (y.ToArray(), xi.Grad!.ToArray(), module.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter.Grad?.ToArray() ?? new float[p.Parameter.Numel]));
    }

    /// <summary>The MLP computing only <paramref name="kept"/> channels against the full MLP with the other channels' GELU
    /// outputs zeroed: equal outputs and parameter gradients (checked here); both passes and the 0/1 channel mask returned.</summary>
    private static ((float[] Y, float[] Dx, Dictionary<string, float[]> Grads) Omitted, (float[] Y, float[] Dx, Dictionary<string, float[]> Grads) Reference, float[] Keep)
        KeptAgainstZeroedChannels(Mlp mlp, Tensor x, Tensor r, int[] kept)
    {
        int width = mlp.UpProjection.OutFeatures;
        var keep = new float[width];
        foreach (int c in kept) keep[c] = 1;
        var reference = Pass(mlp, x, xi => mlp.DownProjection.Forward(mlp.UpProjection.Forward(xi).Gelu() * new Tensor(keep, new Shape(width))), r);
        mlp.KeptChannels = kept;
        var omitted = Pass(mlp, x, mlp.Forward, r);
        Close(omitted.Y, reference.Y, "y");
        foreach (var (name, grad) in reference.Grads) Close(omitted.Grads[name], grad, "grad " + name);
        return (omitted, reference, keep);
    }

    [Fact]
    public void KeptChannelsEqualTheFullMlpWithTheOthersZeroedAndOmittedOnesGetNoGradient()
    {
        var cfg = new GptConfig(1, 13, 1, 8, 32);                     // 52 channels
        var mlp = new Mlp(cfg, new Generator(5));
        var g = new Generator(6);
        var x = Tensor.Randn(new Shape(2, 7, 13), g);
        var r = Tensor.Randn(new Shape(2, 7, 13), g);
        int[] kept = [0, 3, 4, 9, 17, 18, 25, 31, 40, 44, 51];       // 11 of 52
        var (omitted, reference, keep) = KeptAgainstZeroedChannels(mlp, x, r, kept);
        Close(omitted.Dx, reference.Dx, "dx");
        var dUp = omitted.Grads["c_fc.weight"];
        var dDown = omitted.Grads["c_proj.weight"];
        for (int c = 0; c < 52; c++)
        {
            if (keep[c] != 0) continue;
            dUp.AsSpan(c * 13, 13).ToArray().Should().OnlyContain(v => v == 0, $"channel {c} is omitted");
            omitted.Grads["c_fc.bias"][c].Should().Be(0);
            Enumerable.Range(0, 13).Select(o => dDown[o * 52 + c]).Should().OnlyContain(v => v == 0);
        }
        mlp.KeptChannels = null;
        Pass(mlp, x, mlp.Forward, r).Y.Should().Equal(Pass(mlp, x, xi => mlp.DownProjection.Forward(mlp.UpProjection.Forward(xi).Gelu()), r).Y, "null keeps every channel: the dense layer");
    }

    [Fact]
    public void KeptHeadsEqualFullAttentionWithTheOthersZeroedAndOmittedOnesGetNoGradient()
    {
        var cfg = new GptConfig(1, 15, 5, 8, 32);                     // 5 heads of 3
        var attn = new CausalSelfAttention(cfg, new Generator(7));
        var g = new Generator(8);
        var x = Tensor.Randn(new Shape(2, 6, 15), g);
        var r = Tensor.Randn(new Shape(2, 6, 15), g);
        int[] kept = [0, 3, 4];
        var keep = new float[15];
        foreach (int h in kept) for (int i = 0; i < 3; i++) keep[h * 3 + i] = 1;
        var reference = Pass(attn, x, xi => attn.OutputProjection.Forward(Functional.CausalSelfAttentionPacked(attn.QkvProjection.Forward(xi), 5) * new Tensor(keep, new Shape(15))), r);
        attn.KeptHeads = kept;
        var omitted = Pass(attn, x, attn.Forward, r);
        Close(omitted.Y, reference.Y, "y");
        Close(omitted.Dx, reference.Dx, "dx");
        foreach (var (name, grad) in reference.Grads) Close(omitted.Grads[name], grad, "grad " + name);
        var dQkv = omitted.Grads["c_attn.weight"];
        foreach (int h in new[] { 1, 2 })
            for (int part = 0; part < 3; part++)
                for (int i = 0; i < 3; i++)
                    dQkv.AsSpan((part * 15 + h * 3 + i) * 15, 15).ToArray().Should().OnlyContain(v => v == 0, $"head {h} is omitted");
    }

    [Fact]
    public void AMaskedSparseLayerKeepsItsDroppedWeightsOutOfTheOmittedProducts()
    {
        var cfg = new GptConfig(1, 12, 3, 8, 32);
        var model = new GptModel(cfg, new Generator(9));
        Sparsifier.Apply(model, SparsityConfig.Default(0.5, seed: 4)); // masked (dense storage)
        var mlp = model.Blocks[0].Mlp;
        var up = (SparseLinear)mlp.UpProjection;
        var g = new Generator(10);
        var x = Tensor.Randn(new Shape(3, 12), g);
        var r = Tensor.Randn(new Shape(3, 12), g);
        int[] kept = Enumerable.Range(0, 48).Where(c => c % 3 != 1).ToArray();
        var (omitted, _, _) = KeptAgainstZeroedChannels(mlp, x, r, kept);
        var mask = up.Mask.Values;
        var dUp = omitted.Grads["c_fc.weight"];
        for (int i = 0; i < mask.Length; i++) if (mask[i] == 0) dUp[i].Should().Be(0, "a dropped weight gets no gradient");
    }

    [Fact]
    public void BadKeptSetsAndCompressedLayersAreRefusedByName()
    {
        var cfg = new GptConfig(1, 12, 3, 8, 32);
        var model = new GptModel(cfg, new Generator(1));
        var mlp = model.Blocks[0].Mlp;
        FluentActions.Invoking(() => mlp.KeptChannels = [3, 2]).Should().Throw<ArgumentException>().WithMessage("*channels entry 1 is 2*ascending*[0, 48)*");
        FluentActions.Invoking(() => mlp.KeptChannels = []).Should().Throw<ArgumentException>().WithMessage("*empty*");
        FluentActions.Invoking(() => model.Blocks[0].Attention.KeptHeads = [3]).Should().Throw<ArgumentException>().WithMessage("*heads entry 0 is 3*[0, 3)*");
        Sparsifier.Apply(model, new SparsityConfig(SparsityConfig.Default(0.5).Groups) { Storage = SparseWeightStorage.Compressed });
        mlp.KeptChannels = [0, 1];
        FluentActions.Invoking(() => mlp.Forward(Tensor.Randn(new Shape(2, 12), new Generator(2)))).Should().Throw<NotSupportedException>()
            .WithMessage("*48×12 sparse layer keeps only its kept weights*SparseWeightStorage.Dense*Densify*");
    }
}
