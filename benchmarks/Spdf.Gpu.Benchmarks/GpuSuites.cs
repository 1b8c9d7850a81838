using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using Spdf.Sparsity;
using Spdf.Sparsity.Masks;

namespace Spdf.Gpu.Benchmarks;

/// <summary>BenchmarkDotNet in process (no SDK on the GPU machine), few iterations (device time is scarce).</summary>
public sealed class GpuBenchmarkConfig : ManualConfig
{
    /// <summary>Creates the config.</summary>
    public GpuBenchmarkConfig()
    {
        AddJob(Job.ShortRun.WithToolchain(InProcessEmitToolchain.Instance));
        AddLogger(BenchmarkDotNet.Loggers.ConsoleLogger.Default);
        AddColumnProvider(BenchmarkDotNet.Columns.DefaultColumnProviders.Instance);
        AddExporter(BenchmarkDotNet.Exporters.MarkdownExporter.GitHub);
    }
}

/// <summary>
/// One linear layer's training pass (forward and backward with the input gradient) on a CUDA device: Spdf's dense SGEMM at
/// sparsity 0, the compressed sparse kernels otherwise; GPT-2 Small's MLP shape (768 → 3072, 8,192 tokens). Each
/// invocation waits for the device. Needs a CUDA device (quick gpu-linear --accelerator cpu runs without one).
/// </summary>
public class GpuLinearBenchmarks
{
    private GpuDevice? _device;
    private GpuLinear? _layer;
    private GpuBuffer<float>? _x, _dy, _y, _dx;

    /// <summary>Tokens per step.</summary>
    [Params(8192)] public int Tokens { get; set; }

    /// <summary>The layer's sparsity.</summary>
    [Params(0.0, 0.5, 0.75, 0.9)] public double Sparsity { get; set; }

    /// <summary>Input features.</summary>
    public int In { get; set; } = 768;

    /// <summary>Output features.</summary>
    public int Out { get; set; } = 3072;

    /// <summary>Opens the device and builds the layer.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _device = GpuDevice.Create(GpuAcceleratorKind.Cuda);
        var rng = new Random(1);
        float[] Fill(long n) { var a = new float[n]; for (long i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1); return a; }
        var w = Fill((long)Out * In);
        var bias = Fill(Out);
        _layer = Sparsity == 0
            ? new GpuDenseLinear(_device, w, In, Out, bias, true, Tokens)
            : new GpuSparseLinear(_device, w, MaskInitializers.Random.Create(w, Out, In, Sparsity, new SparsityRandom(3)), bias, true, Tokens);
        _x = _device.Upload<float>(Fill((long)Tokens * In), "x");
        _dy = _device.Upload<float>(Fill((long)Tokens * Out), "dY");
        _y = _device.Allocate<float>((long)Tokens * Out, "y");
        _dx = _device.Allocate<float>((long)Tokens * In, "dX");
    }

    /// <summary>Forward only.</summary>
    [Benchmark]
    public void Forward()
    {
        _layer!.Forward(_x!.View, _y!.View, Tokens);
        _device!.Synchronize();
    }

    /// <summary>Forward, then backward with the input gradient.</summary>
    [Benchmark]
    public void ForwardBackward()
    {
        _layer!.Forward(_x!.View, _y!.View, Tokens);
        _layer.Backward(_dy!.View, _x.View, _dx!.View, Tokens);
        _device!.Synchronize();
    }

    /// <summary>Frees the device.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _layer?.Dispose();
        _x?.Dispose(); _dy?.Dispose(); _y?.Dispose(); _dx?.Dispose();
        _device?.Dispose();
    }
}
