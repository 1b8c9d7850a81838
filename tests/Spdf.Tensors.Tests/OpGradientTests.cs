using Spdf.Tensors;

namespace Spdf.Tensors.Tests;

public class OpGradientTests
{
    private static readonly Generator G = new(42);
    private static Tensor R(params int[] shape) => GradCheck.RandomInput(G, shape);

    /// <summary>Values 0.1 apart in random order, so that a finite-difference step cannot change an argmax.</summary>
    private static Tensor Distinct(params int[] shape)
    {
        var t = new Tensor(new Shape(shape));
        var s = t.AsSpan();
        for (int i = 0; i < s.Length; i++) s[i] = i * 0.1f;
        for (int i = s.Length - 1; i > 0; i--) { int j = G.NextInt(i + 1); (s[i], s[j]) = (s[j], s[i]); }
        t.RequiresGrad = true;
        return t;
    }

    [Theory]
    [InlineData(new[] { 3, 5 }, new[] { 3, 5 })]
    [InlineData(new[] { 2, 3, 7 }, new[] { 7 })]
    [InlineData(new[] { 4, 1, 3 }, new[] { 5, 1 })]
    [InlineData(new[] { 3, 5 }, new int[0])]
    public void BinaryOpsWithBroadcasting(int[] sa, int[] sb)
    {
        GradCheck.Check(x => x[0] + x[1], [R(sa), R(sb)]);
        GradCheck.Check(x => x[0] - x[1], [R(sa), R(sb)]);
        GradCheck.Check(x => x[0] * x[1], [R(sa), R(sb)]);
        var b = Tensor.Rand(new Shape(sb), G).AddScalar(0.5f).Detach(); b.RequiresGrad = true;
        GradCheck.Check(x => x[0] / x[1], [R(sa), b]);
    }

    [Fact]
    public void ScalarOps()
    {
        GradCheck.Check(x => (x[0] * 3f + 2f) / 4f - 1f, [R(3, 17)]);
        GradCheck.Check(x => -x[0], [R(9)]);
    }

    [Fact]
    public void UnaryOps()
    {
        GradCheck.Check(x => x[0].Exp(), [R(3, 17)]);
        var pos = Tensor.Rand(new Shape(5, 7), G).AddScalar(0.5f).Detach(); pos.RequiresGrad = true;
        GradCheck.Check(x => x[0].Log(), [pos]);
        GradCheck.Check(x => x[0].Sqrt(), [pos]);
        GradCheck.Check(x => x[0].Pow(3f), [pos]);
        GradCheck.Check(x => x[0].Tanh(), [R(33)]);
        GradCheck.Check(x => x[0].Sigmoid(), [R(33)]);
        GradCheck.Check(x => x[0].Gelu(), [R(4, 19)]);
        // ReLU: keep inputs away from the kink at 0.
        var r = Tensor.Randn(new Shape(40), G).Detach();
        foreach (ref float v in r.AsSpan()) v = v >= 0 ? v + 0.1f : v - 0.1f;
        r.RequiresGrad = true;
        GradCheck.Check(x => x[0].Relu(), [r]);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(-1)]
    public void Reductions(int dim)
    {
        GradCheck.Check(x => x[0].Sum(dim), [R(3, 5, 7)]);
        GradCheck.Check(x => x[0].Sum(dim, keepDim: true), [R(3, 5, 7)]);
        GradCheck.Check(x => x[0].Mean(dim), [R(3, 5, 7)]);
        GradCheck.Check(x => x[0].Max(dim).Values, [Distinct(3, 5, 7)]);
        GradCheck.Check(x => x[0].Sum(), [R(3, 5, 7)]);
        GradCheck.Check(x => x[0].Mean(), [R(3, 5, 7)]);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    public void SoftmaxAndLogSoftmax(int dim)
    {
        GradCheck.Check(x => Functional.Softmax(x[0], dim), [R(3, 4, 17)]);
        GradCheck.Check(x => Functional.LogSoftmax(x[0], dim), [R(3, 4, 17)]);
    }

    [Fact]
    public void LayerNormAllInputs()
    {
        GradCheck.Check(x => Functional.LayerNorm(x[0], x[1], x[2]), [R(2, 3, 19), R(19), R(19)]);
        GradCheck.Check(x => Functional.LayerNorm(x[0], null, null), [R(5, 8)]);
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    [InlineData(true, true)]
    public void MatMulAllLayouts(bool ta, bool tb)
    {
        int m = 7, k = 9, n = 17;
        var a = ta ? R(2, k, m) : R(2, m, k);
        var b = tb ? R(2, n, k) : R(2, k, n);
        GradCheck.Check(x => Tensor.MatMul(x[0], x[1], ta, tb), [a, b]);
        var shared = tb ? R(n, k) : R(k, n);
        GradCheck.Check(x => Tensor.MatMul(x[0], x[1], ta, tb), [ta ? R(3, k, m) : R(3, m, k), shared]);
    }

    [Fact]
    public void LinearWithAndWithoutBias()
    {
        GradCheck.Check(x => Functional.Linear(x[0], x[1], x[2]), [R(2, 5, 13), R(11, 13), R(11)]);
        GradCheck.Check(x => Functional.Linear(x[0], x[1]), [R(3, 33), R(17, 33)]);
    }

    [Fact]
    public void EmbeddingScattersIntoRepeatedRows()
    {
        var ids = new IntTensor([1, 3, 1, 0, 3, 3], new Shape(2, 3));
        GradCheck.Check(x => Functional.Embedding(ids, x[0]), [R(5, 7)]);
    }

    [Fact]
    public void CrossEntropyWithIgnoreIndex()
    {
        var targets = new IntTensor([2, -100, 0, 6, 3], new Shape(5));
        GradCheck.Check(x => Functional.CrossEntropy(x[0], targets), [R(5, 7)]);
        GradCheck.Check(x => Functional.CrossEntropy(x[0], IntTensor.From(1, 2)), [R(2, 3)]);
    }

    [Fact]
    public void IgnoredRowsGetZeroGradientFromARecycledBuffer()
    {
        int n = 64, v = 512; // large enough for the engine's pool: the second step's gradient reuses the first's array
        var g = new Generator(3);
        var all = new IntTensor(Enumerable.Range(0, n).Select(i => i % v).ToArray(), new Shape(n));
        var some = new IntTensor(Enumerable.Range(0, n).Select(i => i % 3 == 0 ? -100 : i % v).ToArray(), new Shape(n));
        for (int step = 0; step < 2; step++)
        {
            var x = Tensor.Randn(new Shape(n, v), g); x.RequiresGrad = true;
            using (Autograd.TensorScope.Enter())
            {
                // Through an op, so that the loss's gradient is consumed inside the scope and its array recycled.
                Functional.CrossEntropy(x * 2f, step == 0 ? all : some).Backward();
                if (step == 0) continue;
                var d = x.Grad!.ToArray();
                for (int i = 0; i < n; i += 3) d.AsSpan(i * v, v).ToArray().Should().OnlyContain(x => x == 0f, $"row {i} is ignored");
                d.AsSpan(v, v).ToArray().Sum().Should().BeApproximately(0f, 1e-5f, "a counted row's softmax − onehot sums to 0");
            }
        }
    }

    [Fact]
    public void DropoutWithFixedMask()
    {
        GradCheck.Check(x => Functional.Dropout(x[0], 0.3f, training: true, new Generator(7)), [R(4, 9)]);
    }

    [Fact]
    public void MaskedFill()
    {
        var mask = Tensor.From([1, 0, 0, 1, 0, 1, 0, 0, 0], 3, 3);
        GradCheck.Check(x => x[0].MaskedFill(mask, -5f), [R(2, 3, 3)]);
    }

    [Fact]
    public void ShapeOps()
    {
        GradCheck.Check(x => x[0].Reshape(6, -1) * x[0].Reshape(6, -1), [R(2, 3, 5)]);
        GradCheck.Check(x => x[0].Permute(2, 0, 1), [R(2, 3, 5)]);
        GradCheck.Check(x => x[0].Transpose(0, 2), [R(2, 3, 5)]);
        GradCheck.Check(x => x[0].Narrow(1, 1, 2), [R(2, 4, 5)]);
        GradCheck.Check(x => Tensor.Cat([x[0], x[1], x[0]], 1), [R(2, 3, 5), R(2, 1, 5)]);
        GradCheck.Check(x => x[0].Split(2, -1)[1] * 2f, [R(3, 5)]);
    }

    [Theory]
    [InlineData(1, 1, 1, 4)]
    [InlineData(2, 3, 7, 5)]
    [InlineData(1, 2, 17, 16)]
    public void CausalSelfAttention(int b, int h, int t, int e)
    {
        GradCheck.Check(x => Functional.CausalSelfAttention(x[0], x[1], x[2]), [R(b, h, t, e), R(b, h, t, e), R(b, h, t, e)]);
    }

    [Fact]
    public void GradientsAccumulateAcrossUsesAndBackwardCalls()
    {
        var x = Tensor.From([1f, 2f, 3f]); x.RequiresGrad = true;
        (x * x + x).Sum().Backward();
        x.Grad!.ToArray().Should().Equal(3f, 5f, 7f);
        (x * 2f).Sum().Backward();
        x.Grad!.ToArray().Should().Equal(5f, 7f, 9f);
    }

    [Fact]
    public void NoGradAndDetachRecordNothing()
    {
        var x = Tensor.From([1f, 2f]); x.RequiresGrad = true;
        using (Autograd.GradMode.NoGrad()) (x * x).RequiresGrad.Should().BeFalse();
        (x * x).Detach().RequiresGrad.Should().BeFalse();
        (x * x).RequiresGrad.Should().BeTrue();
    }

    [Fact]
    public void BackwardTwiceWithoutRetainGraphThrows()
    {
        var x = Tensor.From([1f, 2f]); x.RequiresGrad = true;
        var y = (x * x).Sum();
        y.Backward(retainGraph: true);
        y.Backward();
        x.Grad!.ToArray().Should().Equal(4f, 8f);
        var act = () => y.Backward();
        act.Should().Throw<InvalidOperationException>().WithMessage("*already freed*");
    }
}

/// <summary>The GELU kernels against the tanh formula and its derivative in double precision.</summary>
public class GeluKernelTests
{
    private static double Tanh(double x) => Math.Tanh(Math.Sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x));

    [Theory]
    [InlineData(37)]       // vector body and a scalar tail
    [InlineData(100_003)]  // several parallel chunks, the last one partial
    public void MatchTheTanhFormulaAndItsDerivative(int n)
    {
        var g = new Generator(7);
        var x = Tensor.Randn(new Shape(n), g).ToArray();
        var dy = Tensor.Randn(new Shape(n), g).ToArray();
        x[0] = -30f; x[1] = 30f; x[2] = 0f; x[3] = -5.5f; x[4] = 1e-20f; // saturated, zero, tiny
        for (int i = 5; i < Math.Min(n, 20); i++) x[i] *= 4;
        var y = new float[n]; var dx = new float[n];
        Spdf.Tensors.Kernels.Cpu.Activations.GeluForward(y, x);
        Spdf.Tensors.Kernels.Cpu.Activations.GeluBackward(dx, x, dy);
        // The fused MLP's kernel: the value and the derivative from one exponential.
        var y2 = new float[n]; var slopes = new float[n];
        unsafe
        {
            fixed (float* px = x, py = y2, pd = slopes) Spdf.Tensors.Kernels.Cpu.Activations.GeluForwardWithDerivativeSerial(px, py, pd, n);
        }
        for (int i = 0; i < n; i++)
        {
            double v = x[i], t = Tanh(v);
            double expected = 0.5 * v * (1 + t);
            double slope = 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * Math.Sqrt(2 / Math.PI) * (1 + 3 * 0.044715 * v * v);
            y[i].Should().BeApproximately((float)expected, 2e-6f * (1 + (float)Math.Abs(expected)), $"gelu({v})");
            dx[i].Should().BeApproximately((float)(dy[i] * slope), 2e-6f * (1 + Math.Abs(dy[i])), $"gelu'({v})·{dy[i]}");
            y2[i].Should().BeApproximately((float)expected, 2e-6f * (1 + (float)Math.Abs(expected)), $"gelu({v}) with its derivative");
            slopes[i].Should().BeApproximately((float)slope, 2e-6f, $"gelu'({v})");
        }
    }
}

/// <summary>LayerNorm over many rows (several parallel chunks) against the formulas in double precision.</summary>
public class LayerNormChunkTests
{
    [Theory]
    [InlineData(3001, 24, true)]   // several parallel chunks; one vector and a scalar tail per row
    [InlineData(40, 384, true)]    // the GPT's width: whole vectors
    [InlineData(33, 100, false)]   // no weight or bias; vectors and a tail
    [InlineData(17, 7, true)]      // shorter than a vector
    public void ManyRowsMatchTheFormulas(int rows, int c, bool affine)
    {
        var g = new Generator(11);
        var x = Tensor.Randn(new Shape(rows, c), g); x.RequiresGrad = true;
        for (int i = 0; i < c; i++) x.Storage[i] += 100f; // a row whose mean dwarfs its spread
        var w = Tensor.Randn(new Shape(c), g); w.RequiresGrad = true;
        var b = Tensor.Randn(new Shape(c), g); b.RequiresGrad = true;
        if (!affine) { w = Tensor.Ones(c); b = Tensor.Zeros(c); }
        var dy = Tensor.Randn(new Shape(rows, c), g);
        var y = affine ? Functional.LayerNorm(x, w, b) : Functional.LayerNorm(x, null, null);
        y.Backward(dy);
        var (xs, ws, bs, gs, ys) = (x.ToArray(), w.ToArray(), b.ToArray(), dy.ToArray(), y.ToArray());
        var dx = x.Grad!.ToArray();
        var (dw, db) = affine ? (w.Grad!.ToArray(), b.Grad!.ToArray()) : (null, null);
        var dwRef = new double[c]; var dbRef = new double[c];
        for (int r = 0; r < rows; r++)
        {
            double m = 0, v = 0;
            for (int j = 0; j < c; j++) m += xs[r * c + j];
            m /= c;
            for (int j = 0; j < c; j++) v += (xs[r * c + j] - m) * (xs[r * c + j] - m);
            double rs = 1 / Math.Sqrt(v / c + 1e-5);
            double s1 = 0, s2 = 0;
            for (int j = 0; j < c; j++)
            {
                double xh = (xs[r * c + j] - m) * rs, gj = gs[r * c + j];
                ys[r * c + j].Should().BeApproximately((float)(xh * ws[j] + bs[j]), 1e-4f);
                dwRef[j] += gj * xh; dbRef[j] += gj;
                s1 += gj * ws[j]; s2 += gj * ws[j] * xh;
            }
            for (int j = 0; j < c; j++)
            {
                double xh = (xs[r * c + j] - m) * rs;
                double expected = rs * (gs[r * c + j] * ws[j] - s1 / c - xh * s2 / c);
                dx[r * c + j].Should().BeApproximately((float)expected, 1e-4f * (1 + (float)Math.Abs(expected)));
            }
        }
        for (int j = 0; j < c && affine; j++)
        {
            dw![j].Should().BeApproximately((float)dwRef[j], 2e-3f * (1 + (float)Math.Abs(dwRef[j])));
            db![j].Should().BeApproximately((float)dbRef[j], 2e-3f * (1 + (float)Math.Abs(dbRef[j])));
        }
    }
}
