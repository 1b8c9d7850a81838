using System.Text.Json;
using System.Xml.Linq;
using Spdf.Demo;

namespace Spdf.Demo.Tests;

public class DemoTests
{
    [Fact]
    public void QuickRunWritesTheReport()
    {
        var dir = Directory.CreateTempSubdirectory("spdf-demo").FullName;
        try
        {
            var settings = new DemoSettings { Quick = true, OutputDirectory = dir };
            DemoRunner.Run(settings).Should().Be(0);
            using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "results.json")));
            var runs = doc.RootElement.GetProperty("runs").EnumerateArray().ToList();
            runs.Select(r => (r.GetProperty("name").GetString(), r.GetProperty("sparsity").GetDouble())).Should().Equal(
                ("dense", 0.0), ("sparse-pretrain+dense-finetune", 0.5), ("sparse-pretrain+sparse-finetune", 0.5),
                ("sparse-pretrain+dense-finetune", 0.75), ("sparse-pretrain+sparse-finetune", 0.75),
                ("sparse-finetune-gmp", 0.5), ("sparse-finetune-gmp+squarehead", 0.5), ("sparse-finetune-gmp", 0.75), ("sparse-finetune-gmp+squarehead", 0.75),
                ("rigl-pretrain+dense-finetune", 0.75));
            foreach (var r in runs)
            {
                r.GetProperty("val_loss").GetDouble().Should().BeInRange(0, Math.Log(512), "every run learns something");
                r.GetProperty("bleu").GetDouble().Should().BeInRange(0, 100);
                r.GetProperty("rouge_l").GetDouble().Should().BeInRange(0, 100);
                r.GetProperty("pretrain_seconds").GetDouble().Should().BePositive();
            }
            // Sparse pre-training costs fewer FLOPs: 75% < 50% < dense.
            var flops = runs.Select(r => r.GetProperty("pretrain_flops").GetDouble()).ToList();
            flops[3].Should().BeLessThan(flops[1]);
            flops[1].Should().BeLessThan(flops[0]);
            foreach (var svg in new[] { "loss_pretrain.svg", "loss_finetune.svg", "sparsity.svg" })
                XDocument.Load(Path.Combine(dir, svg)).Root!.Name.LocalName.Should().Be("svg");
            File.ReadAllText(Path.Combine(dir, "report.md")).Should().Contain("| sparse-pretrain+dense-finetune | 75");
            File.Exists(Path.Combine(dir, "data", "e2e_train.csv")).Should().BeTrue();
            File.Exists(Path.Combine(dir, "data", "tokenizer.json")).Should().BeTrue();
            File.ReadAllText(Path.Combine(dir, "train.log")).Should().Contain("validation loss");

            // SAT's rows: continual pre-training and fine-tuning, each dense, ladder and constant; omission saves FLOPs
            var sat = doc.RootElement.GetProperty("sat").EnumerateArray().ToList();
            sat.Select(r => (r.GetProperty("stage").GetString(), r.GetProperty("name").GetString())).Should().Equal(
                ("continual pre-training", "dense"), ("continual pre-training", "SAT ladder"), ("continual pre-training", "SAT constant"),
                ("fine-tuning", "dense"), ("fine-tuning", "SAT ladder"), ("fine-tuning", "SAT constant"));
            foreach (var r in sat)
            {
                r.GetProperty("val_loss").GetDouble().Should().BeInRange(0, Math.Log(512));
                r.GetProperty("seconds").GetDouble().Should().BePositive();
                var saved = r.GetProperty("flops_saved").GetDouble();
                if (r.GetProperty("name").GetString() == "dense") saved.Should().Be(0);
                else saved.Should().BeInRange(0.05, 0.9, "omission computes less than the dense run");
            }
            sat[4].GetProperty("bleu").GetDouble().Should().BeInRange(0, 100);
            sat[1].GetProperty("schedule").GetString().Should().StartWith("ladder from 0.75");
            File.Exists(Path.Combine(dir, "data", "corpus_continual.txt")).Should().BeTrue();
            XDocument.Load(Path.Combine(dir, "loss_sat_continual.svg")).Root!.Name.LocalName.Should().Be("svg");
            File.ReadAllText(Path.Combine(dir, "report.md")).Should().Contain("## Sparsity-accelerated training (SAT)").And.Contain("continual pre-training, SAT ladder: validation loss");
            File.ReadAllText(Path.Combine(dir, "train.log")).Should().Contain("SAT omission rate");
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void AnEmptyCorpusIsRejectedBeforeAnyWork()
    {
        var dir = Directory.CreateTempSubdirectory("spdf-demo").FullName;
        try
        {
            var corpus = Path.Combine(dir, "empty.txt");
            File.WriteAllText(corpus, "  \n");
            DemoRunner.Run(new DemoSettings { Quick = true, OutputDirectory = Path.Combine(dir, "out"), CorpusFile = corpus }).Should().Be(2);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void AContinualCorpusTooShortForValidationIsNamed()
    {
        var dir = Directory.CreateTempSubdirectory("spdf-demo").FullName;
        try
        {
            var more = Path.Combine(dir, "more.txt");
            File.WriteAllText(more, "A short note about a pub.\n");
            var w = new Workflow(new DemoSettings { Quick = true, OutputDirectory = Path.Combine(dir, "out"), ContinualCorpusFile = more },
                Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
            FluentActions.Invoking(w.PrepareData).Should().Throw<ArgumentException>()
                .WithMessage("The continual pre-training corpus encodes to * tokens; its validation split needs at least *. Give a longer --continual-corpus.");
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void ABinaryCorpusIsRefusedAsTheTaskFileIs()
    {
        var dir = Directory.CreateTempSubdirectory("spdf-demo").FullName;
        try
        {
            var corpus = Path.Combine(dir, "random.bin");
            var bytes = new byte[4096];
            new Random(5).NextBytes(bytes);
            File.WriteAllBytes(corpus, bytes);
            var w = new Workflow(new DemoSettings { Quick = true, OutputDirectory = Path.Combine(dir, "out"), CorpusFile = corpus },
                Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
            FluentActions.Invoking(w.PrepareData).Should().Throw<Spdf.Tensors.Serialization.SpdfFormatException>().WithMessage("*random.bin: invalid UTF-8 at byte*");
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void TheJobFitsItsOwnTaskWhateverTheCorpusTokenizerMakesOfIt()
    {
        // A corpus of other text (digits and unrelated words) takes the tokenizer's merges, so the generated task's
        // sentences encode to more tokens than the default context of 128 holds: the job must grow the context (up to
        // twice) or hold out what still does not fit, and say so, never stop on its own data.
        var dir = Directory.CreateTempSubdirectory("spdf-demo").FullName;
        try
        {
            var rng = new Random(7);
            var words = Enumerable.Range(0, 400).Select(i => new string(Enumerable.Range(0, 3 + i % 6).Select(_ => (char)('0' + rng.Next(10))).ToArray()) + "qz").ToArray();
            var docs = Enumerable.Range(0, 20000).Select(_ => string.Join(" ", Enumerable.Range(0, 60).Select(_ => words[rng.Next(words.Length)])));
            var corpus = Path.Combine(dir, "other.txt");
            File.WriteAllText(corpus, string.Join("\n\n", docs));
            var w = new Workflow(new DemoSettings { Quick = false, OutputDirectory = Path.Combine(dir, "out"), CorpusFile = corpus },
                Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
            w.PrepareData();
            (w.Config.ContextLength > 128 || w.HeldOutReferences > 0).Should().BeTrue("the task did not fit the default context with this corpus");
            w.Config.ContextLength.Should().BeLessThanOrEqualTo(256);
            int longest = w.TrainExamples.Concat(w.TestExamples).SelectMany(e => e.References.Select(r => Spdf.Gpt.Data.E2EDataset.Encode(w.Tokenizer, e.MeaningRepresentation, r).Tokens.Length)).Max();
            longest.Should().BeLessThanOrEqualTo(w.Config.ContextLength + 1);
            w.TestExamples.Should().NotBeEmpty();
        }
        finally { Directory.Delete(dir, true); }
    }

    [Theory]
    [InlineData(0.5, 7.1, new[] { 0.5, 1.0, 2.0, 5.0 })]
    [InlineData(1.55, 2.5, new[] { 1.6, 1.8, 2.0, 2.2, 2.4 })]
    [InlineData(0.93, 6.7, new[] { 1.0, 2.0, 5.0 })]
    public void ChartTicksAreRoundValues(double lo, double hi, double[] expected)
    {
        Charts.RoundTicks(lo, hi).Select(t => Math.Round(t, 6)).Should().Equal(expected);
    }

    [Fact]
    public void EachChartRendersAsSvgAndPng()
    {
        var dir = Directory.CreateTempSubdirectory("spdf-charts").FullName;
        try
        {
            var curve = (IReadOnlyList<(double, double)>)Enumerable.Range(1, 200).Select(i => ((double)i, 6.0 / Math.Sqrt(i))).ToList();
            var shifted = (IReadOnlyList<(double, double)>)curve.Select(p => (p.Item1, p.Item2 * 1.01)).ToList();
            Charts.Save(Charts.LogLines("Loss chart", "step", "loss", [("dense", curve), ("75% sparse", shifted)]), dir, "lines");
            Charts.Save(Charts.GroupedBars("Bars chart", "% zero", ["a", "b", "c"], [("50 %", [50.0, 50, 50]), ("75 %", [75.0, 75, 75])], 100), dir, "bars");
            foreach (var (name, title) in new[] { ("lines", "Loss chart"), ("bars", "Bars chart") })
            {
                var svg = System.Xml.Linq.XDocument.Load(Path.Combine(dir, name + ".svg"));
                svg.Root!.Name.LocalName.Should().Be("svg");
                svg.ToString().Should().Contain(title);
                var png = File.ReadAllBytes(Path.Combine(dir, name + ".png"));
                png.Take(8).Should().Equal(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A });
                int width = System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(16)), height = System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(20));
                (width, height).Should().Be((Charts.Width, Charts.Height));
            }
            File.ReadAllText(Path.Combine(dir, "lines.svg")).Should().Contain("75% sparse", "the legend names every series");
        }
        finally { Directory.Delete(dir, true); }
    }
}
