using Spdf.Tensors;
using Spdf.Tensors.Autograd;
using Spdf.Tensors.Nn;

namespace Spdf.Gpt;

/// <summary>
/// A GPT-2 style decoder (nanoGPT's <c>model.py</c>): token + learned position embeddings, L pre-LN blocks, a final
/// layer norm and an LM head tied to the token embedding. Parameter names follow Hugging Face GPT-2 / nanoGPT
/// (<c>transformer.h.0.attn.c_attn.weight</c>, …), so <c>SparsityConfig.Default</c> selects exactly Q/K/V
/// (<c>c_attn</c>), the attention output projection and both MLP matrices — the SPDF paper's sparse layers.
/// Initialisation is GPT-2's: N(0, 0.02²), residual projections N(0, (0.02/√(2L))²), zero biases.
/// </summary>
public sealed class GptModel : Module<IntTensor, Tensor>
{
    private readonly Transformer _transformer;

    /// <summary>Builds a model with GPT-2's initialisation from a seeded generator.</summary>
    /// <exception cref="ArgumentException">The config is invalid.</exception>
    public GptModel(GptConfig config, Generator? generator = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        var g = generator ?? new Generator(0);
        Rng = g;
        _transformer = new Transformer(config, g);
        RegisterModule("transformer", _transformer);
        float residualStd = 0.02f / MathF.Sqrt(2f * config.Layers);
        foreach (var (name, p) in NamedParameters())
        {
            if (name.EndsWith(".bias", StringComparison.Ordinal) && !name.Contains(".ln_", StringComparison.Ordinal)) p.Zero();
            else if (name.EndsWith("c_proj.weight", StringComparison.Ordinal)) Init.Normal(p, 0f, residualStd, g);
            else if (p.Rank == 2) Init.Normal(p, 0f, 0.02f, g);
        }
    }

    /// <summary>The configuration.</summary>
    public GptConfig Config { get; }

    /// <summary>The generator that initialised the weights and draws dropout masks (its state goes into trainer checkpoints).</summary>
    internal Generator Rng { get; }

    /// <summary>The blocks.</summary>
    public ModuleList<Block> Blocks => _transformer.h;

    /// <summary>The token embedding <c>[V, C]</c>, also the LM head's weight.</summary>
    public Parameter TokenEmbedding => _transformer.wte.Weight;

    /// <summary>Logits <c>[B, T, V]</c> for token ids <c>[B, T]</c>.</summary>
    /// <exception cref="ArgumentException">The ids are not 2-D, T exceeds the context length, or an id is outside the vocabulary.</exception>
    public override Tensor Forward(IntTensor idx)
    {
        CheckIds(idx);
        var x = _transformer.Forward(idx);                                   // [B, T, C]
        return Tensor.MatMul(x, TokenEmbedding, false, true);                // [B, T, V], tied head
    }

    /// <summary>Logits <c>[B, T, V]</c> and every block's output <c>[B, T, C]</c> (the hidden states SquareHead distillation compares).</summary>
    public (Tensor Logits, IReadOnlyList<Tensor> Hidden) ForwardWithHidden(IntTensor idx)
    {
        CheckIds(idx);
        var hidden = new List<Tensor>(Config.Layers);
        var x = _transformer.Forward(idx, hidden);
        return (Tensor.MatMul(x, TokenEmbedding, false, true), hidden);
    }

    /// <summary>
    /// <see cref="Loss"/> and every block's output <c>[B, T, C]</c>: the student's side of SquareHead distillation, with
    /// the LM head fused into the loss as in <see cref="Loss"/> (<see cref="ForwardWithHidden"/> holds the logits).
    /// </summary>
    /// <exception cref="ArgumentException">As for <see cref="Loss"/>.</exception>
    public (Tensor Loss, IReadOnlyList<Tensor> Hidden) LossWithHidden(IntTensor idx, IntTensor targets)
    {
        ArgumentNullException.ThrowIfNull(targets);
        CheckIds(idx);
        var hidden = new List<Tensor>(Config.Layers);
        return (HeadLoss(_transformer.Forward(idx, hidden), targets), hidden);
    }

    /// <summary>
    /// Every block's output <c>[B, T, C]</c> and nothing after the last block: the teacher's side of SquareHead
    /// distillation, without the final norm and the LM head it does not compare.
    /// </summary>
    /// <exception cref="ArgumentException">As for <see cref="Forward"/>.</exception>
    public IReadOnlyList<Tensor> HiddenStates(IntTensor idx)
    {
        CheckIds(idx);
        var hidden = new List<Tensor>(Config.Layers);
        _transformer.Forward(idx, hidden, finalNorm: false);
        return hidden;
    }

    /// <summary>
    /// Mean next-token cross-entropy of logits for <paramref name="idx"/> against <paramref name="targets"/> <c>[B, T]</c>
    /// (−100 ignored). With <see cref="FusedHeadLoss"/> (the default) the tied LM head and the loss run as one op over
    /// chunks of tokens (<see cref="Functional.LinearCrossEntropy"/>): the <c>[B·T, V]</c> logits and their gradient are
    /// never held.
    /// </summary>
    public Tensor Loss(IntTensor idx, IntTensor targets)
    {
        ArgumentNullException.ThrowIfNull(targets);
        CheckIds(idx);
        return HeadLoss(_transformer.Forward(idx), targets);
    }

    /// <summary>The tied LM head and the loss on the final states <c>[B, T, C]</c>: fused (<see cref="FusedHeadLoss"/>),
    /// or the logits then the cross-entropy.</summary>
    private Tensor HeadLoss(Tensor x, IntTensor targets) => FusedHeadLoss
        ? Functional.LinearCrossEntropy(x.Reshape(-1, Config.EmbeddingSize), TokenEmbedding, targets, chunk: HeadLossChunk)
        : Functional.CrossEntropy(Tensor.MatMul(x, TokenEmbedding, false, true).Reshape(-1, Config.VocabSize), targets);

    /// <summary>Token ids must be <c>[B, T]</c> with T within the context.</summary>
    private void CheckIds(IntTensor idx)
    {
        ArgumentNullException.ThrowIfNull(idx);
        if (idx.Shape.Rank != 2) throw new ArgumentException($"GptModel expects token ids [B, T]; got shape {idx.Shape}.", nameof(idx));
        if (idx.Shape[1] > Config.ContextLength)
            throw new ArgumentException($"Sequence length {idx.Shape[1]} exceeds the model's context length {Config.ContextLength}.", nameof(idx));
    }

    /// <summary>Tokens per chunk of the fused head and loss (0, the default: <see cref="Functional.LinearCrossEntropyChunk"/>).
    /// Larger chunks hold more logits at a time and repack the head's weight fewer times.</summary>
    public int HeadLossChunk { get; set; }

    /// <summary>Whether <see cref="Loss"/> fuses the LM head with the loss (default true); false computes the logits,
    /// then <see cref="Functional.CrossEntropy"/> (the reference, and the way to compare the two).</summary>
    public bool FusedHeadLoss { get; set; } = true;

    /// <summary>Whether each block's MLP runs as one fused op when both its projections are sparse on the compressed
    /// kernels (<see cref="Sparsity.SparseMlp"/>; default true); false runs the two layers and the GELU one after the
    /// other (the reference, and the way to compare the two).</summary>
    public bool FusedSparseMlp
    {
        get => Blocks.Count == 0 || Blocks[0].Mlp.FuseSparse;
        set { foreach (var block in Blocks) block.Mlp.FuseSparse = value; }
    }

    /// <summary>Creates an empty key/value cache for <see cref="ForwardCached"/>.</summary>
    public KvCache CreateCache() => new(Config);

    /// <summary>
    /// Inference with a key/value cache: feeds <paramref name="tokens"/> (the prompt, then one token at a time),
    /// appending their keys and values to <paramref name="cache"/>, and returns the next-token logits <c>[V]</c> after
    /// the last one. No autograd graph is built; sparse layers use their decode kernels. Call <see cref="Module.Eval"/>
    /// first when the model has dropout.
    /// </summary>
    /// <exception cref="ArgumentException">No tokens, an id outside the vocabulary, or the cache would exceed the context length.</exception>
    public float[] ForwardCached(ReadOnlySpan<int> tokens, KvCache cache)
    {
        ArgumentNullException.ThrowIfNull(cache);
        if (tokens.IsEmpty) throw new ArgumentException("Expected at least one token.", nameof(tokens));
        if (cache.Length + tokens.Length > Config.ContextLength)
            throw new ArgumentException($"The cache holds {cache.Length} positions; {tokens.Length} more exceed the context length {Config.ContextLength}.", nameof(tokens));
        using var _ = GradMode.NoGrad();
        int n = tokens.Length, c = Config.EmbeddingSize;
        var x = new Tensor(new Shape(1, n, c));
        var xs = x.AsSpan();
        var wte = _transformer.wte.Weight.AsReadOnlySpan();
        var wpe = _transformer.wpe.Weight.AsReadOnlySpan();
        for (int i = 0; i < n; i++)
        {
            int id = tokens[i];
            if ((uint)id >= (uint)Config.VocabSize) throw new ArgumentException($"Token {i} is {id}; expected an id in [0, {Config.VocabSize}).", nameof(tokens));
            System.Numerics.Tensors.TensorPrimitives.Add(wte.Slice(id * c, c), wpe.Slice((cache.Length + i) * c, c), xs.Slice(i * c, c));
        }
        for (int l = 0; l < Blocks.Count; l++)
        {
            var block = Blocks[l];
            x = x + block.Attention.ForwardCached(block.AttentionNorm.Forward(x), cache, l);
            x = x + block.Mlp.Forward(block.MlpNorm.Forward(x));
        }
        cache.Length += n;
        var last = _transformer.ln_f.Forward(x.Narrow(1, n - 1, 1).Reshape(1, c));
        return Tensor.MatMul(last, TokenEmbedding, false, true).AsReadOnlySpan().ToArray();
    }

    /// <summary>The embeddings, blocks and final norm (<c>transformer.*</c> in Hugging Face GPT-2).</summary>
    private sealed class Transformer : Module<IntTensor, Tensor>
    {
        public readonly Embedding wte, wpe;
        public readonly Dropout drop;
        public readonly ModuleList<Block> h;
        public readonly LayerNorm ln_f;

        public Transformer(GptConfig c, Generator g)
        {
            wte = new Embedding(c.VocabSize, c.EmbeddingSize, g);
            wpe = new Embedding(c.ContextLength, c.EmbeddingSize, g);
            drop = new Dropout(c.Dropout, g);
            h = new ModuleList<Block>(Enumerable.Range(0, c.Layers).Select(_ => new Block(c, g)));
            ln_f = new LayerNorm(c.EmbeddingSize, hasBias: c.Bias);
            RegisterComponents();
        }

        public override Tensor Forward(IntTensor idx) => Forward(idx, null);

        /// <summary>The last block's output through the final norm (without it when <paramref name="finalNorm"/> is
        /// false), with every block's output added to <paramref name="hidden"/> when given.</summary>
        public Tensor Forward(IntTensor idx, List<Tensor>? hidden, bool finalNorm = true)
        {
            int t = idx.Shape[1];
            var pos = new IntTensor(Enumerable.Range(0, t).ToArray(), new Shape(t));
            var x = drop.Forward(wte.Forward(idx) + wpe.Forward(pos));        // [B, T, C] + [T, C]
            foreach (var block in h)
            {
                x = block.Forward(x);
                hidden?.Add(x);
            }
            return finalNorm ? ln_f.Forward(x) : x;
        }
    }
}

/// <summary>
/// Keys and values of every layer for the positions a model has seen (<c>[H, context, E]</c> per layer), so that
/// generating a token costs one position's work instead of the whole prefix's.
/// </summary>
public sealed class KvCache
{
    internal KvCache(GptConfig c)
    {
        Capacity = c.ContextLength;
        int size = c.Heads * c.ContextLength * (c.EmbeddingSize / c.Heads);
        Keys = Enumerable.Range(0, c.Layers).Select(_ => new float[size]).ToArray();
        Values = Enumerable.Range(0, c.Layers).Select(_ => new float[size]).ToArray();
    }

    /// <summary>Positions cached so far.</summary>
    public int Length { get; internal set; }

    /// <summary>Positions the cache can hold (the model's context length).</summary>
    public int Capacity { get; }

    internal float[][] Keys { get; }
    internal float[][] Values { get; }

    /// <summary>Forgets every position.</summary>
    public void Clear() => Length = 0;
}

/// <summary>A pre-LN transformer block: <c>x + attn(ln_1(x))</c>, then <c>x + mlp(ln_2(x))</c>.</summary>
public sealed class Block : Module<Tensor, Tensor>
{
    // Declared in Hugging Face GPT-2's order, which RegisterComponents keeps; registered under GPT-2's names.
    /// <summary>Layer norm before attention (<c>ln_1</c> in checkpoints).</summary>
    [field: ComponentName("ln_1")] public LayerNorm AttentionNorm { get; }
    /// <summary>Causal self-attention (<c>attn</c>).</summary>
    [field: ComponentName("attn")] public CausalSelfAttention Attention { get; }
    /// <summary>Layer norm before the MLP (<c>ln_2</c>).</summary>
    [field: ComponentName("ln_2")] public LayerNorm MlpNorm { get; }
    /// <summary>The MLP (<c>mlp</c>).</summary>
    [field: ComponentName("mlp")] public Mlp Mlp { get; }

    /// <summary>Builds the block.</summary>
    public Block(GptConfig c, Generator g)
    {
        ArgumentNullException.ThrowIfNull(c);
        AttentionNorm = new LayerNorm(c.EmbeddingSize, hasBias: c.Bias);
        Attention = new CausalSelfAttention(c, g);
        MlpNorm = new LayerNorm(c.EmbeddingSize, hasBias: c.Bias);
        Mlp = new Mlp(c, g);
        RegisterComponents();
    }

    /// <summary>SAT's omission driving this block (set by <see cref="Training.SatOmission"/>), or null.</summary>
    internal Training.SatOmission? Planner { get; set; }

    /// <summary>The block's place in the model (for SAT's seeds and logs).</summary>
    internal int Index { get; set; }

    /// <inheritdoc />
    public override Tensor Forward(Tensor x)
    {
        var a = AttentionNorm.Forward(x);
        if (Planner is { } p) Attention.KeptHeads = p.Heads(this, a);            // chosen from the batch's input, before the projection
        x = x + Attention.Forward(a);
        var m = MlpNorm.Forward(x);
        if (Planner is { } q) Mlp.KeptChannels = q.Channels(this, m);
        return x + Mlp.Forward(m);
    }
}

/// <summary>
/// Multi-head causal self-attention with a fused QKV projection (<c>c_attn</c>, <c>[3C, C]</c>) and an output
/// projection (<c>c_proj</c>, <c>[C, C]</c>); the attention itself is the engine's fused causal kernel.
/// </summary>
public sealed class CausalSelfAttention : Module<Tensor, Tensor>
{
    /// <summary>Q, K, V projection (<c>c_attn</c> in checkpoints); typed <c>Linear</c> so that the Sparsifier can swap in a SparseLinear.</summary>
    [field: ComponentName("c_attn")] public Linear QkvProjection { get; private set; }
    /// <summary>Output projection (<c>c_proj</c>).</summary>
    [field: ComponentName("c_proj")] public Linear OutputProjection { get; private set; }
    [ComponentName("resid_dropout")] private readonly Dropout _residDropout;
    private readonly int _heads;

    /// <summary>Builds the layer.</summary>
    public CausalSelfAttention(GptConfig c, Generator g)
    {
        ArgumentNullException.ThrowIfNull(c);
        QkvProjection = new Linear(c.EmbeddingSize, 3 * c.EmbeddingSize, c.Bias, g);
        OutputProjection = new Linear(c.EmbeddingSize, c.EmbeddingSize, c.Bias, g);
        _residDropout = new Dropout(c.Dropout, g);
        _heads = c.Heads;
        RegisterComponents();
    }

    private int[]? _keptHeads;

    /// <summary>
    /// The heads the next forward passes compute (sparsity-accelerated training), ascending; null (default) computes
    /// all. A kept head's rows of Q, K and V and its columns of the output projection form smaller dense products;
    /// omitted heads get no gradient.
    /// </summary>
    /// <exception cref="ArgumentException">Not strictly ascending indices in [0, heads), or empty.</exception>
    public int[]? KeptHeads
    {
        get => _keptHeads;
        set => _keptHeads = UnitOmission.Check(value, _heads, "heads");
    }

    /// <summary>Heads of the layer.</summary>
    public int Heads => _heads;

    /// <summary>Whether training passes record <see cref="ActivationStats"/> (SAT's activation score).</summary>
    internal bool RecordActivations { get; set; }

    /// <summary>Per head, the mean over tokens of its output's norm in the last pass that computed it; null before.</summary>
    internal float[]? ActivationStats { get; set; }

    private void Record(Tensor y, int[]? kept, int e)
    {
        var ys = y.AsReadOnlySpan();
        int width = y.Shape[-1], tokens = ys.Length / width, k = width / e;
        ActivationStats ??= new float[_heads];
        for (int j = 0; j < k; j++)
        {
            double sum = 0;
            for (int t = 0; t < tokens; t++) sum += Math.Sqrt(System.Numerics.Tensors.TensorPrimitives.SumOfSquares(ys.Slice(t * width + j * e, e)));
            ActivationStats[kept?[j] ?? j] = (float)(sum / Math.Max(1, tokens));
        }
    }

    /// <inheritdoc />
    public override Tensor Forward(Tensor x)
    {
        if (_keptHeads is { } kept) return ForwardKept(x, kept);
        var qkv = QkvProjection.Forward(x);                                    // [B, T, 3C]
        var y = Functional.CausalSelfAttentionPacked(qkv, _heads);             // [B, T, C], heads split and merged inside
        if (RecordActivations && Training) Record(y, null, OutputProjection.InFeatures / _heads);
        return _residDropout.Forward(OutputProjection.Forward(y));
    }

    /// <summary>The rows of the QKV projection that <paramref name="kept"/> heads use, ascending:
    /// [Q of the kept heads | K of them | V of them], as the packed attention kernel reads them.</summary>
    internal int[] QkvRows(int[] kept)
    {
        int c = QkvProjection.InFeatures, e = c / _heads;
        var rows = new int[3 * kept.Length * e];
        for (int part = 0, at = 0; part < 3; part++)
            foreach (int h in kept)
                for (int i = 0; i < e; i++) rows[at++] = part * c + h * e + i;
        return rows;
    }

    /// <summary>The columns of the output projection that <paramref name="kept"/> heads feed, ascending.</summary>
    internal int[] OutputColumns(int[] kept)
    {
        int e = OutputProjection.InFeatures / _heads;
        return kept.SelectMany(h => Enumerable.Range(h * e, e)).ToArray();
    }

    private Tensor ForwardKept(Tensor x, int[] kept)
    {
        var (wq, bq) = UnitOmission.Rows(QkvProjection, QkvRows(kept));
        var qkv = Functional.Linear(x, wq, bq);                                // [B, T, 3ke]
        var y = Functional.CausalSelfAttentionPacked(qkv, kept.Length);        // [B, T, ke]
        if (RecordActivations) Record(y, kept, QkvProjection.InFeatures / _heads);
        return _residDropout.Forward(Functional.Linear(y, UnitOmission.Columns(OutputProjection, OutputColumns(kept)), OutputProjection.Bias));
    }

    /// <summary>Attention of new positions over the cached ones plus themselves (inference only).</summary>
    internal Tensor ForwardCached(Tensor x, KvCache cache, int layer)
    {
        int n = x.Size(1), ch = x.Size(2), e = ch / _heads, past = cache.Length;
        var qkv = QkvProjection.Forward(x).AsReadOnlySpan();       // [1, n, 3C]
        var k = cache.Keys[layer];
        var v = cache.Values[layer];
        int cap = cache.Capacity;
        for (int i = 0; i < n; i++)
            for (int h = 0; h < _heads; h++)
            {
                qkv.Slice(i * 3 * ch + ch + h * e, e).CopyTo(k.AsSpan((h * cap + past + i) * e, e));
                qkv.Slice(i * 3 * ch + 2 * ch + h * e, e).CopyTo(v.AsSpan((h * cap + past + i) * e, e));
            }
        var y = new Tensor(new Shape(1, n, ch));
        var ys = y.AsSpan();
        float scale = 1f / MathF.Sqrt(e);
        var scores = new float[past + n];
        for (int i = 0; i < n; i++)
            for (int h = 0; h < _heads; h++)
            {
                var q = qkv.Slice(i * 3 * ch + h * e, e);
                int len = past + i + 1;
                for (int j = 0; j < len; j++)
                    scores[j] = System.Numerics.Tensors.TensorPrimitives.Dot(q, k.AsSpan((h * cap + j) * e, e)) * scale;
                var s = scores.AsSpan(0, len);
                System.Numerics.Tensors.TensorPrimitives.SoftMax(s, s);
                var dst = ys.Slice(i * ch + h * e, e);
                for (int j = 0; j < len; j++)
                    System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(v.AsSpan((h * cap + j) * e, e), s[j], dst, dst);
            }
        return OutputProjection.Forward(y);
    }
}

/// <summary>The MLP: <c>c_proj(gelu(c_fc(x)))</c> with width 4C and GPT-2's tanh GELU.</summary>
public sealed class Mlp : Module<Tensor, Tensor>
{
    /// <summary>Up projection <c>[4C, C]</c> (<c>c_fc</c> in checkpoints).</summary>
    [field: ComponentName("c_fc")] public Linear UpProjection { get; private set; }
    /// <summary>Down projection <c>[C, 4C]</c> (<c>c_proj</c>).</summary>
    [field: ComponentName("c_proj")] public Linear DownProjection { get; private set; }
    [ComponentName("dropout")] private readonly Dropout _dropout;

    /// <summary>Builds the layer.</summary>
    public Mlp(GptConfig c, Generator g)
    {
        ArgumentNullException.ThrowIfNull(c);
        UpProjection = new Linear(c.EmbeddingSize, 4 * c.EmbeddingSize, c.Bias, g);
        DownProjection = new Linear(4 * c.EmbeddingSize, c.EmbeddingSize, c.Bias, g);
        _dropout = new Dropout(c.Dropout, g);
        RegisterComponents();
    }

    private int[]? _keptChannels;

    /// <summary>Whether the forward pass fuses the two projections and the GELU into one op where both projections are
    /// sparse on the compressed kernels (<see cref="Sparsity.SparseMlp"/>; default true).</summary>
    public bool FuseSparse { get; set; } = true;

    /// <summary>Whether training passes record <see cref="ActivationStats"/> (SAT's activation score).</summary>
    internal bool RecordActivations { get; set; }

    /// <summary>Per channel, the mean |GELU output| over tokens in the last pass that computed it; null before.</summary>
    internal float[]? ActivationStats { get; set; }

    private void Record(Tensor h, int[]? kept)
    {
        var hs = h.AsReadOnlySpan();
        int width = h.Shape[-1], tokens = hs.Length / width;
        ActivationStats ??= new float[UpProjection.OutFeatures];
        var sums = new float[2 * width];
        Span<float> sum = sums.AsSpan(0, width), row = sums.AsSpan(width);
        for (int t = 0; t < tokens; t++)
        {
            System.Numerics.Tensors.TensorPrimitives.Abs(hs.Slice(t * width, width), row);
            System.Numerics.Tensors.TensorPrimitives.Add(sum, row, sum);
        }
        for (int j = 0; j < width; j++) ActivationStats[kept?[j] ?? j] = sum[j] / Math.Max(1, tokens);
    }

    /// <summary>
    /// The channels the next forward passes compute (sparsity-accelerated training), ascending; null (default) computes
    /// all 4C. A channel is a row of the up projection and the matching column of the down projection; the kept ones
    /// form smaller dense products, and omitted ones get no gradient.
    /// </summary>
    /// <exception cref="ArgumentException">Not strictly ascending indices in [0, 4C), or empty.</exception>
    public int[]? KeptChannels
    {
        get => _keptChannels;
        set => _keptChannels = UnitOmission.Check(value, UpProjection.OutFeatures, "channels");
    }

    /// <inheritdoc />
    public override Tensor Forward(Tensor x)
    {
        if (_keptChannels is not { } kept)
        {
            // The fused op keeps no GELU output for the activation score to read.
            if (FuseSparse && !(RecordActivations && Training) && Sparsity.SparseMlp.TryForwardGelu(UpProjection, DownProjection, x) is { } fused)
                return _dropout.Forward(fused);
            var full = UpProjection.Forward(x).Gelu();
            if (RecordActivations && Training) Record(full, null);
            return _dropout.Forward(DownProjection.Forward(full));
        }
        var (wu, bu) = UnitOmission.Rows(UpProjection, kept);
        var h = Functional.Linear(x, wu, bu).Gelu();                           // [.., k]
        if (RecordActivations) Record(h, kept);
        return _dropout.Forward(Functional.Linear(h, UnitOmission.Columns(DownProjection, kept), DownProjection.Bias));
    }
}
