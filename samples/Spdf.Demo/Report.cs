using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Spdf.Gpt.Training;
using Spdf.Tensors.Serialization;

namespace Spdf.Demo;

/// <summary>Writes results.json, the SVG charts and report.md.</summary>
public static class Report
{
    private static string F(double v, string f = "F3") => double.IsFinite(v) ? v.ToString(f, CultureInfo.InvariantCulture) : "–";

    private static IReadOnlyList<(double X, double Y)> Smooth(IReadOnlyList<LossPoint> curve, int window)
    {
        var pts = new List<(double, double)>(curve.Count);
        double sum = 0;
        for (int i = 0; i < curve.Count; i++)
        {
            sum += curve[i].Loss;
            if (i >= window) sum -= curve[i - window].Loss;
            pts.Add((curve[i].Step, sum / Math.Min(i + 1, window)));
        }
        return pts;
    }

    private static string Label(RunResult r) => r.Name switch
    {
        Workflow.DenseRun => "dense",
        Workflow.SpdfRun => $"{r.Sparsity:P0} sparse → dense FT (SPDF)",
        Workflow.SparseFinetuneRun => $"{r.Sparsity:P0} sparse → sparse FT",
        Workflow.GmpRun => $"dense → GMP {r.Sparsity:P0} FT",
        Workflow.GmpSquareHeadRun => $"dense → GMP {r.Sparsity:P0} + SquareHead",
        Workflow.RigLRun => $"RigL {r.Sparsity:P0} → dense FT",
        _ => r.Name,
    };

    /// <summary>The CPU (model name and family from /proc/cpuinfo where there is one), its logical cores and the GEMM micro-kernel.</summary>
    private static string Machine()
    {
        string cpu = "an unknown CPU";
        try
        {
            if (File.Exists("/proc/cpuinfo"))
            {
                var lines = File.ReadLines("/proc/cpuinfo").Take(40).ToList();
                string? Field(string name) => lines.FirstOrDefault(l => l.StartsWith(name, StringComparison.Ordinal))?.Split(':', 2)[1].Trim();
                cpu = $"{Field("model name") ?? "a CPU"}{(Field("cpu family") is { } f ? $" (family {f})" : "")}";
            }
        }
        catch (IOException) { }
        return $"{cpu}, {Environment.ProcessorCount} logical cores, GEMM micro-kernel {Spdf.Tensors.Kernels.Cpu.Gemm.KernelName}";
    }

    /// <summary>The SAT section: setup, table, what the run shows against the target, charts.</summary>
    private static void Sat(StringBuilder md, Workflow w, DemoSettings s)
    {
        md.AppendLine("## Sparsity-accelerated training (SAT)").AppendLine();
        md.Append(CultureInfo.InvariantCulture, $"SAT (Ma et al. 2024) omits, at each step and in each block, the least important MLP channels and attention heads, and computes the rest as smaller dense products. ");
        string Choice(SatChoice c, int steps) => string.Create(CultureInfo.InvariantCulture,
            $"omitting {c.UnitsText}, with the ladder ({c.Ladder(steps)}) and at a constant rate of {c.ConstantRate:0.##}");
        md.Append(CultureInfo.InvariantCulture, $"The dense pre-trained model above is trained on, each time dense and with SAT: continual pre-training {Choice(s.SatContinual, s.ContinualSteps)}; ");
        md.Append(CultureInfo.InvariantCulture, $"fine-tuning {Choice(s.SatFinetune, s.FinetuneSteps)}. ");
        md.Append(CultureInfo.InvariantCulture, $"Units are scored by {s.SatScore} and chosen by {(s.SatSelection == Spdf.Sparsity.Omission.UnitSelection.TopK ? "top-k" : "sampling in proportion to the score")}. ");
        md.Append(CultureInfo.InvariantCulture, $"Continual pre-training: {s.ContinualSteps} steps × {s.Batch} × {w.Config.ContextLength} tokens on {w.ContinualData} (fresh AdamW moments, peak learning rate 1e-3, cosine to 1e-4), validated on that data's held-out 5%. ");
        md.Append("Fine-tuning: as above, the dense row being the `dense` run of the first table. Wall time counts the training steps and their validation passes, not the evaluation by generation; FLOPs saved are the trainer's count (`StageResult.FlopsSaved`).").AppendLine().AppendLine();
        md.AppendLine("| stage | run | schedule | wall s | tok/s | FLOPs saved | val loss | vs dense | BLEU | ROUGE-L |");
        md.AppendLine("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        foreach (var r in w.SatResults)
        {
            var dense = w.SatResults.First(d => d.Stage == r.Stage);
            md.AppendLine(CultureInfo.InvariantCulture, $"| {r.Stage} | {r.Name} | {r.Schedule} | {r.Seconds:F1} | {r.TokensPerSecond:F0} | {r.FlopsSaved:P0} | {F(r.ValLoss, "F4")} | {(r.ValLoss / dense.ValLoss - 1):+0.0%;-0.0%;0.0%} | {F(r.Bleu, "F2")} | {F(r.RougeL, "F2")} |");
        }
        md.AppendLine();
        foreach (var line in SatVerdict.Lines(w.SatResults)) md.AppendLine(CultureInfo.InvariantCulture, $"- {line}");
        md.AppendLine().AppendLine("![SAT continual pre-training loss](loss_sat_continual.svg)").AppendLine().AppendLine("![SAT fine-tuning loss](loss_sat_finetune.svg)").AppendLine();
    }

    public static void Write(string dir, Workflow w, DemoSettings s, TimeSpan elapsed)
    {
        Directory.CreateDirectory(dir);
        var runs = new JsonArray(w.Results.Select(r => (JsonNode)new JsonObject
        {
            ["name"] = r.Name,
            ["sparsity"] = r.Sparsity,
            ["pretrain_flops"] = r.PretrainFlops,
            ["pretrain_seconds"] = Math.Round(r.PretrainSeconds, 3),
            ["val_loss"] = Math.Round(r.ValLoss, 5),
            ["val_perplexity"] = Math.Round(Math.Exp(r.ValLoss), 4),
            ["finetune_val_loss"] = Math.Round(r.FinetuneValLoss, 5),
            ["bleu"] = Math.Round(r.Bleu, 3),
            ["rouge_l"] = Math.Round(r.RougeL, 3),
            ["peak_mb"] = double.IsFinite(r.PeakMb) ? Math.Round(r.PeakMb) : null,
            ["pretrain_kernels"] = r.Kernels,
            ["samples"] = new JsonArray(r.Samples.Select(x => (JsonNode)new JsonObject { ["mr"] = x.MeaningRepresentation, ["output"] = x.Output }).ToArray()),
        }).ToArray());
        var c = w.Config;
        var root = new JsonObject
        {
            ["date"] = DateTime.UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture),
            ["quick"] = s.Quick,
            ["model"] = new JsonObject { ["layers"] = c.Layers, ["embd"] = c.EmbeddingSize, ["heads"] = c.Heads, ["ctx"] = c.ContextLength, ["vocab"] = c.VocabSize },
            ["held_out_task_references"] = w.HeldOutReferences,
            ["pretrain_steps"] = s.PretrainSteps,
            ["finetune_steps"] = s.FinetuneSteps,
            ["batch"] = s.Batch,
            ["seconds"] = Math.Round(elapsed.TotalSeconds, 1),
            ["runs"] = runs,
            ["sat"] = w.SatResults.Count == 0 ? null : new JsonArray(w.SatResults.Select(r => (JsonNode)new JsonObject
            {
                ["stage"] = r.Stage,
                ["name"] = r.Name,
                ["schedule"] = r.Schedule,
                ["seconds"] = Math.Round(r.Seconds, 3),
                ["tokens_per_second"] = Math.Round(r.TokensPerSecond),
                ["flops_saved"] = Math.Round(r.FlopsSaved, 4),
                ["val_loss"] = Math.Round(r.ValLoss, 5),
                ["bleu"] = double.IsFinite(r.Bleu) ? Math.Round(r.Bleu, 3) : null,
                ["rouge_l"] = double.IsFinite(r.RougeL) ? Math.Round(r.RougeL, 3) : null,
            }).ToArray()),
        };
        AtomicFile.WriteAllText(Path.Combine(dir, "results.json"), root.ToJsonString(new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }));

        int window = Math.Max(1, s.PretrainSteps / 25);
        var pre = w.Results.Where(r => r.Name is Workflow.DenseRun or Workflow.SpdfRun or Workflow.RigLRun)
            .Select(r => (r.Name == Workflow.RigLRun ? $"RigL {r.Sparsity:P0}" : r.Sparsity == 0 ? "dense" : $"{r.Sparsity:P0} sparse (static)", Smooth(r.PretrainCurve, window))).ToList();
        Charts.Save(Charts.LogLines("Pre-training loss (moving average)", "step", "training loss", pre), dir, "loss_pretrain");
        var ft = w.Results.Select(r => (Label(r), Smooth(r.FinetuneCurve, Math.Max(1, s.FinetuneSteps / 25)))).ToList();
        Charts.Save(Charts.LogLines("Fine-tuning loss on the data-to-text task (moving average)", "step", "training loss (target tokens)", ft), dir, "loss_finetune");
        foreach (var (stage, file) in new[] { ("continual pre-training", "loss_sat_continual"), ("fine-tuning", "loss_sat_finetune") })
        {
            var runsOf = w.SatResults.Where(r => r.Stage == stage).ToList();
            if (runsOf.Count == 0) continue;
            int win = Math.Max(1, runsOf.Max(r => r.Curve.Count) / 25);
            Charts.Save(Charts.LogLines($"SAT, {stage}: training loss (moving average)", "step", "training loss",
                runsOf.Select(r => (r.Name == "dense" ? "dense" : $"{r.Name} ({r.Schedule})", Smooth(r.Curve, win))).ToList()), dir, file);
        }
        if (w.SparsityReports.Count > 0)
        {
            var layers = w.SparsityReports[0].Report.Rows.Select(r => r.Name.Replace("transformer.", "", StringComparison.Ordinal)).ToList();
            var series = w.SparsityReports.Select(x => ($"{x.Sparsity:P0} target", (IReadOnlyList<double>)x.Report.Rows.Select(r => r.Sparsity * 100).ToList())).ToList();
            Charts.Save(Charts.GroupedBars("Per-layer sparsity of the sparse pre-trained models", "% of weights at zero", layers, series, 100), dir, "sparsity");
        }

        var md = new StringBuilder();
        md.AppendLine("# Spdf demo: sparse pre-training and dense fine-tuning").AppendLine();
        md.AppendLine("Generated by the run itself (never edited by hand).").AppendLine();
        md.AppendLine(CultureInfo.InvariantCulture, $"Command: `{s.Command}`. Date {root["date"]}, {(s.Quick ? "quick mode, " : "")}{elapsed.TotalMinutes:F1} minutes on {Machine()}.").AppendLine();
        md.Append(CultureInfo.InvariantCulture, $"Setup: {(s.CorpusFile is null ? $"a generated corpus of {s.Documents:N0} restaurant descriptions and reviews (`samples/Spdf.Demo/RestaurantData.cs`, seed {s.Seed})" : $"the corpus `{Path.GetFileName(s.CorpusFile)}`")} ");
        md.Append(CultureInfo.InvariantCulture, $"and {(s.TaskFile is null ? "a generated data-to-text task in the E2E challenge's format" : $"the task `{Path.GetFileName(s.TaskFile)}`")} ({w.TrainExamples.Count:N0} training and {w.TestExamples.Count} held-out meaning representations); ");
        md.Append(CultureInfo.InvariantCulture, $"a byte-level BPE of {c.VocabSize:N0} ids trained on both. GPT with {c.Layers} layers, width {c.EmbeddingSize}, {c.Heads} heads, context {c.ContextLength}. ");
        md.Append(CultureInfo.InvariantCulture, $"Every run pre-trains {s.PretrainSteps} steps × {s.Batch} × {c.ContextLength} tokens (AdamW, peak learning rate 2e-3, cosine to 2e-4, weight decay 0.1), ");
        if (s.Ranks > 1) md.Append(CultureInfo.InvariantCulture, $"data-parallel over {s.Ranks} MPI ranks ({s.BatchPerRank} sequences each per step, gradients averaged), ");
        md.Append(CultureInfo.InvariantCulture, $"then fine-tunes {s.FinetuneSteps} steps on the task (loss on the reference tokens only, fresh optimizer moments, peak 1e-3) and is evaluated on the held-out MRs (greedy decoding)");
        md.Append(CultureInfo.InvariantCulture, $"{(w.HeldOutReferences > 0 ? $"; {w.HeldOutReferences} task references longer than the context were left out" : "")}. ");
        md.Append("The sparse layers are the paper's: Q/K/V, the attention output projection and both MLP matrices, with uniform random masks. ");
        md.Append("The neighbours: `sparse-finetune-gmp` prunes the dense pre-trained model by magnitude while fine-tuning (Kurtic et al. 2023), `+squarehead` adds SquareHead distillation from the dense fine-tuned model, ");
        md.Append("and `rigl-pretrain+dense-finetune` pre-trains with RigL before `Densify`.").AppendLine().AppendLine();
        if (w.Results.FirstOrDefault(r => r.Name == Workflow.DenseRun) is { } dense && w.Results.FirstOrDefault(r => r.Name == Workflow.SpdfRun && r.Sparsity == 0.75) is { } spdf)
        {
            md.Append(CultureInfo.InvariantCulture, $"The paper's point here: pre-training at 75% sparsity took {spdf.PretrainSeconds:F1} s against {dense.PretrainSeconds:F1} s dense ({dense.PretrainSeconds / spdf.PretrainSeconds:F2}× less time) for {dense.PretrainFlops / spdf.PretrainFlops:F2}× fewer FLOPs; ");
            md.Append(CultureInfo.InvariantCulture, $"after dense fine-tuning its validation loss is {F(spdf.FinetuneValLoss)} against {F(dense.FinetuneValLoss)} and its BLEU {F(spdf.Bleu, "F2")} against {F(dense.Bleu, "F2")}.").AppendLine().AppendLine();
        }
        md.AppendLine("| run | sparsity | pre-train FLOPs | pre-train s | val loss | val ppl | fine-tune val loss | BLEU | ROUGE-L | peak MB | kernels (pre-training) |");
        md.AppendLine("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
        foreach (var r in w.Results)
            md.AppendLine(CultureInfo.InvariantCulture, $"| {r.Name} | {r.Sparsity:P0} | {r.PretrainFlops:E2} | {r.PretrainSeconds:F1} | {F(r.ValLoss)} | {F(Math.Exp(r.ValLoss), "F2")} | {F(r.FinetuneValLoss)} | {F(r.Bleu, "F2")} | {F(r.RougeL, "F2")} | {F(r.PeakMb, "F0")} | {r.Kernels} |");
        md.AppendLine().AppendLine("Peak MB: the process's peak resident memory during the run (its pre-training and its fine-tuning), Linux's VmHWM, reset at the start of each (which also resets what `getrusage` reports: `/usr/bin/time` then shows the last run's peak only); the process's peak is the column's largest value.");
        md.AppendLine().AppendLine("![pre-training loss](loss_pretrain.svg)").AppendLine().AppendLine("![fine-tuning loss](loss_finetune.svg)").AppendLine();
        if (w.SparsityReports.Count > 0) md.AppendLine("![per-layer sparsity](sparsity.svg)").AppendLine();
        if (w.SatResults.Count > 0) Sat(md, w, s);
        md.AppendLine("## Generated sentences").AppendLine();
        foreach (var r in w.Results)
        {
            md.AppendLine(CultureInfo.InvariantCulture, $"**{Label(r)}**").AppendLine();
            foreach (var (mr, output) in r.Samples) md.AppendLine(CultureInfo.InvariantCulture, $"- `{mr}` → {output}");
            md.AppendLine();
        }
        md.AppendLine("Files: `results.json` (every number above), the charts as SVG and PNG, `data/` (the corpus, the E2E CSV files and `tokenizer.json` this run used), `train.log`.");
        AtomicFile.WriteAllText(Path.Combine(dir, "report.md"), md.ToString());
    }
}

/// <summary>What the SAT rows show against the issue's target: the ladder within 1% of the dense run's validation loss
/// with at least 25% less wall time, per stage, in sentences the console and the report share.</summary>
public static class SatVerdict
{
    /// <summary>The ladder's target: validation loss within this share of the dense run's.</summary>
    public const double LossTolerance = 0.01;
    /// <summary>The ladder's target: at least this share less wall time than the dense run.</summary>
    public const double TimeSaved = 0.25;

    public static IEnumerable<string> Lines(IReadOnlyList<SatResult> results)
    {
        foreach (var stage in results.Select(r => r.Stage).Distinct())
        {
            var dense = results.FirstOrDefault(r => r.Stage == stage && r.Name == "dense");
            if (dense is null) continue;
            foreach (var sat in results.Where(r => r.Stage == stage && r.Name != "dense"))
            {
                double loss = sat.ValLoss / dense.ValLoss - 1, time = 1 - sat.Seconds / dense.Seconds;
                bool met = loss <= LossTolerance && time >= TimeSaved;
                yield return string.Create(CultureInfo.InvariantCulture,
                    $"{stage}, {sat.Name}: validation loss {sat.ValLoss:F4} against {dense.ValLoss:F4} dense ({loss:+0.0%;-0.0%}), wall time {sat.Seconds:F1} s against {dense.Seconds:F1} s ({time:0%} less){(sat.Name == "SAT ladder" ? met ? ": target met (within 1%, ≥ 25% less time)" : ": target not met (within 1%, ≥ 25% less time)" : "")}.");
            }
        }
    }
}
