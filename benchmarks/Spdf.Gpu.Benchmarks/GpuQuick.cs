using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Spdf.Sparsity;
using Spdf.Sparsity.Kernels;
using Spdf.Sparsity.Masks;

namespace Spdf.Gpu.Benchmarks;

/// <summary>
/// The GPU quick mode, one JSON object per line:
/// <code>
/// quick gpu-linear --tokens T --in K --out M --sparsity 0,0.75,0.9 [--activations fp32,bf16] [--accelerator cuda|cpu] [--seconds S] [--check-tokens N] [--peak-tflops P]
/// </code>
/// One line per sparsity: <c>{"op":"gpu_linear","accelerator":"cuda"|"cpu","device":…,"sparsity":S,"fwd_ms":…,"fwd_bwd_ms":…,
/// "max_rel_err":…, …}</c>. Sparsity 0 runs the dense layer on Spdf's tiled SGEMM; any other the compressed sparse layer.
/// Times are medians of synchronised launches; GFLOP/s count kept weights only (2 per multiply-add), and the share of
/// the FP32 peak is given where the peak is known (<c>--peak-tflops</c>, or an H100/H200 by name). <c>max_rel_err</c>
/// compares the device's y, dX and dW on the first <c>--check-tokens</c> tokens (default 256) with Spdf.Sparsity's CPU
/// kernels on the same weights: the largest absolute difference over the largest reference magnitude, across the three.
/// <c>--activations</c> runs each sparse layer with FP32 activations and/or BF16 ones (<see cref="GpuActivationPrecision"/>;
/// the <c>"activations"</c> field says which; their error against the FP32 CPU kernels is BF16's rounding).
/// Without a CUDA device and without <c>--accelerator cpu</c> it prints <c>{"op":"gpu_linear","accelerator":"none"}</c>
/// and exits 0.
/// </summary>
public static class GpuQuick
{
    /// <summary>Runs one quick benchmark; returns the process exit code.</summary>
    public static int Run(string[] args)
    {
        if (args.Length == 0 || args[0] != "gpu-linear")
        {
            Console.Error.WriteLine("Usage: quick gpu-linear --tokens T --in K --out M --sparsity 0,0.75,0.9 [--activations fp32,bf16] [--accelerator cuda|cpu] [--seconds S] [--check-tokens N] [--peak-tflops P]");
            return 2;
        }
        try
        {
            return Linear(QuickArgs.Parse(args[1..]));
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine(e.Message);
            return 2;
        }
    }

    private static void Emit(object o) => Console.WriteLine(JsonSerializer.Serialize(o));

    private static int Linear(Dictionary<string, string> o)
    {
        int n = QuickArgs.Int(o, "tokens", 8192), k = QuickArgs.Int(o, "in", 768), m = QuickArgs.Int(o, "out", 3072);
        int checkTokens = Math.Min(n, QuickArgs.Int(o, "check-tokens", 256));
        double secs = QuickArgs.Real(o, "seconds", 2.0);
        var sparsities = (o.TryGetValue("sparsity", out var s) ? s : "0,0.5,0.75,0.9").Split(',').Select(v =>
        {
            if (!double.TryParse(v, CultureInfo.InvariantCulture, out double d) || !(d >= 0 && d < 1))
                throw new ArgumentException($"--sparsity {v}: expected a sparsity in [0, 1).");
            return d;
        }).ToArray();
        var precisions = (o.TryGetValue("activations", out var pr) ? pr : "fp32").Split(',').Select(v => v switch
        {
            "fp32" => GpuActivationPrecision.Float32,
            "bf16" => GpuActivationPrecision.BFloat16,
            _ => throw new ArgumentException($"--activations {v}: expected fp32 or bf16."),
        }).ToArray();
        string acc = o.TryGetValue("accelerator", out var a) ? a : "cuda";
        GpuAcceleratorKind kind = acc switch
        {
            "cuda" => GpuAcceleratorKind.Cuda,
            "cpu" => GpuAcceleratorKind.Cpu,
            _ => throw new ArgumentException($"--accelerator {acc}: expected cuda or cpu."),
        };
        GpuDevice device;
        try
        {
            device = GpuDevice.Create(kind);
        }
        catch (GpuUnavailableException e) when (kind == GpuAcceleratorKind.Cuda)
        {
            Console.Error.WriteLine(e.Message);
            Emit(new Dictionary<string, object> { ["op"] = "gpu_linear", ["accelerator"] = "none" });
            return 0;
        }
        using var _ = device;
        double? peak = o.ContainsKey("peak-tflops") ? QuickArgs.Real(o, "peak-tflops", 0) : KnownFp32PeakTflops(device.Name);
        Console.Error.WriteLine($"gpu-linear on {device}: [{n}, {k}] -> {m}, sparsities {string.Join(", ", sparsities)}" +
            (peak is { } p0 ? $", FP32 peak {p0} TFLOP/s" : ""));

        var rng = new Random(1);
        var x = Fill(rng, (long)n * k);
        var dy = Fill(rng, (long)n * m);
        var w = Fill(rng, (long)m * k, 1 / Math.Sqrt(k));
        var bias = Fill(rng, m);
        using var xb = device.Upload<float>(x, "x");
        using var dyb = device.Upload<float>(dy, "dY");
        using var yb = device.Allocate<float>((long)n * m, "y");
        using var dxb = device.Allocate<float>((long)n * k, "dX");
        using var x1 = device.Upload<float>(x.AsSpan(0, k), "one token");
        using var y1 = device.Allocate<float>(m, "one token's output");
        var adam = new GpuAdamWOptions(LearningRate: 1e-4);
        foreach (double sp in sparsities)
            foreach (var precision in sp == 0 ? [GpuActivationPrecision.Float32] : precisions)
            {
                var mask = sp == 0 ? SparsityMask.Dense(m, k) : MaskInitializers.Random.Create(w, m, k, sp, new SparsityRandom(3));
                using GpuLinear layer = sp == 0
                    ? new GpuDenseLinear(device, w, k, m, bias, hasBias: true, maxTokens: n)
                    : new GpuSparseLinear(device, w, mask, bias, hasBias: true, maxTokens: n, precision);
                double err = MaxRelErr(device, layer, mask, w, bias, x, dy, checkTokens, k, m);
                double fwd = Time(device, () => layer.Forward(xb.View, yb.View, n), secs);
                double bwdDw = Time(device, () => layer.Backward(dyb.View, xb.View, default, n), secs);
                double fb = Time(device, () => { layer.Forward(xb.View, yb.View, n); layer.Backward(dyb.View, xb.View, dxb.View, n); }, secs);
                double adamMs = Time(device, () => layer.AdamWStep(adam), secs / 2);
                double decode = layer is GpuSparseLinear sl
                    ? Time(device, () => sl.Decode(x1.View, y1.View), secs / 2)
                    : Time(device, () => layer.Forward(x1.View, y1.View, 1), secs / 2);
                double macs = (double)layer.MacsPerToken * n;
                double Gf(double flops, double ms) => flops / (ms * 1e6);
                Emit(new Dictionary<string, object?>
                {
                    ["op"] = "gpu_linear", ["accelerator"] = acc == "cpu" ? "cpu" : "cuda", ["device"] = device.Name,
                    ["sparsity"] = sp, ["tokens"] = n, ["in"] = k, ["out"] = m,
                    ["path"] = layer is GpuSparseLinear ? "sparse-csr" : "dense-sgemm", ["activations"] = precision == GpuActivationPrecision.BFloat16 ? "bf16" : "fp32",
                    ["kept"] = layer.MacsPerToken,
                    ["fwd_ms"] = R(fwd), ["fwd_bwd_ms"] = R(fb), ["dw_db_ms"] = R(bwdDw), ["dx_ms"] = R(Math.Max(0, fb - fwd - bwdDw)),
                    ["adamw_ms"] = R(adamMs), ["decode_ms"] = R(decode),
                    ["fwd_gflops"] = Math.Round(Gf(2 * macs, fwd), 1), ["fwd_bwd_gflops"] = Math.Round(Gf(6 * macs, fb), 1),
                    ["fwd_peak_share"] = peak is { } pk ? R(Gf(2 * macs, fwd) / (pk * 1e3)) : null,
                    ["fwd_bwd_peak_share"] = peak is { } pk2 ? R(Gf(6 * macs, fb) / (pk2 * 1e3)) : null,
                    ["max_rel_err"] = err, ["check_tokens"] = checkTokens,
                    ["device_mib"] = device.AllocatedBytes >> 20,
                });
            }
        return 0;
    }

    private static double R(double v) => Math.Round(v, 4);

    /// <summary>The FP32 (non-tensor-core) peak of devices this project has met, in TFLOP/s; null when unknown.</summary>
    private static double? KnownFp32PeakTflops(string name) =>
        name.Contains("H200", StringComparison.OrdinalIgnoreCase) || name.Contains("H100", StringComparison.OrdinalIgnoreCase) && !name.Contains("PCIe", StringComparison.OrdinalIgnoreCase)
            ? 67.0 : null;

    private static float[] Fill(Random rng, long n, double scale = 1)
    {
        var a = new float[n];
        for (long i = 0; i < n; i++) a[i] = (float)((rng.NextDouble() * 2 - 1) * scale);
        return a;
    }

    /// <summary>The median time of <paramref name="launch"/> and a synchronisation, after warm-up (the first launch compiles).</summary>
    private static double Time(GpuDevice device, Action launch, double seconds)
    {
        for (int i = 0; i < 3; i++) launch();
        device.Synchronize();
        var times = new List<double>();
        var total = Stopwatch.StartNew();
        while (times.Count < 5 || total.Elapsed.TotalSeconds < seconds)
        {
            var sw = Stopwatch.StartNew();
            launch();
            device.Synchronize();
            times.Add(sw.Elapsed.TotalMilliseconds);
            if (times.Count >= 10_000) break;
        }
        times.Sort();
        return times[times.Count / 2];
    }

    /// <summary>The device's y, dX and dW on the first <paramref name="t"/> tokens against the CPU kernels.</summary>
    private static double MaxRelErr(GpuDevice device, GpuLinear layer, SparsityMask mask, float[] w, float[] bias, float[] x, float[] dy, int t, int k, int m)
    {
        var xs = x.AsSpan(0, t * k).ToArray();
        var dys = dy.AsSpan(0, t * m).ToArray();
        using var xb = device.Upload<float>(xs, "check x");
        using var dyb = device.Upload<float>(dys, "check dY");
        using var yb = device.Allocate<float>(t * m, "check y");
        using var dxb = device.Allocate<float>(t * k, "check dX");
        layer.Forward(xb.View, yb.View, t);
        layer.Backward(dyb.View, xb.View, dxb.View, t);
        var y = yb.ToArray();
        var dx = dxb.ToArray();
        var dw = layer.DownloadWeightGrad();

        var csr = CsrMatrix.FromMask(mask);
        csr.Gather(w);
        var csrT = csr.TransposeStructure(out _);
        csrT = csrT.WithValues(new float[csrT.Nnz]);
        csrT.Gather(w);
        var yRef = new float[t * m];
        SparseLinearKernels.Forward(csr, xs, yRef, t, bias);
        var dxRef = new float[t * k];
        var dwValues = new float[csr.Nnz];
        SparseLinearKernels.Backward(csr, csrT, default, dys, xs, t, dxRef, dwValues, default);
        var dwRef = new float[m * k];
        csr.Scatter(dwValues, dwRef);
        return Math.Max(RelErr(y, yRef), Math.Max(RelErr(dx, dxRef), RelErr(dw, dwRef)));
    }

    private static double RelErr(float[] a, float[] b)
    {
        double maxDiff = 0, maxRef = 0;
        for (int i = 0; i < a.Length; i++)
        {
            maxDiff = Math.Max(maxDiff, Math.Abs((double)a[i] - b[i]));
            maxRef = Math.Max(maxRef, Math.Abs((double)b[i]));
        }
        return maxRef == 0 ? maxDiff : maxDiff / maxRef;
    }
}
