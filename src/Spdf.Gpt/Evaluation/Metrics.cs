using System.Text.RegularExpressions;
using Spdf.Gpt.Data;
using Spdf.Gpt.Generation;
using Spdf.Gpt.Tokenization;
using Spdf.Tensors;
using Spdf.Tensors.Autograd;

namespace Spdf.Gpt.Evaluation;

/// <summary>How BLEU and ROUGE-L split sentences into words.</summary>
public enum BleuTokenization
{
    /// <summary>sacreBLEU's default <c>13a</c> tokeniser (mteval-v13a): punctuation split off, periods and commas kept inside numbers.</summary>
    V13a,

    /// <summary>Split on whitespace only (for text already tokenised, as NLTK takes it).</summary>
    None,
}

/// <summary>Corpus BLEU as sacreBLEU computes it by default: 13a tokenisation, n-grams up to 4, clipped counts over all references, brevity penalty against the closest reference length, no smoothing; on a 0–100 scale.</summary>
public static partial class Bleu
{
    [GeneratedRegex(@"([\{-~\[-`\x20-&\(-\+:-@/])")] private static partial Regex Punct();
    [GeneratedRegex(@"([^0-9])([\.,])")] private static partial Regex PeriodAfter();
    [GeneratedRegex(@"([\.,])([^0-9])")] private static partial Regex PeriodBefore();
    [GeneratedRegex(@"([0-9])(-)")] private static partial Regex DashAfterDigit();

    /// <summary>sacreBLEU's 13a tokenisation of one line.</summary>
    public static string Tokenize13a(string line)
    {
        ArgumentNullException.ThrowIfNull(line);
        line = line.Replace("<skipped>", "", StringComparison.Ordinal).Replace("-\n", "", StringComparison.Ordinal).Replace("\n", " ", StringComparison.Ordinal);
        if (line.Contains('&', StringComparison.Ordinal))
            line = line.Replace("&quot;", "\"", StringComparison.Ordinal).Replace("&amp;", "&", StringComparison.Ordinal)
                .Replace("&lt;", "<", StringComparison.Ordinal).Replace("&gt;", ">", StringComparison.Ordinal);
        line = " " + line + " ";
        line = Punct().Replace(line, " $1 ");
        line = PeriodAfter().Replace(line, "$1 $2 ");
        line = PeriodBefore().Replace(line, " $1 $2");
        line = DashAfterDigit().Replace(line, "$1 $2 ");
        return string.Join(' ', line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries));
    }

    internal static string[] Words(string s, BleuTokenization t) =>
        (t == BleuTokenization.V13a ? Tokenize13a(s) : s).Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);

    /// <summary>Corpus BLEU (0–100) of hypotheses against one or more references each.</summary>
    /// <exception cref="ArgumentException">The counts differ or a hypothesis has no reference.</exception>
    public static double Corpus(IReadOnlyList<string> hypotheses, IReadOnlyList<IReadOnlyList<string>> references, BleuTokenization tokenization = BleuTokenization.V13a)
    {
        ArgumentNullException.ThrowIfNull(hypotheses);
        ArgumentNullException.ThrowIfNull(references);
        if (hypotheses.Count != references.Count)
            throw new ArgumentException($"{hypotheses.Count} hypotheses but {references.Count} reference sets; expected one set per hypothesis.", nameof(references));
        const int order = 4;
        var correct = new long[order];
        var total = new long[order];
        long sysLen = 0, refLen = 0;
        for (int s = 0; s < hypotheses.Count; s++)
        {
            if (references[s] is not { Count: > 0 }) throw new ArgumentException($"Hypothesis {s} has no reference.", nameof(references));
            var hyp = Words(hypotheses[s], tokenization);
            var refs = references[s].Select(r => Words(r, tokenization)).ToList();
            sysLen += hyp.Length;
            int closest = refs[0].Length;
            foreach (var r in refs)
            {
                int d = Math.Abs(r.Length - hyp.Length), best = Math.Abs(closest - hyp.Length);
                if (d < best || (d == best && r.Length < closest)) closest = r.Length;
            }
            refLen += closest;
            for (int n = 1; n <= order; n++)
            {
                var maxRef = new Dictionary<string, int>(StringComparer.Ordinal);
                foreach (var r in refs)
                    foreach (var (g, c) in NGrams(r, n))
                        if (c > maxRef.GetValueOrDefault(g)) maxRef[g] = c;
                foreach (var (g, c) in NGrams(hyp, n))
                {
                    correct[n - 1] += Math.Min(c, maxRef.GetValueOrDefault(g));
                    total[n - 1] += c;
                }
            }
        }
        if (sysLen == 0) return 0;
        double logSum = 0;
        for (int n = 0; n < order; n++)
        {
            if (total[n] == 0 || correct[n] == 0) return 0;
            logSum += Math.Log((double)correct[n] / total[n]);
        }
        double bp = sysLen < refLen ? Math.Exp(1 - (double)refLen / sysLen) : 1;
        return 100 * bp * Math.Exp(logSum / order);
    }

    private static Dictionary<string, int> NGrams(string[] words, int n)
    {
        var d = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i + n <= words.Length; i++)
        {
            var g = string.Join('\u0001', words, i, n);
            d[g] = d.GetValueOrDefault(g) + 1;
        }
        return d;
    }
}

/// <summary>ROUGE-L as the E2E challenge's metrics (coco-caption) compute it: per hypothesis, LCS precision and recall maximised over references, F-measure with β = 1.2, averaged over the corpus; 0–100.</summary>
public static class RougeL
{
    /// <summary>Corpus ROUGE-L (0–100).</summary>
    public static double Corpus(IReadOnlyList<string> hypotheses, IReadOnlyList<IReadOnlyList<string>> references, BleuTokenization tokenization = BleuTokenization.V13a, double beta = 1.2)
    {
        ArgumentNullException.ThrowIfNull(hypotheses);
        ArgumentNullException.ThrowIfNull(references);
        if (hypotheses.Count != references.Count)
            throw new ArgumentException($"{hypotheses.Count} hypotheses but {references.Count} reference sets; expected one set per hypothesis.", nameof(references));
        if (hypotheses.Count == 0) return 0;
        double sum = 0;
        for (int s = 0; s < hypotheses.Count; s++)
            sum += Sentence(hypotheses[s], references[s], tokenization, beta);
        return 100 * sum / hypotheses.Count;
    }

    /// <summary>Sentence ROUGE-L F-measure (0–1).</summary>
    public static double Sentence(string hypothesis, IReadOnlyList<string> references, BleuTokenization tokenization = BleuTokenization.V13a, double beta = 1.2)
    {
        ArgumentNullException.ThrowIfNull(references);
        if (references.Count == 0) throw new ArgumentException("Expected at least one reference.", nameof(references));
        var h = Bleu.Words(hypothesis, tokenization);
        if (h.Length == 0) return 0;
        double pMax = 0, rMax = 0;
        foreach (var refText in references)
        {
            var r = Bleu.Words(refText, tokenization);
            if (r.Length == 0) continue;
            int lcs = Lcs(h, r);
            pMax = Math.Max(pMax, (double)lcs / h.Length);
            rMax = Math.Max(rMax, (double)lcs / r.Length);
        }
        if (pMax == 0 || rMax == 0) return 0;
        double b2 = beta * beta;
        return (1 + b2) * pMax * rMax / (rMax + b2 * pMax);
    }

    /// <summary>Length of the longest common subsequence of two word sequences.</summary>
    public static int Lcs(IReadOnlyList<string> a, IReadOnlyList<string> b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        var prev = new int[b.Count + 1];
        var cur = new int[b.Count + 1];
        for (int i = 1; i <= a.Count; i++)
        {
            for (int j = 1; j <= b.Count; j++)
                cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1 : Math.Max(prev[j], cur[j - 1]);
            (prev, cur) = (cur, prev);
        }
        return prev[b.Count];
    }
}

/// <summary>Loss and perplexity of a model on held-out batches.</summary>
public static class Perplexity
{
    /// <summary>Token-weighted mean cross-entropy (nats) over batches, targets −100 ignored; the model is evaluated in eval mode without gradients.</summary>
    /// <exception cref="ArgumentException">The batches hold no target tokens.</exception>
    public static double Loss(GptModel model, IEnumerable<(IntTensor Inputs, IntTensor Targets)> batches)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(batches);
        bool training = model.Training;
        model.Eval();
        try
        {
            using var _ = GradMode.NoGrad();
            double sum = 0;
            long count = 0;
            foreach (var (x, y) in batches)
            {
                long n = y.Data.Count(t => t != Functional.IgnoreIndex);
                if (n == 0) continue;
                using (TensorScope.Enter()) sum += model.Loss(x, y).Item() * n;
                count += n;
            }
            if (count == 0) throw new ArgumentException("The batches hold no target tokens to evaluate.", nameof(batches));
            return sum / count;
        }
        finally { if (training) model.Train(); }
    }

    /// <summary>exp(<see cref="Loss"/>).</summary>
    public static double Of(GptModel model, IEnumerable<(IntTensor Inputs, IntTensor Targets)> batches) => Math.Exp(Loss(model, batches));
}

/// <summary>Generated outputs and scores of a data-to-text evaluation.</summary>
/// <param name="Bleu">Corpus BLEU (0–100).</param>
/// <param name="RougeL">Corpus ROUGE-L (0–100).</param>
/// <param name="Outputs">(MR, generated sentence) per example.</param>
public sealed record DataToTextScores(double Bleu, double RougeL, IReadOnlyList<(string MeaningRepresentation, string Output)> Outputs);

/// <summary>Evaluates a fine-tuned model on E2E examples: greedy generation from each MR's prompt, BLEU and ROUGE-L against its references.</summary>
public static class DataToTextEvaluation
{
    /// <summary>Generates for every example and scores the outputs.</summary>
    public static DataToTextScores Evaluate(GptModel model, BpeTokenizer tokenizer, IReadOnlyList<E2EExample> examples, int maxNewTokens = 64, IProgress<int>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(examples);
        var options = new GenerationOptions { Temperature = 0, MaxNewTokens = maxNewTokens };
        var outputs = new List<(string, string)>(examples.Count);
        for (int i = 0; i < examples.Count; i++)
        {
            var e = examples[i];
            outputs.Add((e.MeaningRepresentation, TextGenerator.Generate(model, tokenizer, E2EDataset.Prompt(e.MeaningRepresentation), options).Trim()));
            progress?.Report(i + 1);
        }
        var hyps = outputs.Select(o => o.Item2).ToList();
        var refs = examples.Select(e => e.References).ToList();
        return new DataToTextScores(Bleu.Corpus(hyps, refs), RougeL.Corpus(hyps, refs), outputs);
    }
}
