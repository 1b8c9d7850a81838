using System.Diagnostics;
using System.Globalization;
using Spdf.Mpi;
using Spdf.Sparsity;
using Spdf.Tensors;
using Spdf.Tensors.Kernels.Cpu;

namespace Spdf.Benchmarks;

/// <summary>
/// <c>quick ddp</c> (options of <c>quick gpt</c>, <c>--storage compressed|dense</c>, <c>--steps</c>, <c>--bucket-mb</c>): the data-parallel GPT training step under MPI. Run it under <c>mpiexec -n N</c> (alone it is one
/// rank). Every rank builds the benchmark GPT, takes rank 0's weights, and trains on its own fixed random batch; per
/// step: forward and backward, the gradients averaged across ranks (<see cref="DataParallel.CreateReducer"/>: only the
/// kept values of sparse weights), AdamW. Steps start together (a barrier) and rank 0 prints, per sparsity,
/// <c>{"op":"ddp_train_step","ranks":N,"sparsity":S,"ms":…,"bytes_reduced":…}</c> with the medians.
/// </summary>
internal static class DdpQuick
{
    public static int Run(Dictionary<string, string> o, string[] args) => MpiCommunicator.Run(args, world =>
    {
        int steps = Quick.Int(o, "steps", 6), warmup = 2;
        var sparsities = (o.TryGetValue("sparsity", out var s) ? s : "0,0.75").Split(',').Select(v => double.Parse(v, CultureInfo.InvariantCulture)).ToList();
        foreach (var sp in sparsities)
        {
            var cfg = new Gpt.GptConfig(Quick.Int(o, "layers", 6), Quick.Int(o, "embd", 384), Quick.Int(o, "heads", 6), Quick.Int(o, "ctx", 256), Quick.Int(o, "vocab", 8192));
            int batch = Quick.Int(o, "batch", 8);
            var model = new Gpt.GptModel(cfg, new Generator(1));
            var storage = o.TryGetValue("storage", out var st) ? Enum.Parse<SparseWeightStorage>(st, ignoreCase: true) : SparseWeightStorage.Compressed;
            var handle = sp > 0 ? Sparsifier.Apply(model, new SparsityConfig(SparsityConfig.Default(sp, seed: 2).Groups, 2) { Storage = storage }) : null;
            var g = new Generator(3 + (ulong)world.Rank); // each rank its own batch
            var idx = new IntTensor(Enumerable.Range(0, batch * cfg.ContextLength).Select(_ => g.NextInt(cfg.VocabSize)).ToArray(), new Shape(batch, cfg.ContextLength));
            var tgt = new IntTensor(Enumerable.Range(0, batch * cfg.ContextLength).Select(_ => g.NextInt(cfg.VocabSize)).ToArray(), new Shape(batch * cfg.ContextLength));
            DataParallel.BroadcastParameters(model, world);
            var reducer = DataParallel.CreateReducer(model, handle, world, Quick.Int(o, "bucket-mb", 25) << 20);
            var opt = new Tensors.Optim.AdamW(model.Parameters(), 1e-4);
            var total = new List<double>(); var reduce = new List<double>();
            for (int i = 0; i < steps + warmup; i++)
            {
                world.Barrier();
                var sw = Stopwatch.StartNew();
                opt.ZeroGrad(setToNone: false);
                using (Tensors.Autograd.TensorScope.Enter()) model.Loss(idx, tgt).Backward();
                double r0 = sw.Elapsed.TotalMilliseconds;
                reducer.AverageGradients();
                double r1 = sw.Elapsed.TotalMilliseconds;
                opt.Step();
                if (i >= warmup) { total.Add(sw.Elapsed.TotalMilliseconds); reduce.Add(r1 - r0); }
            }
            DataParallel.VerifyReplicas(model, world); // the same step on every rank keeps the replicas equal
            if (world.Rank != 0) continue;
            static double Med(List<double> x) => x.Order().ElementAt(x.Count / 2);
            double ms = Med(total);
            Quick.Emit(new Dictionary<string, object>
            {
                ["op"] = "ddp_train_step", ["ranks"] = world.Size, ["sparsity"] = sp, ["ms"] = Math.Round(ms, 1),
                ["reduce_ms"] = Math.Round(Med(reduce), 1), ["bytes_reduced"] = reducer.BytesPerStep, ["dense_bytes"] = reducer.DenseBytesPerStep,
                ["sparse_layer_bytes"] = reducer.SparseLayerBytesPerStep, ["sparse_layer_dense_bytes"] = reducer.SparseLayerDenseBytesPerStep,
                ["storage"] = handle is null ? "dense" : storage.ToString().ToLowerInvariant(),
                ["collectives"] = reducer.CollectivesLastStep, ["layers"] = cfg.Layers, ["embd"] = cfg.EmbeddingSize, ["heads"] = cfg.Heads,
                ["ctx"] = cfg.ContextLength, ["batch_per_rank"] = batch, ["vocab"] = cfg.VocabSize,
                ["tok_s"] = Math.Round((double)batch * cfg.ContextLength * world.Size / ms * 1e3, 0),
                ["threads_per_rank"] = Environment.ProcessorCount, ["gemm_threads"] = Gemm.MaxThreads, ["steps"] = steps,
            });
        }
        return 0;
    });
}
