using System.Runtime.Intrinsics;
using Spdf.Sparsity.Kernels;
using Spdf.Sparsity.Masks;
using Spdf.Tensors;
using Spdf.Tensors.Nn;

namespace Spdf.Sparsity.Tests;

/// <summary>The fused sparse MLP must equal its two layers and the GELU run one after the other: output, input
/// gradient, both layers' weight and bias gradients, with either weight storage.</summary>
public class SparseMlpTests
{
    private static (SparseLinear Up, SparseLinear Down) Layers(int c, int h, double sparsity, bool bias, SparseWeightStorage storage, ulong seed)
    {
        var g = new Generator(seed);
        var up = new Linear(c, h, bias, g);
        var down = new Linear(h, c, bias, g);
        var su = SparseLinear.FromLinear(up, MaskInitializers.Random.Create(up.Weight, sparsity, new SparsityRandom(seed + 1)), storage);
        var sd = SparseLinear.FromLinear(down, MaskInitializers.Random.Create(down.Weight, sparsity, new SparsityRandom(seed + 2)), storage);
        su.KernelMode = SparseKernelMode.Compressed;
        sd.KernelMode = SparseKernelMode.Compressed;
        return (su, sd);
    }

    private static float[][] Pass(SparseLinear up, SparseLinear down, Tensor x, Tensor dy, bool fused)
    {
        x.Grad = null; up.ZeroGrad(); down.ZeroGrad();
        var y = fused ? SparseMlp.TryForwardGelu(up, down, x)! : down.Forward(up.Forward(x).Gelu());
        y.Backward(dy);
        var result = new List<float[]> { y.ToArray(), x.Grad!.ToArray(), up.TrainedWeight.Grad!.ToArray(), down.TrainedWeight.Grad!.ToArray() };
        if (up.Bias is not null) { result.Add(up.Bias.Grad!.ToArray()); result.Add(down.Bias!.Grad!.ToArray()); }
        return [.. result];
    }

    [Theory]
    [InlineData(150, 48, 192, 0.75, true, SparseWeightStorage.Dense)]      // a partial last token block
    [InlineData(128, 32, 128, 0.5, false, SparseWeightStorage.Dense)]
    [InlineData(300, 40, 160, 0.9, true, SparseWeightStorage.Compressed)]  // 5 token blocks; compressed storage
    [InlineData(65, 64, 256, 0.99, true, SparseWeightStorage.Compressed)]  // nearly empty rows; two blocks, one token in the second
    public void EqualsTheLayersRunOneAfterTheOther(int tokens, int c, int h, double sparsity, bool bias, SparseWeightStorage storage)
    {
        var (up, down) = Layers(c, h, sparsity, bias, storage, 7);
        var g = new Generator(11);
        var x = Tensor.Randn(new Shape(tokens, c), g); x.RequiresGrad = true;
        var dy = Tensor.Randn(new Shape(tokens, c), g);
        if (!Vector512.IsHardwareAccelerated)
        {
            SparseMlp.TryForwardGelu(up, down, x).Should().BeNull("the fused kernels need AVX-512");
            return;
        }
        var reference = Pass(up, down, x, dy, fused: false);
        var fused = Pass(up, down, x, dy, fused: true);
        string[] names = ["y", "dx", "dW_up", "dW_down", "db_up", "db_down"];
        for (int t = 0; t < reference.Length; t++)
        {
            fused[t].Length.Should().Be(reference[t].Length, names[t]);
            for (int i = 0; i < reference[t].Length; i++)
                fused[t][i].Should().BeApproximately(reference[t][i], 2e-4f * (1 + Math.Abs(reference[t][i])), $"{names[t]}[{i}]");
        }
        if (storage == SparseWeightStorage.Dense) // the dense gradient is exactly 0 where the mask drops a weight
            for (int i = 0; i < fused[2].Length; i++) if (!up.Mask.IsKept(i)) fused[2][i].Should().Be(0f);
    }

    [Fact]
    public void WithoutGradientsGivesTheSameOutput()
    {
        if (!Vector512.IsHardwareAccelerated) return; // the fused kernels need AVX-512 (the theory above checks it declines)
        var (up, down) = Layers(48, 192, 0.75, true, SparseWeightStorage.Compressed, 9);
        var x = Tensor.Randn(new Shape(150, 48), new Generator(4)); x.RequiresGrad = true;
        var trained = SparseMlp.TryForwardGelu(up, down, x)!.ToArray(); // saves the pre-activation for the backward pass
        float[] inferred;
        using (Tensors.Autograd.GradMode.NoGrad()) inferred = SparseMlp.TryForwardGelu(up, down, x)!.ToArray(); // saves nothing
        var reference = down.Forward(up.Forward(x).Gelu()).ToArray();
        for (int i = 0; i < reference.Length; i++)
        {
            inferred[i].Should().BeApproximately(reference[i], 2e-4f * (1 + Math.Abs(reference[i])), $"y[{i}] without gradients");
            trained[i].Should().BeApproximately(reference[i], 2e-4f * (1 + Math.Abs(reference[i])), $"y[{i}]");
        }
    }

    [Fact]
    public void LeavesWhatItCannotFuseToTheLayers()
    {
        var (up, down) = Layers(32, 128, 0.75, true, SparseWeightStorage.Dense, 3);
        var x = Tensor.Randn(new Shape(200, 32), new Generator(1));
        SparseMlp.TryForwardGelu(up, down, Tensor.Randn(new Shape(64, 32), new Generator(1))).Should().BeNull("one token block has nothing to split");
        SparseMlp.TryForwardGelu(up, up, x).Should().BeNull("up then up is no MLP");
        SparseMlp.TryForwardGelu(new Linear(32, 128, true, new Generator(2)), down, x).Should().BeNull("a dense projection");
        down.KernelMode = SparseKernelMode.MaskedDense;
        SparseMlp.TryForwardGelu(up, down, x).Should().BeNull("masked-dense kernels");
        down.KernelMode = SparseKernelMode.Compressed;
        up.CaptureDenseGradient = true;
        SparseMlp.TryForwardGelu(up, down, x).Should().BeNull("RigL's dense gradient needs the masked-dense kernel");
        up.CaptureDenseGradient = false;
        (SparseMlp.TryForwardGelu(up, down, x) is null).Should().Be(!Vector512.IsHardwareAccelerated);
    }

    [Fact]
    public unsafe void KernelsRejectLayersThatDoNotChain()
    {
        var (up, _) = Layers(32, 128, 0.75, false, SparseWeightStorage.Dense, 5);
        var act = () => SparseMlpKernels.Forward(up.Csr, default, up.Csr, default, null, new float[200 * 32], 200, new float[1], new float[200 * 32]);
        act.Should().Throw<ArgumentException>().WithMessage("*must be (H, C) and W₂ (C, H)*128×32*");
    }
}
