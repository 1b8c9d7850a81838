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
    /// (compressed kernels by default). One JSON line per sparsity; with <c>--rounds R</c> the layers are timed in turn R
    /// times and the medians are over all rounds.
    /// </summary>
    public static void Linear(Dictionary<string, string> o)
    {
        int n = Quick.Int(o, "tokens", 2048), k = Quick.Int(o, "in", 768), m = Quick.Int(o, "out", 3072);
        double secs = Quick.Seconds(o);
        var sparsities = (o.TryGetValue("sparsity", out var s) ? s : "0,0.75,0.9")
            .Split(',').Select(v => double.Parse(v, CultureInfo.InvariantCulture)).ToArray();
        var mode = o.TryGetValue("kernel", out var km) ? Enum.Parse<SparseKernelMode>(km, ignoreCase: true) : SparseKernelMode.Compressed;
        int rounds = Quick.Int(o, "rounds", 1);
        manual_seed(1);
        using var x = randn([n, k]).requires_grad_(true);
        using var dy = randn([n, m]);
        // Every layer is built first; then each round times each of them in turn, so that the machine's drift over the
        // run falls on all of them alike (medians over all rounds' samples).
        var layers = new List<(double Sparsity, nn.Module<Tensor, Tensor> Net, string Kernel)>();
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
            layers.Add((sp, net, kernel));
        }
        var fwd = layers.Select(_ => new List<double>()).ToList();
        var fb = layers.Select(_ => new List<double>()).ToList();
        for (int r = 0; r < rounds; r++)
            for (int i = 0; i < layers.Count; i++)
            {
                var net = layers[i].Net;
                fwd[i].AddRange(Timing.Samples(() =>
                {
                    using var scope = NewDisposeScope();
                    using var _ = no_grad();
                    net.call(x);
                }, secs / rounds, warmupSeconds: r == 0 ? 1.0 : 0.2));
                fb[i].AddRange(Timing.Samples(() =>
                {
                    using var scope = NewDisposeScope();
                    foreach (var p in net.parameters()) p.grad?.zero_();
                    x.grad?.zero_();
                    net.call(x).backward([dy]);
                }, secs / rounds, warmupSeconds: r == 0 ? 1.0 : 0.2));
            }
        for (int i = 0; i < layers.Count; i++)
            Quick.Emit(new Dictionary<string, object>
            {
                ["op"] = "torchsharp_linear", ["tokens"] = n, ["in"] = k, ["out"] = m, ["sparsity"] = layers[i].Sparsity,
                ["fwd_ms"] = Math.Round(Timing.Median(fwd[i]), 3), ["fwd_bwd_ms"] = Math.Round(Timing.Median(fb[i]), 3),
                ["fwd_min_ms"] = Math.Round(fwd[i].Min(), 3), ["fwd_bwd_min_ms"] = Math.Round(fb[i].Min(), 3), ["kernel"] = layers[i].Kernel,
                ["threads"] = get_num_threads(), ["rounds"] = rounds, ["samples"] = fb[i].Count,
            });
    }

    /// <summary>
    /// <c>torchsharp-gpt</c>: training steps (AdamW, weight decay 0.1 on matrices) of the TorchSharp sample's nanoGPT on
    /// random tokens, dense and after <see cref="TorchSparsifier"/> with a <see cref="SparsityController"/> around each
    /// optimizer step. Every model is built and warmed up (two steps) first; then each of <c>--rounds R</c> rounds times
    /// each model in turn for its share of <c>--seconds</c>, so that the machine's drift falls on all of them alike. One
    /// JSON line per sparsity: the median step over all rounds, where a step's time went on average, and the managed
    /// allocations and collections per step.
    /// </summary>
    public static void Gpt(Dictionary<string, string> o)
    {
        var cfg = new TorchSharpGpt.NanoGptConfig(Quick.Int(o, "layers", 6), Quick.Int(o, "embd", 384), Quick.Int(o, "heads", 6),
            Quick.Int(o, "ctx", 256), Quick.Int(o, "vocab", 8192));
        int batch = Quick.Int(o, "batch", 8), steps = Quick.Int(o, "steps", 5), rounds = Quick.Int(o, "rounds", 1);
        double secs = Quick.Seconds(o);
        var sparsities = (o.TryGetValue("sparsity", out var s) ? s : "0,0.75").Split(',').Select(v => double.Parse(v, CultureInfo.InvariantCulture)).ToArray();
        var mode = o.TryGetValue("kernel", out var km) ? Enum.Parse<SparseKernelMode>(km, ignoreCase: true) : SparseKernelMode.Compressed;
        manual_seed(1);
        using var idx = randint(cfg.Vocab, [batch, cfg.Context], dtype: ScalarType.Int64);
        using var tgt = randint(cfg.Vocab, [batch, cfg.Context], dtype: ScalarType.Int64);
        var runs = new List<GptRun>();
        foreach (double sp in sparsities)
        {
            manual_seed(2);
            var model = new TorchSharpGpt.NanoGpt(cfg);
            var decay = model.parameters().Where(p => p.dim() >= 2).ToList();
            var noDecay = model.parameters().Where(p => p.dim() < 2).ToList();
            var opt = optim.AdamW([new TorchSharp.Modules.AdamW.ParamGroup(decay, new() { weight_decay = 0.1 }), new TorchSharp.Modules.AdamW.ParamGroup(noDecay, new() { weight_decay = 0 })], lr: 1e-4);
            SparsityController? c = null;
            string kernel = "torchsharp-dense";
            if (sp > 0)
            {
                var handle = TorchSparsifier.Apply(model, SparsityConfig.Default(sp, seed: 3), opt);
                foreach (var l in handle.Layers) if (l.Layer is { } layer) layer.KernelMode = mode;
                c = new SparsityController(handle);
                kernel = string.Join(",", handle.Layers.Select(l => l.Kernel).Distinct());
            }
            var run = new GptRun(sp, model, opt, c, kernel);
            run.Step(idx, tgt); run.Step(idx, tgt); // compressed structures, optimizer state, the JIT
            Array.Clear(run.Phases);
            runs.Add(run);
        }
        int gc0 = GC.CollectionCount(0), gc2 = GC.CollectionCount(2);
        long alloc0 = GC.GetTotalAllocatedBytes(), aligned0 = Spdf.Sparsity.Kernels.AlignedBuffer.AllocatedBytes;
        for (int r = 0; r < rounds; r++)
            foreach (var run in runs)
                run.Samples.AddRange(Timing.Samples(() => run.Step(idx, tgt), secs / rounds, warmup: 0, minRuns: Math.Max(1, steps / rounds), warmupSeconds: 0));
        // Collections and allocations are counted over all models' steps together (the sparse ones allocate, the dense none).
        long measured = runs.Sum(x => x.Samples.Count);
        double gen0 = (double)(GC.CollectionCount(0) - gc0) / measured, gen2 = (double)(GC.CollectionCount(2) - gc2) / measured;
        double allocMb = (GC.GetTotalAllocatedBytes() - alloc0) / 1e6 / measured, alignedMb = (Spdf.Sparsity.Kernels.AlignedBuffer.AllocatedBytes - aligned0) / 1e6 / measured;
        foreach (var run in runs)
        {
            int n = run.Samples.Count;
            Quick.Emit(new Dictionary<string, object>
            {
                ["op"] = "torchsharp_gpt_train_step", ["sparsity"] = run.Sparsity, ["ms"] = Math.Round(Timing.Median(run.Samples), 1), ["min_ms"] = Math.Round(run.Samples.Min(), 1),
                ["layers"] = cfg.Layers, ["embd"] = cfg.Embd, ["heads"] = cfg.Heads, ["ctx"] = cfg.Context, ["batch"] = batch, ["vocab"] = cfg.Vocab,
                ["kernel"] = run.Kernel, ["threads"] = get_num_threads(), ["steps"] = n, ["rounds"] = rounds,
                ["gen0_per_step"] = Math.Round(gen0, 2), ["gen2_per_step"] = Math.Round(gen2, 2),
                ["managed_alloc_mb_per_step"] = Math.Round(allocMb, 2), ["aligned_buffer_alloc_mb_per_step"] = Math.Round(alignedMb, 2),
                ["mean_phase_ms"] = new Dictionary<string, double>
                {
                    ["forward"] = Math.Round(run.Phases[0] / n, 1), ["backward"] = Math.Round(run.Phases[1] / n, 1), ["mask_gradients"] = Math.Round(run.Phases[2] / n, 1),
                    ["optimizer"] = Math.Round(run.Phases[3] / n, 1), ["mask_weights"] = Math.Round(run.Phases[4] / n, 1),
                },
            });
        }
        foreach (var run in runs) run.Model.Dispose();
    }

    /// <summary>One model of <see cref="Gpt"/>: its optimizer, controller, step count, phase times and step samples.</summary>
    private sealed class GptRun(double sparsity, TorchSharpGpt.NanoGpt model, optim.Optimizer opt, SparsityController? controller, string kernel)
    {
        public double Sparsity { get; } = sparsity;
        public TorchSharpGpt.NanoGpt Model { get; } = model;
        public string Kernel { get; } = kernel;
        public List<double> Samples { get; } = [];
        public double[] Phases { get; } = new double[5]; // forward, backward, before-step hook, optimizer, after-step hook (ms, summed)
        private readonly System.Diagnostics.Stopwatch _clock = new();
        private long _step;

        private void Lap(int i) { Phases[i] += _clock.Elapsed.TotalMilliseconds; _clock.Restart(); }

        public void Step(Tensor idx, Tensor tgt)
        {
            using var scope = NewDisposeScope();
            _step++;
            _clock.Restart();
            controller?.BeginStep(_step);
            opt.zero_grad();
            var loss = Model.Loss(idx, tgt); Lap(0);
            loss.backward(); Lap(1);
            controller?.BeforeOptimizerStep(_step); Lap(2);
            opt.step(); Lap(3);
            controller?.AfterOptimizerStep(_step); Lap(4);
        }
    }

    /// <summary>
    /// <c>torchsharp-sqrt</c>: LibTorch's <c>sqrt</c> (what TorchSharp's Adam and AdamW take of every second moment each
    /// step) on a <c>[rows, cols]</c> tensor of positive values, then on the same tensor with a fraction <c>--sparsity</c>
    /// of exact zeros (a sparse weight's moment), then with 1 in their place (what the TorchSharp binding writes there
    /// for the step). One JSON line per tensor; medians.
    /// </summary>
    public static void Sqrt(Dictionary<string, string> o)
    {
        int rows = Quick.Int(o, "rows", 1536), cols = Quick.Int(o, "cols", 384);
        double sparsity = o.TryGetValue("sparsity", out var sp) ? double.Parse(sp, CultureInfo.InvariantCulture) : 0.75;
        double secs = Quick.Seconds(o);
        manual_seed(1);
        using var positive = rand([rows, cols]).add_(1e-3);
        using var kept = rand([rows, cols]).ge(sparsity);
        using var zeros = positive.mul(kept);
        using var ones = zeros.masked_fill(kept.logical_not(), 1f);
        foreach (var (name, t) in new[] { ("positive", positive), ("exact_zeros", zeros), ("ones_at_zeros", ones) })
        {
            var samples = Timing.Samples(() => t.sqrt().Dispose(), secs / 3);
            Quick.Emit(new Dictionary<string, object>
            {
                ["op"] = "torchsharp_sqrt", ["values"] = name, ["rows"] = rows, ["cols"] = cols, ["sparsity"] = name == "positive" ? 0 : sparsity,
                ["us"] = Math.Round(Timing.Median(samples) * 1000, 1), ["threads"] = get_num_threads(),
            });
        }
    }
}
