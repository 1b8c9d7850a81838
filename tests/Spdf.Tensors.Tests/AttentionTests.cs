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
}
