namespace Spdf.Tensors.Tests;

public class BadInputTests
{
    [Fact]
    public void ShapeMismatchNamesBothShapes()
    {
        var act = () => Tensor.Zeros(2, 3).MatMul(Tensor.Zeros(4, 5));
        act.Should().Throw<ArgumentException>().WithMessage("*[2, 3]*[4, 5]*3 vs 4*");
        act = () => _ = Tensor.Zeros(2, 3) + Tensor.Zeros(4, 3);
        act.Should().Throw<ArgumentException>().WithMessage("*[2, 3] and [4, 3] cannot be broadcast*");
        act = () => Functional.Linear(Tensor.Zeros(2, 5), Tensor.Zeros(3, 4));
        act.Should().Throw<ArgumentException>().WithMessage("*last dimension 5*input size 4*");
    }

    [Fact]
    public void WrongRankNamesTheShape()
    {
        var act = () => Functional.Linear(Tensor.Zeros(2, 4), Tensor.Zeros(4));
        act.Should().Throw<ArgumentException>().WithMessage("*weight must be 2-D*[4]*");
        act = () => Tensor.Zeros(4).MatMul(Tensor.Zeros(4, 2));
        act.Should().Throw<ArgumentException>().WithMessage("*rank ≥ 2*[4]*");
        act = () => Functional.CausalSelfAttention(Tensor.Zeros(2, 3, 4), Tensor.Zeros(2, 3, 4), Tensor.Zeros(2, 3, 4));
        act.Should().Throw<ArgumentException>().WithMessage("*[B, H, T, E]*[2, 3, 4]*");
    }

    [Fact]
    public void BadIndicesAndSizes()
    {
        var act = () => Functional.Embedding(IntTensor.From(0, 9), Tensor.Zeros(5, 2));
        act.Should().Throw<ArgumentException>().WithMessage("*index 9 at position 1*[0, 5)*");
        act = () => Functional.CrossEntropy(Tensor.Zeros(2, 3), IntTensor.From(0, 3));
        act.Should().Throw<ArgumentException>().WithMessage("*target 3 at row 1*[0, 3)*");
        act = () => Tensor.Zeros(6).Reshape(4, -1);
        act.Should().Throw<ArgumentException>().WithMessage("*[6]*[4, -1]*");
        act = () => new Tensor(new float[5], new Shape(2, 3));
        act.Should().Throw<ArgumentException>().WithMessage("*5 elements*[2, 3]*6*");
        act = () => Functional.Dropout(Tensor.Zeros(2), 1.5f, true);
        act.Should().Throw<ArgumentOutOfRangeException>().WithMessage("*[0, 1)*");
        act = () => Tensor.Zeros(2, 3).Narrow(1, 2, 2);
        act.Should().Throw<ArgumentOutOfRangeException>().WithMessage("*Narrow(1, 2, 2)*size 3*");
    }
}
