using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Spdf.Sparsity.TorchSharp;

/// <summary>Zero-copy float views of contiguous CPU float32 tensors, and the checks the CPU kernels need.</summary>
internal static class TorchTensors
{
    /// <summary>The elements of a contiguous CPU float32 tensor, without a copy.</summary>
    public static Span<float> Floats(Tensor t) => MemoryMarshal.Cast<byte, float>(t.bytes);

    /// <summary>Checks that <paramref name="t"/> is a float32 tensor on the CPU, naming what it is otherwise.</summary>
    /// <exception cref="ArgumentException">Another dtype or device.</exception>
    public static void CheckCpuFloat32(Tensor t, string what, string paramName)
    {
        if (t.dtype != ScalarType.Float32)
            throw new ArgumentException($"{what} has dtype {t.dtype}; Spdf's sparse kernels and masks take float32 tensors.", paramName);
        if (t.device_type != DeviceType.CPU)
            throw new ArgumentException($"{what} is on device {t.device}; Spdf's sparse kernels run on the CPU (move the model with .cpu()).", paramName);
    }

    /// <summary>A contiguous version of <paramref name="t"/> (itself when it already is).</summary>
    public static Tensor Contiguous(Tensor t) => t.is_contiguous() ? t : t.contiguous();
}
