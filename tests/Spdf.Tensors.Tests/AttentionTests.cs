namespace Spdf.Tensors.Tests;

public class AttentionTests
{
    /// <summary>The unfused reference: softmax(q·kᵀ/√E with −∞ above the diagonal)·v, as in nanoGPT.</summary>
    private static Tensor Reference(Tensor q, Tensor k, Tensor v)
    {
        int t = q.Size(2), e = q.Size(3);
        var att = Tensor.MatMul(q, k, false, true) * (1f / MathF.Sqrt(e));
        var mask = new Tensor(new Shape(t, t));
        for (int i = 0; i < t; i++) for (int j = i + 1; j < t; j++) mask[i, j] = 1;
        att = Functional.Softmax(att.MaskedFill(mask, float.NegativeInfinity), -1);
        return att.MatMul(v);
    }

    [Theory]
    [InlineData(2, 3, 1, 8)]
    [InlineData(1, 2, 33, 16)]
    [InlineData(2, 2, 64, 64)]
    public void FusedMatchesUnfusedForwardAndBackward(int b, int h, int t, int e)
    {
        var g = new Generator(5);
        Tensor Mk() { var x = Tensor.Randn(new Shape(b, h, t, e), g); x.RequiresGrad = true; return x; }
        var (q, k, v) = (Mk(), Mk(), Mk());
        var dout = Tensor.Randn(new Shape(b, h, t, e), g);
        var fused = Functional.CausalSelfAttention(q, k, v);
        fused.Backward(dout);
        var (gq, gk, gv) = (q.Grad!.ToArray(), k.Grad!.ToArray(), v.Grad!.ToArray());
        q.Grad = k.Grad = v.Grad = null;
        var reference = Reference(q, k, v);
        reference.Backward(dout);
        fused.ToArray().Should().BeEquivalentTo(reference.ToArray(), o => o.Using<float>(c => c.Subject.Should().BeApproximately(c.Expectation, 1e-4f)).WhenTypeIs<float>());
        gq.Should().BeEquivalentTo(q.Grad!.ToArray(), o => o.Using<float>(c => c.Subject.Should().BeApproximately(c.Expectation, 2e-4f)).WhenTypeIs<float>());
        gk.Should().BeEquivalentTo(k.Grad!.ToArray(), o => o.Using<float>(c => c.Subject.Should().BeApproximately(c.Expectation, 2e-4f)).WhenTypeIs<float>());
        gv.Should().BeEquivalentTo(v.Grad!.ToArray(), o => o.Using<float>(c => c.Subject.Should().BeApproximately(c.Expectation, 2e-4f)).WhenTypeIs<float>());
    }

    [Theory]
    [InlineData(2, 3, 5, 8)]    // E not a multiple of 16: the reference kernel (rows copied in 8-float vectors)
    [InlineData(2, 2, 7, 5)]    // E no multiple of 8: rows copied element-wise
    [InlineData(2, 2, 37, 16)]  // the blocked kernel, a partial block
    [InlineData(1, 4, 64, 32)]
    public void PackedMatchesSplitAttentionMerge(int b, int h, int t, int e)
    {
        int c = h * e;
        var g = new Generator(9);
        var qkv = Tensor.Randn(new Shape(b, t, 3 * c), g); qkv.RequiresGrad = true;
        var dy = Tensor.Randn(new Shape(b, t, c), g);
        var packed = Functional.CausalSelfAttentionPacked(qkv, h);
        packed.Shape.Should().Be(new Shape(b, t, c));
        packed.Backward(dy);
        var dPacked = qkv.Grad!.ToArray();
        qkv.Grad = null;
        Tensor Heads(int i) => qkv.Narrow(2, i * c, c).Reshape(b, t, h, e).Permute(0, 2, 1, 3);
        var split = Functional.CausalSelfAttention(Heads(0), Heads(1), Heads(2)).Permute(0, 2, 1, 3).Reshape(b, t, c);
        split.Backward(dy);
        packed.ToArray().Should().Equal(split.ToArray(), "the same kernel on the same values");
        dPacked.Should().Equal(qkv.Grad!.ToArray());
    }

    [Fact]
    public void PackedRejectsAShapeThatDoesNotSplitIntoHeads()
    {
        var act = () => Functional.CausalSelfAttentionPacked(Tensor.Zeros(1, 4, 30), 4);
        act.Should().Throw<ArgumentException>().WithMessage("*[B, T, 3C]*4 heads*[1, 4, 30]*");
        ((Action)(() => Functional.CausalSelfAttentionPacked(Tensor.Zeros(1, 4, 24), 0))).Should().Throw<ArgumentException>().WithMessage("*heads must be positive*");
    }
}

public class BlockedAttentionTests
{
    [Theory]
    [InlineData(1, 16)]
    [InlineData(5, 16)]
    [InlineData(17, 32)]
    [InlineData(64, 64)]
    [InlineData(131, 64)]
    [InlineData(45, 48)]   // head sizes that are not a multiple of the 64-column tile
    [InlineData(97, 80)]
    [InlineData(256, 64)]  // the GPT's shape: whole query blocks, whole row tiles
    [InlineData(128, 32)]  // the main job's shape: products 32 columns wide
    [InlineData(100, 96)]  // 64 columns, then 32
    public void BlockedKernelsMatchTheRowByRowReference(int t, int e)
    {
        // The engine takes the blocked kernels only with Vector512 hardware; their arithmetic is checked wherever they can
        // run at all (Vector512 is exact in software, the kernels also need AVX). Where they cannot, the engine must not
        // choose them, and the reference they are checked against is what it runs.
        if (!System.Runtime.Intrinsics.X86.Avx.IsSupported)
        {
            Kernels.Cpu.AttentionBlocked.Supports(e).Should().BeFalse("without AVX the engine keeps the row-by-row kernel");
            return;
        }
        var g = new Generator((ulong)(t * 100 + e));
        float[] R() => Tensor.Randn(new Shape(t, e), g).ToArray();
        var (q, k, v, dout) = (R(), R(), R(), R());
        float scale = 1f / MathF.Sqrt(e);
        var (o1, l1, o2, l2) = (new float[t * e], new float[t], new float[t * e], new float[t]);
        Kernels.Cpu.Attention.CausalForward(o1, l1, q, k, v, t, e, scale, new float[t]);
        var scratch = new float[Kernels.Cpu.AttentionBlocked.ScratchSize(t, e)];
        Kernels.Cpu.AttentionBlocked.CausalForward(o2, l2, q, k, v, t, e, scale, scratch);
        for (int i = 0; i < o1.Length; i++) o2[i].Should().BeApproximately(o1[i], 1e-5f);
        for (int i = 0; i < t; i++) l2[i].Should().BeApproximately(l1[i], 1e-5f);
        var (dq1, dk1, dv1) = (new float[t * e], new float[t * e], new float[t * e]);
        var (dq2, dk2, dv2) = (new float[t * e], new float[t * e], new float[t * e]);
        Kernels.Cpu.Attention.CausalBackward(dq1, dk1, dv1, dout, q, k, v, o1, l1, t, e, scale);
        Array.Fill(scratch, float.NaN); // stale scratch must not leak into results
        Kernels.Cpu.AttentionBlocked.CausalBackward(dq2, dk2, dv2, dout, q, k, v, o1, l1, t, e, scale, scratch);
        for (int i = 0; i < dq1.Length; i++)
        {
            dq2[i].Should().BeApproximately(dq1[i], 1e-4f, $"dq[{i}]");
            dk2[i].Should().BeApproximately(dk1[i], 1e-4f, $"dk[{i}]");
            dv2[i].Should().BeApproximately(dv1[i], 1e-4f, $"dv[{i}]");
        }
    }

    [Theory]
    [InlineData(128, 32, 96)]  // the main job's packed rows: 3 × 128 floats, head size 32
    [InlineData(100, 64, 200)] // a partial last query block, a stride that is no multiple of 16
    public void BlockedKernelsReadStridedKAndVAsContiguousOnes(int t, int e, int stride)
    {
        if (!Kernels.Cpu.AttentionBlocked.Supports(e)) return; // the engine keeps the row-by-row kernel, which the test above checks
        var g = new Generator((ulong)(t + e + stride));
        float[] R() => Tensor.Randn(new Shape(t, e), g).ToArray();
        var (q, k, v, dout) = (R(), R(), R(), R());
        // K and V inside rows of `stride` floats, as a head's columns of a packed projection, with NaN around them.
        float[] Strided(float[] x)
        {
            var rows = Enumerable.Repeat(float.NaN, (t - 1) * stride + e).ToArray();
            for (int i = 0; i < t; i++) Array.Copy(x, i * e, rows, i * stride, e);
            return rows;
        }
        float scale = 1f / MathF.Sqrt(e);
        var scratch = new float[Kernels.Cpu.AttentionBlocked.ScratchSize(t, e)];
        var (o1, l1, o2, l2) = (new float[t * e], new float[t], new float[t * e], new float[t]);
        Kernels.Cpu.AttentionBlocked.CausalForward(o1, l1, q, k, v, t, e, scale, scratch);
        Kernels.Cpu.AttentionBlocked.CausalForward(o2, l2, q, Strided(k), v, t, e, scale, scratch, kStride: stride);
        o2.Should().Equal(o1);
        l2.Should().Equal(l1);
        var (dq1, dk1, dv1, dq2, dk2, dv2) = (new float[t * e], new float[t * e], new float[t * e], new float[t * e], new float[t * e], new float[t * e]);
        Kernels.Cpu.AttentionBlocked.CausalBackward(dq1, dk1, dv1, dout, q, k, v, o1, l1, t, e, scale, scratch);
        Kernels.Cpu.AttentionBlocked.CausalBackward(dq2, dk2, dv2, dout, q, k, Strided(v), o1, l1, t, e, scale, scratch, vStride: stride);
        dq2.Should().Equal(dq1);
        dk2.Should().Equal(dk1);
        dv2.Should().Equal(dv1);
        // A stride below the head size, or rows that do not fit the span, are refused with the numbers.
        var o = new float[t * e]; var l = new float[t];
        FluentActions.Invoking(() => Kernels.Cpu.AttentionBlocked.CausalForward(o, l, q, k, v, t, e, scale, scratch, kStride: e - 1))
            .Should().Throw<ArgumentException>().WithMessage($"*stride of {e - 1}*below the head size {e}*");
        FluentActions.Invoking(() => Kernels.Cpu.AttentionBlocked.CausalBackward(dq2, dk2, dv2, dout, q, k, v, o1, l1, t, e, scale, scratch, vStride: stride))
            .Should().Throw<ArgumentException>().WithMessage($"*{t} rows of {e} floats at a stride of {stride} need {(t - 1) * stride + e} floats; got {t * e}*");
    }
}
