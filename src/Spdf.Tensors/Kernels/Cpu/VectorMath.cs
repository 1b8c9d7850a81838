using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Spdf.Tensors.Kernels.Cpu;

/// <summary>Single-precision vector math for the kernels' inner loops.</summary>
internal static class VectorMath
{
    private const float Log2E = 1.44269504088896341f;
    // ln 2 split in two: the first part has few mantissa bits, so n·Ln2Hi is exact for the n that occur.
    private const float Ln2Hi = 0.693359375f, Ln2Lo = -2.12194440e-4f;
    private const float MinArg = -87.33654f, MaxArg = 88.37626f; // exp(MinArg) ≈ 2^-126, exp(MaxArg) ≈ 2^127.5

    /// <summary>
    /// <c>eˣ</c> in float arithmetic, within 2 ulp of the correctly rounded result on <c>[−87.3, 88.3]</c>: x = n·ln 2 + r
    /// with |r| ≤ ln 2 / 2, a degree-6 Taylor-like polynomial for eʳ (minimax coefficients), and 2ⁿ built in the exponent
    /// bits. Below −87.3 it returns 0; above 88.3 it saturates near 3.4·10³⁸. <c>Vector512.Exp</c> evaluates in double
    /// precision and measured about twice as slow in the attention kernels' softmax.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Exp(Vector512<float> x)
    {
        var xc = Vector512.Min(Vector512.Max(x, Vector512.Create(MinArg)), Vector512.Create(MaxArg));
        var n = Vector512.Round(xc * Vector512.Create(Log2E));
        var r = Vector512.FusedMultiplyAdd(n, Vector512.Create(-Ln2Hi), xc);
        r = Vector512.FusedMultiplyAdd(n, Vector512.Create(-Ln2Lo), r);
        var p = Vector512.Create(1.9875691500e-4f);
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1.3981999507e-3f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(8.3334519073e-3f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(4.1665795894e-2f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1.6666665459e-1f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(5.0000001201e-1f));
        var y = Vector512.FusedMultiplyAdd(p, r * r, r) + Vector512<float>.One;
        var scale = Vector512.ShiftLeft(Vector512.ConvertToInt32(n) + Vector512.Create(127), 23).AsSingle();
        return Vector512.ConditionalSelect(Vector512.LessThan(x, Vector512.Create(MinArg)), Vector512<float>.Zero, y * scale);
    }

    /// <summary><c>Σ_j e^(x[j] − shift)</c> in one pass, without writing the exponentials anywhere.</summary>
    public static unsafe float SumExp(ReadOnlySpan<float> x, float shift)
    {
        if (!Vector512.IsHardwareAccelerated)
        {
            var buf = System.Buffers.ArrayPool<float>.Shared.Rent(x.Length);
            try
            {
                var b = buf.AsSpan(0, x.Length);
                TensorPrimitives.Subtract(x, shift, b);
                TensorPrimitives.Exp(b, b);
                return TensorPrimitives.Sum(b);
            }
            finally { System.Buffers.ArrayPool<float>.Shared.Return(buf); }
        }
        fixed (float* p = x)
        {
            var vs = Vector512.Create(shift);
            Vector512<float> s0 = default, s1 = default;
            int j = 0, n = x.Length;
            for (; j + 32 <= n; j += 32)
            {
                s0 += Exp(Vector512.Load(p + j) - vs);
                s1 += Exp(Vector512.Load(p + j + 16) - vs);
            }
            float sum = Spdf.Shared.VectorSum.Of(s0 + s1);
            for (; j < n; j++) sum += MathF.Exp(p[j] - shift);
            return sum;
        }
    }

    /// <summary><c>x[j] ← e^(x[j] − shift)</c> in place, returning <c>Σ_j e^(x[j] − shift)</c>: one exponential per element
    /// for a softmax whose row is then scaled by the reciprocal of the sum (where <see cref="SumExp"/> then
    /// <see cref="ScaledExp"/> take two).</summary>
    public static unsafe float ExpShiftedSum(Span<float> x, float shift)
    {
        if (!Vector512.IsHardwareAccelerated)
        {
            TensorPrimitives.Subtract(x, shift, x);
            TensorPrimitives.Exp(x, x);
            return TensorPrimitives.Sum(x);
        }
        fixed (float* p = x)
        {
            var vs = Vector512.Create(shift);
            Vector512<float> s0 = default, s1 = default;
            int j = 0, n = x.Length;
            for (; j + 32 <= n; j += 32)
            {
                var e0 = Exp(Vector512.Load(p + j) - vs);
                var e1 = Exp(Vector512.Load(p + j + 16) - vs);
                e0.Store(p + j); e1.Store(p + j + 16);
                s0 += e0; s1 += e1;
            }
            float sum = Spdf.Shared.VectorSum.Of(s0 + s1);
            for (; j < n; j++) { float e = MathF.Exp(p[j] - shift); p[j] = e; sum += e; }
            return sum;
        }
    }

    /// <summary><c>y[j] = scale · e^(x[j] − shift)</c> in one pass (<paramref name="y"/> may be <paramref name="x"/>).</summary>
    /// <exception cref="ArgumentException">The lengths differ.</exception>
    public static unsafe void ScaledExp(ReadOnlySpan<float> x, float shift, float scale, Span<float> y)
    {
        if (x.Length != y.Length) throw new ArgumentException($"ScaledExp: input length {x.Length} differs from output length {y.Length}.");
        if (!Vector512.IsHardwareAccelerated)
        {
            TensorPrimitives.Subtract(x, shift, y);
            TensorPrimitives.Exp(y, y);
            TensorPrimitives.Multiply(y, scale, y);
            return;
        }
        fixed (float* px = x, py = y)
        {
            var vs = Vector512.Create(shift); var vc = Vector512.Create(scale);
            int j = 0, n = x.Length;
            for (; j + 16 <= n; j += 16) (Exp(Vector512.Load(px + j) - vs) * vc).Store(py + j);
            for (; j < n; j++) py[j] = scale * MathF.Exp(px[j] - shift);
        }
    }
}
