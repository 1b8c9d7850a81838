namespace Spdf.Gpt;

/// <summary>
/// The shape of a GPT (Radford et al. 2019; nanoGPT's <c>GPTConfig</c>). Glossary used across Spdf.Gpt:
/// B = batch, T = tokens (≤ <see cref="ContextLength"/>), C = <see cref="EmbeddingSize"/>, H = <see cref="Heads"/>,
/// E = C / H (head size), V = <see cref="VocabSize"/>, L = <see cref="Layers"/>.
/// </summary>
/// <param name="Layers">Transformer blocks (L).</param>
/// <param name="EmbeddingSize">Channels (C); must be divisible by <paramref name="Heads"/>.</param>
/// <param name="Heads">Attention heads (H).</param>
/// <param name="ContextLength">Largest sequence length (learned position embeddings).</param>
/// <param name="VocabSize">Vocabulary size (V); GPT-2's is 50257.</param>
/// <param name="Dropout">Dropout on embeddings, attention output and MLP output (0 for pre-training at this scale).</param>
/// <param name="Bias">Biases in Linear layers and layer norms (GPT-2: true).</param>
public sealed record GptConfig(int Layers, int EmbeddingSize, int Heads, int ContextLength, int VocabSize, float Dropout = 0f, bool Bias = true)
{
    /// <summary>GPT-2 Small, 124M parameters: 12 layers, d=768, 12 heads, context 1024.</summary>
    public static GptConfig Gpt2Small => new(12, 768, 12, 1024, 50257);

    /// <summary>GPT-3 XL, 1.3B parameters: 24 layers, d=2048, 16 heads, context 2048 (the SPDF paper's largest model).</summary>
    public static GptConfig Gpt3Xl => new(24, 2048, 16, 2048, 50257);

    /// <summary>CPU-sized: 6 layers, d=384, 6 heads, context 256.</summary>
    public static GptConfig Mini => new(6, 384, 6, 256, 8192);

    /// <summary>CPU-sized for tests and quick runs: 2 layers, d=64, 4 heads, context 64.</summary>
    public static GptConfig Tiny => new(2, 64, 4, 64, 512);

    /// <summary>A preset by name: <c>gpt2-small</c>, <c>gpt3-xl</c>, <c>mini</c>, <c>tiny</c>.</summary>
    /// <exception cref="ArgumentException">The name is unknown.</exception>
    public static GptConfig FromPreset(string name) => name switch
    {
        "gpt2-small" => Gpt2Small,
        "gpt3-xl" => Gpt3Xl,
        "mini" => Mini,
        "tiny" => Tiny,
        _ => throw new ArgumentException($"Unknown GPT preset '{name}'; expected gpt2-small, gpt3-xl, mini or tiny.", nameof(name)),
    };

    /// <summary>The dimensions FLOP counting needs, at the model's context length or <paramref name="contextLength"/>.</summary>
    public Sparsity.Flops.TransformerShape ToTransformerShape(int? contextLength = null) =>
        new(Layers, EmbeddingSize, contextLength ?? ContextLength, VocabSize);

    /// <summary>Head size E = C / H.</summary>
    public int HeadSize => EmbeddingSize / Heads;

    /// <summary>Throws unless every size is positive, C is divisible by H and dropout is in [0, 1).</summary>
    /// <exception cref="ArgumentException">A field is invalid; the message names it and its value.</exception>
    public void Validate()
    {
        static void Positive(int v, string n) { if (v <= 0) throw new ArgumentException($"GptConfig.{n} is {v}; expected a positive value.", n); }
        Positive(Layers, nameof(Layers)); Positive(EmbeddingSize, nameof(EmbeddingSize)); Positive(Heads, nameof(Heads));
        Positive(ContextLength, nameof(ContextLength)); Positive(VocabSize, nameof(VocabSize));
        if (EmbeddingSize % Heads != 0)
            throw new ArgumentException($"GptConfig.EmbeddingSize {EmbeddingSize} is not divisible by Heads {Heads}.", nameof(EmbeddingSize));
        if (!(Dropout >= 0 && Dropout < 1)) throw new ArgumentException($"GptConfig.Dropout is {Dropout}; expected a value in [0, 1).", nameof(Dropout));
    }
}
