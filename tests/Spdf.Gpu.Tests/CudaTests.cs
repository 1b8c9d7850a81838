using Spdf.Gpu;
using Spdf.Sparsity;
using Spdf.Sparsity.Masks;

namespace Spdf.Gpu.Tests;

/// <summary>A fact that needs a CUDA device: reported skipped, with this reason, where none can be opened.</summary>
public sealed class CudaFactAttribute : FactAttribute
{
    /// <summary>The skip reason; .ci/run accepts skips with it, and only in this project.</summary>
    public const string NoCuda = "No CUDA device on this machine (the same checks run on ILGPU's CPU accelerator).";

    private static readonly Lazy<bool> Available = new(GpuDevice.IsCudaAvailable);

    public CudaFactAttribute()
    {
        if (!Available.Value) Skip = NoCuda;
    }
}

/// <summary>The CPU accelerator's checks again on a real GPU, at odd shapes and at one of GPT-2 Small's, where one exists.</summary>
public sealed class CudaTests
{
    [CudaFact]
    public void Sparse_layers_on_cuda_equal_the_cpu_kernels_and_the_masked_dense_reference()
    {
        using var device = GpuDevice.Create(GpuAcceleratorKind.Cuda);
        foreach (var (sparsity, tokens, inF, outF) in new[] { (0.0, 37, 45, 29), (0.5, 130, 45, 29), (0.75, 300, 768, 3072), (0.9, 37, 45, 29), (0.99, 513, 257, 129) })
        {
            var mask = MaskInitializers.Random.Create(new float[outF * inF], outF, inF, sparsity, new SparsityRandom(7));
            GpuKernelTests.CheckSparseLayer(device, mask, tokens, new Random(tokens));
        }
    }

    [CudaFact]
    public void The_tiled_sgemm_on_cuda_equals_the_reference()
    {
        using var device = GpuDevice.Create(GpuAcceleratorKind.Cuda);
        GpuKernelTests.CheckDenseLayer(device, 37, 45, 29, true);
        GpuKernelTests.CheckDenseLayer(device, 300, 768, 3072, true);
    }
}
