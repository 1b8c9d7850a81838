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
        };
        AtomicFile.WriteAllText(Path.Combine(dir, "results.json"), root.ToJsonString(new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }));

        int window = Math.Max(1, s.PretrainSteps / 25);
        var pre = w.Results.Where(r => r.Name is Workflow.DenseRun or Workflow.SpdfRun or Workflow.RigLRun)
            .Select(r => (r.Name == Workflow.RigLRun ? $"RigL {r.Sparsity:P0}" : r.Sparsity == 0 ? "dense" : $"{r.Sparsity:P0} sparse (static)", Smooth(r.PretrainCurve, window))).ToList();
        AtomicFile.WriteAllText(Path.Combine(dir, "loss_pretrain.svg"), Svg.LineChart("Pre-training loss (moving average)", "step", "training loss", pre, logY: true));
        var ft = w.Results.Select(r => (Label(r), Smooth(r.FinetuneCurve, Math.Max(1, s.FinetuneSteps / 25)))).ToList();
        AtomicFile.WriteAllText(Path.Combine(dir, "loss_finetune.svg"), Svg.LineChart("Fine-tuning loss on the data-to-text task (moving average)", "step", "training loss (target tokens)", ft, logY: true));
        if (w.SparsityReports.Count > 0)
        {
            var layers = w.SparsityReports[0].Report.Rows.Select(r => r.Name.Replace("transformer.", "", StringComparison.Ordinal)).ToList();
            var series = w.SparsityReports.Select(x => ($"{x.Sparsity:P0} target", (IReadOnlyList<double>)x.Report.Rows.Select(r => r.Sparsity * 100).ToList())).ToList();
            AtomicFile.WriteAllText(Path.Combine(dir, "sparsity.svg"), Svg.BarChart("Per-layer sparsity of the sparse pre-trained models", "% of weights at zero", layers, series, 100));
        }

        var md = new StringBuilder();
        md.AppendLine("# Spdf demo: sparse pre-training and dense fine-tuning").AppendLine();
        md.AppendLine(CultureInfo.InvariantCulture, $"Date {root["date"]}, {(s.Quick ? "quick mode, " : "")}{elapsed.TotalMinutes:F1} minutes. GPT with {c.Layers} layers, width {c.EmbeddingSize}, {c.Heads} heads, context {c.ContextLength}, vocabulary {c.VocabSize}; pre-training {s.PretrainSteps} steps × {s.Batch} × {c.ContextLength} tokens for every run; fine-tuning {s.FinetuneSteps} steps on the data-to-text task; evaluation on {w.TestExamples.Count} held-out meaning representations (greedy decoding){(w.HeldOutReferences > 0 ? $"; {w.HeldOutReferences} task references longer than the context were left out" : "")}.").AppendLine();
        md.AppendLine("| run | sparsity | pre-train FLOPs | pre-train s | val loss | val ppl | fine-tune val loss | BLEU | ROUGE-L | peak MB | kernels (pre-training) |");
        md.AppendLine("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
        foreach (var r in w.Results)
            md.AppendLine(CultureInfo.InvariantCulture, $"| {r.Name} | {r.Sparsity:P0} | {r.PretrainFlops:E2} | {r.PretrainSeconds:F1} | {F(r.ValLoss)} | {F(Math.Exp(r.ValLoss), "F2")} | {F(r.FinetuneValLoss)} | {F(r.Bleu, "F2")} | {F(r.RougeL, "F2")} | {F(r.PeakMb, "F0")} | {r.Kernels} |");
        md.AppendLine().AppendLine("Peak MB: the process's peak resident memory during the run (its pre-training and its fine-tuning), Linux's VmHWM, reset at the start of each.");
        md.AppendLine().AppendLine("![pre-training loss](loss_pretrain.svg)").AppendLine().AppendLine("![fine-tuning loss](loss_finetune.svg)").AppendLine();
        if (w.SparsityReports.Count > 0) md.AppendLine("![per-layer sparsity](sparsity.svg)").AppendLine();
        md.AppendLine("## Generated sentences").AppendLine();
        foreach (var r in w.Results)
        {
            md.AppendLine(CultureInfo.InvariantCulture, $"**{Label(r)}**").AppendLine();
            foreach (var (mr, output) in r.Samples) md.AppendLine(CultureInfo.InvariantCulture, $"- `{mr}` → {output}");
            md.AppendLine();
        }
        md.AppendLine("Files: `results.json` (every number above), `data/` (the corpus, the E2E CSV files and `tokenizer.json` this run used), `train.log`.");
        AtomicFile.WriteAllText(Path.Combine(dir, "report.md"), md.ToString());
    }
}
