using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace Spdf.Gpu;

/// <summary>
/// Compiles every Spdf GPU kernel to PTX for a CUDA architecture without a GPU (ILGPU's own PTX backend, no NVVM), so a
/// machine without CUDA can check that the kernels build for, e.g., the H200's sm_90.
/// </summary>
public static class GpuPtx
{
    /// <summary>Each kernel's name and PTX for <paramref name="architecture"/> (default sm_90) and PTX ISA 8.0.</summary>
    public static IReadOnlyList<(string Kernel, string Ptx)> CompileAll(CudaArchitecture? architecture = null)
    {
        var arch = architecture ?? CudaArchitecture.SM_90;
        using var context = Context.Create(b => b.Cuda()); // the builder only; no device is opened
        using var backend = new PTXBackend(context, new CudaCapabilityContext(arch), arch, CudaInstructionSet.ISA_80, null);
        var result = new List<(string, string)>();
        foreach (var (method, grouped) in GpuKernels.All)
        {
            var entry = grouped ? EntryPointDescription.FromExplicitlyGroupedKernel(method) : EntryPointDescription.FromImplicitlyGroupedKernel(method);
            var compiled = (PTXCompiledKernel)backend.Compile(entry, default(KernelSpecialization));
            result.Add((method.Name, compiled.PTXAssembly));
        }
        return result;
    }
}
