namespace Spdf.Tensors.Tests;

/// <summary>The kernels' float exponential and its fused row passes against double precision.</summary>
public class VectorMathTests
{
    [Fact]
    public void ExpIsWithinTwoUlpOfTheDoublePrecisionResultAndZeroBelowTheFloatRange()
    {
        // Vector512 arithmetic is exact without AVX-512 too (.NET lowers it to narrower vectors): this runs everywhere.
        var g = new Generator(7);
        var xs = new List<float> { 0f, -0f, 1f, -1f, 0.5f * MathF.Log(2f), -0.5f * MathF.Log(2f), -87.3f, 88.3f, 1e-8f, -1e-8f };
        for (int i = 0; i < 20000; i++) xs.Add(-87.3f + 175.6f * g.NextFloat());
        for (int i = 0; i < xs.Count; i += 16)
        {
            var lanes = new float[16];
            for (int l = 0; l < 16; l++) lanes[l] = xs[Math.Min(i + l, xs.Count - 1)];
            var y = Kernels.Cpu.VectorMath.Exp(System.Runtime.Intrinsics.Vector512.Create(lanes));
            for (int l = 0; l < 16; l++)
            {
                double want = Math.Exp(lanes[l]);
                double ulp = MathF.BitIncrement((float)want) - (float)want;
                Math.Abs(y[l] - want).Should().BeLessThanOrEqualTo(2 * ulp, $"exp({lanes[l]:R})");
            }
        }
        var low = Kernels.Cpu.VectorMath.Exp(System.Runtime.Intrinsics.Vector512.Create(-100f));
        low.Should().Be(System.Runtime.Intrinsics.Vector512<float>.Zero);
        Kernels.Cpu.VectorMath.Exp(System.Runtime.Intrinsics.Vector512.Create(float.NegativeInfinity)).Should().Be(System.Runtime.Intrinsics.Vector512<float>.Zero);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(37)]    // two-vector body, one-vector step and a scalar tail
    [InlineData(8192)]  // a vocabulary row
    public void SumExpAndScaledExpMatchDoublePrecision(int n)
    {
        var g = new Generator((ulong)n);
        var x = Tensor.Randn(new Shape(n), g).ToArray();
        for (int i = 0; i < n; i++) x[i] *= 6;
        float shift = x.Max();
        double want = 0;
        foreach (float v in x) want += Math.Exp(v - (double)shift);
        Kernels.Cpu.VectorMath.SumExp(x, shift).Should().BeApproximately((float)want, 1e-5f * (float)want);
        var y = new float[n];
        Kernels.Cpu.VectorMath.ScaledExp(x, shift, 0.25f, y);
        for (int i = 0; i < n; i++) y[i].Should().BeApproximately((float)(0.25 * Math.Exp(x[i] - (double)shift)), 1e-6f, $"element {i}");
        ((Action)(() => Kernels.Cpu.VectorMath.ScaledExp(x, 0, 1, new float[n + 1]))).Should().Throw<ArgumentException>().WithMessage($"*{n}*{n + 1}*");
    }

    [Theory]
    [InlineData(1)]
    [InlineData(37)]    // two-vector body and a scalar tail
    [InlineData(928)]   // the main job's vocabulary row
    public void ExpShiftedSumWritesTheExponentialsAndReturnsTheirSum(int n)
    {
        var g = new Generator((ulong)n + 1);
        var x = Tensor.Randn(new Shape(n), g).ToArray();
        for (int i = 0; i < n; i++) x[i] *= 6;
        float shift = x.Max();
        var e = (float[])x.Clone();
        float sum = Kernels.Cpu.VectorMath.ExpShiftedSum(e, shift);
        double want = 0;
        for (int i = 0; i < n; i++)
        {
            double ei = Math.Exp(x[i] - (double)shift);
            e[i].Should().BeApproximately((float)ei, 1e-6f, $"element {i}");
            want += ei;
        }
        sum.Should().BeApproximately((float)want, 1e-5f * (float)want);
    }
}
