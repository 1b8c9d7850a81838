using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace TorchSharpGpt;

/// <summary>A GPT's sizes (nanoGPT's <c>GPTConfig</c>).</summary>
public sealed record NanoGptConfig(int Layers, int Embd, int Heads, int Context, int Vocab, double Dropout = 0.0, bool Bias = true);

/// <summary>
/// A GPT written in plain TorchSharp the way nanoGPT writes it in PyTorch (Karpathy's <c>model.py</c>): token and position
/// embeddings, pre-norm blocks of causal self-attention and a GELU MLP, a final layer norm and an LM head tied to the
/// token embedding. Nothing in it knows Spdf; its parameter names are Hugging Face GPT-2's, as Spdf.Gpt's are, so that
/// state dicts move between the two. Linear layers are held in fields typed <c>Module&lt;Tensor, Tensor&gt;</c>, which
/// lets a library swap them (a field typed <c>Linear</c> cannot be re-pointed: the class is sealed).
/// </summary>
public sealed class NanoGpt : nn.Module<Tensor, Tensor>
{
    private readonly Transformer transformer;

    /// <summary>Builds the model with GPT-2's initialisation (normal 0.02, residual projections scaled by 1/√(2·layers)).</summary>
    public NanoGpt(NanoGptConfig config) : base(nameof(NanoGpt))
    {
        Config = config;
        transformer = new Transformer(config);
        RegisterComponents();
        using var _ = no_grad();
        double residual = 0.02 / Math.Sqrt(2.0 * config.Layers);
        foreach (var (name, p) in named_parameters())
        {
            if (name.EndsWith(".bias") && !name.Contains(".ln_")) p.zero_();
            else if (name.EndsWith("c_proj.weight")) nn.init.normal_(p, 0, residual);
            else if (p.dim() == 2) nn.init.normal_(p, 0, 0.02);
        }
    }

    /// <summary>The sizes.</summary>
    public NanoGptConfig Config { get; }

    /// <summary>Logits <c>[B, T, vocab]</c> for token ids <c>[B, T]</c> (int64).</summary>
    public override Tensor forward(Tensor idx) => forward(idx, null);

    /// <summary>Logits, and each block's output appended to <paramref name="hidden"/> when given (for distillation).</summary>
    public Tensor forward(Tensor idx, List<Tensor>? hidden)
    {
        long t = idx.shape[1];
        if (t > Config.Context) throw new ArgumentException($"Sequence length {t} exceeds the context length {Config.Context}.", nameof(idx));
        using var pos = arange(t, dtype: ScalarType.Int64, device: idx.device);
        var x = transformer.drop.call(transformer.wte.call(idx) + transformer.wpe.call(pos));
        foreach (var block in transformer.h)
        {
            x = block.call(x);
            hidden?.Add(x);
        }
        x = transformer.ln_f.call(x);
        return nn.functional.linear(x, transformer.wte.weight!); // the LM head, tied to the token embedding
    }

    /// <summary>Mean cross-entropy of the next-token targets <c>[B, T]</c> (positions with -100 ignored).</summary>
    public Tensor Loss(Tensor idx, Tensor targets)
    {
        using var logits = forward(idx);
        return nn.functional.cross_entropy(logits.view(-1, Config.Vocab), targets.view(-1), ignore_index: -100);
    }

    private sealed class Transformer : nn.Module
    {
        public readonly Embedding wte, wpe;
        public readonly Dropout drop;
        public readonly ModuleList<Block> h;
        public readonly LayerNorm ln_f;

        public Transformer(NanoGptConfig c) : base("transformer")
        {
            wte = nn.Embedding(c.Vocab, c.Embd);
            wpe = nn.Embedding(c.Context, c.Embd);
            drop = nn.Dropout(c.Dropout);
            h = nn.ModuleList(Enumerable.Range(0, c.Layers).Select(_ => new Block(c)).ToArray());
            ln_f = nn.LayerNorm(c.Embd, bias: c.Bias);
            RegisterComponents();
        }
    }
}

/// <summary>A pre-norm transformer block: <c>x + attn(ln_1(x))</c>, then <c>x + mlp(ln_2(x))</c>.</summary>
public sealed class Block : nn.Module<Tensor, Tensor>
{
    private readonly LayerNorm ln_1;
    private readonly CausalSelfAttention attn;
    private readonly LayerNorm ln_2;
    private readonly Mlp mlp;

    /// <summary>Builds a block.</summary>
    public Block(NanoGptConfig c) : base(nameof(Block))
    {
        ln_1 = nn.LayerNorm(c.Embd, bias: c.Bias);
        attn = new CausalSelfAttention(c);
        ln_2 = nn.LayerNorm(c.Embd, bias: c.Bias);
        mlp = new Mlp(c);
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor x)
    {
        x = x + attn.call(ln_1.call(x));
        return x + mlp.call(ln_2.call(x));
    }
}

/// <summary>Multi-head causal self-attention with one projection to Q, K and V (<c>c_attn</c>) and an output projection (<c>c_proj</c>).</summary>
public sealed class CausalSelfAttention : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> c_attn, c_proj;
    private readonly Dropout resid_dropout;
    private readonly int _heads;
    private readonly double _dropout;

    /// <summary>Builds the attention.</summary>
    public CausalSelfAttention(NanoGptConfig c) : base(nameof(CausalSelfAttention))
    {
        c_attn = nn.Linear(c.Embd, 3 * c.Embd, hasBias: c.Bias);
        c_proj = nn.Linear(c.Embd, c.Embd, hasBias: c.Bias);
        resid_dropout = nn.Dropout(c.Dropout);
        _heads = c.Heads;
        _dropout = c.Dropout;
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor x)
    {
        long b = x.shape[0], t = x.shape[1], e = x.shape[2];
        var qkv = c_attn.call(x).split(e, dim: 2);
        Tensor Heads(Tensor z) => z.view(b, t, _heads, e / _heads).transpose(1, 2); // [B, H, T, hs]
        var y = nn.functional.scaled_dot_product_attention(Heads(qkv[0]), Heads(qkv[1]), Heads(qkv[2]),
            p: training ? _dropout : 0.0, is_casual: true);
        y = y.transpose(1, 2).contiguous().view(b, t, e);
        return resid_dropout.call(c_proj.call(y));
    }
}

/// <summary>The MLP: <c>c_proj(gelu(c_fc(x)))</c> with GPT-2's tanh GELU.</summary>
public sealed class Mlp : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> c_fc, c_proj;
    private readonly Dropout dropout;

    /// <summary>Builds the MLP.</summary>
    public Mlp(NanoGptConfig c) : base(nameof(Mlp))
    {
        c_fc = nn.Linear(c.Embd, 4 * c.Embd, hasBias: c.Bias);
        c_proj = nn.Linear(4 * c.Embd, c.Embd, hasBias: c.Bias);
        dropout = nn.Dropout(c.Dropout);
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor x) => dropout.call(c_proj.call(nn.functional.gelu(c_fc.call(x), GELU.Approximate.tanh)));
}
