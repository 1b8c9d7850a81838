using Spdf.Sparsity.Masks;
using Spdf.Tensors;

namespace Spdf.Sparsity.Tests;

public class MaskTests
{
    [Theory]
    [InlineData(3, 5)]
    [InlineData(16, 16)]
    [InlineData(7, 33)]
    public void PackedBitsRoundTrip(int rows, int cols)
    {
        var mask = MaskInitializers.Random.Create(Tensor.Zeros(rows, cols), 0.6, new SparsityRandom(4));
        var packed = mask.ToPackedBits();
        packed.Length.Should().Be((rows * cols + 15) / 16);
        SparsityMask.FromPackedBits(packed, mask.Rows, mask.Cols).Values.ToArray().Should().Equal(mask.Values.ToArray());
        var wrong = () => SparsityMask.FromPackedBits(packed, rows * cols + 16, 1);
        wrong.Should().Throw<ArgumentException>().WithMessage("*packed mask words cannot hold a mask of shape*");
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(0.5)]
    [InlineData(0.75)]
    [InlineData(0.9)]
    [InlineData(0.999)]
    public void RandomKeepsExactlyRoundedCount(double s)
    {
        var w = Tensor.Randn(new Shape(37, 53), new Generator(1));
        var m = MaskInitializers.Random.Create(w, s, new SparsityRandom(2));
        m.KeptCount.Should().Be((int)Math.Round((1 - s) * 37 * 53, MidpointRounding.ToEven));
    }

    [Fact]
    public void RandomIsSeededAndUniform()
    {
        var w = Tensor.Zeros(200, 100);
        var a = MaskInitializers.Random.Create(w, 0.75, new SparsityRandom(5));
        var b = MaskInitializers.Random.Create(w, 0.75, new SparsityRandom(5));
        a.Values.ToArray().Should().Equal(b.Values.ToArray());
        // each row keeps about a quarter: no row is empty or full at this size
        for (int r = 0; r < 200; r++)
        {
            int kept = 0;
            for (int c = 0; c < 100; c++) kept += a.IsKept(r * 100 + c) ? 1 : 0;
            kept.Should().BeInRange(8, 45);
        }
    }

    [Fact]
    public void MagnitudeKeepsLargestAbsoluteValues()
    {
        var w = Tensor.From([0.1f, -5f, 3f, -0.2f, 4f, 0f], 2, 3);
        var m = MaskInitializers.Magnitude.Create(w, 0.5, new SparsityRandom(0));
        m.Values.ToArray().Should().Equal(0, 1, 1, 0, 1, 0);
    }

    [Fact]
    public void FromZerosAndCheckerboard()
    {
        var w = Tensor.From([0f, 1f, 0f, 2f], 2, 2);
        MaskInitializers.FromZeros.Create(w, 0, new SparsityRandom(0)).Values.ToArray().Should().Equal(0, 1, 0, 1);
        MaskInitializers.Checkerboard.Create(Tensor.Zeros(2, 3), 0, new SparsityRandom(0)).Values.ToArray().Should().Equal(1, 0, 1, 0, 1, 0);
    }

    [Fact]
    public void NofMKeepsNPerGroupAlongInputs()
    {
        var w = Tensor.Randn(new Shape(6, 16), new Generator(3));
        var m = MaskInitializers.NofM(2, 4).Create(w, 0, new SparsityRandom(0));
        var v = m.Values.ToArray();
        for (int g = 0; g < v.Length; g += 4) v.Skip(g).Take(4).Sum().Should().Be(2);
        m.Sparsity.Should().Be(0.5);
    }

    [Fact]
    public void BadArgumentsNameValueAndExpectation()
    {
        var w = Tensor.Zeros(4, 6);
        var act = () => MaskInitializers.Random.Create(w, 1.0, new SparsityRandom(0));
        act.Should().Throw<ArgumentOutOfRangeException>().WithMessage("*Sparsity 1 is outside [0, 1)*");
        act = () => MaskInitializers.Random.Create(w, -0.1, new SparsityRandom(0));
        act.Should().Throw<ArgumentOutOfRangeException>().WithMessage("*-0.1*");
        ((Action)(() => MaskInitializers.NofM(5, 4))).Should().Throw<ArgumentException>().WithMessage("*5:4*N outside*");
        act = () => MaskInitializers.NofM(2, 4).Create(Tensor.Zeros(2, 6), 0, new SparsityRandom(0));
        act.Should().Throw<ArgumentException>().WithMessage("*divisible by 4*[2, 6]*");
        act = () => MaskInitializers.Custom("bad", (_, _, _, _, _) => SparsityMask.Dense(3, 3)).Create(w, 0.5, new SparsityRandom(0));
        act.Should().Throw<ArgumentException>().WithMessage("*mask has shape [3, 3]*weight has shape [4, 6]*");
        ((Action)(() => new SparsityMask([0f, 0.5f], 1, 2))).Should().Throw<ArgumentException>().WithMessage("*element 1 is 0.5*");
    }

    [Fact]
    public void ErkMeetsTheGlobalTargetAndFavoursLargeLayers()
    {
        var shapes = new List<(int Rows, int Cols)> { (24, 8), (8, 24), (512, 512), (2048, 512) };
        var s = SparsityDistributions.Erk.Distribute(shapes, 0.8);
        double kept = shapes.Select((sh, i) => sh.Rows * sh.Cols * (1 - s[i])).Sum();
        kept.Should().BeApproximately(0.2 * shapes.Sum(sh => sh.Rows * sh.Cols), 1.0);
        s[0].Should().Be(0, "a small layer's ERK density exceeds 1, so it is dense");
        s[3].Should().BeGreaterThan(s[2]);
        SparsityDistributions.Uniform.Distribute(shapes, 0.8).Should().AllBeEquivalentTo(0.8);
    }
}
