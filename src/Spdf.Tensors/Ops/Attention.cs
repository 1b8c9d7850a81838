using Spdf.Tensors.Autograd;

namespace Spdf.Tensors;

public static partial class Functional
{
    /// <summary>
    /// Fused causal self-attention, <c>softmax(q·kᵀ/√E + causal mask)·v</c>, for q, k, v <c>[B, H, T, E]</c>, giving
    /// <c>[B, H, T, E]</c> (<c>torch.nn.functional.scaled_dot_product_attention(is_causal=True)</c>). The T×T score
    /// matrix is never stored: the forward keeps one row's scores and the per-row log-sum-exp; the backward recomputes.
    /// (Batch, head) slices run in parallel. With Vector512 and E a multiple of 16 the blocked kernels
    /// (<see cref="Kernels.Cpu.AttentionBlocked"/>) run; otherwise the row-by-row reference (<see cref="Kernels.Cpu.Attention"/>).
    /// </summary>
    /// <exception cref="ArgumentException">q, k and v are not rank 4 or differ in shape.</exception>
    public static Tensor CausalSelfAttention(Tensor q, Tensor k, Tensor v)
    {
        ArgumentNullException.ThrowIfNull(q);
        ArgumentNullException.ThrowIfNull(k);
        ArgumentNullException.ThrowIfNull(v);
        if (q.Rank != 4 || q.Shape != k.Shape || q.Shape != v.Shape)
            throw new ArgumentException($"CausalSelfAttention: q, k, v must share a [B, H, T, E] shape; got {q.Shape}, {k.Shape}, {v.Shape}.");
        int bh = q.Shape[0] * q.Shape[1], t = q.Shape[2], e = q.Shape[3];
        float scale = 1f / MathF.Sqrt(e);
        // Both kernels write every element of o and lse (and of dq, dk, dv below): no zeroing needed.
        var o = GradientPool.Rent(q.Numel, clear: false);
        var lse = GC.AllocateUninitializedArray<float>(bh * t);
        int se = t * e;
        bool blocked = Kernels.Cpu.AttentionBlocked.Supports(e);
        int scratchSize = blocked ? Kernels.Cpu.AttentionBlocked.ScratchSize(t, e) : Math.Max(t, 1);
        Parallel.For(0, bh, () => new float[scratchSize], (s, _, scratch) =>
        {
            Span<float> os = o.AsSpan(s * se, se), ls = lse.AsSpan(s * t, t);
            Span<float> qs = q.Storage.AsSpan(s * se, se), ks = k.Storage.AsSpan(s * se, se), vs = v.Storage.AsSpan(s * se, se);
            if (blocked) Kernels.Cpu.AttentionBlocked.CausalForward(os, ls, qs, ks, vs, t, e, scale, scratch);
            else Kernels.Cpu.Attention.CausalForward(os, ls, qs, ks, vs, t, e, scale, scratch);
            return scratch;
        }, _ => { });
        var result = new Tensor(o, q.Shape);
        return AutogradEngine.Record(result, "CausalSelfAttention", [q, k, v], g =>
        {
            var dq = GradientPool.Rent(q.Numel, clear: false); var dk = GradientPool.Rent(q.Numel, clear: false); var dv = GradientPool.Rent(q.Numel, clear: false);
            Parallel.For(0, bh, () => new float[scratchSize], (s, _, scratch) =>
            {
                Span<float> dqs = dq.AsSpan(s * se, se), dks = dk.AsSpan(s * se, se), dvs = dv.AsSpan(s * se, se);
                Span<float> gs = g.Storage.AsSpan(s * se, se), qs = q.Storage.AsSpan(s * se, se), ks = k.Storage.AsSpan(s * se, se), vs = v.Storage.AsSpan(s * se, se);
                Span<float> os = o.AsSpan(s * se, se), ls = lse.AsSpan(s * t, t);
                if (blocked) Kernels.Cpu.AttentionBlocked.CausalBackward(dqs, dks, dvs, gs, qs, ks, vs, os, ls, t, e, scale, scratch);
                else Kernels.Cpu.Attention.CausalBackward(dqs, dks, dvs, gs, qs, ks, vs, os, ls, t, e, scale);
                return scratch;
            }, _ => { });
            return [new Tensor(dq, q.Shape), new Tensor(dk, q.Shape), new Tensor(dv, q.Shape)];
        });
    }
}
