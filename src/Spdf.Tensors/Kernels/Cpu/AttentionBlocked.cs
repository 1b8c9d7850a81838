using Spdf.Shared;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Spdf.Tensors.Kernels.Cpu;

/// <summary>
/// Causal attention for one (batch, head) slice in blocks of <see cref="QB"/> query rows, with every product (scores,
/// P·V, and in the backward dP, dQ, dK, dV) done by one register-tiled micro-kernel (<see cref="Tile"/>): four rows by
/// 64 columns in 16 accumulators, so each loaded vector feeds four FMAs and each broadcast four. Scores are vectorised
/// along keys (with Kᵀ and Vᵀ laid out <c>(E, LD)</c>), the rest along the head dimension. Needs Vector512 and E a
/// multiple of 16; <see cref="Attention"/> is the row-by-row reference it must match.
/// Glossary: T = tokens, LD = <see cref="Stride"/>, E = head size. q, k, v, output, dout: <c>(T, E)</c>; lse: <c>(T)</c>.
/// </summary>
public static unsafe class AttentionBlocked
{
    /// <summary>Query rows per block: the block's scores (and in the backward their gradient) are held as
    /// <c>(QB, LD)</c> scratch, and the key-side products (dK, dV) reduce over the block's rows.</summary>
    private const int QB = 32;
    private const int TR = 4; // rows per register tile

    /// <summary>Whether the blocked kernels apply to head size <paramref name="e"/> on this machine.</summary>
    public static bool Supports(int e) => Vector512.IsHardwareAccelerated && Avx.IsSupported && e % 16 == 0 && e > 0;

    /// <summary>Scratch floats one slice needs.</summary>
    public static int ScratchSize(int t, int e) => (2 * e + 2 * QB) * Stride(t);

    private static int Pad(int t) => (t + 15) & ~15;

    /// <summary>
    /// Row length of the key-major scratch (Kᵀ, Vᵀ, scores): T rounded up to 16, plus 16. Without the extra vector a
    /// 256-token row is 1 KiB, so a 64-key chunk of Kᵀ's 64 rows falls into a quarter of L1's sets and is read from L2
    /// by every row tile.
    /// </summary>
    private static int Stride(int t) => Pad(t) + 16;

    // Kernel entry points skip tiered compilation: instrumented tiers measured ~2.5x slower here (docs/benchmarks.md).
    /// <summary>Forward: fills <paramref name="output"/> and <paramref name="lse"/> (see <see cref="Attention.CausalForward"/>).
    /// K is read only once, into the transposed scratch, so it may lie in rows of <paramref name="kStride"/> floats (a
    /// head's columns of a packed projection; 0: E, contiguous).</summary>
    /// <exception cref="ArgumentException"><paramref name="kStride"/> is below E, or <paramref name="k"/> is too short for it.</exception>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void CausalForward(Span<float> output, Span<float> lse, ReadOnlySpan<float> q, ReadOnlySpan<float> k,
                                     ReadOnlySpan<float> v, int t, int e, float scale, Span<float> scratch, int kStride = 0)
    {
        kStride = CheckStride(k, kStride, t, e, nameof(kStride));
        int ld = Stride(t);
        float* inv = stackalloc float[QB];
        fixed (float* po = output, pl = lse, pq = q, pk = k, pv = v, ps = scratch)
        {
            float* kt = ps;                  // (E, LD)
            float* s = ps + 2 * e * ld;     // (QB, LD) scores → unnormalised probabilities
            TransposePadded(pk, kStride, kt, t, e, ld);
            for (int i0 = 0; i0 < t; i0 += QB)
            {
                int rows = Math.Min(QB, t - i0);
                for (int r0 = 0; r0 < rows; r0 += TR)
                {
                    int tr = Math.Min(TR, rows - r0);
                    Tile(pq + (long)(i0 + r0) * e, e, 1, kt, ld, e, s + r0 * ld, ld, tr, Pad(i0 + r0 + tr), null, scale, false);
                }
                for (int r = 0; r < rows; r++)
                {
                    int i = i0 + r;
                    // Causal: keys after i weigh nothing, up to the end of what the row's tile reads.
                    var (max, sum) = SoftmaxRow(s + r * ld, i + 1, i0 + (r & ~(TR - 1)) + TR);
                    inv[r] = 1f / sum;                // the weighted sum is normalised as it is stored
                    pl[i] = max + MathF.Log(sum);
                }
                for (int r0 = 0; r0 < rows; r0 += TR)
                {
                    int tr = Math.Min(TR, rows - r0);
                    Tile(s + r0 * ld, ld, 1, pv, e, Math.Min(t, i0 + r0 + TR), po + (long)(i0 + r0) * e, e, tr, e, inv + r0, 1f, false);
                }
            }
        }
    }

    /// <summary>Backward: overwrites dq, dk, dv (see <see cref="Attention.CausalBackward"/>). V is read only once, into
    /// the transposed scratch, so it may lie in rows of <paramref name="vStride"/> floats (0: E, contiguous).</summary>
    /// <exception cref="ArgumentException"><paramref name="vStride"/> is below E, or <paramref name="v"/> is too short for it.</exception>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void CausalBackward(Span<float> dq, Span<float> dk, Span<float> dv, ReadOnlySpan<float> dout,
                                      ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v,
                                      ReadOnlySpan<float> output, ReadOnlySpan<float> lse, int t, int e, float scale, Span<float> scratch, int vStride = 0)
    {
        vStride = CheckStride(v, vStride, t, e, nameof(vStride));
        int ld = Stride(t);
        dk.Clear(); dv.Clear();
        fixed (float* pdq = dq, pdk = dk, pdv = dv, pdo = dout, pq = q, pk = k, pv = v, po = output, pl = lse, ps = scratch)
        {
            float* kt = ps, vt = ps + e * ld;
            float* p = ps + 2 * e * ld, ds = p + QB * ld;   // (QB, LD) each
            TransposePadded(pk, e, kt, t, e, ld);
            TransposePadded(pv, vStride, vt, t, e, ld);
            for (int i0 = 0; i0 < t; i0 += QB)
            {
                int rows = Math.Min(QB, t - i0), kend = i0 + rows; // keys this block attends to: [0, kend)
                for (int r0 = 0; r0 < rows; r0 += TR)
                {
                    int tr = Math.Min(TR, rows - r0), cols = Pad(i0 + r0 + tr);
                    Tile(pq + (long)(i0 + r0) * e, e, 1, kt, ld, e, p + r0 * ld, ld, tr, cols, null, scale, false);   // scaled scores
                    Tile(pdo + (long)(i0 + r0) * e, e, 1, vt, ld, e, ds + r0 * ld, ld, tr, cols, null, 1f, false);    // dP = dO·Vᵀ
                }
                for (int r = 0; r < rows; r++)
                {
                    int i = i0 + r;
                    float d = System.Numerics.Tensors.TensorPrimitives.Dot(new ReadOnlySpan<float>(pdo + (long)i * e, e), new ReadOnlySpan<float>(po + (long)i * e, e));
                    // The key-side products below read every row of the block up to kend: past the diagonal, zeros.
                    GradientRow(p + r * ld, ds + r * ld, i + 1, kend, pl[i], d, scale);
                }
                for (int r0 = 0; r0 < rows; r0 += TR)
                {
                    int tr = Math.Min(TR, rows - r0);
                    Tile(ds + r0 * ld, ld, 1, pk, e, i0 + r0 + tr, pdq + (long)(i0 + r0) * e, e, tr, e, null, 1f, false); // dQ = dS·K
                }
                for (int j = 0; j < kend; j += TR)
                {
                    int tj = Math.Min(TR, kend - j), r = Math.Max(0, j - i0); // rows before r see none of keys j…j+3
                    Tile(ds + (long)r * ld + j, 1, ld, pq + (long)(i0 + r) * e, e, rows - r, pdk + (long)j * e, e, tj, e, null, 1f, true); // dK += dSᵀ·Q
                    Tile(p + (long)r * ld + j, 1, ld, pdo + (long)(i0 + r) * e, e, rows - r, pdv + (long)j * e, e, tj, e, null, 1f, true); // dV += Pᵀ·dO
                }
            }
        }
    }

    /// <summary>Lanes of the vector at <paramref name="j"/> that lie before <paramref name="len"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Before(int j, int len) =>
        Vector512.LessThan(Vector512.Create(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15) + Vector512.Create(j), Vector512.Create(len)).AsSingle();

    /// <summary>
    /// One row of the forward softmax in two vector passes: <c>s[j] ← exp(s[j] − max)</c> for j &lt; len, 0 for
    /// len ≤ j &lt; <paramref name="zeroTo"/>; returns the max and the sum. (Per-row calls into TensorPrimitives, five of them on
    /// rows of ~130 keys, cost as much as the score product; so did <c>Vector512.Exp</c>, see <see cref="VectorMath.Exp"/>.)
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (float Max, float Sum) SoftmaxRow(float* s, int len, int zeroTo)
    {
        int full = len & ~15;
        var m = Vector512.Create(float.NegativeInfinity);
        for (int j = 0; j < full; j += 16) m = Vector512.Max(m, Vector512.Load(s + j));
        if (full < len) m = Vector512.Max(m, Vector512.ConditionalSelect(Before(full, len), Vector512.Load(s + full), Vector512.Create(float.NegativeInfinity)));
        var h = Vector256.Max(m.GetLower(), m.GetUpper());
        var q = Vector128.Max(h.GetLower(), h.GetUpper());
        float max = MathF.Max(MathF.Max(q[0], q[1]), MathF.Max(q[2], q[3]));
        var vmax = Vector512.Create(max);
        var sum = Vector512<float>.Zero;
        for (int j = 0; j < full; j += 16)
        {
            var x = VectorMath.Exp(Vector512.Load(s + j) - vmax);
            sum += x;
            x.Store(s + j);
        }
        int z = full;
        if (full < len)
        {
            var x = Vector512.ConditionalSelect(Before(full, len), VectorMath.Exp(Vector512.Load(s + full) - vmax), Vector512<float>.Zero);
            sum += x;
            x.Store(s + full);
            z = full + 16;
        }
        if (zeroTo > z) new Span<float>(s + z, zeroTo - z).Clear();
        return (max, Spdf.Shared.VectorSum.Of(sum));
    }

    /// <summary>
    /// One row of the backward: <c>p[j] ← exp(p[j] − lse)</c> (the probabilities from the scaled scores) and
    /// <c>ds[j] ← p[j]·(ds[j] − d)·scale</c> (the score gradient from dP) for j &lt; len; both 0 for len ≤ j &lt; <paramref name="zeroTo"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void GradientRow(float* p, float* ds, int len, int zeroTo, float lse, float d, float scale)
    {
        var vl = Vector512.Create(lse); var vd = Vector512.Create(d); var vs = Vector512.Create(scale);
        int j = 0;
        for (; j < len; j += 16)
        {
            var x = VectorMath.Exp(Vector512.Load(p + j) - vl);
            var g = x * (Vector512.Load(ds + j) - vd) * vs;
            if (j + 16 > len)
            {
                var keep = Before(j, len);
                x = Vector512.ConditionalSelect(keep, x, Vector512<float>.Zero);
                g = Vector512.ConditionalSelect(keep, g, Vector512<float>.Zero);
            }
            x.Store(p + j); g.Store(ds + j);
        }
        if (zeroTo > j)
        {
            new Span<float>(p + j, zeroTo - j).Clear();
            new Span<float>(ds + j, zeroTo - j).Clear();
        }
    }

    /// <summary>The row stride of an operand given as <paramref name="stride"/> (0: <paramref name="e"/>), checked against its length.</summary>
    private static int CheckStride(ReadOnlySpan<float> x, int stride, int t, int e, string name)
    {
        if (stride == 0) stride = e;
        if (stride < e)
            throw new ArgumentException($"Attention: a row stride of {stride} floats is below the head size {e}.", name);
        if (t > 0 && x.Length < (long)(t - 1) * stride + e)
            throw new ArgumentException($"Attention: {t} rows of {e} floats at a stride of {stride} need {(long)(t - 1) * stride + e} floats; got {x.Length}.", name);
        return stride;
    }

    /// <summary><c>dst[c, j] = src[j·stride + c]</c> for a <c>(t, e)</c> source in rows of <paramref name="stride"/> floats,
    /// into rows of <paramref name="ld"/> floats, zero past t.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void TransposePadded(float* src, int stride, float* dst, int t, int e, int ld)
    {
        int t8 = t & ~7;
        for (int j = 0; j < t8; j += 8)
            for (int c = 0; c < e; c += 8) Block8x8.Transpose(src + (long)j * stride + c, stride, dst + (long)c * ld + j, ld);
        for (int j = t8; j < t; j++)
            for (int c = 0; c < e; c++) dst[(long)c * ld + j] = src[(long)j * stride + c];
        for (int c = 0; c < e; c++)
            for (int j = t; j < ld; j++) dst[(long)c * ld + j] = 0f;
    }

    /// <summary>
    /// The micro-kernel: <c>out[i, c] (+)= s_i · Σ_{κ &lt; kc} w[i·wi + κ·wk] · y[κ·ys + c]</c> for rows i &lt; <paramref name="rows"/>
    /// (≤ 4) and columns c &lt; <paramref name="cols"/> (a multiple of 16), with s_i = <paramref name="scales"/>[i] where given,
    /// else <paramref name="scale"/>. The w strides let one kernel read a row-major left operand (wi = row stride, wk = 1) or
    /// a transposed one (wi = 1, wk = row stride). Columns go 64 at a time in 16 accumulators, then 32 in 8, then 16 in 4.
    /// Rows past <paramref name="rows"/> read row 0 and are not stored.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile(float* w, nint wi, nint wk, float* y, nint ys, int kc, float* o, nint os, int rows, int cols,
                             float* scales, float scale, bool accumulate)
    {
        float* w0 = w, w1 = rows > 1 ? w + wi : w, w2 = rows > 2 ? w + 2 * wi : w, w3 = rows > 3 ? w + 3 * wi : w;
        float s0 = scales != null ? scales[0] : scale, s1 = scales != null && rows > 1 ? scales[1] : scale;
        float s2 = scales != null && rows > 2 ? scales[2] : scale, s3 = scales != null && rows > 3 ? scales[3] : scale;
        int c = 0;
        for (; c + 64 <= cols; c += 64)
        {
            Vector512<float> a00 = default, a01 = default, a02 = default, a03 = default;
            Vector512<float> a10 = default, a11 = default, a12 = default, a13 = default;
            Vector512<float> a20 = default, a21 = default, a22 = default, a23 = default;
            Vector512<float> a30 = default, a31 = default, a32 = default, a33 = default;
            float* yk = y + c;
            for (nint κ = 0, off = 0; κ < kc; κ++, off += wk, yk += ys)
            {
                var y0 = Vector512.Load(yk); var y1 = Vector512.Load(yk + 16); var y2 = Vector512.Load(yk + 32); var y3 = Vector512.Load(yk + 48);
                var b = Vector512.Create(w0[off]);
                a00 = Vector512.FusedMultiplyAdd(b, y0, a00); a01 = Vector512.FusedMultiplyAdd(b, y1, a01);
                a02 = Vector512.FusedMultiplyAdd(b, y2, a02); a03 = Vector512.FusedMultiplyAdd(b, y3, a03);
                b = Vector512.Create(w1[off]);
                a10 = Vector512.FusedMultiplyAdd(b, y0, a10); a11 = Vector512.FusedMultiplyAdd(b, y1, a11);
                a12 = Vector512.FusedMultiplyAdd(b, y2, a12); a13 = Vector512.FusedMultiplyAdd(b, y3, a13);
                b = Vector512.Create(w2[off]);
                a20 = Vector512.FusedMultiplyAdd(b, y0, a20); a21 = Vector512.FusedMultiplyAdd(b, y1, a21);
                a22 = Vector512.FusedMultiplyAdd(b, y2, a22); a23 = Vector512.FusedMultiplyAdd(b, y3, a23);
                b = Vector512.Create(w3[off]);
                a30 = Vector512.FusedMultiplyAdd(b, y0, a30); a31 = Vector512.FusedMultiplyAdd(b, y1, a31);
                a32 = Vector512.FusedMultiplyAdd(b, y2, a32); a33 = Vector512.FusedMultiplyAdd(b, y3, a33);
            }
            float* oc = o + c;
            Put(oc, a00, s0, accumulate); Put(oc + 16, a01, s0, accumulate); Put(oc + 32, a02, s0, accumulate); Put(oc + 48, a03, s0, accumulate);
            if (rows < 2) continue;
            oc += os;
            Put(oc, a10, s1, accumulate); Put(oc + 16, a11, s1, accumulate); Put(oc + 32, a12, s1, accumulate); Put(oc + 48, a13, s1, accumulate);
            if (rows < 3) continue;
            oc += os;
            Put(oc, a20, s2, accumulate); Put(oc + 16, a21, s2, accumulate); Put(oc + 32, a22, s2, accumulate); Put(oc + 48, a23, s2, accumulate);
            if (rows < 4) continue;
            oc += os;
            Put(oc, a30, s3, accumulate); Put(oc + 16, a31, s3, accumulate); Put(oc + 32, a32, s3, accumulate); Put(oc + 48, a33, s3, accumulate);
        }
        // 32 columns in 8 accumulators: a head of 32 (P·V, dQ, dK, dV) would otherwise run 16 at a time, where four
        // accumulators, one FMA each per step, leave the FMA units waiting on their latency.
        for (; c + 32 <= cols; c += 32)
        {
            Vector512<float> a00 = default, a01 = default, a10 = default, a11 = default;
            Vector512<float> a20 = default, a21 = default, a30 = default, a31 = default;
            float* yk = y + c;
            for (nint κ = 0, off = 0; κ < kc; κ++, off += wk, yk += ys)
            {
                var y0 = Vector512.Load(yk); var y1 = Vector512.Load(yk + 16);
                var b = Vector512.Create(w0[off]);
                a00 = Vector512.FusedMultiplyAdd(b, y0, a00); a01 = Vector512.FusedMultiplyAdd(b, y1, a01);
                b = Vector512.Create(w1[off]);
                a10 = Vector512.FusedMultiplyAdd(b, y0, a10); a11 = Vector512.FusedMultiplyAdd(b, y1, a11);
                b = Vector512.Create(w2[off]);
                a20 = Vector512.FusedMultiplyAdd(b, y0, a20); a21 = Vector512.FusedMultiplyAdd(b, y1, a21);
                b = Vector512.Create(w3[off]);
                a30 = Vector512.FusedMultiplyAdd(b, y0, a30); a31 = Vector512.FusedMultiplyAdd(b, y1, a31);
            }
            float* oc = o + c;
            Put(oc, a00, s0, accumulate); Put(oc + 16, a01, s0, accumulate);
            if (rows < 2) continue;
            oc += os;
            Put(oc, a10, s1, accumulate); Put(oc + 16, a11, s1, accumulate);
            if (rows < 3) continue;
            oc += os;
            Put(oc, a20, s2, accumulate); Put(oc + 16, a21, s2, accumulate);
            if (rows < 4) continue;
            oc += os;
            Put(oc, a30, s3, accumulate); Put(oc + 16, a31, s3, accumulate);
        }
        for (; c < cols; c += 16)
        {
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            float* yk = y + c;
            for (nint κ = 0, off = 0; κ < kc; κ++, off += wk, yk += ys)
            {
                var y0 = Vector512.Load(yk);
                a0 = Vector512.FusedMultiplyAdd(Vector512.Create(w0[off]), y0, a0);
                a1 = Vector512.FusedMultiplyAdd(Vector512.Create(w1[off]), y0, a1);
                a2 = Vector512.FusedMultiplyAdd(Vector512.Create(w2[off]), y0, a2);
                a3 = Vector512.FusedMultiplyAdd(Vector512.Create(w3[off]), y0, a3);
            }
            float* oc = o + c;
            Put(oc, a0, s0, accumulate);
            if (rows > 1) Put(oc + os, a1, s1, accumulate);
            if (rows > 2) Put(oc + 2 * os, a2, s2, accumulate);
            if (rows > 3) Put(oc + 3 * os, a3, s3, accumulate);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Put(float* at, Vector512<float> a, float s, bool accumulate)
    {
        if (accumulate) (Vector512.Load(at) + a).Store(at);
        else (a * s).Store(at);
    }
}
