using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Spdf.Tensors.Kernels.Cpu;

/// <summary>Activation kernels. Glossary: N = number of elements.</summary>
public static unsafe class Activations
{
    private const float SqrtTwoOverPi = 0.7978845608028654f;
    private const float GeluCoeff = 0.044715f;

    /// <summary>Elements per parallel task; smaller inputs run on the calling thread.</summary>
    private const int ParallelChunk = 1 << 15;

    /// <summary>
    /// <c>output[i] = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))</c> (GPT-2's GELU), computed as the equal
    /// <c>x·σ(2z) = x / (1 + e^(−2z))</c> with <c>z = √(2/π)(x + 0.044715·x³)</c>: one exponential and one division per
    /// element in a single vectorised pass, in parallel for large inputs.
    /// </summary>
    /// <exception cref="ArgumentException">The lengths differ.</exception>
    public static void GeluForward(Span<float> output, ReadOnlySpan<float> input)
    {
        if (output.Length != input.Length) throw new ArgumentException($"GeluForward: output length {output.Length} differs from input length {input.Length}.");
        fixed (float* px = input, py = output)
        {
            nint ax = (nint)px, ay = (nint)py;
            ParallelChunks.For(input.Length, ParallelChunk, (_, from, to) => GeluForwardRange((float*)ax + from, (float*)ay + from, to - from));
        }
    }

    /// <summary>
    /// <c>dinput[i] = doutput[i] · gelu'(x[i])</c>, with <c>s = σ(2z)</c>, <c>gelu(x) = x·s</c> and
    /// <c>gelu'(x) = s + 2x·s(1 − s)·√(2/π)(1 + 3·0.044715·x²)</c> (the tanh form's derivative, since <c>½(1 + tanh z) = σ(2z)</c>);
    /// one vectorised pass, in parallel for large inputs.
    /// </summary>
    /// <exception cref="ArgumentException">The lengths differ.</exception>
    public static void GeluBackward(Span<float> dinput, ReadOnlySpan<float> input, ReadOnlySpan<float> doutput)
    {
        if (dinput.Length != input.Length || doutput.Length != input.Length)
            throw new ArgumentException($"GeluBackward: lengths {dinput.Length}, {input.Length}, {doutput.Length} must be equal.");
        fixed (float* px = input, pg = doutput, pd = dinput)
        {
            nint ax = (nint)px, ag = (nint)pg, ad = (nint)pd;
            ParallelChunks.For(input.Length, ParallelChunk, (_, from, to) => GeluBackwardRange((float*)ax + from, (float*)ag + from, (float*)ad + from, to - from));
        }
    }

    /// <summary>
    /// <see cref="GeluForward"/> of <paramref name="count"/> values on the calling thread, for a kernel that already runs
    /// in parallel and applies GELU to one block at a time (the fused sparse MLP). No bounds are checked.
    /// </summary>
    public static void GeluForwardSerial(float* input, float* output, int count) => GeluForwardRange(input, output, count);

    // The Vector512 and Vector256 loops below are the same arithmetic at two widths: Vector512<float> does not satisfy
    // ISimdVector<,> as a generic constraint here, so one generic body cannot serve both. The 512-bit loops take the
    // float exponential of VectorMath (e^(−2z) saturates near 3.4·10³⁸ past z ≈ −44, where σ(2z) is 0 to float precision).

    /// <summary>
    /// <see cref="GeluForward"/> of <paramref name="count"/> values on the calling thread, with GELU's derivative at each
    /// input into <paramref name="derivative"/> (<c>gelu'(x)</c>, as <see cref="GeluBackward"/> computes it) from the same
    /// exponential: for a backward pass that needs both (the fused sparse MLP's, which recomputes the activation for a
    /// weight gradient and needs the derivative for the gradient through it). Outputs equal <see cref="GeluForward"/>'s
    /// within a float rounding (<c>x·σ</c> against <c>x / (1 + e^(−2z))</c>). No bounds are checked.
    /// </summary>
    public static void GeluForwardWithDerivativeSerial(float* input, float* output, float* derivative, int count)
    {
        const float dz0 = 2 * SqrtTwoOverPi, dz2 = 2 * SqrtTwoOverPi * 3 * GeluCoeff; // 2·dz/dx = dz0 + dz2·x²
        float* x = input, y = output, d = derivative;
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
            for (; i + 16 <= count; i += 16)
            {
                var v = Vector512.Load(x + i);
                var v2 = v * v;
                var z = v * (Vector512.Create(SqrtTwoOverPi) + Vector512.Create(SqrtTwoOverPi * GeluCoeff) * v2);
                var s = Vector512<float>.One / (Vector512<float>.One + VectorMath.Exp(z * Vector512.Create(-2f)));
                var vs = v * s;
                vs.Store(y + i);
                (s + vs * (Vector512<float>.One - s) * (Vector512.Create(dz0) + Vector512.Create(dz2) * v2)).Store(d + i);
            }
        else if (Vector256.IsHardwareAccelerated)
            for (; i + 8 <= count; i += 8)
            {
                var v = Vector256.Load(x + i);
                var v2 = v * v;
                var z = v * (Vector256.Create(SqrtTwoOverPi) + Vector256.Create(SqrtTwoOverPi * GeluCoeff) * v2);
                var s = Vector256<float>.One / (Vector256<float>.One + Vector256.Exp(z * Vector256.Create(-2f)));
                var vs = v * s;
                vs.Store(y + i);
                (s + vs * (Vector256<float>.One - s) * (Vector256.Create(dz0) + Vector256.Create(dz2) * v2)).Store(d + i);
            }
        for (; i < count; i++)
        {
            float v = x[i], v2 = v * v, z = v * (SqrtTwoOverPi + SqrtTwoOverPi * GeluCoeff * v2);
            float s = 1f / (1f + MathF.Exp(-2f * z));
            y[i] = v * s;
            d[i] = s + v * s * (1f - s) * (dz0 + dz2 * v2);
        }
    }

    private static void GeluForwardRange(float* x, float* y, int n)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
            for (; i + 16 <= n; i += 16)
            {
                var v = Vector512.Load(x + i);
                var z = v * (Vector512.Create(SqrtTwoOverPi) + Vector512.Create(SqrtTwoOverPi * GeluCoeff) * (v * v));
                (v / (Vector512<float>.One + VectorMath.Exp(z * Vector512.Create(-2f)))).Store(y + i);
            }
        else if (Vector256.IsHardwareAccelerated)
            for (; i + 8 <= n; i += 8)
            {
                var v = Vector256.Load(x + i);
                var z = v * (Vector256.Create(SqrtTwoOverPi) + Vector256.Create(SqrtTwoOverPi * GeluCoeff) * (v * v));
                (v / (Vector256<float>.One + Vector256.Exp(z * Vector256.Create(-2f)))).Store(y + i);
            }
        for (; i < n; i++)
        {
            float v = x[i], z = v * (SqrtTwoOverPi + SqrtTwoOverPi * GeluCoeff * (v * v));
            y[i] = v / (1f + MathF.Exp(-2f * z));
        }
    }

    private static void GeluBackwardRange(float* x, float* g, float* d, int n)
    {
        const float dz0 = 2 * SqrtTwoOverPi, dz2 = 2 * SqrtTwoOverPi * 3 * GeluCoeff; // 2·dz/dx = dz0 + dz2·x²
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
            for (; i + 16 <= n; i += 16)
            {
                var v = Vector512.Load(x + i);
                var v2 = v * v;
                var z = v * (Vector512.Create(SqrtTwoOverPi) + Vector512.Create(SqrtTwoOverPi * GeluCoeff) * v2);
                var s = Vector512<float>.One / (Vector512<float>.One + VectorMath.Exp(z * Vector512.Create(-2f)));
                var dz = Vector512.Create(dz0) + Vector512.Create(dz2) * v2;
                (Vector512.Load(g + i) * (s + v * s * (Vector512<float>.One - s) * dz)).Store(d + i);
            }
        else if (Vector256.IsHardwareAccelerated)
            for (; i + 8 <= n; i += 8)
            {
                var v = Vector256.Load(x + i);
                var v2 = v * v;
                var z = v * (Vector256.Create(SqrtTwoOverPi) + Vector256.Create(SqrtTwoOverPi * GeluCoeff) * v2);
                var s = Vector256<float>.One / (Vector256<float>.One + Vector256.Exp(z * Vector256.Create(-2f)));
                var dz = Vector256.Create(dz0) + Vector256.Create(dz2) * v2;
                (Vector256.Load(g + i) * (s + v * s * (Vector256<float>.One - s) * dz)).Store(d + i);
            }
        for (; i < n; i++)
        {
            float v = x[i], v2 = v * v, z = v * (SqrtTwoOverPi + SqrtTwoOverPi * GeluCoeff * v2);
            float s = 1f / (1f + MathF.Exp(-2f * z));
            d[i] = g[i] * (s + v * s * (1f - s) * (dz0 + dz2 * v2));
        }
    }
}
