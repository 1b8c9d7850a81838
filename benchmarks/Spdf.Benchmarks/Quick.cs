using Spdf.Sparsity.Kernels;
using System.Globalization;
using System.Text.Json;
using Spdf.Sparsity;
using Spdf.Sparsity.Masks;
using Spdf.Tensors;
using Spdf.Tensors.Kernels.Cpu;
using Spdf.Tensors.Nn;

namespace Spdf.Benchmarks;

/// <summary>
/// The quick mode: fast side-by-side runs printing one JSON object per line (medians over a fixed time budget).
/// <code>
/// quick linear --tokens N --in K --out M --sparsity 0,0.5,0.75,0.9 [--kernel compressed|maskeddense|auto] [--storage compressed|dense] [--seconds S]
/// quick attention --batch B --heads H --ctx T --head-dim E
/// quick elementwise --rows N --cols C [--vocab V] [--loss-chunk R]   (LayerNorm, GELU on [N, 4C], residual add, the fused LM head and loss: forward and forward + backward)
/// quick gemm --m M --n N --k K [--threads T] [--kc KC]
/// quick gpt --layers L --embd D --heads H --ctx T --batch B --vocab V --sparsity 0,0.75 [--omission 0,0.5 [--omit-units both|channels|heads] [--omit-score S] [--omit-selection topk|sampled]] [--storage compressed|dense] [--loss fused|unfused]
/// quick transpose --rows N --cols 128,512,3072   (token-block transposes against a copy of the same bytes)
/// quick gpt-pair (the gpt options) [--sparsity 0.75] [--steps N]: the dense and the sparse step in turns in one process; medians and the median ratio
/// quick distill (the gpt options) [--steps N]: a SquareHead distillation step (fused student loss, teacher blocks only)
///   against the same step through both models' logits, and a plain step, interleaved; medians
/// quick gpt-phases (the gpt options, one sparsity) [--steps N] [--warmup N] [--profile 1] [--vary-ctx MIN [--vary-multiple M]]:
///   forward/backward/optimizer medians; with --profile, each op's forward and backward time per step (OpProfiler), as
///   JSON lines and a table on stderr; with --vary-ctx, each step's length drawn in [MIN, ctx] (rounded up to M)
/// quick decode --preset gpt2-small --sparsity 0,0.75
/// quick spmm --tokens N --in K --out M --sparsity S [--panel P] [--mask N:M]
/// quick mlp --tokens N --width C [--hidden H] [--sparsity S]   (the fused sparse MLP against its layers and the dense MLP)
/// quick peak
/// quick mask-algorithms --preset gpt2-small|gpt3-xl [--algorithms gmp,gmp-global,set,rigl,erk]
/// quick sweep [--widths 256,768,2048] [--sparsity …] [--token-sweep 1,64,512,2048,8192] [--chart DIR]   (speed-up per kernel vs sparsity and tokens)
/// quick crossover [--widths 128,384,768] [--tokens 1,16,64,512,2048] [--density 0.1,…,0.9] [--rounds R]   (where a whole layer hands over to masked-dense; the Heuristic rule's picks)
/// mpiexec -n N … quick ddp (the gpt options) --sparsity 0,0.75 [--steps N] [--bucket-mb MB]   (data-parallel step on MPI)
/// quick torchsharp-linear --tokens N --in K --out M --sparsity 0,0.75,0.9 [--kernel compressed|maskeddense|auto] [--rounds R] [--seconds S]
/// quick torchsharp-sqrt --rows R --cols C --sparsity 0.75    (LibTorch's sqrt on a moment with exact zeros)
/// quick gpu-linear --tokens T --in K --out M --sparsity 0,0.75,0.9 [--accelerator cuda|cpu] [--seconds S] [--check-tokens N] [--peak-tflops P]
///   (Spdf.Gpu's kernels; prints {"op":"gpu_linear","accelerator":"none"} without a CUDA device unless --accelerator cpu)
/// quick torchsharp-gpt --layers L --embd D --heads H --ctx T --batch B --vocab V --sparsity 0,0.75 [--kernel ...] [--steps N] [--rounds R]
/// </code>
/// </summary>
public static class Quick
{
    /// <summary>Runs one quick benchmark; returns the process exit code.</summary>
    public static int Run(string[] args)
    {
        if (args.Length == 0) return Usage("missing benchmark name");
        var opts = Parse(args[1..]);
        try
        {
            switch (args[0])
            {
                case "linear": Linear(opts); return 0;
                case "attention": Attention(opts); return 0;
                case "elementwise": Elementwise(opts); return 0;
                case "transpose": Transpose(opts); return 0;
                case "gemm": GemmRun(opts); return 0;
                case "peak": PeakRun(opts); return 0;
                case "gpt": Gpt(opts, args[1..]); return 0;
                case "gpt-one": GptOne(opts); return 0;
                case "gpt-phases": GptPhases(opts); return 0;
                case "gpt-pair": GptPair(opts); return 0;
                case "distill": Distill(opts); return 0;
                case "spmm": SpmmBreakdown(opts); return 0;
                case "mlp": Mlp(opts); return 0;
                case "decode": Decode(opts); return 0;
                case "torchsharp-linear": TorchSharpQuick.Linear(opts); return 0;
                case "torchsharp-gpt": TorchSharpQuick.Gpt(opts); return 0;
                case "torchsharp-sqrt": TorchSharpQuick.Sqrt(opts); return 0;
                case "mask-algorithms": MaskAlgorithmsQuick.Run(opts); return 0;
                case "ddp": return DdpQuick.Run(opts, args[1..]);
                case "sweep": SweepQuick.Run(opts); return 0;
                case "crossover": CrossoverQuick.Run(opts); return 0;
                case "gpu-linear": return Spdf.Gpu.Benchmarks.GpuQuick.Run(args); // the GPU kernels (benchmarks/Spdf.Gpu.Benchmarks)
                default: return Usage($"unknown benchmark '{args[0]}'");
            }
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine(e.Message);
            return 2;
        }
    }

    private static int Usage(string why)
    {
        Console.Error.WriteLine($"{why}. Usage: quick linear|attention|elementwise|transpose|gemm|gpt|gpt-pair|gpt-phases|distill|decode|spmm|mlp|sweep|crossover|peak [--option value ...] (see docs/benchmarks.md)");
        return 2;
    }

    private static Dictionary<string, string> Parse(string[] a) => Spdf.Gpu.Benchmarks.QuickArgs.Parse(a);

    internal static int Int(Dictionary<string, string> o, string name, int dflt) => Spdf.Gpu.Benchmarks.QuickArgs.Int(o, name, dflt);

    internal static double Seconds(Dictionary<string, string> o) =>
        o.TryGetValue("seconds", out var s) ? double.Parse(s, CultureInfo.InvariantCulture) : 3.0;

    internal static void Emit(object o) => Console.WriteLine(JsonSerializer.Serialize(o));

    private static void Linear(Dictionary<string, string> o)
    {
        int n = Int(o, "tokens", 2048), k = Int(o, "in", 768), m = Int(o, "out", 3072);
        double secs = Seconds(o);
        var sparsities = (o.TryGetValue("sparsity", out var s) ? s : "0,0.5,0.75,0.9")
            .Split(',').Select(v => double.Parse(v, CultureInfo.InvariantCulture)).ToArray();
        var kernelMode = o.TryGetValue("kernel", out var km) ? Enum.Parse<SparseKernelMode>(km, ignoreCase: true) : SparseKernelMode.Compressed;
        bool useScope = !o.TryGetValue("scope", out var sc) || sc != "0";
        var storage = o.TryGetValue("storage", out var st) ? Enum.Parse<SparseWeightStorage>(st, ignoreCase: true) : SparseWeightStorage.Compressed;
        var g = new Generator(1);
        var x = Tensor.Randn(new Shape(n, k), g); x.RequiresGrad = true;
        var dy = Tensor.Randn(new Shape(n, m), g);
        foreach (double sp in sparsities)
        {
            Linear layer = new(k, m, generator: new Generator(2));
            if (sp > 0)
            {
                var sparse = SparseLinear.FromLinear(layer, MaskInitializers.Random.Create(layer.Weight, sp, new SparsityRandom(3)), storage);
                sparse.KernelMode = kernelMode;
                layer = sparse;
            }
            // As in training (Trainer): each pass in a TensorScope, so outputs come from the engine's pool (--scope 0: fresh arrays).
            Tensors.Autograd.TensorScope? Scope() => useScope ? Tensors.Autograd.TensorScope.Enter() : null;
            var (fwd, fwdMin) = Timing.Measure(() => { using var s = Scope(); using var _ = Tensors.Autograd.GradMode.NoGrad(); layer.Forward(x); }, secs);
            var (fb, fbMin) = Timing.Measure(() =>
            {
                using var s = Scope();
                // As a training loop does (optimizer.ZeroGrad(setToNone: false)): gradients are zeroed in place and accumulated into.
                foreach (var t in layer.Parameters().Cast<Tensor>().Append(x))
                    if (!useScope || t.Grad is null) t.Grad = null; else t.Grad.AsSpan().Clear();
                layer.Forward(x).Backward(dy);
            }, secs);
            string kernel = layer is SparseLinear sl ? sl.Kernel : "dense-" + Gemm.KernelName;
            Emit(new Dictionary<string, object>
            {
                ["op"] = "linear", ["tokens"] = n, ["in"] = k, ["out"] = m, ["sparsity"] = sp,
                ["fwd_ms"] = Math.Round(fwd, 3), ["fwd_bwd_ms"] = Math.Round(fb, 3),
                ["fwd_min_ms"] = Math.Round(fwdMin, 3), ["fwd_bwd_min_ms"] = Math.Round(fbMin, 3), ["kernel"] = kernel, ["scope"] = useScope,
                ["storage"] = layer is SparseLinear sw ? sw.Storage.ToString().ToLowerInvariant() : "dense",
                ["fwd_gflops"] = Math.Round(2.0 * n * k * m / fwd / 1e6, 1), ["fwd_bwd_gflops"] = Math.Round(6.0 * n * k * m / fb / 1e6, 1),
            });
        }
    }

    private static void Attention(Dictionary<string, string> o)
    {
        int b = Int(o, "batch", 8), h = Int(o, "heads", 6), t = Int(o, "ctx", 256), e = Int(o, "head-dim", 64);
        double secs = Seconds(o);
        var g = new Generator(1);
        // The packed op the GPT runs (qkv [B, T, 3C] in, [B, T, C] out), forward alone and forward + backward, each inside a
        // tensor scope as in a training step (gradients from the pool, returned at the scope's end).
        var qkv = Tensor.Randn(new Shape(b, t, 3 * h * e), g); qkv.RequiresGrad = true;
        var dout = Tensor.Randn(new Shape(b, t, h * e), g);
        var fwd = Timing.Measure(() => { using var s = Tensors.Autograd.TensorScope.Enter(); using var _ = Tensors.Autograd.GradMode.NoGrad(); Functional.CausalSelfAttentionPacked(qkv, h); }, secs);
        var fb = Timing.Measure(() =>
        {
            using var _ = Tensors.Autograd.TensorScope.Enter();
            qkv.Grad = null;
            Functional.CausalSelfAttentionPacked(qkv, h).Backward(dout);
        }, secs);
        // FLOPs of the causal products (half of each T × T product): forward QKᵀ and PV, backward five products.
        double flops = 2.0 * b * h * t * t * e; // two products × 2 FLOPs × half of T²
        Emit(new Dictionary<string, object>
        {
            ["op"] = "attention", ["batch"] = b, ["heads"] = h, ["ctx"] = t, ["head_dim"] = e,
            ["fwd_ms"] = Math.Round(fwd.Median, 3), ["fwd_bwd_ms"] = Math.Round(fb.Median, 3), ["fwd_min_ms"] = Math.Round(fwd.Min, 3), ["fwd_bwd_min_ms"] = Math.Round(fb.Min, 3),
            ["fwd_gflops"] = Math.Round(flops / fwd.Median / 1e6, 1), ["fwd_bwd_gflops"] = Math.Round(3.5 * flops / fb.Median / 1e6, 1),
        });
    }

    /// <summary>The per-token ops of a block at one shape: LayerNorm, GELU and the residual add, forward and forward +
    /// backward (what a GPT step spends outside its products).</summary>
    /// <summary>
    /// The sparse kernels' token-block transposes (<see cref="BlockTranspose"/>) of a row-major <c>[rows, cols]</c>
    /// activation, to blocks and back, beside a plain copy of the same bytes (the memory's own speed), hot in cache or
    /// not as the size decides: <c>quick transpose --rows 2048 --cols 128,512,3072</c>.
    /// </summary>
    private static void Transpose(Dictionary<string, string> o)
    {
        int rows = Int(o, "rows", 2048);
        double secs = Seconds(o);
        foreach (var cs in (o.TryGetValue("cols", out var c) ? c : "128,512,3072").Split(','))
        {
            int cols = int.Parse(cs, CultureInfo.InvariantCulture);
            var src = Tensor.Randn(new Shape(rows, cols), new Generator(1)).ToArray();
            var back = new float[src.Length];
            var blocks = new float[SparseKernels.BlockedLength(cols, rows)];
            int stride = SparseKernels.BlockStride(cols);
            double to = Timing.MedianMs(() => BlockTranspose.ToBlocks(src, rows, cols, SparseKernels.TokenBlock, blocks, stride), secs);
            double from = Timing.MedianMs(() => BlockTranspose.FromBlocks(blocks, rows, cols, SparseKernels.TokenBlock, back, stride), secs);
            double copy = Timing.MedianMs(() => src.AsSpan().CopyTo(back), secs);
            if (!back.AsSpan().SequenceEqual(src)) throw new InvalidOperationException("transpose: the round trip changed the data.");
            double gb = 2.0 * src.Length * sizeof(float) / 1e9; // bytes read and written
            Emit(new Dictionary<string, object>
            {
                ["op"] = "transpose", ["rows"] = rows, ["cols"] = cols, ["to_blocks_ms"] = Math.Round(to, 4), ["from_blocks_ms"] = Math.Round(from, 4),
                ["copy_ms"] = Math.Round(copy, 4), ["to_blocks_gb_s"] = Math.Round(gb / (to / 1e3), 1), ["copy_gb_s"] = Math.Round(gb / (copy / 1e3), 1),
            });
        }
    }

    private static void Elementwise(Dictionary<string, string> o)
    {
        int rows = Int(o, "rows", 2048), cols = Int(o, "cols", 128);
        double secs = Seconds(o);
        var g = new Generator(1);
        Tensor Mk(int r, int c, bool grad) { var z = Tensor.Randn(new Shape(r, c), g); z.RequiresGrad = grad; return z; }
        var x = Mk(rows, cols, true);
        var w = Tensor.Randn(new Shape(cols), g); w.RequiresGrad = true;
        var bias = Tensor.Randn(new Shape(cols), g); bias.RequiresGrad = true;
        var h = Mk(rows, 4 * cols, true);
        var dy = Mk(rows, cols, false);
        var dh = Mk(rows, 4 * cols, false);
        var y2 = Mk(rows, cols, true);
        // As a training loop does (ZeroGrad(setToNone: false)): gradients are zeroed in place and accumulated into.
        void Clear() { foreach (var t in new[] { x, w, bias, h, y2 }) t.Grad?.AsSpan().Clear(); }
        foreach (var (name, fwd, back, elems) in new (string, Func<Tensor>, Tensor, long)[]
        {
            ("layernorm", () => Functional.LayerNorm(x, w, bias), dy, (long)rows * cols),
            ("gelu", () => h.Gelu(), dh, (long)rows * 4 * cols),
            ("add", () => x + y2, dy, (long)rows * cols),
        })
        {
            double f = Timing.MedianMs(() => { using var _ = Tensors.Autograd.GradMode.NoGrad(); using var s = Tensors.Autograd.TensorScope.Enter(); fwd(); }, secs);
            double fb = Timing.MedianMs(() => { Clear(); using var s = Tensors.Autograd.TensorScope.Enter(); fwd().Backward(back); }, secs);
            Emit(new Dictionary<string, object> { ["op"] = name, ["rows"] = rows, ["cols"] = name == "gelu" ? 4 * cols : cols, ["fwd_ms"] = Math.Round(f, 4),
                ["fwd_bwd_ms"] = Math.Round(fb, 4), ["fwd_gb_s"] = Math.Round(elems * 8.0 / f / 1e6, 1) });
        }
        // The tied LM head with its loss (fused, as the GPT computes it): its gradients are computed with the loss.
        int vocab = Int(o, "vocab", 928), chunk = Int(o, "loss-chunk", 0); // --loss-chunk: rows per chunk (0: the default)
        var head = Tensor.Randn(new Shape(vocab, cols), g); head.RequiresGrad = true;
        var targets = new IntTensor(Enumerable.Range(0, rows).Select(i => (int)((i * 2654435761L) % vocab)).ToArray(), new Shape(rows));
        double lf = Timing.MedianMs(() => { using var _ = Tensors.Autograd.GradMode.NoGrad(); Functional.LinearCrossEntropy(x, head, targets, chunk: chunk); }, secs);
        double lfb = Timing.MedianMs(() => { x.Grad?.AsSpan().Clear(); head.Grad?.AsSpan().Clear(); using var s = Tensors.Autograd.TensorScope.Enter(); Functional.LinearCrossEntropy(x, head, targets, chunk: chunk).Backward(); }, secs);
        Emit(new Dictionary<string, object> { ["op"] = "lm_head_loss", ["rows"] = rows, ["cols"] = cols, ["vocab"] = vocab, ["chunk"] = chunk == 0 ? Functional.LinearCrossEntropyChunk(vocab) : chunk, ["fwd_ms"] = Math.Round(lf, 4),
            ["fwd_bwd_ms"] = Math.Round(lfb, 4), ["fwd_bwd_gflops"] = Math.Round(6.0 * rows * cols * vocab / lfb / 1e6, 1) });
    }

    private static void GemmRun(Dictionary<string, string> o)
    {
        int m = Int(o, "m", 2048), n = Int(o, "n", 2048), k = Int(o, "k", 2048);
        double secs = Seconds(o);
        Gemm.MaxThreads = Int(o, "threads", Environment.ProcessorCount);
        Gemm.KC = Int(o, "kc", Gemm.KC);
        var g = new Generator(1);
        var a = Tensor.Randn(new Shape(m, k), g).ToArray();
        var b = Tensor.Randn(new Shape(k, n), g).ToArray();
        var c = new float[m * n];
        var peak = Peak.Measure(0.5);
        foreach (var (ta, tb, name) in new[] { (false, false, "nn"), (false, true, "nt"), (true, false, "tn") })
        {
            double ms = Timing.MedianMs(() => Gemm.MatMul(a, ta, b, tb, c, m, n, k), secs);
            double gf = 2.0 * m * n * k / ms / 1e6;
            Emit(new Dictionary<string, object>
            {
                ["op"] = "gemm", ["layout"] = name, ["m"] = m, ["n"] = n, ["k"] = k, ["ms"] = Math.Round(ms, 3), ["gflops"] = Math.Round(gf, 1),
                ["peak_gflops"] = Math.Round(peak.AllCores, 1), ["pct_peak"] = Math.Round(100 * gf / (Gemm.MaxThreads == 1 ? peak.PerCore : peak.AllCores), 1), ["kernel"] = Gemm.KernelName, ["threads"] = Gemm.MaxThreads,
            });
        }
    }

    /// <summary>Runs <c>gpt-one</c> in a child process per sparsity, so that each peak working set is its own.</summary>
    private static void Gpt(Dictionary<string, string> o, string[] raw)
    {
        var sparsities = (o.TryGetValue("sparsity", out var s) ? s : "0,0.75").Split(',');
        var omissions = (o.TryGetValue("omission", out var om) ? om : "0").Split(',');
        string self = Environment.ProcessPath!;
        string dll = typeof(Quick).Assembly.Location;
        foreach (var sp in sparsities)
        foreach (var rate in omissions)
        {
            var psi = new System.Diagnostics.ProcessStartInfo(self) { RedirectStandardOutput = true, UseShellExecute = false };
            if (!self.EndsWith("Spdf.Benchmarks", StringComparison.Ordinal)) psi.ArgumentList.Add(dll);
            psi.ArgumentList.Add("quick"); psi.ArgumentList.Add("gpt-one");
            foreach (var (k, v) in o) if (k is not ("sparsity" or "omission")) { psi.ArgumentList.Add("--" + k); psi.ArgumentList.Add(v); }
            psi.ArgumentList.Add("--sparsity"); psi.ArgumentList.Add(sp);
            psi.ArgumentList.Add("--omission"); psi.ArgumentList.Add(rate);
            using var p = System.Diagnostics.Process.Start(psi)!;
            Console.Write(p.StandardOutput.ReadToEnd());
            p.WaitForExit();
            if (p.ExitCode != 0) throw new ArgumentException($"gpt benchmark at sparsity {sp}, omission {rate} failed with exit code {p.ExitCode}.");
        }
        _ = raw;
    }

    /// <summary>
    /// The dense step and the sparse step (--sparsity S, default 0.75) side by side in one process: two copies of the
    /// same GPT, one sparsified, take steps in turns (--steps N pairs after two warm-up pairs), and the result is the
    /// median of each and the median of the pairs' ratios. On a shared machine whose speed drifts over seconds, steps
    /// 50–100 ms apart see the same machine, where separate processes minutes apart do not.
    /// </summary>
    private static void GptPair(Dictionary<string, string> o)
    {
        int steps = Int(o, "steps", 30);
        var (_, _, dense, idx, tgt) = GptSetup(o);
        var (_, _, sparse, _, _) = GptSetup(o);
        var so = new Dictionary<string, string>(o) { ["sparsity"] = o.GetValueOrDefault("sparsity", "0.75") };
        var (sp, _, _) = Sparsify(so, sparse);
        var optD = new Tensors.Optim.AdamW(dense.Parameters(), 1e-4);
        var optS = new Tensors.Optim.AdamW(sparse.Parameters(), 1e-4);
        double Step(Spdf.Gpt.GptModel m, Tensors.Optim.AdamW opt, IntTensor x, IntTensor y) => TimedStep(opt, () => m.Loss(x, y));
        var d = new List<double>(); var s = new List<double>(); var r = new List<double>();
        for (int i = 0; i < steps + 2; i++)
        {
            // Alternate which goes first, so that neither always follows the other.
            double a, b;
            if (i % 2 == 0) { a = Step(dense, optD, idx, tgt); b = Step(sparse, optS, idx, tgt); }
            else { b = Step(sparse, optS, idx, tgt); a = Step(dense, optD, idx, tgt); }
            if (i < 2) continue;
            d.Add(a); s.Add(b); r.Add(a / b);
        }
        static double Med(List<double> x) => x.Order().ElementAt(x.Count / 2);
        Emit(new Dictionary<string, object>
        {
            ["op"] = "gpt_pair", ["sparsity"] = sp, ["steps"] = steps, ["dense_ms"] = Math.Round(Med(d), 1), ["sparse_ms"] = Math.Round(Med(s), 1),
            ["speedup"] = Math.Round(Med(r), 3), ["speedup_p25"] = Math.Round(r.Order().ElementAt(r.Count / 4), 3), ["speedup_p75"] = Math.Round(r.Order().ElementAt(r.Count * 3 / 4), 3),
        });
    }

    /// <summary>One training step as the trainer takes it (the loss and its backward pass in a tensor scope, then the
    /// optimizer), in ms.</summary>
    private static double TimedStep(Tensors.Optim.AdamW opt, Func<Tensor> loss)
    {
        long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
        using (Tensors.Autograd.TensorScope.Enter())
        {
            var l = loss();
            opt.ZeroGrad(setToNone: false);
            l.Backward();
        }
        opt.Step();
        return System.Diagnostics.Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
    }

    /// <summary>
    /// A SquareHead distillation step (the trainer's: the student's fused loss and block outputs, the teacher's block
    /// outputs without grad) against the same step composed through <see cref="Spdf.Gpt.GptModel.ForwardWithHidden"/>
    /// (both models' logits held, the loss on them), and a plain step: interleaved, medians in ms, on the gpt benchmarks'
    /// model (--layers --embd --heads --ctx --vocab --batch; --steps).
    /// </summary>
    private static void Distill(Dictionary<string, string> o)
    {
        int steps = Int(o, "steps", 20);
        var (cfg, _, student, idx, tgt) = GptSetup(o);
        var (_, _, teacher, _, _) = GptSetup(o);
        Sparsify(o, student); // --sparsity S --storage dense: a student pruned as GMP prunes it (masked-dense)
        teacher.Eval();
        var opt = new Tensors.Optim.AdamW(student.Parameters(), 1e-4);
        double Time(Func<Tensor> loss) => TimedStep(opt, loss);
        Tensor Fused()
        {
            var (task, hidden) = student.LossWithHidden(idx, tgt);
            IReadOnlyList<Tensor> th;
            using (Tensors.Autograd.GradMode.NoGrad()) th = teacher.HiddenStates(idx);
            return task + Spdf.Gpt.Training.SquareHead.Loss(hidden, th);
        }
        Tensor Composed()
        {
            var (logits, hidden) = student.ForwardWithHidden(idx);
            var task = Functional.CrossEntropy(logits.Reshape(-1, cfg.VocabSize), tgt);
            IReadOnlyList<Tensor> th;
            using (Tensors.Autograd.GradMode.NoGrad()) th = teacher.ForwardWithHidden(idx).Hidden;
            return task + Spdf.Gpt.Training.SquareHead.Loss(hidden, th);
        }
        var (p, f, c) = (new List<double>(), new List<double>(), new List<double>());
        for (int i = 0; i < steps + 2; i++)
        {
            double a = Time(() => student.Loss(idx, tgt)), b = Time(Fused), d = Time(Composed);
            if (i < 2) continue;
            p.Add(a); f.Add(b); c.Add(d);
        }
        static double Med(List<double> x) => x.Order().ElementAt(x.Count / 2);
        Emit(new Dictionary<string, object>
        {
            ["op"] = "distill", ["steps"] = steps, ["plain_ms"] = Math.Round(Med(p), 1), ["distill_ms"] = Math.Round(Med(f), 1),
            ["distill_through_logits_ms"] = Math.Round(Med(c), 1),
        });
    }

    /// <summary>Where a GPT step's time goes (dense, or with --sparsity S): forward (to the loss), backward, optimizer;
    /// medians over steps; with --profile 1, op by op.</summary>
    private static void GptPhases(Dictionary<string, string> o)
    {
        int steps = Int(o, "steps", 8), warmup = Int(o, "warmup", 2); // --warmup: untimed steps before the timed ones
        var (cfg, batch, model, idx0, tgt0) = GptSetup(o);
        // --vary-ctx MIN: each step takes the first T tokens of every sequence, T drawn in [MIN, ctx] (a fine-tuning
        // batcher's padding to the batch's longest sequence gives every step its own length).
        int varyMin = Int(o, "vary-ctx", 0), multiple = Int(o, "vary-multiple", 1);
        var lengths = new Generator(11);
        (IntTensor, IntTensor) Batch()
        {
            if (varyMin <= 0) return (idx0, tgt0);
            int ctx = cfg.ContextLength, t = varyMin + lengths.NextInt(ctx - varyMin + 1);
            t = Math.Min(ctx, (t + multiple - 1) / multiple * multiple); // --vary-multiple M: rounded up to a multiple of M
            var x = new int[batch * t]; var y = new int[batch * t];
            for (int b = 0; b < batch; b++)
            {
                idx0.Data.AsSpan(b * ctx, t).CopyTo(x.AsSpan(b * t, t));
                tgt0.Data.AsSpan(b * ctx, t).CopyTo(y.AsSpan(b * t, t));
            }
            return (new IntTensor(x, new Shape(batch, t)), new IntTensor(y, new Shape(batch * t)));
        }
        Sparsify(o, model);
        var opt = new Tensors.Optim.AdamW(model.Parameters(), 1e-4);
        using var sat = Omission(o, model, out _);
        var f = new List<double>(); var b = new List<double>(); var s = new List<double>();
        bool profile = o.TryGetValue("profile", out var pf) && pf != "0";
        Tensors.Autograd.OpProfiler? profiler = null;
        long alloc0 = 0; int g0 = 0, g1 = 0, g2 = 0;
        for (int i = 0; i < steps + warmup; i++)
        {
            if (i == warmup)
            {
                alloc0 = GC.GetTotalAllocatedBytes(); g0 = GC.CollectionCount(0); g1 = GC.CollectionCount(1); g2 = GC.CollectionCount(2);
            }
            if (i == warmup && profile) profiler = Tensors.Autograd.OpProfiler.Start(); // after two warm-up steps
            var (idx, tgt) = Batch(); // the step's tokens, cut before the clock starts
            profiler?.Mark();
            var sw = System.Diagnostics.Stopwatch.StartNew();
            sat?.BeginStep(i + 1);
            double t1, t2;
            using (o.TryGetValue("scope", out var sc) && sc == "0" ? null : Tensors.Autograd.TensorScope.Enter())
            {
                var loss = model.Loss(idx, tgt);
                t1 = sw.Elapsed.TotalMilliseconds;
                opt.ZeroGrad(setToNone: false);
                loss.Backward();
                t2 = sw.Elapsed.TotalMilliseconds;
            }
            opt.Step();
            double t3 = sw.Elapsed.TotalMilliseconds;
            if (i >= warmup) { f.Add(t1); b.Add(t2 - t1); s.Add(t3 - t2); }
        }
        static double Med(List<double> x) => x.Order().ElementAt(x.Count / 2);
        Emit(new Dictionary<string, object> { ["op"] = "gpt_phases", ["forward_ms"] = Math.Round(Med(f), 1), ["backward_ms"] = Math.Round(Med(b), 1), ["optimizer_ms"] = Math.Round(Med(s), 1),
            // What the managed heap did per step: bytes allocated, and collections of each generation over the timed steps.
            ["allocated_mb_per_step"] = Math.Round((GC.GetTotalAllocatedBytes() - alloc0) / 1e6 / steps, 2),
            ["gc0"] = GC.CollectionCount(0) - g0, ["gc1"] = GC.CollectionCount(1) - g1, ["gc2"] = GC.CollectionCount(2) - g2 });
        if (profiler is null) return;
        profiler.Dispose();
        foreach (var r in profiler.Results) // per step (means over the profiled steps)
            Emit(new Dictionary<string, object>
            {
                ["op"] = "gpt_op_profile", ["name"] = r.Name, ["region"] = r.IsRegion, ["calls"] = Math.Round((double)r.ForwardCalls / steps, 1),
                ["forward_ms"] = Math.Round(r.ForwardMs / steps, 2), ["backward_ms"] = Math.Round(r.BackwardMs / steps, 2),
            });
        Console.Error.Write(profiler.Format(steps));
    }

    /// <summary>The GPT of the gpt benchmarks (--layers --embd --heads --ctx --vocab --batch) and one fixed random batch.</summary>
    private static (Spdf.Gpt.GptConfig Config, int Batch, Spdf.Gpt.GptModel Model, IntTensor Inputs, IntTensor Targets) GptSetup(Dictionary<string, string> o)
    {
        var cfg = new Spdf.Gpt.GptConfig(Int(o, "layers", 6), Int(o, "embd", 384), Int(o, "heads", 6), Int(o, "ctx", 256), Int(o, "vocab", 8192));
        int batch = Int(o, "batch", 8);
        var model = new Spdf.Gpt.GptModel(cfg, new Generator(1));
        string loss = o.GetValueOrDefault("loss", "fused");
        if (loss is not ("fused" or "unfused")) throw new ArgumentException($"--loss is '{loss}'; expected fused (the LM head and the loss as one op, the default) or unfused.");
        model.FusedHeadLoss = loss == "fused";
        model.HeadLossChunk = Int(o, "loss-chunk", 0);
        model.FusedSparseMlp = o.GetValueOrDefault("fused-mlp", "1") != "0"; // --fused-mlp 0: sparse MLPs as two layers and a GELU
        var g = new Generator(3);
        var idx = new IntTensor(Enumerable.Range(0, batch * cfg.ContextLength).Select(_ => g.NextInt(cfg.VocabSize)).ToArray(), new Shape(batch, cfg.ContextLength));
        var tgt = new IntTensor(Enumerable.Range(0, batch * cfg.ContextLength).Select(_ => g.NextInt(cfg.VocabSize)).ToArray(), new Shape(batch * cfg.ContextLength));
        return (cfg, batch, model, idx, tgt);
    }

    /// <summary>SAT for --omission R (default 0: none): each step computes only ceil((1 - R) n) MLP channels and heads
    /// per block (--omit-units both|channels|heads, --omit-score magnitude|random|wanda|activation, --omit-selection
    /// topk|sampled; default both, magnitude, top-k); call its BeginStep before each step.</summary>
    private static Spdf.Gpt.Training.SatOmission? Omission(Dictionary<string, string> o, Spdf.Gpt.GptModel model, out double rate)
    {
        rate = o.TryGetValue("omission", out var s) ? double.Parse(s, CultureInfo.InvariantCulture) : 0;
        if (rate <= 0) return null;
        string units = o.GetValueOrDefault("omit-units", "both");
        if (units is not ("both" or "channels" or "heads")) throw new ArgumentException($"--omit-units is '{units}'; expected both, channels or heads.");
        string selection = o.GetValueOrDefault("omit-selection", "topk");
        if (selection is not ("topk" or "sampled")) throw new ArgumentException($"--omit-selection is '{selection}'; expected topk or sampled.");
        return new Spdf.Gpt.Training.SatOmission(model, new Spdf.Gpt.Training.SatOptions(Sparsity.Omission.OmissionSchedule.Constant(rate))
        {
            Scorer = Sparsity.Omission.UnitScorers.FromName(o.GetValueOrDefault("omit-score", "magnitude")),
            Selection = selection == "sampled" ? Sparsity.Omission.UnitSelection.Sampled : Sparsity.Omission.UnitSelection.TopK,
            Channels = units != "heads", Heads = units != "channels",
        });
    }

    /// <summary>Applies --sparsity (default 0: none) with --storage (default compressed) to the benchmark GPT.</summary>
    private static (double Sparsity, SparseWeightStorage Storage, SparsifiedModel? Handle) Sparsify(Dictionary<string, string> o, Spdf.Gpt.GptModel model)
    {
        double sp = o.TryGetValue("sparsity", out var s) ? double.Parse(s, CultureInfo.InvariantCulture) : 0;
        // SAT gathers rows of the dense weight: with --omission the default storage is the masked dense one
        bool omits = o.TryGetValue("omission", out var om) && double.Parse(om, CultureInfo.InvariantCulture) > 0;
        var storage = o.TryGetValue("storage", out var st) ? Enum.Parse<SparseWeightStorage>(st, ignoreCase: true) : omits ? SparseWeightStorage.Dense : SparseWeightStorage.Compressed;
        return (sp, storage, sp > 0 ? Sparsifier.Apply(model, new SparsityConfig(SparsityConfig.Default(sp, seed: 2).Groups, 2) { Storage = storage }) : null);
    }

    private static void GptOne(Dictionary<string, string> o)
    {
        var (cfg, batch, model, idx, tgt) = GptSetup(o);
        var (sp, storage, handle) = Sparsify(o, model);
        long setupPeak = System.Diagnostics.Process.GetCurrentProcess().PeakWorkingSet64;
        bool stepPeak = ResetPeakWorkingSet(); // the step's peak, not the set-up's (a compressed model starts dense)
        if (handle is not null && o.TryGetValue("kernel", out var km))
            foreach (var l in handle.Layers) l.Layer.KernelMode = Enum.Parse<SparseKernelMode>(km, ignoreCase: true);
        var opt = new Tensors.Optim.AdamW(model.Parameters(), 1e-4);
        bool useScope = !o.TryGetValue("scope", out var sc) || sc != "0";
        using var sat = Omission(o, model, out double omission);
        long satStep = 0;
        int runs = 0;
        long alloc0 = 0, gen2 = 0;
        TimeSpan pause0 = default;
        double ms = Timing.MedianMs(() =>
        {
            if (runs++ == 2) { alloc0 = GC.GetTotalAllocatedBytes(); pause0 = GC.GetTotalPauseDuration(); gen2 = GC.CollectionCount(2); }
            opt.ZeroGrad(setToNone: !useScope);
            sat?.BeginStep(++satStep);
            using (useScope ? Tensors.Autograd.TensorScope.Enter() : null) model.Loss(idx, tgt).Backward(); // as the Trainer does
            opt.Step();
        }, Seconds(o), warmup: 2, minRuns: 3);
        int measured = Math.Max(1, runs - 2);
        double allocMb = (GC.GetTotalAllocatedBytes() - alloc0) / 1048576.0 / measured;
        double pauseMs = (GC.GetTotalPauseDuration() - pause0).TotalMilliseconds / measured;
        double gen2PerStep = (double)(GC.CollectionCount(2) - gen2) / measured;
        var gcInfo = GC.GetGCMemoryInfo();
        long tokens = (long)batch * cfg.ContextLength;
        Emit(new Dictionary<string, object>
        {
            ["op"] = "gpt_train_step", ["layers"] = cfg.Layers, ["embd"] = cfg.EmbeddingSize, ["heads"] = cfg.Heads, ["ctx"] = cfg.ContextLength,
            ["batch"] = batch, ["vocab"] = cfg.VocabSize, ["sparsity"] = sp, ["omission"] = omission, ["loss"] = model.FusedHeadLoss ? "fused" : "unfused",
            ["ms"] = Math.Round(ms, 1), ["tok_s"] = Math.Round(tokens / ms * 1e3, 0),
            ["peak_mb"] = Math.Round(System.Diagnostics.Process.GetCurrentProcess().PeakWorkingSet64 / 1048576.0, 0),
            ["peak_of"] = stepPeak ? "steps" : "process", ["setup_peak_mb"] = Math.Round(setupPeak / 1048576.0, 0),
            ["storage"] = handle is null ? "dense" : storage.ToString().ToLowerInvariant(),
            ["parameters"] = model.ParameterCount(),
            ["scope"] = useScope, ["alloc_mb_per_step"] = Math.Round(allocMb, 1), ["gc_pause_ms_per_step"] = Math.Round(pauseMs, 1), ["gen2_per_step"] = Math.Round(gen2PerStep, 2),
            // Where the memory is: the managed heap after the last collection, its pinned part (the kernels' pooled aligned buffers).
            ["gc_heap_mb"] = gcInfo.HeapSizeBytes >> 20, ["pinned_heap_mb"] = gcInfo.GenerationInfo[4].SizeAfterBytes >> 20,
            ["aligned_buffers_mb"] = Sparsity.Kernels.AlignedBuffer.AllocatedBytes >> 20,
            ["kernel"] = handle is null ? "dense-" + Gemm.KernelName
                : string.Join(",", handle.Layers.GroupBy(l => l.Layer.Kernel).Select(gr => $"{gr.Key}:{gr.Count()}")),
        });
    }

    /// <summary>
    /// Frees what the set-up left (a compressed model's dense initial weights) and resets the kernel's peak resident set
    /// (Linux: writing 5 to /proc/self/clear_refs), so that the peak read later is that of the training steps. False where
    /// the reset is unavailable: the peak is then the whole process's.
    /// </summary>
    private static bool ResetPeakWorkingSet()
    {
        GC.Collect(2, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        GC.WaitForPendingFinalizers();
        try { File.WriteAllText("/proc/self/clear_refs", "5"); return true; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return false; }
    }

    /// <summary>A transformer MLP of two sparse layers around a GELU (--tokens --width --hidden --sparsity): the fused op
    /// (<see cref="SparseMlp.TryForwardGelu"/>) against the layers and the GELU one after the other, forward and forward
    /// + backward, interleaved; and the dense MLP for scale.</summary>
    private static void Mlp(Dictionary<string, string> o)
    {
        int n = Int(o, "tokens", 2048), c = Int(o, "width", 128), h = Int(o, "hidden", 4 * Int(o, "width", 128));
        double sp = o.TryGetValue("sparsity", out var s) ? double.Parse(s, CultureInfo.InvariantCulture) : 0.75;
        double secs = Seconds(o);
        var g = new Generator(1);
        Linear upDense = new(c, h, generator: g), downDense = new(h, c, generator: g);
        var up = SparseLinear.FromLinear(new Linear(c, h, generator: new Generator(2)), MaskInitializers.Random.Create(upDense.Weight, sp, new SparsityRandom(3)));
        var down = SparseLinear.FromLinear(new Linear(h, c, generator: new Generator(4)), MaskInitializers.Random.Create(downDense.Weight, sp, new SparsityRandom(5)));
        up.KernelMode = down.KernelMode = SparseKernelMode.Compressed;
        var x = Tensor.Randn(new Shape(n, c), g); x.RequiresGrad = true;
        var dy = Tensor.Randn(new Shape(n, c), g);
        Tensor Fused() => SparseMlp.TryForwardGelu(up, down, x) ?? throw new ArgumentException($"--tokens {n} --width {c} --hidden {h} --sparsity {sp}: the fused op does not apply here (needs AVX-512, more than 64 tokens, at most 3 MiB of kept weights per layer).");
        Tensor Layers() => down.Forward(up.Forward(x).Gelu());
        Tensor Dense() => downDense.Forward(upDense.Forward(x).Gelu());
        var timed = new Dictionary<string, object> { ["op"] = "sparse_mlp", ["tokens"] = n, ["width"] = c, ["hidden"] = h, ["sparsity"] = sp };
        var runs = new Dictionary<string, List<double>>();
        foreach (var name in new[] { "fused_fwd", "layers_fwd", "dense_fwd", "fused_fwd_bwd", "layers_fwd_bwd", "dense_fwd_bwd" }) runs[name] = [];
        for (int round = 0; round < 3; round++) // interleaved rounds; medians of the per-round medians
            foreach (var (name, f) in new (string, Func<Tensor>)[] { ("fused", Fused), ("layers", Layers), ("dense", Dense) })
            {
                runs[name + "_fwd"].Add(Timing.Measure(() => { using var _s = Tensors.Autograd.TensorScope.Enter(); using var _ = Tensors.Autograd.GradMode.NoGrad(); f(); }, secs / 3).Median);
                runs[name + "_fwd_bwd"].Add(Timing.Measure(() => { using var _s = Tensors.Autograd.TensorScope.Enter(); f().Backward(dy); }, secs / 3).Median);
            }
        foreach (var (name, values) in runs) timed[name + "_ms"] = Math.Round(values.Order().ElementAt(1), 3);
        timed["fused_vs_layers_fwd_bwd"] = Math.Round(runs["layers_fwd_bwd"].Order().ElementAt(1) / runs["fused_fwd_bwd"].Order().ElementAt(1), 3);
        Emit(timed);
    }

    /// <summary>Times the compressed linear layer's kernels one by one (transposes, SpMM, SDDMM) against the dense GEMM.</summary>
    private static void SpmmBreakdown(Dictionary<string, string> o)
    {
        int n = Int(o, "tokens", 2048), k = Int(o, "in", 768), m = Int(o, "out", 3072);
        double sp = o.TryGetValue("sparsity", out var s) ? double.Parse(s, CultureInfo.InvariantCulture) : 0.75;
        double secs = Seconds(o);
        var g = new Generator(1);
        var w = Tensor.Randn(new Shape(m, k), g);
        // --mask n:m: the same density with an equal count in every group of m (every row's run in a panel then has the same
        // length), to see what the uneven run lengths of a uniform random mask cost; default: random.
        var maskKind = o.TryGetValue("mask", out var mk) ? mk : "random";
        var mask = maskKind == "random" ? MaskInitializers.Random.Create(w, sp, new SparsityRandom(g.NextUInt64()))
            : maskKind.Split(':') is [var nn, var mm] && int.TryParse(nn, out int keepN) && int.TryParse(mm, out int ofM)
                ? MaskInitializers.NofM(keepN, ofM).Create(w, sp, new SparsityRandom(g.NextUInt64()))
                : throw new ArgumentException($"--mask {maskKind}: expected 'random' or an N:M pattern such as 1:4.");
        if (maskKind != "random") sp = mask.Sparsity;
        var csr = Sparsity.Kernels.CsrMatrix.FromMask(mask, panelWidth: Int(o, "panel", Sparsity.Kernels.CsrMatrix.DefaultPanelWidth));
        csr.Gather(w.AsReadOnlySpan());
        var x = Tensor.Randn(new Shape(n, k), g).ToArray();
        using var xb = Sparsity.Kernels.AlignedBuffer.Rent(Sparsity.Kernels.SparseKernels.BlockedLength(k, n)); // as SparseLinear rents them
        using var yb = Sparsity.Kernels.AlignedBuffer.Rent(Sparsity.Kernels.SparseKernels.BlockedLength(m, n));
        var y = new float[n * m];
        var dw = new float[csr.Nnz];
        int tb = Sparsity.Kernels.SparseKernels.TokenBlock;
        var timed = new Dictionary<string, object>
        {
            ["op"] = "spmm_breakdown", ["tokens"] = n, ["in"] = k, ["out"] = m, ["sparsity"] = sp,
        };
        string[] kernels = ["to_blocks", "spmm", "from_blocks", "sddmm", "dense_gemm", "layer_fwd", "layer_dx", "layer_dw", "layer_bwd", "sddmm_fresh", "sddmm_rows"];
        var only = o.TryGetValue("ops", out var ops) ? ops.Split(',') : null; // e.g. --ops spmm,sddmm
        if (only?.FirstOrDefault(name => !kernels.Contains(name)) is { } unknown)
            throw new ArgumentException($"--ops {ops}: '{unknown}' is not a kernel; expected a comma-separated list of {string.Join(", ", kernels)}.");
        // Inputs filled once, whichever kernels are timed: the SDDMM's dY is the SpMM's output.
        BlockTranspose.ToBlocks(x, n, k, tb, xb.Span, Sparsity.Kernels.SparseKernels.BlockStride(k));
        Sparsity.Kernels.SparseKernels.SpMM(csr, xb.Span, yb.Span, n);
        void Time(string name, Action a)
        {
            if (only is not null && !only.Contains(name)) return;
            var (median, min) = Timing.Measure(a, secs);
            timed[name + "_ms"] = Math.Round(median, 3);
            timed[name + "_min_ms"] = Math.Round(min, 3);
        }
        Time("to_blocks", () => BlockTranspose.ToBlocks(x, n, k, tb, xb.Span, Sparsity.Kernels.SparseKernels.BlockStride(k)));
        Time("spmm", () => Sparsity.Kernels.SparseKernels.SpMM(csr, xb.Span, yb.Span, n));
        Time("from_blocks", () => BlockTranspose.FromBlocks(yb.Span, n, m, tb, y, Sparsity.Kernels.SparseKernels.BlockStride(m)));
        Time("sddmm", () => Sparsity.Kernels.SparseKernels.Sddmm(csr, yb.Span, xb.Span, dw, n));
        Time("dense_gemm", () => Gemm.MatMul(x, false, w.AsReadOnlySpan(), true, y, n, m, k));
        // The layer's three calls as SparseLinear makes them (transposes fused, temporaries from the pool): the forward,
        // the input gradient alone (over Wᵀ, as the backward gathers it), the weight and bias gradients alone, and all three.
        var csrT = csr.TransposeStructure(out var tMap);
        var tValues = new float[csr.Nnz];
        for (int e = 0; e < csr.Nnz; e++) tValues[e] = csr.Values[tMap[e]];
        csrT = csrT.WithValues(tValues);
        var dx = new float[n * k];
        var db = new float[m];
        Time("layer_fwd", () => SparseLinearKernels.Forward(csr, x, y, n));
        Time("layer_dx", () => SparseLinearKernels.Backward(csr, csrT, default, y, x, n, dx, default, default));
        Time("layer_dw", () => SparseLinearKernels.Backward(csr, null, default, y, x, n, default, dw, db));
        Time("layer_bwd", () => SparseLinearKernels.Backward(csr, csrT, default, y, x, n, dx, dw, db));
        // The SDDMM just after its X blocks were transposed in parallel (as the row split runs inside the layer), and the
        // token split straight from the rows (small weights only).
        Time("sddmm_fresh", () => { BlockTranspose.ToBlocks(x, n, k, tb, xb.Span, Sparsity.Kernels.SparseKernels.BlockStride(k)); Sparsity.Kernels.SparseKernels.Sddmm(csr, yb.Span, xb.Span, dw, n); });
        if (Sparsity.Kernels.SparseKernels.SddmmSplitsTokens(csr, n)) Time("sddmm_rows", () => Sparsity.Kernels.SparseKernels.SddmmFromRows(csr, y, x, dw, n, db));
        Emit(timed);
    }

    /// <summary>
    /// Batch-1 decoding through the linear layers of a GPT preset (per block: c_attn, attn.c_proj, c_fc, mlp.c_proj), one
    /// token at a time with gradients off: the weight-streaming part of generation. Attention over the KV cache is not
    /// included (it does not depend on weight sparsity). Dense layers run the GEMM at M = 1; sparse ones the CSR SpMV.
    /// </summary>
    private static void Decode(Dictionary<string, string> o)
    {
        var cfg = Spdf.Gpt.GptConfig.FromPreset(o.TryGetValue("preset", out var pr) ? pr : "gpt2-small");
        var sparsities = (o.TryGetValue("sparsity", out var s) ? s : "0,0.75").Split(',').Select(v => double.Parse(v, CultureInfo.InvariantCulture)).ToArray();
        double secs = Seconds(o);
        int c = cfg.EmbeddingSize;
        foreach (double sp in sparsities)
        {
            var g = new Generator(1);
            var layers = new List<Linear>();
            for (int l = 0; l < cfg.Layers; l++)
                foreach (var (i, outF) in new[] { (c, 3 * c), (c, c), (c, 4 * c), (4 * c, c) })
                {
                    Linear lin = new(i, outF, true, g);
                    if (sp > 0)
                    {
                        var sparse = SparseLinear.FromLinear(lin, MaskInitializers.Random.Create(lin.Weight, sp, new SparsityRandom(g.NextUInt64())));
                        sparse.KernelMode = SparseKernelMode.Compressed;
                        lin = sparse;
                    }
                    layers.Add(lin);
                }
            var x1 = Tensor.Randn(new Shape(1, c), g);
            var x4 = Tensor.Randn(new Shape(1, 4 * c), g);
            double ms = Timing.MedianMs(() =>
            {
                using var _ = Tensors.Autograd.GradMode.NoGrad();
                foreach (var l in layers) l.Forward(l.InFeatures == c ? x1 : x4);
            }, secs);
            long bytes = layers.Sum(l => l is SparseLinear sl ? sl.CompressedBytes / 2 : (long)l.Weight.Numel * 4); // W's CSR (not Wᵀ's)
            Emit(new Dictionary<string, object>
            {
                ["op"] = "decode", ["preset"] = pr ?? "gpt2-small", ["sparsity"] = sp, ["ms_per_token"] = Math.Round(ms, 3),
                ["tok_s"] = Math.Round(1000 / ms, 1), ["weight_mb"] = Math.Round(bytes / 1048576.0, 1),
                ["kernel"] = sp > 0 ? "csr-spmv" : "dense-gemv",
            });
        }
    }

    private static void PeakRun(Dictionary<string, string> o)
    {
        var p = Peak.Measure(Seconds(o) / 3);
        var fields = new Dictionary<string, object>
        {
            ["op"] = "fma_peak", ["isa"] = p.Isa, ["per_core_gflops"] = Math.Round(p.PerCore, 1), ["all_cores_gflops"] = Math.Round(p.AllCores, 1), ["cores"] = Environment.ProcessorCount,
        };
        if (Peak.MeasureLoadBound(Seconds(o) / 3) is double loads)
        {
            fields["fma_with_load_gflops"] = Math.Round(loads, 1);
            fields["fma_with_load_pct_peak"] = Math.Round(100 * loads / p.AllCores, 1);
            if (Peak.MeasureLoadBound(Seconds(o) / 3, misalignBytes: 16) is double split) // each load spans two cache lines
            {
                fields["fma_with_split_load_gflops"] = Math.Round(split, 1);
                fields["fma_with_split_load_pct_peak"] = Math.Round(100 * split / p.AllCores, 1);
            }
        }
        Emit(fields);
    }
}
