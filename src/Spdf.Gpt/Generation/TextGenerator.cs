using Spdf.Gpt.Tokenization;
using Spdf.Tensors;

namespace Spdf.Gpt.Generation;

/// <summary>How to pick each next token.</summary>
public sealed record GenerationOptions
{
    /// <summary>Most tokens to generate (default 64).</summary>
    public int MaxNewTokens { get; init; } = 64;

    /// <summary>Softmax temperature; 0 picks the most likely token (greedy). Default 1.</summary>
    public float Temperature { get; init; } = 1f;

    /// <summary>Sample only among the k most likely tokens; 0 turns it off.</summary>
    public int TopK { get; init; }

    /// <summary>Sample only among the smallest set of tokens whose probabilities sum to at least p (nucleus sampling); 1 turns it off.</summary>
    public float TopP { get; init; } = 1f;

    /// <summary>Tokens that end generation (not included in the output). Empty by default; <see cref="TextGenerator.Generate(GptModel, BpeTokenizer, string, GenerationOptions?, Generator?)"/> adds end-of-text.</summary>
    public IReadOnlyCollection<int> StopTokens { get; init; } = [];

    /// <summary>Throws when an option is out of range.</summary>
    /// <exception cref="ArgumentOutOfRangeException">An option is out of range; the message names it.</exception>
    public void Validate()
    {
        if (MaxNewTokens < 0) throw new ArgumentOutOfRangeException(nameof(MaxNewTokens), MaxNewTokens, "Expected ≥ 0.");
        if (!(Temperature >= 0) || float.IsInfinity(Temperature)) throw new ArgumentOutOfRangeException(nameof(Temperature), Temperature, "Expected a finite temperature ≥ 0.");
        if (TopK < 0) throw new ArgumentOutOfRangeException(nameof(TopK), TopK, "Expected ≥ 0 (0 = off).");
        if (!(TopP > 0 && TopP <= 1)) throw new ArgumentOutOfRangeException(nameof(TopP), TopP, "Expected a probability in (0, 1].");
    }
}

/// <summary>
/// Autoregressive generation with a key/value cache: the prompt is fed once, then one token per step. When the
/// context fills, the cache is rebuilt from the last <c>context − 1</c> tokens (nanoGPT crops the same way).
/// </summary>
public static class TextGenerator
{
    /// <summary>Generates token ids after <paramref name="prompt"/>.</summary>
    /// <exception cref="ArgumentException">The prompt is empty or an id is outside the vocabulary.</exception>
    public static int[] Generate(GptModel model, ReadOnlySpan<int> prompt, GenerationOptions? options = null, Generator? generator = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        options ??= new GenerationOptions();
        options.Validate();
        if (prompt.IsEmpty) throw new ArgumentException("The prompt needs at least one token.", nameof(prompt));
        generator ??= new Generator(0);
        bool wasTraining = model.Training;
        model.Eval();
        try
        {
            int ctx = model.Config.ContextLength;
            var history = new List<int>(prompt.ToArray());
            var cache = model.CreateCache();
            var start = history.Count > ctx ? history.Count - ctx : 0;
            var logits = model.ForwardCached(history.ToArray().AsSpan(start), cache);
            var output = new List<int>(options.MaxNewTokens);
            var stops = options.StopTokens as ISet<int> ?? options.StopTokens.ToHashSet();
            for (int step = 0; step < options.MaxNewTokens; step++)
            {
                int next = Sample(logits, options, generator);
                if (stops.Contains(next)) break;
                output.Add(next);
                history.Add(next);
                if (step + 1 == options.MaxNewTokens) break;
                if (cache.Length == ctx)
                {
                    cache.Clear();
                    logits = model.ForwardCached(history.ToArray().AsSpan(history.Count - (ctx - 1)), cache);
                }
                else logits = model.ForwardCached([next], cache);
            }
            return output.ToArray();
        }
        finally
        {
            if (wasTraining) model.Train();
        }
    }

    /// <summary>Generates text after a text prompt; stops at end-of-text (added to the stop tokens) or after <see cref="GenerationOptions.MaxNewTokens"/>.</summary>
    public static string Generate(GptModel model, BpeTokenizer tokenizer, string prompt, GenerationOptions? options = null, Generator? generator = null)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        options ??= new GenerationOptions();
        if (tokenizer.EndOfTextId >= 0 && !options.StopTokens.Contains(tokenizer.EndOfTextId))
            options = options with { StopTokens = [.. options.StopTokens, tokenizer.EndOfTextId] };
        var ids = tokenizer.Encode(prompt, allowSpecial: true);
        if (ids.Length == 0 && tokenizer.EndOfTextId >= 0) ids = [tokenizer.EndOfTextId];
        return tokenizer.Decode(Generate(model, ids, options, generator));
    }

    /// <summary>Picks a token from logits under the options (greedy, temperature, top-k, top-p).</summary>
    public static int Sample(ReadOnlySpan<float> logits, GenerationOptions options, Generator generator)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(generator);
        if (logits.IsEmpty) throw new ArgumentException("No logits.", nameof(logits));
        if (options.Temperature == 0) return System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits);
        int v = logits.Length;
        var idx = Enumerable.Range(0, v).ToArray();
        var scaled = new float[v];
        for (int i = 0; i < v; i++) scaled[i] = logits[i] / options.Temperature;
        // Sort ids by logit, descending (ties by id, so sampling is deterministic for a seed).
        Array.Sort(idx, (a, b) => scaled[b].CompareTo(scaled[a]) is var c && c != 0 ? c : a.CompareTo(b));
        int keep = options.TopK > 0 ? Math.Min(options.TopK, v) : v;
        var probs = new double[keep];
        double max = scaled[idx[0]], sum = 0;
        for (int i = 0; i < keep; i++) sum += probs[i] = Math.Exp(scaled[idx[i]] - max);
        if (options.TopP < 1)
        {
            double cum = 0;
            for (int i = 0; i < keep; i++)
            {
                cum += probs[i] / sum;
                if (cum >= options.TopP) { keep = i + 1; break; }
            }
            sum = 0;
            for (int i = 0; i < keep; i++) sum += probs[i];
        }
        double u = generator.NextDouble() * sum, acc = 0;
        for (int i = 0; i < keep; i++)
        {
            acc += probs[i];
            if (u < acc) return idx[i];
        }
        return idx[keep - 1];
    }
}
