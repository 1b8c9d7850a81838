using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;
using Spdf.Shared;

namespace Spdf.Sparsity.Kernels;

/// <summary>
/// Token-blocked transposes between row-major activations <c>(tokens, features)</c> and the <c>(features, width)</c>
/// panels the sparse kernels walk (see <see cref="SparseKernels"/>), in 8×8 register blocks.
/// </summary>
public static unsafe class BlockTranspose
{
    /// <summary>
    /// Token-blocked transpose: <c>dst[b, c, j] = src[b·W + j, c]</c> for a row-major <c>(rows, cols)</c> source and blocks of
    /// <paramref name="width"/> rows (a multiple of 8); the last block is zero-padded. Each block is a contiguous
    /// <c>(cols, width)</c> panel, so kernels that walk features stay free of the cache-set conflicts a plain transpose's
    /// long row stride causes. Blocks start <paramref name="blockStride"/> elements apart (0: packed, cols × width).
    /// </summary>
    /// <exception cref="ArgumentException">The width is not a positive multiple of 8, or a span is too short.</exception>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void ToBlocks(ReadOnlySpan<float> src, int rows, int cols, int width, Span<float> dst, int blockStride = 0)
    {
        var (blocks, stride) = BlockGeometry(rows, cols, width, blockStride);
        if (src.Length < (long)rows * cols || dst.Length < blocks * stride)
            throw new ArgumentException($"ToBlocks of {rows}×{cols} in blocks of {width} needs {(long)rows * cols} source and {blocks * stride} destination elements; got {src.Length} and {dst.Length}.");
        fixed (float* s0 = src, d0 = dst)
        {
            nint ps = (nint)s0, pd = (nint)d0;
            void Block(int b) => ToBlock((float*)ps, rows, cols, width, (float*)pd + b * stride, b);
            // Blocks are independent: in parallel when there is enough to move (a 2048×3072 input took 1.7 ms on one core).
            if (blocks == 1 || (long)rows * cols < 1 << 16) for (int b = 0; b < blocks; b++) Block(b);
            else KernelThreads.For(blocks, Block);
        }
    }

    /// <summary>Block <paramref name="b"/> of <see cref="ToBlocks"/> alone, into <paramref name="db"/> (that block's
    /// <c>cols × width</c> panel): a kernel that works block by block can transpose each block just before it uses it,
    /// while the block is still in cache. No bounds are checked.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void ToBlock(float* s, int rows, int cols, int width, float* db, int b)
    {
        int t0 = b * width, n = Math.Min(width, rows - t0);
        int n8 = Avx.IsSupported ? n & ~7 : 0, c8 = Avx.IsSupported ? cols & ~7 : 0;
        for (int j = 0; j < n8; j += 8)
            for (int c = 0; c < c8; c += 8)
                Block8x8.Transpose(s + (long)(t0 + j) * cols + c, cols, db + (long)c * width + j, width);
        for (int j = 0; j < n; j++)
            for (int c = j < n8 ? c8 : 0; c < cols; c++)
                db[(long)c * width + j] = s[(long)(t0 + j) * cols + c];
        for (int c = 0; c < cols; c++)
            for (int j = n; j < width; j++) db[(long)c * width + j] = 0f;
    }

    /// <summary>The inverse of <see cref="ToBlocks"/>: <c>dst[b·W + j, c] = src[b, c, j]</c> for the <paramref name="rows"/> real rows.</summary>
    /// <exception cref="ArgumentException">The width is not a positive multiple of 8, or a span is too short.</exception>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void FromBlocks(ReadOnlySpan<float> src, int rows, int cols, int width, Span<float> dst, int blockStride = 0)
    {
        var (blocks, stride) = BlockGeometry(rows, cols, width, blockStride);
        if (src.Length < blocks * stride || dst.Length < (long)rows * cols)
            throw new ArgumentException($"FromBlocks to {rows}×{cols} in blocks of {width} needs {blocks * stride} source and {(long)rows * cols} destination elements; got {src.Length} and {dst.Length}.");
        fixed (float* s = src, d = dst)
        {
            nint ps = (nint)s, pd = (nint)d;
            void Block(int b) => FromBlock((float*)ps + b * stride, rows, cols, width, (float*)pd, b);
            if (blocks == 1 || (long)rows * cols < 1 << 16) for (int b = 0; b < blocks; b++) Block(b);
            else KernelThreads.For(blocks, Block);
        }
    }

    /// <summary>Block <paramref name="b"/> of <see cref="FromBlocks"/> alone, from <paramref name="sb"/> (that block's
    /// panel) into the row-major <paramref name="dd"/>, e.g. right after a kernel finished the block. No bounds are checked.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void FromBlock(float* sb, int rows, int cols, int width, float* dd, int b)
    {
        int t0 = b * width, n = Math.Min(width, rows - t0);
        int n8 = Avx.IsSupported ? n & ~7 : 0, c8 = Avx.IsSupported ? cols & ~7 : 0;
        // Eight destination rows at a time, walked left to right: writes stream along rows instead of jumping a row stride.
        for (int j = 0; j < n8; j += 8)
            for (int c = 0; c < c8; c += 8)
                Block8x8.Transpose(sb + (long)c * width + j, width, dd + (long)(t0 + j) * cols + c, cols);
        for (int j = 0; j < n; j++)
            for (int c = j < n8 ? c8 : 0; c < cols; c++)
                dd[(long)(t0 + j) * cols + c] = sb[(long)c * width + j];
    }

    private static (int Blocks, long Stride) BlockGeometry(int rows, int cols, int width, int blockStride)
    {
        if (width <= 0 || width % 8 != 0) throw new ArgumentException($"Block width {width} must be a positive multiple of 8.", nameof(width));
        long stride = blockStride == 0 ? (long)cols * width : blockStride;
        if (stride < (long)cols * width) throw new ArgumentException($"Block stride {blockStride} is smaller than a block's {(long)cols * width} elements.", nameof(blockStride));
        return ((rows + width - 1) / width, stride);
    }
}
