using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Spdf.Tensors.Kernels.Cpu;

/// <summary>
/// Causal attention for one (batch, head) slice, four query rows at a time, vectorised along keys for the score
/// products (with Kᵀ and Vᵀ laid out <c>(E, T16)</c>) and along the head dimension for P·V and the gradients. Needs
/// Vector512 and E a multiple of 16; <see cref="Attention"/> is the row-by-row reference it must match.
/// Glossary: T = tokens, T16 = T rounded up to 16, E = head size. q, k, v, output, dout: <c>(T, E)</c>; lse: <c>(T)</c>.
/// </summary>
public static unsafe class AttentionBlocked
{
    private const int RB = 4; // query rows per block

    /// <summary>Whether the blocked kernels apply to head size <paramref name="e"/> on this machine.</summary>
    public static bool Supports(int e) => Vector512.IsHardwareAccelerated && e % 16 == 0 && e > 0;

    /// <summary>Scratch floats one slice needs.</summary>
    public static int ScratchSize(int t, int e) => 2 * e * Pad(t) + 3 * RB * Pad(t);

    private static int Pad(int t) => (t + 15) & ~15;

    // Kernel entry points skip tiered compilation: instrumented tiers measured ~2.5x slower here (docs/benchmarks.md).
    /// <summary>Forward: fills <paramref name="output"/> and <paramref name="lse"/> (see <see cref="Attention.CausalForward"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void CausalForward(Span<float> output, Span<float> lse, ReadOnlySpan<float> q, ReadOnlySpan<float> k,
                                     ReadOnlySpan<float> v, int t, int e, float scale, Span<float> scratch)
    {
        int t16 = Pad(t);
        fixed (float* po = output, pl = lse, pq = q, pk = k, pv = v, ps = scratch)
        {
            float* kt = ps;                     // (E, T16)
            float* s = ps + 2 * e * t16;        // (RB, T16) scores → probabilities
            Transpose(pk, kt, t, e, t16);
            for (int i0 = 0; i0 < t; i0 += RB)
            {
                int rows = Math.Min(RB, t - i0), jmax = i0 + rows;
                Scores(pq + (long)i0 * e, rows, kt, jmax, e, t16, scale, s);
                for (int r = 0; r < rows; r++)
                {
                    float* sr = s + r * t16;
                    int len = i0 + r + 1;
                    var span = new Span<float>(sr, len);
                    float max = System.Numerics.Tensors.TensorPrimitives.Max(span);
                    System.Numerics.Tensors.TensorPrimitives.Subtract(span, max, span);
                    System.Numerics.Tensors.TensorPrimitives.Exp(span, span);
                    float sum = System.Numerics.Tensors.TensorPrimitives.Sum(span);
                    System.Numerics.Tensors.TensorPrimitives.Multiply(span, 1f / sum, span);
                    for (int j = len; j < jmax; j++) sr[j] = 0f;   // causal: later keys get no weight
                    pl[i0 + r] = max + MathF.Log(sum);
                }
                WeightedSum(s, rows, pv, jmax, e, t16, po + (long)i0 * e);
            }
        }
    }

    /// <summary>Backward: overwrites dq, dk, dv (see <see cref="Attention.CausalBackward"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void CausalBackward(Span<float> dq, Span<float> dk, Span<float> dv, ReadOnlySpan<float> dout,
                                      ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v,
                                      ReadOnlySpan<float> output, ReadOnlySpan<float> lse, int t, int e, float scale, Span<float> scratch)
    {
        int t16 = Pad(t);
        dk.Clear(); dv.Clear();
        fixed (float* pdq = dq, pdk = dk, pdv = dv, pdo = dout, pq = q, pk = k, pv = v, po = output, pl = lse, ps = scratch)
        {
            float* kt = ps, vt = ps + e * t16;
            float* p = ps + 2 * e * t16, dp = p + RB * t16, ds = dp + RB * t16;
            Transpose(pk, kt, t, e, t16);
            Transpose(pv, vt, t, e, t16);
            Span<float> d = stackalloc float[RB];
            for (int i0 = 0; i0 < t; i0 += RB)
            {
                int rows = Math.Min(RB, t - i0), jmax = i0 + rows;
                Scores(pq + (long)i0 * e, rows, kt, jmax, e, t16, scale, p);          // scaled scores
                Scores(pdo + (long)i0 * e, rows, vt, jmax, e, t16, 1f, dp);           // dP = dO·Vᵀ
                for (int r = 0; r < rows; r++)
                {
                    int i = i0 + r, len = i + 1;
                    d[r] = System.Numerics.Tensors.TensorPrimitives.Dot(new ReadOnlySpan<float>(pdo + (long)i * e, e), new ReadOnlySpan<float>(po + (long)i * e, e));
                    float* pr = p + r * t16, dpr = dp + r * t16, dsr = ds + r * t16;
                    var pspan = new Span<float>(pr, len);
                    System.Numerics.Tensors.TensorPrimitives.Subtract(pspan, pl[i], pspan);
                    System.Numerics.Tensors.TensorPrimitives.Exp(pspan, pspan);            // P
                    var dsspan = new Span<float>(dsr, len);
                    System.Numerics.Tensors.TensorPrimitives.Subtract(new ReadOnlySpan<float>(dpr, len), d[r], dsspan);
                    System.Numerics.Tensors.TensorPrimitives.Multiply(dsspan, pspan, dsspan);
                    System.Numerics.Tensors.TensorPrimitives.Multiply(dsspan, scale, dsspan); // dS = P ⊙ (dP − D)·scale
                    for (int j = len; j < jmax; j++) { pr[j] = 0f; dsr[j] = 0f; }
                }
                for (int r = rows; r < RB; r++)   // the last block may be short: its unused rows must weigh nothing
                {
                    new Span<float>(p + r * t16, jmax).Clear();
                    new Span<float>(ds + r * t16, jmax).Clear();
                }
                WeightedSum(ds, rows, pk, jmax, e, t16, pdq + (long)i0 * e);               // dQ = dS·K
                RankUpdate(ds, rows, pq + (long)i0 * e, jmax, e, t16, pdk);              // dK += dSᵀ·Q
                RankUpdate(p, rows, pdo + (long)i0 * e, jmax, e, t16, pdv);              // dV += Pᵀ·dO
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Transpose(float* src, float* dst, int t, int e, int t16)
    {
        for (int j = 0; j < t; j++)
            for (int c = 0; c < e; c++) dst[c * t16 + j] = src[j * e + c];
        for (int c = 0; c < e; c++)
            for (int j = t; j < t16; j++) dst[c * t16 + j] = 0f;
    }

    /// <summary><c>s[r, j] = scale · Σ_c x[r, c]·yt[c, j]</c> for r &lt; rows, j &lt; jmax (rounded up to 16).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Scores(float* x, int rows, float* yt, int jmax, int e, int t16, float scale, float* s)
    {
        var vs = Vector512.Create(scale);
        for (int j0 = 0; j0 < jmax; j0 += 16)
        {
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            float* x0 = x, x1 = x + e, x2 = x + 2 * e, x3 = x + 3 * e;
            if (rows == RB)
            {
                for (int c = 0; c < e; c++)
                {
                    var y = Vector512.Load(yt + c * t16 + j0);
                    a0 = Vector512.FusedMultiplyAdd(Vector512.Create(x0[c]), y, a0);
                    a1 = Vector512.FusedMultiplyAdd(Vector512.Create(x1[c]), y, a1);
                    a2 = Vector512.FusedMultiplyAdd(Vector512.Create(x2[c]), y, a2);
                    a3 = Vector512.FusedMultiplyAdd(Vector512.Create(x3[c]), y, a3);
                }
                (a0 * vs).Store(s + j0); (a1 * vs).Store(s + t16 + j0); (a2 * vs).Store(s + 2 * t16 + j0); (a3 * vs).Store(s + 3 * t16 + j0);
            }
            else
            {
                for (int r = 0; r < rows; r++)
                {
                    Vector512<float> acc = default;
                    float* xr = x + r * e;
                    for (int c = 0; c < e; c++) acc = Vector512.FusedMultiplyAdd(Vector512.Create(xr[c]), Vector512.Load(yt + c * t16 + j0), acc);
                    (acc * vs).Store(s + r * t16 + j0);
                }
            }
        }
    }

    /// <summary><c>out[r, :] = Σ_{j &lt; jmax} w[r, j]·y[j, :]</c> for r &lt; rows (w is zero past each row's causal limit).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void WeightedSum(float* w, int rows, float* y, int jmax, int e, int t16, float* output)
    {
        for (int c = 0; c < e; c += 16)
        {
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            float* w0 = w, w1 = w + t16, w2 = w + 2 * t16, w3 = w + 3 * t16;
            for (int j = 0; j < jmax; j++)
            {
                var yj = Vector512.Load(y + (long)j * e + c);
                a0 = Vector512.FusedMultiplyAdd(Vector512.Create(w0[j]), yj, a0);
                a1 = Vector512.FusedMultiplyAdd(Vector512.Create(w1[j]), yj, a1);
                a2 = Vector512.FusedMultiplyAdd(Vector512.Create(w2[j]), yj, a2);
                a3 = Vector512.FusedMultiplyAdd(Vector512.Create(w3[j]), yj, a3);
            }
            a0.Store(output + c);
            if (rows > 1) a1.Store(output + e + c);
            if (rows > 2) a2.Store(output + 2 * e + c);
            if (rows > 3) a3.Store(output + 3 * e + c);
        }
    }

    /// <summary><c>acc[j, :] += Σ_r w[r, j]·x[r, :]</c> for j &lt; jmax (a rank-RB update).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RankUpdate(float* w, int rows, float* x, int jmax, int e, int t16, float* acc)
    {
        for (int c = 0; c < e; c += 16)
        {
            var x0 = Vector512.Load(x + c);
            var x1 = rows > 1 ? Vector512.Load(x + e + c) : default;
            var x2 = rows > 2 ? Vector512.Load(x + 2 * e + c) : default;
            var x3 = rows > 3 ? Vector512.Load(x + 3 * e + c) : default;
            float* w0 = w, w1 = w + t16, w2 = w + 2 * t16, w3 = w + 3 * t16;
            for (int j = 0; j < jmax; j++)
            {
                float* pa = acc + (long)j * e + c;
                var a = Vector512.Load(pa);
                a = Vector512.FusedMultiplyAdd(Vector512.Create(w0[j]), x0, a);
                a = Vector512.FusedMultiplyAdd(Vector512.Create(w1[j]), x1, a);
                a = Vector512.FusedMultiplyAdd(Vector512.Create(w2[j]), x2, a);
                a = Vector512.FusedMultiplyAdd(Vector512.Create(w3[j]), x3, a);
                a.Store(pa);
            }
        }
    }
}
