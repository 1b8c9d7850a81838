using System.Globalization;
using System.Text;

namespace Spdf.Sparsity.Flops;

/// <summary>The dimensions of a GPT-style decoder that FLOP counting needs.</summary>
/// <param name="Layers">Blocks (L).</param>
/// <param name="EmbeddingSize">Channels (C).</param>
/// <param name="ContextLength">Sequence length (T) the attention products are counted at.</param>
/// <param name="VocabSize">Vocabulary (V) of the LM head.</param>
/// <param name="MlpRatio">MLP width over C (GPT: 4).</param>
public sealed record TransformerShape(int Layers, int EmbeddingSize, int ContextLength, int VocabSize, int MlpRatio = 4);

/// <summary>FLOPs of one layer (per token).</summary>
/// <param name="Name">Layer name (e.g. <c>h.*.attn.c_attn</c>).</param>
/// <param name="Count">How many such layers the model has.</param>
/// <param name="Density">Kept fraction of the weights (1 for dense).</param>
/// <param name="ForwardDense">Forward FLOPs per token, all such layers, dense.</param>
/// <param name="ForwardSparse">Forward FLOPs per token, all such layers, at their density.</param>
public sealed record LayerFlops(string Name, int Count, double Density, double ForwardDense, double ForwardSparse)
{
    /// <summary>Training FLOPs per token (forward + backward = 3 × forward), dense.</summary>
    public double TrainDense => 3 * ForwardDense;

    /// <summary>Training FLOPs per token, sparse.</summary>
    public double TrainSparse => 3 * ForwardSparse;
}

/// <summary>A model's FLOPs per token, dense and sparse, layer by layer.</summary>
/// <param name="Layers">One entry per layer kind.</param>
/// <param name="Sparsity">The sparsity of the sparse layers.</param>
public sealed record FlopReport(IReadOnlyList<LayerFlops> Layers, double Sparsity)
{
    /// <summary>Forward FLOPs per token, dense.</summary>
    public double ForwardPerTokenDense => Layers.Sum(l => l.ForwardDense);
    /// <summary>Forward FLOPs per token, sparse.</summary>
    public double ForwardPerTokenSparse => Layers.Sum(l => l.ForwardSparse);
    /// <summary>Training FLOPs per token, dense.</summary>
    public double TrainPerTokenDense => Layers.Sum(l => l.TrainDense);
    /// <summary>Training FLOPs per token, sparse.</summary>
    public double TrainPerTokenSparse => Layers.Sum(l => l.TrainSparse);
    /// <summary>Dense over sparse training FLOPs.</summary>
    public double Reduction => TrainPerTokenDense / TrainPerTokenSparse;

    /// <summary>Training FLOPs of a step of <paramref name="tokens"/> tokens (sparse when <paramref name="sparse"/>).</summary>
    public double TrainPerStep(long tokens, bool sparse) => tokens * (sparse ? TrainPerTokenSparse : TrainPerTokenDense);

    /// <summary>A plain-text per-layer table.</summary>
    public override string ToString()
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.AppendLine(inv, $"{"layer",-22} {"count",5} {"density",8} {"train GFLOP/token dense",24} {"sparse",10}");
        foreach (var l in Layers)
            sb.AppendLine(inv, $"{l.Name,-22} {l.Count,5} {l.Density,8:P0} {l.TrainDense / 1e9,24:F4} {l.TrainSparse / 1e9,10:F4}");
        sb.AppendLine(inv, $"{"total",-22} {"",5} {"",8} {TrainPerTokenDense / 1e9,24:F4} {TrainPerTokenSparse / 1e9,10:F4}   reduction {Reduction:F2}x");
        return sb.ToString();
    }
}

/// <summary>
/// Analytic FLOP counts, the convention of Kaplan et al. (2020) and Narayanan et al. (2021) that the SPDF paper uses:
/// 2 FLOPs per multiply-add; the backward pass of a matmul costs twice its forward (input and weight gradients);
/// attention's score (QKᵀ) and value (PV) products are counted over the full context, <c>2·T·C</c> each per token and
/// layer (causal masking is not subtracted); a sparse matmul scales with its density in all three passes (the weight
/// gradient is computed only at kept positions); the LM head (tied or not) is a dense <c>2·C·V</c>; embeddings, norms,
/// activations and softmax are not counted.
/// </summary>
public static class FlopCounter
{
    /// <summary>FLOPs of a GPT with every attention/MLP matrix at <paramref name="sparsity"/> (the paper's uniform setting).</summary>
    /// <exception cref="ArgumentOutOfRangeException">The sparsity is outside [0, 1).</exception>
    public static FlopReport ForTransformer(TransformerShape shape, double sparsity) => ForTransformer(shape, sparsity, 1, 1);

    /// <summary>
    /// FLOPs of a GPT step of sparsity-accelerated training (SAT), which computed only the kept share of each block's MLP
    /// channels (<paramref name="keptChannels"/>) and attention heads (<paramref name="keptHeads"/>): the up and down
    /// projections scale with the first, the QKV and output projections and attention's products with the second, on top
    /// of <paramref name="sparsity"/>; the LM head does not shrink. The report's sparse counts are the step's.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The sparsity is outside [0, 1), or a kept share outside (0, 1].</exception>
    public static FlopReport ForTransformer(TransformerShape shape, double sparsity, double keptChannels, double keptHeads)
    {
        if (!(keptChannels > 0 && keptChannels <= 1)) throw new ArgumentOutOfRangeException(nameof(keptChannels), keptChannels, "Expected the kept share of MLP channels in (0, 1].");
        if (!(keptHeads > 0 && keptHeads <= 1)) throw new ArgumentOutOfRangeException(nameof(keptHeads), keptHeads, "Expected the kept share of heads in (0, 1].");
        ArgumentNullException.ThrowIfNull(shape);
        SparsityGuard.Sparsity(sparsity, nameof(sparsity));
        if (shape.Layers <= 0 || shape.EmbeddingSize <= 0 || shape.ContextLength <= 0 || shape.VocabSize <= 0 || shape.MlpRatio <= 0)
            throw new ArgumentException($"Transformer shape {shape} has a non-positive size.", nameof(shape));
        double c = shape.EmbeddingSize, l = shape.Layers, d = 1 - sparsity, m = shape.MlpRatio;
        LayerFlops Matmul(string name, double inF, double outF, double kept) => new(name, shape.Layers, d, l * 2 * inF * outF, l * 2 * inF * outF * d * kept);
        return new FlopReport(
        [
            Matmul("h.*.attn.c_attn", c, 3 * c, keptHeads),
            new LayerFlops("h.*.attn (QKᵀ, PV)", shape.Layers, 1, l * 2 * 2 * shape.ContextLength * c, l * 2 * 2 * shape.ContextLength * c * keptHeads),
            Matmul("h.*.attn.c_proj", c, c, keptHeads),
            Matmul("h.*.mlp.c_fc", c, m * c, keptChannels),
            Matmul("h.*.mlp.c_proj", m * c, c, keptChannels),
            new LayerFlops("lm_head", 1, 1, 2 * c * shape.VocabSize, 2 * c * shape.VocabSize),
        ], sparsity);
    }

    /// <summary>
    /// FLOPs of linear layers, each at its own density (1 for a dense layer); the report's sparsity is over the sparse
    /// ones. Operations that are not linear layers (attention products, a tied head) are not seen here; use
    /// <see cref="ForTransformer(TransformerShape, double)"/> for a GPT. Each engine binding lists a model's layers for it (<c>ForModule</c>).
    /// </summary>
    /// <exception cref="ArgumentException">A layer has a non-positive size or a density outside [0, 1].</exception>
    public static FlopReport ForLinearLayers(IEnumerable<LinearLayerFlops> layers)
    {
        ArgumentNullException.ThrowIfNull(layers);
        var rows = new List<LayerFlops>();
        double kept = 0, total = 0;
        foreach (var l in layers)
        {
            if (l.InFeatures <= 0 || l.OutFeatures <= 0) throw new ArgumentException($"Linear layer '{l.Name}' has size {l.InFeatures}→{l.OutFeatures}; expected positive sizes.", nameof(layers));
            double density = l.Density ?? 1;
            if (!(density >= 0 && density <= 1)) throw new ArgumentException($"Linear layer '{l.Name}' has density {density}; expected a value in [0, 1].", nameof(layers));
            double f = 2.0 * l.InFeatures * l.OutFeatures;
            rows.Add(new LayerFlops(l.Name, 1, density, f, f * density));
            if (l.Density is not null) { kept += (double)l.InFeatures * l.OutFeatures * density; total += (double)l.InFeatures * l.OutFeatures; }
        }
        return new FlopReport(rows, total == 0 ? 0 : 1 - kept / total);
    }
}

/// <summary>One linear layer for <see cref="FlopCounter.ForLinearLayers"/>.</summary>
/// <param name="Name">Module name.</param>
/// <param name="InFeatures">Input features.</param>
/// <param name="OutFeatures">Output features.</param>
/// <param name="Density">Kept fraction for a sparse layer; null for a dense one.</param>
public sealed record LinearLayerFlops(string Name, int InFeatures, int OutFeatures, double? Density);
