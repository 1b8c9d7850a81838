using System.Numerics.Tensors;
using System.Runtime.Intrinsics;

namespace Spdf.Tensors.Kernels.Cpu;

/// <summary>
/// Layer normalisation, one row at a time, in two vector passes forward and two backward. GPT rows are a few hundred
/// features, so a TensorPrimitives call per step of the formula (six forward, ten backward) cost more in call overhead
/// than in arithmetic. Glossary: C = features per row.
/// </summary>
internal static unsafe class Normalization
{
    /// <summary>
    /// <c>y = (x − mean)·rstd·weight + bias</c> with <c>rstd = 1/√(var + eps)</c> (biased variance); returns mean and rstd.
    /// The variance is the mean of squared deviations (a second pass), not E[x²] − mean², which loses digits when |mean| ≫ std.
    /// </summary>
    public static (float Mean, float Rstd) LayerNormRow(ReadOnlySpan<float> x, float[]? weight, float[]? bias, float eps, Span<float> y)
    {
        int c = x.Length;
        if (!Vector512.IsHardwareAccelerated)
        {
            float m0 = TensorPrimitives.Sum(x) / c;
            TensorPrimitives.Subtract(x, m0, y);
            float rs0 = 1f / MathF.Sqrt(TensorPrimitives.Dot(y, y) / c + eps);
            TensorPrimitives.Multiply(y, rs0, y);
            if (weight is not null) TensorPrimitives.Multiply(y, weight, y);
            if (bias is not null) TensorPrimitives.Add(y, bias, y);
            return (m0, rs0);
        }
        fixed (float* px = x, py = y, pw = weight, pb = bias)
        {
            int full = c & ~15;
            var s = Vector512<float>.Zero;
            for (int j = 0; j < full; j += 16) s += Vector512.Load(px + j);
            float sum = Spdf.Shared.VectorSum.Of(s);
            for (int j = full; j < c; j++) sum += px[j];
            float m = sum / c;
            var vm = Vector512.Create(m);
            var q = Vector512<float>.Zero;
            for (int j = 0; j < full; j += 16) { var d = Vector512.Load(px + j) - vm; q = Vector512.FusedMultiplyAdd(d, d, q); }
            float sq = Spdf.Shared.VectorSum.Of(q);
            for (int j = full; j < c; j++) { float d = px[j] - m; sq += d * d; }
            float rs = 1f / MathF.Sqrt(sq / c + eps);
            var vr = Vector512.Create(rs);
            for (int j = 0; j < full; j += 16)
            {
                var h = (Vector512.Load(px + j) - vm) * vr;
                if (pw != null) h *= Vector512.Load(pw + j);
                if (pb != null) h += Vector512.Load(pb + j);
                h.Store(py + j);
            }
            for (int j = full; j < c; j++)
            {
                float h = (px[j] - m) * rs;
                if (pw != null) h *= pw[j];
                if (pb != null) h += pb[j];
                py[j] = h;
            }
            return (m, rs);
        }
    }

    /// <summary>
    /// One row of the backward, with <c>x̂ = (x − mean)·rstd</c> and <c>ĝ = g·weight</c> (g where there is no weight):
    /// <c>dw += g·x̂</c>, <c>db += g</c> (each when not empty), and
    /// <c>dx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂))</c> when <paramref name="dx"/> is not empty.
    /// </summary>
    public static void LayerNormBackwardRow(ReadOnlySpan<float> x, ReadOnlySpan<float> g, float[]? weight, float mean, float rstd,
                                            Span<float> dx, Span<float> dw, Span<float> db)
    {
        int c = x.Length;
        if (!Vector512.IsHardwareAccelerated)
        {
            PortableBackwardRow(x, g, weight, mean, rstd, dx, dw, db);
            return;
        }
        fixed (float* px = x, pg = g, pw = weight, pdx = dx, pdw = dw, pdb = db)
        {
            int full = c & ~15;
            var vm = Vector512.Create(mean); var vr = Vector512.Create(rstd);
            var s1 = Vector512<float>.Zero; var s2 = Vector512<float>.Zero;
            for (int j = 0; j < full; j += 16)
            {
                var h = (Vector512.Load(px + j) - vm) * vr;
                var gv = Vector512.Load(pg + j);
                if (pdw != null) Vector512.FusedMultiplyAdd(gv, h, Vector512.Load(pdw + j)).Store(pdw + j);
                if (pdb != null) (Vector512.Load(pdb + j) + gv).Store(pdb + j);
                var gh = pw != null ? gv * Vector512.Load(pw + j) : gv;
                s1 += gh;
                s2 = Vector512.FusedMultiplyAdd(gh, h, s2);
            }
            float m1 = Spdf.Shared.VectorSum.Of(s1), m2 = Spdf.Shared.VectorSum.Of(s2);
            for (int j = full; j < c; j++)
            {
                float h = (px[j] - mean) * rstd, gv = pg[j];
                if (pdw != null) pdw[j] += gv * h;
                if (pdb != null) pdb[j] += gv;
                float gh = pw != null ? gv * pw[j] : gv;
                m1 += gh; m2 += gh * h;
            }
            if (pdx == null) return;
            m1 /= c; m2 /= c;
            var v1 = Vector512.Create(m1); var v2 = Vector512.Create(m2);
            for (int j = 0; j < full; j += 16)
            {
                var h = (Vector512.Load(px + j) - vm) * vr;
                var gv = Vector512.Load(pg + j);
                var gh = pw != null ? gv * Vector512.Load(pw + j) : gv;
                ((gh - v1 - h * v2) * vr).Store(pdx + j);
            }
            for (int j = full; j < c; j++)
            {
                float h = (px[j] - mean) * rstd;
                float gh = pw != null ? pg[j] * pw[j] : pg[j];
                pdx[j] = (gh - m1 - h * m2) * rstd;
            }
        }
    }

    /// <summary><see cref="LayerNormBackwardRow"/> through TensorPrimitives (vectorised at the widths the machine has).</summary>
    private static void PortableBackwardRow(ReadOnlySpan<float> x, ReadOnlySpan<float> g, float[]? weight, float mean, float rstd,
                                            Span<float> dx, Span<float> dw, Span<float> db)
    {
        int c = x.Length;
        var buf = System.Buffers.ArrayPool<float>.Shared.Rent(2 * c);
        var xh = buf.AsSpan(0, c); var gh = buf.AsSpan(c, c);
        TensorPrimitives.Subtract(x, mean, xh);
        TensorPrimitives.Multiply(xh, rstd, xh);
        if (!dw.IsEmpty) TensorPrimitives.MultiplyAdd(g, xh, dw, dw);
        if (!db.IsEmpty) TensorPrimitives.Add(db, g, db);
        if (!dx.IsEmpty)
        {
            if (weight is not null) TensorPrimitives.Multiply(g, weight, gh); else g.CopyTo(gh);
            float m1 = TensorPrimitives.Sum(gh) / c, m2 = TensorPrimitives.Dot(gh, xh) / c;
            TensorPrimitives.MultiplyAdd(xh, -m2, gh, dx);
            TensorPrimitives.Subtract(dx, m1, dx);
            TensorPrimitives.Multiply(dx, rstd, dx);
        }
        System.Buffers.ArrayPool<float>.Shared.Return(buf);
    }
}
