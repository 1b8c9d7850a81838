using Spdf.Tensors;
using Spdf.Tensors.Nn;

namespace Spdf.Sparsity.Tests;

/// <summary>A GPT-shaped block with nanoGPT names, for testing selection by name.</summary>
internal sealed class TinyBlock : Module<Tensor, Tensor>
{
    public readonly LayerNorm ln_1 = new(8);
    public readonly Attn attn = new();
    public readonly Mlp mlp = new();
    public TinyBlock() => RegisterComponents();
    public override Tensor Forward(Tensor x) => mlp.Forward(attn.Forward(ln_1.Forward(x)));

    internal sealed class Attn : Module<Tensor, Tensor>
    {
        public Linear c_attn = new(8, 24);
        public Linear c_proj = new(24, 8);
        public Attn() => RegisterComponents();
        public override Tensor Forward(Tensor x) => c_proj.Forward(c_attn.Forward(x));
    }

    internal sealed class Mlp : Module<Tensor, Tensor>
    {
        public Linear c_fc = new(8, 32);
        public Linear c_proj = new(32, 8);
        public Mlp() => RegisterComponents();
        public override Tensor Forward(Tensor x) => c_proj.Forward(c_fc.Forward(x).Gelu());
    }
}

internal sealed class TinyLm : Module<IntTensor, Tensor>
{
    public readonly Embedding wte = new(16, 8);
    public readonly ModuleList<TinyBlock> h = new(new TinyBlock(), new TinyBlock());
    public Linear lm_head = new(8, 16, hasBias: false);
    public TinyLm() => RegisterComponents();
    public override Tensor Forward(IntTensor ids)
    {
        var x = wte.Forward(ids);
        foreach (var b in h) x = b.Forward(x);
        return lm_head.Forward(x);
    }
}
