using System.Runtime.Intrinsics;
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
        var kernel = new SliceAttention(t, e);
        // Both kernels write every element of o and lse (and of dq, dk, dv below): no zeroing needed.
        var o = GradientPool.Rent(q.Numel, clear: false);
        var lse = GC.AllocateUninitializedArray<float>(bh * t);
        int se = t * e;
        Parallel.For(0, bh, () => new float[kernel.ScratchSize], (s, _, scratch) =>
        {
            kernel.Forward(o.AsSpan(s * se, se), lse.AsSpan(s * t, t), q.Storage.AsSpan(s * se, se), k.Storage.AsSpan(s * se, se), v.Storage.AsSpan(s * se, se), scratch);
            return scratch;
        }, _ => { });
        var result = new Tensor(o, q.Shape);
        return AutogradEngine.Record(result, "CausalSelfAttention", [q, k, v], g =>
        {
            var dq = GradientPool.Rent(q.Numel, clear: false); var dk = GradientPool.Rent(q.Numel, clear: false); var dv = GradientPool.Rent(q.Numel, clear: false);
            Parallel.For(0, bh, () => new float[kernel.ScratchSize], (s, _, scratch) =>
            {
                kernel.Backward(dq.AsSpan(s * se, se), dk.AsSpan(s * se, se), dv.AsSpan(s * se, se), g.Storage.AsSpan(s * se, se),
                    q.Storage.AsSpan(s * se, se), k.Storage.AsSpan(s * se, se), v.Storage.AsSpan(s * se, se), o.AsSpan(s * se, se), lse.AsSpan(s * t, t), scratch);
                return scratch;
            }, _ => { });
            return [new Tensor(dq, q.Shape), new Tensor(dk, q.Shape), new Tensor(dv, q.Shape)];
        });
    }

    /// <summary>
    /// Causal self-attention straight from a packed projection: <paramref name="qkv"/> <c>[B, T, 3C]</c> holds q, k and v
    /// side by side (each <c>[B, T, C]</c>, C = heads × E, head h in columns <c>[h·E, (h+1)·E)</c>), and the result is
    /// <c>[B, T, C]</c> with the heads side by side again. It equals splitting qkv into three, viewing each as
    /// <c>[B, H, T, E]</c>, <see cref="CausalSelfAttention"/>, and merging the heads back (the packed layout of
    /// FlashAttention's <c>qkvpacked</c> entry point), without the five copies that split and merge cost the tape: each
    /// (batch, head) task gathers its slices into scratch just before its kernel runs, except the one the blocked kernel
    /// only transposes (K in the forward, V in the backward), which it reads where it lies in the packed rows; the
    /// backward writes dq, dk and dv straight into one gradient for qkv.
    /// </summary>
    /// <exception cref="ArgumentException">qkv is not rank 3, its last dimension is not a multiple of 3·heads, or heads is not positive.</exception>
    public static Tensor CausalSelfAttentionPacked(Tensor qkv, int heads)
    {
        ArgumentNullException.ThrowIfNull(qkv);
        if (heads <= 0) throw new ArgumentException($"CausalSelfAttentionPacked: heads must be positive; got {heads}.", nameof(heads));
        if (qkv.Rank != 3 || qkv.Shape[2] % (3 * heads) != 0)
            throw new ArgumentException($"CausalSelfAttentionPacked: qkv must be [B, T, 3C] with C a multiple of {heads} heads; got {qkv.Shape}.", nameof(qkv));
        int b = qkv.Shape[0], t = qkv.Shape[1], c = qkv.Shape[2] / 3, e = c / heads, bh = b * heads, se = t * e;
        var kernel = new SliceAttention(t, e);
        int scratchSize = kernel.ScratchSize;
        var o = GradientPool.Rent(bh * se, clear: false);   // [B, H, T, E]: what the backward reads
        var lse = GC.AllocateUninitializedArray<float>(bh * t);
        var y = GradientPool.Rent(b * t * c, clear: false); // [B, T, C]: every element written
        var src = qkv.Storage;
        // Copies head h of part (0 q, 1 k, 2 v) of batch bi between the packed rows and a contiguous [T, E] slice.
        void Gather(float[] from, int rowLength, int column, int bi, Span<float> to) =>
            CopyRows(from.AsSpan(bi * t * rowLength + column), rowLength, to, e, t, e);
        void Scatter(ReadOnlySpan<float> from, float[] to, int rowLength, int column, int bi) =>
            CopyRows(from, e, to.AsSpan(bi * t * rowLength + column), rowLength, t, e);
        // An operand the kernel only transposes: where it lies in the packed rows (with their stride) if the kernel takes
        // strided rows, otherwise gathered into the contiguous slice `to` (stride 0).
        ReadOnlySpan<float> Operand(float[] from, int rowLength, int column, int bi, Span<float> to, out int stride)
        {
            if (kernel.TakesStrided) { stride = rowLength; return from.AsSpan(bi * t * rowLength + column); }
            Gather(from, rowLength, column, bi, to);
            stride = 0;
            return to;
        }
        Parallel.For(0, bh, () => System.Buffers.ArrayPool<float>.Shared.Rent(scratchSize + 3 * se), (s, _, buf) =>
        {
            int bi = s / heads, h = s % heads;
            var scratch = buf.AsSpan(0, scratchSize);
            Span<float> qs = buf.AsSpan(scratchSize, se), ks = buf.AsSpan(scratchSize + se, se), vs = buf.AsSpan(scratchSize + 2 * se, se);
            Gather(src, 3 * c, h * e, bi, qs); Gather(src, 3 * c, 2 * c + h * e, bi, vs);
            var os = o.AsSpan(s * se, se);
            // The blocked kernel reads K only to transpose it, once: where it lies in the packed rows. (Reading q and v in
            // place too was faster at head size 32 and slower at 64; docs/benchmarks.md.)
            var kIn = Operand(src, 3 * c, c + h * e, bi, ks, out int kStride);
            kernel.Forward(os, lse.AsSpan(s * t, t), qs, kIn, kStride, vs, scratch);
            Scatter(os, y, c, h * e, bi);
            return buf;
        }, buf => System.Buffers.ArrayPool<float>.Shared.Return(buf));
        return AutogradEngine.Record(new Tensor(y, new Shape(b, t, c)), "CausalSelfAttention", [qkv], g =>
        {
            var dqkv = GradientPool.Rent(qkv.Numel, clear: false); // every column belongs to one head's q, k or v
            var gs = g.Storage;
            Parallel.For(0, bh, () => System.Buffers.ArrayPool<float>.Shared.Rent(scratchSize + 7 * se), (s, _, buf) =>
            {
                int bi = s / heads, h = s % heads;
                var scratch = buf.AsSpan(0, scratchSize);
                Span<float> qs = buf.AsSpan(scratchSize, se), ks = buf.AsSpan(scratchSize + se, se), vs = buf.AsSpan(scratchSize + 2 * se, se);
                Span<float> dos = buf.AsSpan(scratchSize + 3 * se, se);
                Span<float> dqs = buf.AsSpan(scratchSize + 4 * se, se), dks = buf.AsSpan(scratchSize + 5 * se, se), dvs = buf.AsSpan(scratchSize + 6 * se, se);
                Gather(src, 3 * c, h * e, bi, qs); Gather(src, 3 * c, c + h * e, bi, ks);
                Gather(gs, c, h * e, bi, dos);
                // The blocked kernel reads V only to transpose it: where it lies in the packed rows.
                var vIn = Operand(src, 3 * c, 2 * c + h * e, bi, vs, out int vStride);
                kernel.Backward(dqs, dks, dvs, dos, qs, ks, vIn, vStride, o.AsSpan(s * se, se), lse.AsSpan(s * t, t), scratch);
                Scatter(dqs, dqkv, 3 * c, h * e, bi); Scatter(dks, dqkv, 3 * c, c + h * e, bi); Scatter(dvs, dqkv, 3 * c, 2 * c + h * e, bi);
                return buf;
            }, buf => System.Buffers.ArrayPool<float>.Shared.Return(buf));
            return [new Tensor(dqkv, qkv.Shape)];
        });
    }

    /// <summary>
    /// The attention kernels for one (batch, head) slice of T tokens and head size E: the blocked ones where they apply
    /// (<see cref="Kernels.Cpu.AttentionBlocked.Supports"/>), otherwise the row-by-row reference.
    /// </summary>
    private readonly struct SliceAttention(int t, int e)
    {
        private readonly bool _blocked = Kernels.Cpu.AttentionBlocked.Supports(e);
        private readonly float _scale = 1f / MathF.Sqrt(e);

        /// <summary>Scratch floats one slice needs.</summary>
        public int ScratchSize => _blocked ? Kernels.Cpu.AttentionBlocked.ScratchSize(t, e) : Math.Max(t, 1);

        /// <summary>Whether the forward takes K, and the backward V, in rows of any stride (the blocked kernels read
        /// each once, to transpose it); otherwise they must be contiguous.</summary>
        public bool TakesStrided => _blocked;

        public void Forward(Span<float> o, Span<float> lse, ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, Span<float> scratch) =>
            Forward(o, lse, q, k, 0, v, scratch);

        /// <summary>The forward with K in rows of <paramref name="kStride"/> floats (0: E, contiguous; other strides only
        /// where <see cref="TakesStrided"/>).</summary>
        public void Forward(Span<float> o, Span<float> lse, ReadOnlySpan<float> q, ReadOnlySpan<float> k, int kStride, ReadOnlySpan<float> v, Span<float> scratch)
        {
            if (_blocked) Kernels.Cpu.AttentionBlocked.CausalForward(o, lse, q, k, v, t, e, _scale, scratch, kStride);
            else
            {
                System.Diagnostics.Debug.Assert(kStride == 0, "the reference kernel reads K contiguous");
                Kernels.Cpu.Attention.CausalForward(o, lse, q, k, v, t, e, _scale, scratch);
            }
        }

        public void Backward(Span<float> dq, Span<float> dk, Span<float> dv, ReadOnlySpan<float> dout, ReadOnlySpan<float> q, ReadOnlySpan<float> k,
                             ReadOnlySpan<float> v, ReadOnlySpan<float> o, ReadOnlySpan<float> lse, Span<float> scratch) =>
            Backward(dq, dk, dv, dout, q, k, v, 0, o, lse, scratch);

        /// <summary>The backward with V in rows of <paramref name="vStride"/> floats (0: E, contiguous; other strides only where <see cref="TakesStrided"/>).</summary>
        public void Backward(Span<float> dq, Span<float> dk, Span<float> dv, ReadOnlySpan<float> dout, ReadOnlySpan<float> q, ReadOnlySpan<float> k,
                             ReadOnlySpan<float> v, int vStride, ReadOnlySpan<float> o, ReadOnlySpan<float> lse, Span<float> scratch)
        {
            if (_blocked) Kernels.Cpu.AttentionBlocked.CausalBackward(dq, dk, dv, dout, q, k, v, o, lse, t, e, _scale, scratch, vStride);
            else
            {
                System.Diagnostics.Debug.Assert(vStride == 0, "the reference kernel reads V contiguous");
                Kernels.Cpu.Attention.CausalBackward(dq, dk, dv, dout, q, k, v, o, lse, t, e, _scale);
            }
        }
    }

    /// <summary>
    /// Copies <paramref name="rows"/> rows of <paramref name="e"/> floats between strided layouts (a head's slice of a
    /// packed projection and a contiguous <c>[T, E]</c> slice). Head sizes that are multiples of 16 or 8 move in whole
    /// vectors inline: a call of <see cref="Span{T}.CopyTo"/> per 128-byte row cost more than the copy (about 5% of a
    /// GPT step at width 128, four heads of 32).
    /// </summary>
    private static void CopyRows(ReadOnlySpan<float> from, int fromStride, Span<float> to, int toStride, int rows, int e)
    {
        if (rows == 0) return;
        if ((long)(rows - 1) * fromStride + e > from.Length || (long)(rows - 1) * toStride + e > to.Length)
            throw new ArgumentException($"CopyRows: {rows} rows of {e} at strides {fromStride} and {toStride} do not fit spans of {from.Length} and {to.Length}.");
        ref float src = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(from);
        ref float dst = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(to);
        if (Vector512.IsHardwareAccelerated && e % 16 == 0)
        {
            for (int i = 0; i < rows; i++)
                for (int j = 0; j < e; j += 16)
                    Vector512.LoadUnsafe(ref src, (nuint)((long)i * fromStride + j)).StoreUnsafe(ref dst, (nuint)((long)i * toStride + j));
        }
        else if (Vector256.IsHardwareAccelerated && e % 8 == 0)
        {
            for (int i = 0; i < rows; i++)
                for (int j = 0; j < e; j += 8)
                    Vector256.LoadUnsafe(ref src, (nuint)((long)i * fromStride + j)).StoreUnsafe(ref dst, (nuint)((long)i * toStride + j));
        }
        else
            for (int i = 0; i < rows; i++) from.Slice(i * fromStride, e).CopyTo(to.Slice(i * toStride, e));
    }
}
