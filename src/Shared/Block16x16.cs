using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Spdf.Shared;

/// <summary>
/// The 16×16 register transpose in AVX-512 (callers check <see cref="Avx512F.IsSupported"/>): every load and store is
/// a whole 64-byte line, where two 8×8 blocks write each line in two halves at different times, and it takes 64
/// shuffles per 256 floats against the 8×8 block's 96 (<see cref="Block8x8"/>).
/// </summary>
internal static unsafe class Block16x16
{
    /// <summary>Writes the transpose of the 16×16 block at <paramref name="src"/> (row stride <paramref name="ldSrc"/>) to <paramref name="dst"/> (row stride <paramref name="ldDst"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Transpose(float* src, long ldSrc, float* dst, long ldDst)
    {
        // Rows in pairs: lane L of t(2i) holds rows 2i, 2i+1 interleaved at columns 4L, 4L+1; t(2i+1) at 4L+2, 4L+3.
        var t0 = Avx512F.UnpackLow(Vector512.Load(src), Vector512.Load(src + ldSrc));
        var t1 = Avx512F.UnpackHigh(Vector512.Load(src), Vector512.Load(src + ldSrc));
        var t2 = Avx512F.UnpackLow(Vector512.Load(src + 2 * ldSrc), Vector512.Load(src + 3 * ldSrc));
        var t3 = Avx512F.UnpackHigh(Vector512.Load(src + 2 * ldSrc), Vector512.Load(src + 3 * ldSrc));
        var t4 = Avx512F.UnpackLow(Vector512.Load(src + 4 * ldSrc), Vector512.Load(src + 5 * ldSrc));
        var t5 = Avx512F.UnpackHigh(Vector512.Load(src + 4 * ldSrc), Vector512.Load(src + 5 * ldSrc));
        var t6 = Avx512F.UnpackLow(Vector512.Load(src + 6 * ldSrc), Vector512.Load(src + 7 * ldSrc));
        var t7 = Avx512F.UnpackHigh(Vector512.Load(src + 6 * ldSrc), Vector512.Load(src + 7 * ldSrc));
        var t8 = Avx512F.UnpackLow(Vector512.Load(src + 8 * ldSrc), Vector512.Load(src + 9 * ldSrc));
        var t9 = Avx512F.UnpackHigh(Vector512.Load(src + 8 * ldSrc), Vector512.Load(src + 9 * ldSrc));
        var t10 = Avx512F.UnpackLow(Vector512.Load(src + 10 * ldSrc), Vector512.Load(src + 11 * ldSrc));
        var t11 = Avx512F.UnpackHigh(Vector512.Load(src + 10 * ldSrc), Vector512.Load(src + 11 * ldSrc));
        var t12 = Avx512F.UnpackLow(Vector512.Load(src + 12 * ldSrc), Vector512.Load(src + 13 * ldSrc));
        var t13 = Avx512F.UnpackHigh(Vector512.Load(src + 12 * ldSrc), Vector512.Load(src + 13 * ldSrc));
        var t14 = Avx512F.UnpackLow(Vector512.Load(src + 14 * ldSrc), Vector512.Load(src + 15 * ldSrc));
        var t15 = Avx512F.UnpackHigh(Vector512.Load(src + 14 * ldSrc), Vector512.Load(src + 15 * ldSrc));
        // Rows in fours: lane L of u(4q + j) holds column 4L + j of rows 4q .. 4q + 3.
        var u0 = Avx512F.Shuffle(t0, t2, 0x44); var u1 = Avx512F.Shuffle(t0, t2, 0xEE);
        var u2 = Avx512F.Shuffle(t1, t3, 0x44); var u3 = Avx512F.Shuffle(t1, t3, 0xEE);
        var u4 = Avx512F.Shuffle(t4, t6, 0x44); var u5 = Avx512F.Shuffle(t4, t6, 0xEE);
        var u6 = Avx512F.Shuffle(t5, t7, 0x44); var u7 = Avx512F.Shuffle(t5, t7, 0xEE);
        var u8 = Avx512F.Shuffle(t8, t10, 0x44); var u9 = Avx512F.Shuffle(t8, t10, 0xEE);
        var u10 = Avx512F.Shuffle(t9, t11, 0x44); var u11 = Avx512F.Shuffle(t9, t11, 0xEE);
        var u12 = Avx512F.Shuffle(t12, t14, 0x44); var u13 = Avx512F.Shuffle(t12, t14, 0xEE);
        var u14 = Avx512F.Shuffle(t13, t15, 0x44); var u15 = Avx512F.Shuffle(t13, t15, 0xEE);
        Columns(u0, u4, u8, u12, dst, ldDst);
        Columns(u1, u5, u9, u13, dst + ldDst, ldDst);
        Columns(u2, u6, u10, u14, dst + 2 * ldDst, ldDst);
        Columns(u3, u7, u11, u15, dst + 3 * ldDst, ldDst);
    }

    /// <summary>Output rows j, j + 4, j + 8, j + 12 (at <paramref name="dst"/>, stride 4·ld) from lane L of a, b, c, d
    /// (rows 0–3, 4–7, 8–11, 12–15 of column 4L + j).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Columns(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d, float* dst, long ld)
    {
        var v = Avx512F.Shuffle4x128(a, b, 0x88); var w = Avx512F.Shuffle4x128(a, b, 0xDD); // lanes 0, 2 / 1, 3 of a, then of b
        var x = Avx512F.Shuffle4x128(c, d, 0x88); var y = Avx512F.Shuffle4x128(c, d, 0xDD);
        Avx512F.Shuffle4x128(v, x, 0x88).Store(dst);          // lane 0 of a, b, c, d
        Avx512F.Shuffle4x128(w, y, 0x88).Store(dst + 4 * ld); // lane 1
        Avx512F.Shuffle4x128(v, x, 0xDD).Store(dst + 8 * ld); // lane 2
        Avx512F.Shuffle4x128(w, y, 0xDD).Store(dst + 12 * ld);// lane 3
    }
}
