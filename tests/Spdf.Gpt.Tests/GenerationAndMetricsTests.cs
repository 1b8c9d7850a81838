using Spdf.Gpt.Evaluation;
using Spdf.Gpt.Generation;
using Spdf.Sparsity;
using Spdf.Tensors;

namespace Spdf.Gpt.Tests;

public class GenerationAndMetricsTests
{
    private static readonly GptConfig Cfg = GptConfig.Tiny with { VocabSize = 50, ContextLength = 12 };

    private static float[] LastLogits(GptModel m, int[] ids)
    {
        var logits = m.Forward(new IntTensor(ids, new Shape(1, ids.Length)));
        return logits.AsReadOnlySpan().Slice((ids.Length - 1) * Cfg.VocabSize, Cfg.VocabSize).ToArray();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void CachedForwardMatchesTheFullForward(bool sparse)
    {
        var model = new GptModel(Cfg, new Generator(2));
        if (sparse)
        {
            var h = Sparsifier.Apply(model, SparsityConfig.Default(0.75));
            foreach (var l in h.Layers) l.Layer.KernelMode = SparseKernelMode.Compressed;
        }
        var ids = new[] { 3, 14, 15, 9, 26, 5, 35, 8 };
        var cache = model.CreateCache();
        var first = model.ForwardCached(ids.AsSpan(0, 5), cache);
        first.Should().Equal(LastLogits(model, ids[..5]), (a, b) => MathF.Abs(a - b) < 1e-4f);
        for (int i = 5; i < ids.Length; i++)
        {
            var l = model.ForwardCached(ids.AsSpan(i, 1), cache);
            l.Should().Equal(LastLogits(model, ids[..(i + 1)]), (a, b) => MathF.Abs(a - b) < 1e-4f);
        }
        cache.Length.Should().Be(ids.Length);
        FluentActions.Invoking(() => model.ForwardCached(new int[5], cache)).Should().Throw<ArgumentException>().WithMessage("*context length 12*");
    }

    [Fact]
    public void GreedyGenerationIsTheArgmaxOfTheFullModelAndSlidesPastTheContext()
    {
        var model = new GptModel(Cfg, new Generator(4));
        int[] prompt = [1, 2, 3];
        var generated = TextGenerator.Generate(model, prompt, new GenerationOptions { Temperature = 0, MaxNewTokens = 15 });
        generated.Should().HaveCount(15);
        var history = prompt.ToList();
        foreach (int tok in generated)
        {
            var window = history.TakeLast(Cfg.ContextLength).ToArray();
            var logits = LastLogits(model, window);
            tok.Should().Be(Array.IndexOf(logits, logits.Max()));
            history.Add(tok);
        }
    }

    [Fact]
    public void StopTokensEndGeneration()
    {
        var model = new GptModel(Cfg, new Generator(4));
        var all = TextGenerator.Generate(model, [1, 2, 3], new GenerationOptions { Temperature = 0, MaxNewTokens = 6 });
        var stopped = TextGenerator.Generate(model, [1, 2, 3], new GenerationOptions { Temperature = 0, MaxNewTokens = 6, StopTokens = [all[2]] });
        stopped.Should().Equal(all.TakeWhile(t => t != all[2]));
    }

    [Fact]
    public void SamplingRespectsTopKTopPAndTemperature()
    {
        float[] logits = [2f, 1f, 0.5f, -1f, 3f];
        var g = new Generator(7);
        var counts = new int[5];
        for (int i = 0; i < 4000; i++) counts[TextGenerator.Sample(logits, new GenerationOptions { TopK = 2 }, g)]++;
        counts[1].Should().Be(0); counts[2].Should().Be(0); counts[3].Should().Be(0);
        // Top-2 renormalised: p(4) = e^3/(e^3+e^2) = 0.731.
        (counts[4] / 4000.0).Should().BeApproximately(0.731, 0.03);
        for (int i = 0; i < 200; i++) TextGenerator.Sample(logits, new GenerationOptions { TopP = 0.5f }, g).Should().Be(4);
        Array.Clear(counts);
        for (int i = 0; i < 4000; i++) counts[TextGenerator.Sample(logits, new GenerationOptions { Temperature = 1f }, g)]++;
        double z = logits.Sum(l => Math.Exp(l));
        for (int k = 0; k < 5; k++) (counts[k] / 4000.0).Should().BeApproximately(Math.Exp(logits[k]) / z, 0.03);
        FluentActions.Invoking(() => new GenerationOptions { TopP = 0 }.Validate()).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*TopP*");
        FluentActions.Invoking(() => new GenerationOptions { Temperature = -1 }.Validate()).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*Temperature*");
    }

    [Theory]
    [InlineData("Hello, world.", "Hello , world .")]
    [InlineData("It costs $3.50 - really?", "It costs $ 3.50 - really ?")]
    [InlineData("1,000 people (approx.)", "1,000 people ( approx . )")]
    [InlineData("a&amp;b \"q\"", "a & b \" q \"")]
    [InlineData("rated 5-star", "rated 5 - star")]
    public void Tokenize13aMatchesSacreBleu(string input, string expected) => Bleu.Tokenize13a(input).Should().Be(expected);

    [Fact]
    public void BleuOfIdenticalTextIsOneHundredAndOfDisjointTextZero()
    {
        Bleu.Corpus(["the cat sat on the mat"], [["the cat sat on the mat"]]).Should().BeApproximately(100, 1e-9);
        Bleu.Corpus(["a b c d"], [["e f g h"]]).Should().Be(0);
    }

    [Fact]
    public void BleuMatchesAHandComputedValue()
    {
        // hyp 6 words, ref 7: p1 = 5/6, p2 = 3/5, p3 = 1/4, p4 = 0/3 would be 0 -> choose a pair with all matches.
        string hyp = "the cat sat on a mat", refText = "the cat sat on the red mat";
        // 1-grams: the cat sat on a mat -> 5 matched of 6; 2-grams: the cat, cat sat, sat on -> 3/5; 3-grams: 2/4; 4-grams: 1/3.
        double expected = 100 * Math.Exp(1 - 7.0 / 6) * Math.Exp((Math.Log(5.0 / 6) + Math.Log(3.0 / 5) + Math.Log(2.0 / 4) + Math.Log(1.0 / 3)) / 4);
        Bleu.Corpus([hyp], [[refText]]).Should().BeApproximately(expected, 1e-9);
    }

    [Fact]
    public void BleuMatchesNltkOnPreTokenisedText()
    {
        // tests/fixtures/make_bleu_fixture.py: NLTK 3.8 corpus_bleu, default weights, no smoothing.
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "fixtures", "bleu_nltk.json")));
        int n = 0;
        foreach (var c in doc.RootElement.GetProperty("cases").EnumerateArray())
        {
            var hyps = c.GetProperty("hypotheses").EnumerateArray().Select(h => h.GetString()!).ToList();
            var refs = c.GetProperty("references").EnumerateArray().Select(r => (IReadOnlyList<string>)r.EnumerateArray().Select(x => x.GetString()!).ToList()).ToList();
            Bleu.Corpus(hyps, refs, BleuTokenization.None).Should().BeApproximately(c.GetProperty("bleu").GetDouble(), 1e-9, $"case {n} ({hyps.Count} sentences)");
            n++;
        }
        n.Should().Be(5);
    }

    [Fact]
    public void RougeLUsesTheLongestCommonSubsequence()
    {
        RougeL.Lcs("a b c d e".Split(' '), "a x c y e".Split(' ')).Should().Be(3);
        double p = 3.0 / 5, r = 3.0 / 5, b2 = 1.44;
        RougeL.Sentence("a b c d e", ["a x c y e"]).Should().BeApproximately((1 + b2) * p * r / (r + b2 * p), 1e-12);
        RougeL.Corpus(["x"], [["x"]]).Should().BeApproximately(100, 1e-9);
        FluentActions.Invoking(() => RougeL.Corpus(["x"], [])).Should().Throw<ArgumentException>().WithMessage("*1 hypotheses but 0*");
    }
}
