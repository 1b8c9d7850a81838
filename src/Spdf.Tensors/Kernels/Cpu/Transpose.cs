using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;
using Spdf.Shared;

namespace Spdf.Tensors.Kernels.Cpu;

/// <summary>Matrix transpose <c>dst[c, r] = src[r, c]</c> for a row-major <c>(rows, cols)</c> source, in 8×8 register blocks.</summary>
public static unsafe class Transpose
{
    /// <summary>Writes the transpose of <paramref name="src"/> <c>(rows, cols)</c> into <paramref name="dst"/> <c>(cols, rows)</c>.</summary>
    /// <exception cref="ArgumentException">A span is shorter than rows × cols.</exception>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Run(ReadOnlySpan<float> src, int rows, int cols, Span<float> dst)
    {
        long n = (long)rows * cols;
        if (rows < 0 || cols < 0 || src.Length < n || dst.Length < n)
            throw new ArgumentException($"Transpose of {rows}×{cols} needs {n} elements; source has {src.Length}, destination {dst.Length}.");
        fixed (float* s = src, d = dst)
        {
            int r8 = Avx.IsSupported ? rows & ~7 : 0, c8 = Avx.IsSupported ? cols & ~7 : 0;
            for (int r = 0; r < r8; r += 8)
                for (int c = 0; c < c8; c += 8)
                    Block8x8.Transpose(s + (long)r * cols + c, cols, d + (long)c * rows + r, rows);
            for (int r = 0; r < rows; r++)
                for (int c = r < r8 ? c8 : 0; c < cols; c++)
                    d[(long)c * rows + r] = s[(long)r * cols + c];
        }
    }
}
