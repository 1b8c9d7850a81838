using System.Numerics.Tensors;

namespace Spdf.Tensors.Kernels.Cpu;

/// <summary>Activation kernels. Glossary: N = number of elements.</summary>
public static class Activations
{
    private const float SqrtTwoOverPi = 0.7978845608028654f;
    private const float GeluCoeff = 0.044715f;

    /// <summary><c>output[i] = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))</c> (GPT-2's GELU).</summary>
    public static void GeluForward(Span<float> output, ReadOnlySpan<float> input)
    {
        if (output.Length != input.Length) throw new ArgumentException($"GeluForward: output length {output.Length} differs from input length {input.Length}.");
        const int chunk = 1024;
        Span<float> t = stackalloc float[chunk];
        for (int o = 0; o < input.Length; o += chunk)
        {
            int n = Math.Min(chunk, input.Length - o);
            var x = input.Slice(o, n); var tt = t[..n]; var y = output.Slice(o, n);
            TensorPrimitives.Multiply(x, x, tt);                 // x²
            TensorPrimitives.Multiply(tt, GeluCoeff, tt);
            TensorPrimitives.Add(tt, 1f, tt);                    // 1 + c·x²
            TensorPrimitives.Multiply(tt, x, tt);                // x + c·x³
            TensorPrimitives.Multiply(tt, SqrtTwoOverPi, tt);
            TensorPrimitives.Tanh(tt, tt);
            TensorPrimitives.Add(tt, 1f, tt);
            TensorPrimitives.Multiply(tt, x, y);
            TensorPrimitives.Multiply(y, 0.5f, y);
        }
    }

    /// <summary>
    /// <c>dinput[i] = doutput[i] · gelu'(x[i])</c>, with <c>gelu'(x) = ½(1 + t) + ½x(1 − t²)·√(2/π)(1 + 3·0.044715·x²)</c>
    /// and <c>t = tanh(√(2/π)(x + 0.044715·x³))</c>; vectorised in chunks through TensorPrimitives.
    /// </summary>
    public static void GeluBackward(Span<float> dinput, ReadOnlySpan<float> input, ReadOnlySpan<float> doutput)
    {
        if (dinput.Length != input.Length || doutput.Length != input.Length)
            throw new ArgumentException($"GeluBackward: lengths {dinput.Length}, {input.Length}, {doutput.Length} must be equal.");
        const int chunk = 1024;
        Span<float> x2 = stackalloc float[chunk];
        Span<float> t = stackalloc float[chunk];
        Span<float> u = stackalloc float[chunk];
        for (int o = 0; o < input.Length; o += chunk)
        {
            int n = Math.Min(chunk, input.Length - o);
            var x = input.Slice(o, n); var xx = x2[..n]; var tt = t[..n]; var uu = u[..n]; var dx = dinput.Slice(o, n);
            TensorPrimitives.Multiply(x, x, xx);                      // x²
            TensorPrimitives.Multiply(xx, GeluCoeff, tt);
            TensorPrimitives.Add(tt, 1f, tt);
            TensorPrimitives.Multiply(tt, x, tt);
            TensorPrimitives.Multiply(tt, SqrtTwoOverPi, tt);
            TensorPrimitives.Tanh(tt, tt);                             // t
            TensorPrimitives.Multiply(xx, 3f * GeluCoeff * SqrtTwoOverPi, uu);
            TensorPrimitives.Add(uu, SqrtTwoOverPi, uu);               // √(2/π)(1 + 3c·x²)
            TensorPrimitives.Multiply(uu, x, uu);                      // x·√(2/π)(1 + 3c·x²)
            TensorPrimitives.Multiply(tt, tt, xx);                     // t² (x² no longer needed)
            TensorPrimitives.Negate(xx, xx);
            TensorPrimitives.Add(xx, 1f, xx);                          // 1 − t²
            TensorPrimitives.Multiply(uu, xx, uu);
            TensorPrimitives.Add(uu, tt, uu);
            TensorPrimitives.Add(uu, 1f, uu);                          // 1 + t + x(1 − t²)·…
            TensorPrimitives.Multiply(uu, 0.5f, uu);
            TensorPrimitives.Multiply(uu, doutput.Slice(o, n), dx);
        }
    }
}
