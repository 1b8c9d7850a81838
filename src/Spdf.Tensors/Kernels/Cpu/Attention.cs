using System.Numerics.Tensors;
using System.Runtime.CompilerServices;

namespace Spdf.Tensors.Kernels.Cpu;

/// <summary>
/// Causal scaled dot-product attention for one (batch, head) slice, computed row by row so that at most one
/// row of the T×T score matrix exists at a time; the backward recomputes scores from the saved log-sum-exp.
/// Glossary: T = tokens, E = head dimension. q, k, v, out are <c>(T, E)</c> row-major; lse is <c>(T)</c>.
/// </summary>
public static class Attention
{
    /// <summary><c>out_t = Σ_{j≤t} softmax_j(scale·q_t·k_j) v_j</c>; <c>lse_t</c> = log Σ_j exp(scale·q_t·k_j).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void CausalForward(Span<float> output, Span<float> lse, ReadOnlySpan<float> q, ReadOnlySpan<float> k,
                                     ReadOnlySpan<float> v, int t, int e, float scale, Span<float> scratch)
    {
        for (int i = 0; i < t; i++)
        {
            var qi = q.Slice(i * e, e);
            var s = scratch[..(i + 1)];
            float max = float.NegativeInfinity;
            for (int j = 0; j <= i; j++)
            {
                float sj = scale * TensorPrimitives.Dot(qi, k.Slice(j * e, e));
                s[j] = sj;
                if (sj > max) max = sj;
            }
            TensorPrimitives.Subtract(s, max, s);
            TensorPrimitives.Exp(s, s);
            float sum = TensorPrimitives.Sum(s);
            float inv = 1f / sum;
            var oi = output.Slice(i * e, e);
            oi.Clear();
            for (int j = 0; j <= i; j++) TensorPrimitives.MultiplyAdd(v.Slice(j * e, e), s[j] * inv, oi, oi);
            lse[i] = max + MathF.Log(sum);
        }
    }

    /// <summary>Gradients of <see cref="CausalForward"/>: <c>dq</c>, <c>dk</c>, <c>dv</c> are overwritten.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void CausalBackward(Span<float> dq, Span<float> dk, Span<float> dv, ReadOnlySpan<float> dout,
                                      ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v,
                                      ReadOnlySpan<float> output, ReadOnlySpan<float> lse, int t, int e, float scale)
    {
        dq.Clear(); dk.Clear(); dv.Clear();
        for (int i = 0; i < t; i++)
        {
            var qi = q.Slice(i * e, e);
            var doi = dout.Slice(i * e, e);
            float di = TensorPrimitives.Dot(doi, output.Slice(i * e, e));
            var dqi = dq.Slice(i * e, e);
            for (int j = 0; j <= i; j++)
            {
                var kj = k.Slice(j * e, e);
                float p = MathF.Exp(scale * TensorPrimitives.Dot(qi, kj) - lse[i]);
                var dvj = dv.Slice(j * e, e);
                TensorPrimitives.MultiplyAdd(doi, p, dvj, dvj);
                float dp = TensorPrimitives.Dot(doi, v.Slice(j * e, e));
                float ds = p * (dp - di) * scale;
                TensorPrimitives.MultiplyAdd(kj, ds, dqi, dqi);
                var dkj = dk.Slice(j * e, e);
                TensorPrimitives.MultiplyAdd(qi, ds, dkj, dkj);
            }
        }
    }
}
