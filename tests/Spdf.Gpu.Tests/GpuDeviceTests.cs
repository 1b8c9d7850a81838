using ILGPU.Runtime.Cuda;
using Spdf.Gpu;
using Spdf.Sparsity;
using Spdf.Sparsity.Masks;

namespace Spdf.Gpu.Tests;

/// <summary>PTX for the H200, and the errors a user meets.</summary>
[Collection("cpu-accelerator")]
public sealed class GpuDeviceTests(CpuDeviceFixture fixture)
{
    private readonly GpuDevice _device = fixture.Device;

    [Fact]
    public void Every_kernel_compiles_to_ptx_for_sm_90_without_a_gpu()
    {
        var kernels = GpuPtx.CompileAll(CudaArchitecture.SM_90);
        kernels.Select(k => k.Kernel).Should().BeEquivalentTo(
            ["Transpose", "Spmm", "Sddmm", "RowSums", "Spmv", "Sgemm", "AdamW", "Gather", "ColSums", "ToBf16Pairs", "SpmmBf16", "SddmmBf16"]);
        foreach (var (name, ptx) in kernels)
        {
            // ILGPU writes the lowest architecture that has every capability the kernel uses (its CudaCapabilityContext),
            // at most the one asked for; the driver JIT-compiles that PTX for the device (an H200: sm_90).
            var target = System.Text.RegularExpressions.Regex.Match(ptx, @"^\.target sm_(\d+)", System.Text.RegularExpressions.RegexOptions.Multiline);
            target.Success.Should().BeTrue(name);
            int.Parse(target.Groups[1].Value).Should().BeInRange(70, 90, name);
            ptx.Should().Contain(".version 8.0", name).And.Contain(".entry", name);
        }
        // The row kernels use warp shuffles, the tiled ones shared memory and the split SDDMM atomics: all must survive into the PTX.
        kernels.Single(k => k.Kernel == "Spmm").Ptx.Should().Contain("shfl.sync");
        kernels.Single(k => k.Kernel == "Sgemm").Ptx.Should().Contain(".shared").And.NotContain(".local", "the 8 × 8 accumulators must live in registers");
        kernels.Single(k => k.Kernel == "Sddmm").Ptx.Should().Contain("shfl.sync").And.MatchRegex(@"(atom|red)(\.global)?\.add\.f32");
    }

    [Fact]
    public void Cuda_either_opens_or_says_why_not()
    {
        try
        {
            using var d = GpuDevice.Create(GpuAcceleratorKind.Cuda);
            d.Kind.Should().Be(GpuAcceleratorKind.Cuda);
            d.MemoryBytes.Should().BePositive();
        }
        catch (GpuUnavailableException e)
        {
            e.Message.Should().Contain("CUDA").And.Contain("GpuAcceleratorKind.Cpu");
            GpuDevice.IsCudaAvailable().Should().BeFalse();
        }
    }

    [Fact]
    public void Allocations_are_counted_and_released()
    {
        long before = _device.AllocatedBytes;
        var b = _device.Allocate<float>(1000, "test buffer");
        _device.AllocatedBytes.Should().Be(before + 4000);
        b.Dispose();
        b.Dispose();
        _device.AllocatedBytes.Should().Be(before);
        FluentActions.Invoking(() => b.View).Should().Throw<ObjectDisposedException>();
    }

    [Fact]
    public void An_allocation_beyond_the_device_names_the_sizes()
    {
        long huge = _device.MemoryBytes / 4 + 1;
        FluentActions.Invoking(() => _device.Allocate<float>(huge, "the huge test buffer")).Should().Throw<GpuMemoryException>()
            .Which.Message.Should().Contain("the huge test buffer").And.Contain("bytes asked");
    }

    [Fact]
    public void Bad_shapes_are_refused_with_the_values()
    {
        var mask = MaskInitializers.Random.Create(new float[6 * 4], 6, 4, 0.5, new SparsityRandom(1));
        FluentActions.Invoking(() => new GpuSparseLinear(_device, new float[23], mask, [], false, 8)).Should().Throw<ArgumentException>()
            .WithMessage("*23*24*");
        FluentActions.Invoking(() => new GpuSparseLinear(_device, new float[24], null!, [], false, 8)).Should().Throw<ArgumentNullException>()
            .WithParameterName("mask");
        FluentActions.Invoking(() => new GpuSparseLinear(_device, new float[24], mask, new float[5], true, 8)).Should().Throw<ArgumentException>()
            .WithMessage("*5*outFeatures = 6*");
        FluentActions.Invoking(() => new GpuDenseLinear(_device, new float[24], 4, 6, [], false, 0)).Should().Throw<ArgumentException>()
            .WithMessage("*maxTokens is 0*");
        using var layer = new GpuSparseLinear(_device, new float[24], mask, [], false, 8);
        using var x = _device.Allocate<float>(40, "x");
        using var y = _device.Allocate<float>(60, "y");
        FluentActions.Invoking(() => layer.Forward(x.View, y.View, 9)).Should().Throw<ArgumentException>().WithMessage("*tokens is 9*MaxTokens = 8*");
        FluentActions.Invoking(() => layer.Forward(x.Slice(7), y.View, 2)).Should().Throw<ArgumentException>().WithMessage("*x has 7*at least 8*");
        FluentActions.Invoking(() => layer.AdamWStep(new GpuAdamWOptions(Beta1: 1.0))).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*β1*");
        layer.Steps.Should().Be(0);
    }
}
