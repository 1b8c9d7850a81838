using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;

namespace Spdf.Shared;

/// <summary>
/// The 8×8 register transpose that the engine's GEMM packing and the sparse kernels' token blocks both use; written
/// once and compiled into each assembly (it is internal). Callers check <see cref="Avx.IsSupported"/>.
/// </summary>
internal static unsafe class Block8x8
{
    /// <summary>Writes the transpose of the 8×8 block at <paramref name="src"/> (row stride <paramref name="ldSrc"/>) to <paramref name="dst"/> (row stride <paramref name="ldDst"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Transpose(float* src, int ldSrc, float* dst, int ldDst)
    {
        var r0 = Avx.LoadVector256(src); var r1 = Avx.LoadVector256(src + ldSrc);
        var r2 = Avx.LoadVector256(src + 2L * ldSrc); var r3 = Avx.LoadVector256(src + 3L * ldSrc);
        var r4 = Avx.LoadVector256(src + 4L * ldSrc); var r5 = Avx.LoadVector256(src + 5L * ldSrc);
        var r6 = Avx.LoadVector256(src + 6L * ldSrc); var r7 = Avx.LoadVector256(src + 7L * ldSrc);
        var t0 = Avx.UnpackLow(r0, r1); var t1 = Avx.UnpackHigh(r0, r1);
        var t2 = Avx.UnpackLow(r2, r3); var t3 = Avx.UnpackHigh(r2, r3);
        var t4 = Avx.UnpackLow(r4, r5); var t5 = Avx.UnpackHigh(r4, r5);
        var t6 = Avx.UnpackLow(r6, r7); var t7 = Avx.UnpackHigh(r6, r7);
        var s0 = Avx.Shuffle(t0, t2, 0x44); var s1 = Avx.Shuffle(t0, t2, 0xEE);
        var s2 = Avx.Shuffle(t1, t3, 0x44); var s3 = Avx.Shuffle(t1, t3, 0xEE);
        var s4 = Avx.Shuffle(t4, t6, 0x44); var s5 = Avx.Shuffle(t4, t6, 0xEE);
        var s6 = Avx.Shuffle(t5, t7, 0x44); var s7 = Avx.Shuffle(t5, t7, 0xEE);
        Avx.Store(dst, Avx.Permute2x128(s0, s4, 0x20));
        Avx.Store(dst + ldDst, Avx.Permute2x128(s1, s5, 0x20));
        Avx.Store(dst + 2L * ldDst, Avx.Permute2x128(s2, s6, 0x20));
        Avx.Store(dst + 3L * ldDst, Avx.Permute2x128(s3, s7, 0x20));
        Avx.Store(dst + 4L * ldDst, Avx.Permute2x128(s0, s4, 0x31));
        Avx.Store(dst + 5L * ldDst, Avx.Permute2x128(s1, s5, 0x31));
        Avx.Store(dst + 6L * ldDst, Avx.Permute2x128(s2, s6, 0x31));
        Avx.Store(dst + 7L * ldDst, Avx.Permute2x128(s3, s7, 0x31));
    }
}
