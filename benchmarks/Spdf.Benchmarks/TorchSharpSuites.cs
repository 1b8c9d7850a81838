using BenchmarkDotNet.Attributes;
using Spdf.Sparsity;
using Spdf.Sparsity.TorchSharp;
using TorchSharp;
using static TorchSharp.torch;

namespace Spdf.Benchmarks;

/// <summary>
/// TorchSharp's own dense <c>Linear(768, 3072)</c> against the same layer after <see cref="TorchSparsifier"/> (compressed
/// kernels through custom autograd), forward and backward on 2,048 tokens (the quick mode's <c>torchsharp-linear</c>).
/// </summary>
[Config(typeof(FlopsConfig))]
public class TorchSharpLinearBenchmarks : IFlopCount
{
    private nn.Module<Tensor, Tensor> _net = null!;
    private Tensor _x = null!, _dy = null!;

    /// <summary>Fraction of weights at zero (0 = TorchSharp's dense layer).</summary>
    [Params(0.0, 0.5, 0.75, 0.9)] public double Sparsity { get; set; }

    /// <inheritdoc />
    public double Flops => 6.0 * 2048 * 768 * 3072;

    /// <summary>Builds the layer and inputs.</summary>
    [GlobalSetup]
    public void Setup()
    {
        manual_seed(1);
        _x = randn([2048, 768]).requires_grad_(true);
        _dy = randn([2048, 3072]);
        _net = nn.Sequential(("0", nn.Linear(768, 3072)));
        if (Sparsity > 0)
        {
            var handle = TorchSparsifier.Apply(_net, new SparsityConfig([new SparsityGroup("0.weight", Sparsity)], seed: 3));
            handle.Layers[0].Layer!.KernelMode = SparseKernelMode.Compressed;
        }
    }

    /// <summary>Forward and backward (FLOP count: the dense layer's three products).</summary>
    [Benchmark]
    public void ForwardBackward()
    {
        using var scope = NewDisposeScope();
        foreach (var p in _net.parameters()) p.grad?.zero_();
        _x.grad?.zero_();
        _net.call(_x).backward([_dy]);
    }
}
