namespace Spdf.Tensors.Tests;

/// <summary>
/// The fused LM head and loss equals <c>CrossEntropy(x · wᵀ)</c> (itself checked against PyTorch in TorchParityTests):
/// the loss and both gradients, at odd sizes, with ignored targets, chunks of one row, of a few rows and of more rows
/// than there are, an upstream gradient other than 1, and without gradients.
/// </summary>
public class LinearCrossEntropyTests
{
    private static void Close(float[] actual, float[] expected, float tol, string what)
    {
        actual.Length.Should().Be(expected.Length, what);
        for (int i = 0; i < actual.Length; i++)
            actual[i].Should().BeApproximately(expected[i], tol * (1 + Math.Abs(expected[i])), $"{what}[{i}]");
    }

    [Theory]
    [InlineData(37, 13, 29, 1)]
    [InlineData(37, 13, 29, 5)]
    [InlineData(37, 13, 29, 64)]
    [InlineData(64, 48, 515, 0)]
    [InlineData(130, 40, 97, 16)]
    public void EqualsTheHeadThenTheLossWithBothGradients(int n, int c, int v, int chunk)
    {
        var g = new Generator((ulong)(n + c + v + chunk));
        var x = Tensor.Randn(new Shape(n, c), g); x.RequiresGrad = true;
        var w = Tensor.Randn(new Shape(v, c), g) * 0.3f; w.RequiresGrad = true;
        var t = Enumerable.Range(0, n).Select(i => i % 7 == 3 ? Functional.IgnoreIndex : (i * 31 + 5) % v).ToArray();
        var targets = new IntTensor(t, new Shape(n));

        var fused = Functional.LinearCrossEntropy(x, w, targets, chunk: chunk) * 3f;   // an upstream gradient of 3
        fused.Backward();
        var (fx, fw, fl) = (x.Grad!.ToArray(), w.Grad!.ToArray(), fused.Item());
        x.Grad = null; w.Grad = null;
        var reference = Functional.CrossEntropy(Tensor.MatMul(x, w, false, true), targets) * 3f;
        reference.Backward();

        fl.Should().BeApproximately(reference.Item(), 1e-5f * Math.Abs(reference.Item()));
        Close(fx, x.Grad!.ToArray(), 1e-4f, "dx");
        Close(fw, w.Grad!.ToArray(), 1e-4f, "dw");
        for (int i = 0; i < n; i++)
            if (t[i] == Functional.IgnoreIndex) fx.AsSpan(i * c, c).ToArray().Should().OnlyContain(d => d == 0f, $"row {i} is ignored");
    }

    [Fact]
    public void WithoutGradientsOrTargetsItIsTheLossAlone()
    {
        var g = new Generator(3);
        var x = Tensor.Randn(new Shape(9, 6), g);
        var w = Tensor.Randn(new Shape(11, 6), g);
        var targets = new IntTensor(Enumerable.Range(0, 9).Select(i => i % 11).ToArray(), new Shape(9));
        Functional.LinearCrossEntropy(x, w, targets, chunk: 4).Item()
            .Should().BeApproximately(Functional.CrossEntropy(Tensor.MatMul(x, w, false, true), targets).Item(), 1e-5f);
        var none = new IntTensor(Enumerable.Repeat(Functional.IgnoreIndex, 9).ToArray(), new Shape(9));
        x.RequiresGrad = true;
        var zero = Functional.LinearCrossEntropy(x, w, none);
        zero.Item().Should().Be(0f);
        zero.Backward();
        x.Grad!.ToArray().Should().OnlyContain(d => d == 0f);
    }

    [Fact]
    public void BadInputIsNamedAndASecondBackwardIsRefused()
    {
        var g = new Generator(4);
        var x = Tensor.Randn(new Shape(4, 6), g); x.RequiresGrad = true;
        var w = Tensor.Randn(new Shape(10, 6), g);
        var ok = new IntTensor([1, 2, 3, 4], new Shape(4));
        FluentActions.Invoking(() => Functional.LinearCrossEntropy(x, Tensor.Randn(new Shape(10, 5), g), ok)).Should().Throw<ArgumentException>().WithMessage("*last dimension (6*5 columns*");
        FluentActions.Invoking(() => Functional.LinearCrossEntropy(x, w, new IntTensor([1, 2, 3], new Shape(3)))).Should().Throw<ArgumentException>().WithMessage("*4 rows of x*3 targets*");
        FluentActions.Invoking(() => Functional.LinearCrossEntropy(x, w, new IntTensor([1, 2, 10, 4], new Shape(4)))).Should().Throw<ArgumentException>().WithMessage("*target 10 at row 2 is outside [0, 10)*");
        FluentActions.Invoking(() => Functional.LinearCrossEntropy(x, w, ok, chunk: -1)).Should().Throw<ArgumentException>().WithMessage("*chunk is -1*");
        var loss = Functional.LinearCrossEntropy(x, w, ok);
        loss.Backward(retainGraph: true);
        FluentActions.Invoking(() => loss.Backward()).Should().Throw<InvalidOperationException>().WithMessage("*hands them over once*");
    }
}
