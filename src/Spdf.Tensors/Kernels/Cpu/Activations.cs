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

    /// <summary><c>dinput[i] = doutput[i] · gelu'(x[i])</c>.</summary>
    public static void GeluBackward(Span<float> dinput, ReadOnlySpan<float> input, ReadOnlySpan<float> doutput)
    {
        if (dinput.Length != input.Length || doutput.Length != input.Length)
            throw new ArgumentException($"GeluBackward: lengths {dinput.Length}, {input.Length}, {doutput.Length} must be equal.");
        for (int i = 0; i < input.Length; i++)
        {
            float x = input[i];
            float cube = GeluCoeff * x * x * x;
            float tanhArg = SqrtTwoOverPi * (x + cube);
            float tanhOut = MathF.Tanh(tanhArg);
            float sech2 = 1f - tanhOut * tanhOut;
            float local = 0.5f * (1f + tanhOut) + x * 0.5f * sech2 * SqrtTwoOverPi * (1f + 3f * GeluCoeff * x * x);
            dinput[i] = local * doutput[i];
        }
    }
}
