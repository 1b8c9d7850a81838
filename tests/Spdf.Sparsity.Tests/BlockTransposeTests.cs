using FluentAssertions;
using Spdf.Sparsity.Kernels;
using Xunit;

namespace Spdf.Sparsity.Tests;

public class BlockedTransposeTests
{
    [Theory]
    [InlineData(1, 3, 8)]
    [InlineData(64, 16, 64)]
    [InlineData(70, 13, 64)]
    [InlineData(130, 24, 32)]
    // The 16 × 16 blocks (AVX-512) with 8 × 8 blocks and single elements around them: features and tokens that are no
    // multiple of 16 or 8, a width that is a multiple of 16 other than 64, and one that is not (8 × 8 blocks only).
    [InlineData(64, 40, 64)]
    [InlineData(77, 35, 64)]
    [InlineData(96, 130, 48)]
    [InlineData(50, 17, 24)]
    [InlineData(70, 1024, 64)] // a row stride of 4 KiB: back to rows in 8 × 8 blocks
    public void RoundTripsAndMatchesTheIndexDefinition(int rows, int cols, int width)
    {
        var src = Enumerable.Range(0, rows * cols).Select(i => (float)i + 1).ToArray();
        int blocks = (rows + width - 1) / width;
        var blocked = Enumerable.Repeat(float.NaN, blocks * cols * width).ToArray();
        BlockTranspose.ToBlocks(src, rows, cols, width, blocked);
        for (int t = 0; t < blocks * width; t++)
            for (int c = 0; c < cols; c++)
                blocked[(t / width * cols + c) * width + t % width].Should().Be(t < rows ? src[t * cols + c] : 0f);
        var back = new float[rows * cols];
        BlockTranspose.FromBlocks(blocked, rows, cols, width, back);
        back.Should().Equal(src);
    }
}
