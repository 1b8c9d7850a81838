using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using Spdf.Sparsity;
using Spdf.Sparsity.Masks;
using Spdf.Tensors;
using Spdf.Tensors.Kernels.Cpu;
using Spdf.Tensors.Nn;

namespace Spdf.Benchmarks;

/// <summary>A benchmark that knows how many floating-point operations one invocation does.</summary>
public interface IFlopCount
{
    /// <summary>FLOPs per invocation (2 per multiply-add).</summary>
    double Flops { get; }
}

/// <summary>GFLOP/s and %-of-peak columns computed from <see cref="IFlopCount"/> and the measured FMA peak.</summary>
public sealed class GflopsColumn(bool percentOfPeak) : IColumn
{
    private static readonly Lazy<double> PeakAll = new(() => Peak.Measure(0.5).AllCores);

    /// <inheritdoc />
    public string Id => percentOfPeak ? "PctPeak" : "GFlops";
    /// <inheritdoc />
    public string ColumnName => percentOfPeak ? "% of FMA peak" : "GFLOP/s";
    /// <inheritdoc />
    public bool AlwaysShow => true;
    /// <inheritdoc />
    public ColumnCategory Category => ColumnCategory.Custom;
    /// <inheritdoc />
    public int PriorityInCategory => percentOfPeak ? 1 : 0;
    /// <inheritdoc />
    public bool IsNumeric => true;
    /// <inheritdoc />
    public UnitType UnitType => UnitType.Dimensionless;
    /// <inheritdoc />
    public string Legend => percentOfPeak ? "GFLOP/s over the measured all-core FMA peak" : "Floating-point operations per second (median)";
    /// <inheritdoc />
    public bool IsAvailable(Summary summary) => true;
    /// <inheritdoc />
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    /// <inheritdoc />
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    /// <inheritdoc />
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        var report = summary[benchmarkCase];
        if (report?.ResultStatistics is null) return "-";
        var instance = (IFlopCount)Activator.CreateInstance(benchmarkCase.Descriptor.Type)!;
        foreach (var p in benchmarkCase.Parameters.Items)
            benchmarkCase.Descriptor.Type.GetProperty(p.Name)?.SetValue(instance, p.Value);
        double gf = instance.Flops / report.ResultStatistics.Median; // FLOP per ns = GFLOP/s
        return percentOfPeak ? (100 * gf / PeakAll.Value).ToString("F1", System.Globalization.CultureInfo.InvariantCulture)
                             : gf.ToString("F1", System.Globalization.CultureInfo.InvariantCulture);
    }
}

/// <summary>Shared config: memory diagnoser plus GFLOP/s and %-of-peak columns.</summary>
public sealed class FlopsConfig : ManualConfig
{
    /// <summary>Creates the config.</summary>
    public FlopsConfig()
    {
        AddColumn(new GflopsColumn(false), new GflopsColumn(true));
        AddDiagnoser(BenchmarkDotNet.Diagnosers.MemoryDiagnoser.Default);
    }
}

/// <summary>GEMM in the three layouts a linear layer needs.</summary>
[Config(typeof(FlopsConfig))]
public class GemmBenchmarks : IFlopCount
{
    private float[] _a = [], _b = [], _c = [];

    /// <summary>Square size.</summary>
    [Params(512, 2048)] public int Size { get; set; }

    /// <inheritdoc />
    public double Flops => 2.0 * Size * Size * Size;

    /// <summary>Allocates operands.</summary>
    [GlobalSetup]
    public void Setup()
    {
        var g = new Generator(1);
        _a = Tensor.Randn(new Shape(Size, Size), g).ToArray();
        _b = Tensor.Randn(new Shape(Size, Size), g).ToArray();
        _c = new float[Size * Size];
    }

    /// <summary>C = A·B.</summary>
    [Benchmark] public void NN() => Gemm.MatMul(_a, false, _b, false, _c, Size, Size, Size);
    /// <summary>C = A·Bᵀ (linear forward).</summary>
    [Benchmark] public void NT() => Gemm.MatMul(_a, false, _b, true, _c, Size, Size, Size);
    /// <summary>C = Aᵀ·B (weight gradient).</summary>
    [Benchmark] public void TN() => Gemm.MatMul(_a, true, _b, false, _c, Size, Size, Size);
}

/// <summary>A linear layer's forward and forward+backward, dense and masked-sparse, at GPT-2 Small's MLP shape.</summary>
[Config(typeof(FlopsConfig))]
public class LinearBenchmarks : IFlopCount
{
    private Linear _layer = null!;
    private Tensor _x = null!, _dy = null!;

    /// <summary>Fraction of weights at zero (0 = the dense layer).</summary>
    [Params(0.0, 0.75)] public double Sparsity { get; set; }

    /// <inheritdoc />
    public double Flops => 6.0 * 2048 * 768 * 3072;

    /// <summary>Builds the layer and inputs.</summary>
    [GlobalSetup]
    public void Setup()
    {
        var g = new Generator(1);
        _layer = new Linear(768, 3072, generator: g);
        if (Sparsity > 0) _layer = SparseLinear.FromLinear(_layer, MaskInitializers.Random.Create(_layer.Weight, Sparsity, new SparsityRandom(g.NextUInt64())));
        _x = Tensor.Randn(new Shape(2048, 768), g); _x.RequiresGrad = true;
        _dy = Tensor.Randn(new Shape(2048, 3072), g);
    }

    /// <summary>Forward and backward (FLOP count: 3 GEMMs).</summary>
    [Benchmark]
    public void ForwardBackward()
    {
        _x.Grad = null; _layer.ZeroGrad();
        _layer.Forward(_x).Backward(_dy);
    }
}

/// <summary>Fused causal attention at the GPT benchmark's shape (B=8, H=6, T=256, E=64).</summary>
[Config(typeof(FlopsConfig))]
public class AttentionBenchmarks : IFlopCount
{
    private Tensor _q = null!, _k = null!, _v = null!, _dout = null!;

    /// <inheritdoc />
    public double Flops => 3.0 * 2 * 2.0 * 8 * 6 * 256 * 256 * 64 / 2; // fwd (QKᵀ, PV) + bwd (2×), causal half

    /// <summary>Builds the inputs.</summary>
    [GlobalSetup]
    public void Setup()
    {
        var g = new Generator(1);
        Tensor Mk() { var z = Tensor.Randn(new Shape(8, 6, 256, 64), g); z.RequiresGrad = true; return z; }
        (_q, _k, _v) = (Mk(), Mk(), Mk());
        _dout = Tensor.Randn(new Shape(8, 6, 256, 64), g);
    }

    /// <summary>Forward and backward.</summary>
    [Benchmark]
    public void ForwardBackward()
    {
        _q.Grad = _k.Grad = _v.Grad = null;
        Functional.CausalSelfAttention(_q, _k, _v).Backward(_dout);
    }
}

/// <summary>A GPT training step (forward, backward, AdamW) at the peer script's default shape, dense and masked.</summary>
[Config(typeof(FlopsConfig))]
public class GptTrainStepBenchmarks : IFlopCount
{
    private Gpt.GptModel _model = null!;
    private Tensors.Optim.AdamW _opt = null!;
    private IntTensor _idx = null!, _tgt = null!;
    private static readonly Gpt.GptConfig Config = new(6, 384, 6, 256, 8192);

    /// <summary>Sparsity of the attention and MLP weights.</summary>
    [Params(0.0, 0.75)] public double Sparsity { get; set; }

    /// <inheritdoc />
    public double Flops => Spdf.Sparsity.Flops.FlopCounter.ForTransformer(Config.ToTransformerShape(), Sparsity).TrainPerStep(8 * 256, sparse: true);

    /// <summary>Builds the model and a batch.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _model = new Gpt.GptModel(Config, new Generator(1));
        if (Sparsity > 0) Sparsifier.Apply(_model, SparsityConfig.Default(Sparsity, seed: 2));
        _opt = new Tensors.Optim.AdamW(_model.Parameters(), 1e-4);
        var g = new Generator(3);
        _idx = new IntTensor(Enumerable.Range(0, 8 * 256).Select(_ => g.NextInt(8192)).ToArray(), new Shape(8, 256));
        _tgt = new IntTensor(Enumerable.Range(0, 8 * 256).Select(_ => g.NextInt(8192)).ToArray(), new Shape(8 * 256));
    }

    /// <summary>One step.</summary>
    [Benchmark]
    public void Step()
    {
        var loss = _model.Loss(_idx, _tgt);
        _opt.ZeroGrad();
        loss.Backward();
        _opt.Step();
    }
}
