using System.Globalization;
using Spdf.Sparsity;
using Spdf.Sparsity.Kernels;
using Spdf.Sparsity.Masks;
using Spdf.Tensors;
using Spdf.Tensors.Kernels.Cpu;

namespace Spdf.Benchmarks;

/// <summary>
/// <c>quick sweep</c>: how the compressed kernels' speed-up over our dense GEMM grows with sparsity and with the number
/// of tokens, kernel by kernel (forward <c>X·Wᵀ</c>, input gradient <c>dY·W</c>, weight gradient at kept places), for a
/// layer <c>width → 4·width</c>. Prints one JSON line per point, with the FLOP bound 1 / (1 − sparsity), and with
/// <c>--chart DIR</c> draws the curves (SVG and PNG). In the token sweep each point also says which kernel
/// <see cref="SparseKernelMode.Auto"/> picks there (<see cref="KernelChoice.Faster"/> on the forward pass, as a layer
/// does on its first input), so the automatic choice can be checked against the measured crossover.
/// <code>
/// quick sweep [--widths 256,768,2048] [--tokens 2048] [--sparsity 0.5,0.75,0.9,0.95,0.99]
///             [--token-sweep 1,64,512,2048,8192 --token-width 768 --token-sparsity 0.5,0.75,0.9] [--seconds S] [--chart DIR]
/// </code>
/// </summary>
internal static class SweepQuick
{
    private sealed record Point(string Sweep, int Width, int Tokens, double Sparsity, string Kernel, double DenseMs, double SparseMs, string? Auto);

    private static readonly string[] Kernels = ["forward", "input_grad", "weight_grad"];

    public static void Run(Dictionary<string, string> o)
    {
        static int[] Ints(string s) => s.Split(',').Select(v => int.Parse(v, CultureInfo.InvariantCulture)).ToArray();
        static double[] Doubles(string s) => s.Split(',').Select(v => double.Parse(v, CultureInfo.InvariantCulture)).ToArray();
        var widths = Ints(o.TryGetValue("widths", out var w) ? w : "256,768,2048");
        int tokens = Quick.Int(o, "tokens", 2048);
        var sparsities = Doubles(o.TryGetValue("sparsity", out var s) ? s : "0.5,0.75,0.9,0.95,0.99");
        var tokenSweep = Ints(o.TryGetValue("token-sweep", out var ts) ? ts : "1,64,512,2048,8192");
        int tokenWidth = Quick.Int(o, "token-width", 768);
        var tokenSparsities = Doubles(o.TryGetValue("token-sparsity", out var tsp) ? tsp : "0.5,0.75,0.9");
        if (sparsities.Concat(tokenSparsities).FirstOrDefault(v => !(v >= 0 && v < 1)) is var bad && (bad < 0 || bad >= 1))
            throw new ArgumentException($"--sparsity: {bad} is outside [0, 1).");
        double secs = o.TryGetValue("seconds", out var sec) ? double.Parse(sec, CultureInfo.InvariantCulture) : 0.6;
        var points = new List<Point>();
        foreach (int width in widths)
            foreach (double sp in sparsities)
                points.AddRange(Measure("sparsity", width, tokens, sp, secs, auto: false));
        foreach (int n in tokenSweep)
            foreach (double sp in tokenSparsities)
                points.AddRange(Measure("tokens", tokenWidth, n, sp, secs, auto: true));
        if (o.TryGetValue("chart", out var dir)) Draw(points, dir);
    }

    private static IEnumerable<Point> Measure(string sweep, int width, int n, double sp, double secs, bool auto)
    {
        int k = width, m = 4 * width;
        var g = new Generator(1);
        var w = Tensor.Randn(new Shape(m, k), g);
        var mask = MaskInitializers.Random.Create(w, sp, new SparsityRandom(g.NextUInt64()));
        mask.Apply(w.AsSpan());
        var csr = CsrMatrix.FromMask(mask);
        csr.Gather(w.AsReadOnlySpan());
        var wt = new float[k * m];
        var mt = new float[k * m];
        for (int r = 0; r < m; r++)
            for (int c = 0; c < k; c++) { wt[c * m + r] = w.AsReadOnlySpan()[r * k + c]; mt[c * m + r] = mask.Values[r * k + c]; }
        var csrT = CsrMatrix.FromMask(new SparsityMask(mt, k, m));
        csrT.Gather(wt);
        var x = Tensor.Randn(new Shape(n, k), g).ToArray();
        var dy = Tensor.Randn(new Shape(n, m), g).ToArray();
        var y = new float[n * m];
        var dx = new float[n * k];
        var dw = new float[m * k];
        var dwValues = new float[csr.Nnz];
        var wd = w.AsReadOnlySpan().ToArray();
        (string, Action, Action)[] pairs =
        [
            ("forward", () => Gemm.MatMul(x, false, wd, true, y, n, m, k), () => SparseLinearKernels.Forward(csr, x, y, n)),
            ("input_grad", () => Gemm.MatMul(dy, false, wd, false, dx, n, k, m), () => SparseLinearKernels.Backward(csr, csrT, default, dy, x, n, dx, default, default)),
            ("weight_grad", () => Gemm.MatMul(dy, true, x, false, dw, m, k, n), () => SparseLinearKernels.Backward(csr, null, default, dy, x, n, default, dwValues, default)),
        ];
        string? choice = auto ? KernelChoice.Faster(pairs[0].Item2, pairs[0].Item3) == SparseKernelMode.Compressed ? "compressed" : "masked-dense" : null;
        foreach (var (name, dense, sparse) in pairs)
        {
            double d = Timing.MedianMs(dense, secs, warmup: 2, minRuns: 5, warmupSeconds: 0.1);
            double sparseMs = Timing.MedianMs(sparse, secs, warmup: 2, minRuns: 5, warmupSeconds: 0.1);
            var p = new Point(sweep, width, n, sp, name, d, sparseMs, choice);
            var line = new Dictionary<string, object>
            {
                ["op"] = "kernel_sweep", ["sweep"] = sweep, ["in"] = k, ["out"] = m, ["tokens"] = n, ["sparsity"] = sp, ["kernel"] = name,
                ["dense_ms"] = Math.Round(d, 4), ["sparse_ms"] = Math.Round(sparseMs, 4), ["speedup"] = Math.Round(d / sparseMs, 3),
                ["flop_bound"] = Math.Round(1 / (1 - sp), 2), ["share_of_bound"] = Math.Round(d / sparseMs * (1 - sp), 3),
            };
            if (choice is not null) line["auto"] = choice;
            Quick.Emit(line);
            yield return p;
        }
    }

    private static void Draw(List<Point> points, string dir)
    {
        Directory.CreateDirectory(dir);
        foreach (var kernel in Kernels)
        {
            var bySparsity = points.Where(p => p.Sweep == "sparsity" && p.Kernel == kernel).ToList();
            if (bySparsity.Count > 0)
            {
                var series = bySparsity.GroupBy(p => p.Width).Select(gr => ($"{gr.Key} → {4 * gr.Key}", (IReadOnlyList<(double, double)>)gr.Select(p => (p.Sparsity, p.DenseMs / p.SparseMs)).ToList())).ToList();
                var sps = bySparsity.Select(p => p.Sparsity).Distinct().Order().ToList();
                series.Add(("FLOP bound 1/(1−s)", sps.Select(v => (v, 1 / (1 - v))).ToList()));
                Charts.Save(Charts.LogLines($"{kernel.Replace('_', ' ')}: compressed vs dense, {bySparsity[0].Tokens} tokens", "sparsity", "speed-up over our dense GEMM", series), dir, $"sweep_sparsity_{kernel}");
            }
            var byTokens = points.Where(p => p.Sweep == "tokens" && p.Kernel == kernel).ToList();
            if (byTokens.Count > 0)
            {
                var series = byTokens.GroupBy(p => p.Sparsity).Select(gr => ($"{gr.Key:P0} sparse", (IReadOnlyList<(double, double)>)gr.Select(p => (Math.Log10(p.Tokens), p.DenseMs / p.SparseMs)).ToList())).ToList();
                series.Add(("break-even (1×)", byTokens.Select(p => Math.Log10(p.Tokens)).Distinct().Order().Select(t => (t, 1.0)).ToList()));
                Charts.Save(Charts.LogLines($"{kernel.Replace('_', ' ')}: compressed vs dense, layer {byTokens[0].Width} → {4 * byTokens[0].Width}", "log10(tokens per step)", "speed-up over our dense GEMM", series), dir, $"sweep_tokens_{kernel}");
            }
        }
    }
}
