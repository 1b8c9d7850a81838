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
        float* sb = s + (long)t0 * cols; // the block's first source row
        // 16 × 16 register blocks where AVX-512 allows (whole-line loads and stores), 8 × 8 and single elements around them.
        int n16 = Avx512F.IsSupported && width % 16 == 0 ? n & ~15 : 0, c16 = n16 > 0 ? cols & ~15 : 0;
        for (int j = 0; j < n16; j += 16)
            for (int c = 0; c < c16; c += 16)
                Block16x16.Transpose(sb + (long)j * cols + c, cols, db + (long)c * width + j, width);
        ToBlockRect(sb, cols, width, db, 0, n16, c16, cols);
        ToBlockRect(sb, cols, width, db, n16, n, 0, cols);
        for (int c = 0; c < cols; c++)
            for (int j = n; j < width; j++) db[(long)c * width + j] = 0f;
    }

    /// <summary>Tokens [j0, j1) × features [c0, c1) of a block in 8 × 8 register blocks and single elements.</summary>
    private static void ToBlockRect(float* sb, int cols, int width, float* db, int j0, int j1, int c0, int c1)
    {
        if (j0 >= j1 || c0 >= c1) return;
        int j8 = Avx.IsSupported ? j0 + ((j1 - j0) & ~7) : j0, c8 = Avx.IsSupported ? c0 + ((c1 - c0) & ~7) : c0;
        for (int j = j0; j < j8; j += 8)
            for (int c = c0; c < c8; c += 8)
                Block8x8.Transpose(sb + (long)j * cols + c, cols, db + (long)c * width + j, width);
        for (int j = j0; j < j1; j++)
            for (int c = j < j8 ? c8 : c0; c < c1; c++)
                db[(long)c * width + j] = sb[(long)j * cols + c];
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
        float* db = dd + (long)t0 * cols; // the block's first destination row
        // Destination rows 16 (or 8) at a time, walked left to right: writes stream along rows instead of jumping a row
        // stride. Not 16 when the row stride is a multiple of 4 KiB (features a multiple of 1,024): the 16 rows' lines
        // then fall into one set of L1 (12 ways on Zen 4 and 5), and the 16 × 16 blocks ran [2048, 1024] and [2048, 2048]
        // 1.6–2× slower than 8 × 8 blocks (docs/benchmarks.md).
        int n16 = Avx512F.IsSupported && width % 16 == 0 && cols % 1024 != 0 ? n & ~15 : 0, c16 = n16 > 0 ? cols & ~15 : 0;
        for (int j = 0; j < n16; j += 16)
            for (int c = 0; c < c16; c += 16)
                Block16x16.Transpose(sb + (long)c * width + j, width, db + (long)j * cols + c, cols);
        FromBlockRect(sb, cols, width, db, 0, n16, c16, cols);
        FromBlockRect(sb, cols, width, db, n16, n, 0, cols);
    }

    /// <summary>Tokens [j0, j1) × features [c0, c1) of a block back to rows, in 8 × 8 register blocks and single elements.</summary>
    private static void FromBlockRect(float* sb, int cols, int width, float* db, int j0, int j1, int c0, int c1)
    {
        if (j0 >= j1 || c0 >= c1) return;
        int j8 = Avx.IsSupported ? j0 + ((j1 - j0) & ~7) : j0, c8 = Avx.IsSupported ? c0 + ((c1 - c0) & ~7) : c0;
        for (int j = j0; j < j8; j += 8)
            for (int c = c0; c < c8; c += 8)
                Block8x8.Transpose(sb + (long)c * width + j, width, db + (long)j * cols + c, cols);
        for (int j = j0; j < j1; j++)
            for (int c = j < j8 ? c8 : c0; c < c1; c++)
                db[(long)j * cols + c] = sb[(long)c * width + j];
    }

    private static (int Blocks, long Stride) BlockGeometry(int rows, int cols, int width, int blockStride)
    {
        if (width <= 0 || width % 8 != 0) throw new ArgumentException($"Block width {width} must be a positive multiple of 8.", nameof(width));
        long stride = blockStride == 0 ? (long)cols * width : blockStride;
        if (stride < (long)cols * width) throw new ArgumentException($"Block stride {blockStride} is smaller than a block's {(long)cols * width} elements.", nameof(blockStride));
        return ((rows + width - 1) / width, stride);
    }
}
