using System.Globalization;
using Spdf.Sparsity;
using Spdf.Sparsity.TorchSharp;
using TorchSharp;
using static TorchSharp.torch;

namespace Spdf.Benchmarks;

/// <summary>The quick mode's TorchSharp entries: TorchSharp's own dense layers against the same layers after Spdf sparsifies them.</summary>
internal static class TorchSharpQuick
{
    /// <summary>
    /// <c>torchsharp-linear</c>: a TorchSharp <c>Linear(in, out)</c> in a <c>Sequential</c>, forward and forward+backward on
    /// <c>[tokens, in]</c>; sparsity 0 is TorchSharp's own dense layer, others the layer after <see cref="TorchSparsifier"/>
    /// (compressed kernels by default). One JSON line per sparsity.
    /// </summary>
    public static void Linear(Dictionary<string, string> o)
    {
        int n = Quick.Int(o, "tokens", 2048), k = Quick.Int(o, "in", 768), m = Quick.Int(o, "out", 3072);
        double secs = Quick.Seconds(o);
        var sparsities = (o.TryGetValue("sparsity", out var s) ? s : "0,0.75,0.9")
            .Split(',').Select(v => double.Parse(v, CultureInfo.InvariantCulture)).ToArray();
        var mode = o.TryGetValue("kernel", out var km) ? Enum.Parse<SparseKernelMode>(km, ignoreCase: true) : SparseKernelMode.Compressed;
        manual_seed(1);
        using var x = randn([n, k]).requires_grad_(true);
        using var dy = randn([n, m]);
        foreach (double sp in sparsities)
        {
            manual_seed(2);
            var net = nn.Sequential(("0", nn.Linear(k, m)));
            string kernel = "torchsharp-dense";
            if (sp > 0)
            {
                var handle = TorchSparsifier.Apply(net, new SparsityConfig([new SparsityGroup("0.weight", sp)], seed: 3));
                var layer = handle.Layers[0].Layer ?? throw new InvalidOperationException("The benchmark's Sequential layer was not swapped.");
                layer.KernelMode = mode;
                using (no_grad()) net.call(x).Dispose(); // Auto decides on first use
                kernel = layer.Kernel;
            }
            var (fwd, fwdMin) = Timing.Measure(() =>
            {
                using var scope = NewDisposeScope();
                using var _ = no_grad();
                net.call(x);
            }, secs);
            var (fb, fbMin) = Timing.Measure(() =>
            {
                using var scope = NewDisposeScope();
                foreach (var p in net.parameters()) p.grad?.zero_();
                x.grad?.zero_();
                net.call(x).backward([dy]);
            }, secs);
            Quick.Emit(new Dictionary<string, object>
            {
                ["op"] = "torchsharp_linear", ["tokens"] = n, ["in"] = k, ["out"] = m, ["sparsity"] = sp,
                ["fwd_ms"] = Math.Round(fwd, 3), ["fwd_bwd_ms"] = Math.Round(fb, 3),
                ["fwd_min_ms"] = Math.Round(fwdMin, 3), ["fwd_bwd_min_ms"] = Math.Round(fbMin, 3), ["kernel"] = kernel,
                ["threads"] = get_num_threads(),
            });
        }
    }
}
