// Spdf.Demo — the main job: the SPDF experiment (Thangarasa et al. 2023) at small scale on built-in data.
// A GPT is pre-trained dense and at 50% and 75% static sparsity for the same tokens, then fine-tuned on a
// data-to-text task densely (SPDF) and, for the sparse models, with the mask kept; the report compares FLOPs,
// wall time, validation loss, BLEU and ROUGE-L.
//   dotnet run -c Release --project samples/Spdf.Demo [-- --quick] [--report DIR] [--corpus FILE] [--task FILE]
//   dotnet run -c Release --project samples/Spdf.Demo -- flops --preset gpt3-xl --sparsity 0.75
// Data-parallel on MPI (every run's batch split over the ranks; rank 0 writes the report):
//   dotnet build -c Release samples/Spdf.Demo && mpiexec -n 2 -bind-to core dotnet samples/Spdf.Demo/bin/Release/net10.0/Spdf.Demo.dll
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Logging;
using Spectre.Console;
using Spdf.Demo;
using Spdf.Tensors.Kernels.Cpu;

if (args.Length > 0 && args[0] == "flops")
{
    try { return FlopsCommand.Run(args[1..]); }
    catch (ArgumentException e) { Console.Error.WriteLine(e.Message); return 2; }
}

var quickOption = new Option<bool>("--quick") { Description = "The same workflow shrunk to finish in under a minute." };
var reportOption = new Option<string?>("--report") { Description = "Folder for results.json, the SVG charts and report.md (default: a dated folder under spdf-demo-results/)." };
var corpusOption = new Option<string?>("--corpus") { Description = "A UTF-8 text file to pre-train on instead of the generated corpus (documents separated by blank lines)." };
var taskOption = new Option<string?>("--task") { Description = "An E2E CSV file (mr,ref columns) to fine-tune on instead of the generated task; the last 10% of MRs are held out." };
var continualOption = new Option<string?>("--continual-corpus") { Description = "A UTF-8 text file of more data for SAT's continual pre-training (default: generated with another seed, or the --corpus again)." };
var satOption = new Option<string>("--sat") { Description = "SAT's rows: 'on' (default), 'off', or 'only' (dense pre-training and fine-tuning and the SAT rows, nothing else).", DefaultValueFactory = _ => "on" };
satOption.AcceptOnlyFromAmong("on", "off", "only");
var satScoreOption = new Option<string>("--sat-score") { Description = "SAT's unit score: random, magnitude, wanda or activation.", DefaultValueFactory = _ => "activation" };
satScoreOption.AcceptOnlyFromAmong("random", "magnitude", "wanda", "activation");
var satSelectionOption = new Option<string>("--sat-selection") { Description = "SAT's choice of kept units: topk or sampled (in proportion to the score).", DefaultValueFactory = _ => "sampled" };
satSelectionOption.AcceptOnlyFromAmong("topk", "sampled");
var satLadderOption = new Option<double?>("--sat-ladder-rate") { Description = "The first rate of SAT's ladder, held for the first half of a run, then 3 rungs down to dense (default: 0.75 continual pre-training, 0.9 fine-tuning)." };
var satRateOption = new Option<double?>("--sat-rate") { Description = "The constant omission rate SAT is compared at (default: 0.5 continual pre-training, 0.6 fine-tuning)." };
var satDenseOption = new Option<double?>("--sat-dense-final") { Description = "The share of a run SAT's ladder ends dense (default: 0.1 continual pre-training, 0.2 fine-tuning)." };
var satUnitsOption = new Option<string?>("--sat-units") { Description = "What SAT omits: both (MLP channels and attention heads), channels or heads (default: both in continual pre-training, channels in fine-tuning)." };
satUnitsOption.AcceptOnlyFromAmong("both", "channels", "heads");
var seedOption = new Option<int>("--seed") { Description = "Seed for data, initialisation, masks and batches.", DefaultValueFactory = _ => 2026 };
var root = new RootCommand("Spdf demo: sparse pre-training and dense fine-tuning of a GPT, reported like the SPDF paper. Subcommand: flops (see 'flops --help').")
{
    quickOption, reportOption, corpusOption, taskOption, continualOption, satOption, satScoreOption, satSelectionOption, satLadderOption, satRateOption, satDenseOption, satUnitsOption, seedOption,
};
root.SetAction(parse =>
{
    bool quick = parse.GetValue(quickOption);
    string dir = parse.GetValue(reportOption)
        ?? Path.Combine("spdf-demo-results", DateTime.Now.ToString("yyyy-MM-dd_HH-mm-ss", CultureInfo.InvariantCulture) + (quick ? "-quick" : ""));
    SatChoice Override(SatChoice c) => c with
    {
        Units = parse.GetValue(satUnitsOption) ?? c.Units,
        LadderRate = parse.GetValue(satLadderOption) ?? c.LadderRate,
        ConstantRate = parse.GetValue(satRateOption) ?? c.ConstantRate,
        DenseFinal = parse.GetValue(satDenseOption) ?? c.DenseFinal,
    };
    var settings = new DemoSettings
    {
        SatContinual = Override(SatChoice.ContinualDefault),
        SatFinetune = Override(SatChoice.FinetuneDefault),
        Quick = quick,
        OutputDirectory = Path.GetFullPath(dir),
        CorpusFile = parse.GetValue(corpusOption),
        TaskFile = parse.GetValue(taskOption),
        ContinualCorpusFile = parse.GetValue(continualOption),
        Sat = parse.GetValue(satOption) != "off",
        SatOnly = parse.GetValue(satOption) == "only",
        SatScore = parse.GetValue(satScoreOption)!,
        SatSelection = parse.GetValue(satSelectionOption) == "sampled" ? Spdf.Sparsity.Omission.UnitSelection.Sampled : Spdf.Sparsity.Omission.UnitSelection.TopK,
        Seed = (ulong)parse.GetValue(seedOption),
        Command = Spdf.Mpi.MpiCommunicator.LaunchedByMpiexec
            ? $"mpiexec -n {Environment.GetEnvironmentVariable("PMI_SIZE")} dotnet samples/Spdf.Demo/bin/Release/net10.0/Spdf.Demo.dll {string.Join(' ', args)}".TrimEnd()
            : "dotnet run -c Release --project samples/Spdf.Demo" + (args.Length > 0 ? " -- " + string.Join(' ', args) : ""),
    };
    // Under mpiexec every rank runs the workflow on its shard of each batch; alone, MPI is never loaded.
    return Spdf.Mpi.MpiCommunicator.LaunchedByMpiexec
        ? Spdf.Mpi.MpiCommunicator.Run(args, world => DemoRunner.Run(settings with { World = world }))
        : DemoRunner.Run(settings);
});
return root.Parse(args).Invoke();

internal static class DemoRunner
{
    public static int Run(DemoSettings s)
    {
        if (s.Rank > 0 && !s.RankFolder)
        {
            // One console and one report for the group: rank 0's. The other ranks keep their data and log apart.
            AnsiConsole.Console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(TextWriter.Null) });
            string own = Directory.CreateTempSubdirectory($"spdf-demo-rank{s.Rank}-").FullName;
            try { return Run(s with { OutputDirectory = own, RankFolder = true }); }
            finally { Directory.Delete(own, recursive: true); }
        }
        Directory.CreateDirectory(s.OutputDirectory);
        using var logger = new FileLogger(Path.Combine(s.OutputDirectory, "train.log"));
        var clock = Stopwatch.StartNew();
        AnsiConsole.MarkupLine("[bold]Spdf demo[/]: sparse pre-training → dense fine-tuning (SPDF) of a GPT on a data-to-text task" + (s.Quick ? " [yellow](quick)[/]" : ""));
        AnsiConsole.MarkupLine($"GEMM micro-kernel [green]{Gemm.KernelName}[/], {Gemm.MaxThreads} threads{(s.Ranks > 1 ? $" per rank, data-parallel over [green]{s.Ranks}[/] MPI ranks ({s.Batch / s.Ranks} sequences per rank and step)" : "")}; writing to [blue]{Markup.Escape(s.OutputDirectory)}[/]");
        var w = new Workflow(s, logger);
        try
        {
            AnsiConsole.Status().Start("Generating data and training the tokenizer…", _ => w.PrepareData());
        }
        catch (Exception e) when (e is ArgumentException or IOException or Spdf.Tensors.Serialization.SpdfFormatException)
        {
            AnsiConsole.MarkupLine($"[red]{Markup.Escape(e.Message)}[/]");
            return 2;
        }
        var c = w.Config;
        AnsiConsole.MarkupLine($"GPT: {c.Layers} layers, width {c.EmbeddingSize}, {c.Heads} heads, context {c.ContextLength}, vocabulary {c.VocabSize}; {w.TrainExamples.Count} training and {w.TestExamples.Count} test MRs{(w.HeldOutReferences > 0 ? $" ({w.HeldOutReferences} references longer than the context held out)" : "")}");
        w.Run();

        var table = new Table().AddColumns("run", "sparsity", "pre-train FLOPs", "pre-train s", "val loss", "val ppl", "fine-tune val loss", "BLEU", "ROUGE-L", "peak MB");
        foreach (var r in w.Results)
            table.AddRow(r.Name, $"{r.Sparsity:P0}", $"{r.PretrainFlops:E2}", $"{r.PretrainSeconds:F1}", $"{r.ValLoss:F3}", $"{Math.Exp(r.ValLoss):F2}",
                $"{r.FinetuneValLoss:F3}", $"{r.Bleu:F2}", $"{r.RougeL:F2}", $"{r.PeakMb:F0}");
        AnsiConsole.Write(table);
        if (w.SatResults.Count > 0)
        {
            var sat = new Table().AddColumns("SAT", "run", "schedule", "wall s", "tok/s", "FLOPs saved", "val loss", "BLEU", "ROUGE-L");
            foreach (var r in w.SatResults)
                sat.AddRow(r.Stage, r.Name, Markup.Escape(r.Schedule), $"{r.Seconds:F1}", $"{r.TokensPerSecond:F0}", $"{r.FlopsSaved:P0}", $"{r.ValLoss:F4}",
                    double.IsFinite(r.Bleu) ? $"{r.Bleu:F2}" : "–", double.IsFinite(r.RougeL) ? $"{r.RougeL:F2}" : "–");
            AnsiConsole.Write(sat);
            foreach (var line in SatVerdict.Lines(w.SatResults)) AnsiConsole.MarkupLine(Markup.Escape(line));
        }
        foreach (var r in w.Results.Where(r => r.Name == Workflow.DenseRun || (r.Name == Workflow.SpdfRun && r.Sparsity == 0.75)))
        {
            AnsiConsole.MarkupLine($"[bold]{Markup.Escape(r.Name)} {r.Sparsity:P0}[/]");
            foreach (var (mr, output) in r.Samples.Take(2))
                AnsiConsole.MarkupLine($"  [grey]{Markup.Escape(mr)}[/]\n  → {Markup.Escape(output)}");
        }
        if (s.RankFolder) return 0; // a rank > 0: rank 0 reports
        Report.Write(s.OutputDirectory, w, s, clock.Elapsed);
        AnsiConsole.MarkupLine($"Report: [blue]{Markup.Escape(Path.Combine(s.OutputDirectory, "report.md"))}[/] ({clock.Elapsed.TotalMinutes:F1} min)");
        if (w.Results.Any(r => !double.IsFinite(r.ValLoss) || !(r.ValLoss < Math.Log(c.VocabSize))))
        {
            AnsiConsole.MarkupLine("[red]A run did not learn: its validation loss is not below the uniform guess.[/]");
            return 1;
        }
        return 0;
    }
}

/// <summary>A minimal ILogger writing timestamped lines to a file (the library logs through ILogger; the console shows progress bars).</summary>
sealed class FileLogger(string path) : ILogger, IDisposable
{
    private readonly StreamWriter _w = new(path, append: false) { AutoFlush = true };
    private readonly Lock _lock = new();
    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
    public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Information;
    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        if (!IsEnabled(logLevel)) return;
        lock (_lock) _w.WriteLine($"{DateTime.Now:HH:mm:ss.fff} {logLevel,-11} {formatter(state, exception)}{(exception is null ? "" : " " + exception)}");
    }
    public void Dispose() => _w.Dispose();
}
