using FluentAssertions;
using Spdf.Sparsity.Masks;
using Xunit;

namespace Spdf.Sparsity.Tests;

public class DroppedPositionsTests
{
    [Theory]
    [InlineData(1, 1, 0.0)]
    [InlineData(3, 7, 0.5)]
    [InlineData(64, 64, 0.75)]
    [InlineData(17, 129, 0.9)]
    [InlineData(384, 1536, 0.75)] // several parallel pieces
    [InlineData(33, 65, 0.99)]
    [InlineData(300, 301, 1.0)]   // everything dropped
    public void FillsExactlyTheDroppedPositionsWhateverTheyHeld(int rows, int cols, double sparsity)
    {
        var rng = new Random(rows * 1000 + cols);
        var mask = new float[rows * cols];
        for (int i = 0; i < mask.Length; i++) mask[i] = rng.NextDouble() < sparsity ? 0f : 1f;
        var values = new float[mask.Length];
        for (int i = 0; i < values.Length; i++)
            values[i] = (i % 11) switch { 0 => float.NaN, 1 => float.PositiveInfinity, _ => (float)rng.NextDouble() - 0.5f };
        var expected = (float[])values.Clone();
        for (int i = 0; i < mask.Length; i++) if (mask[i] == 0) expected[i] = 3.5f;

        var dropped = new DroppedPositions(mask);
        dropped.Count.Should().Be(mask.Count(m => m == 0));
        dropped.Fill(values, 3.5f);

        for (int i = 0; i < values.Length; i++)
        {
            dropped.Contains(i).Should().Be(mask[i] == 0);
            if (float.IsNaN(expected[i])) float.IsNaN(values[i]).Should().BeTrue($"kept position {i} held NaN");
            else values[i].Should().Be(expected[i], $"position {i} is {(mask[i] == 0 ? "dropped" : "kept")}");
        }
    }

    [Fact]
    public void RejectsAnArrayOfAnotherLength()
    {
        var dropped = new DroppedPositions(new SparsityMask(new float[] { 0, 1, 0, 1, 1, 0 }, 2, 3));
        var act = () => dropped.Fill(new float[5], 0f);
        act.Should().Throw<ArgumentException>().WithMessage("*mask of 6 elements in 5 values*");
    }
}
