using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Spdf.Sparsity.TorchSharp.Tests;

/// <summary>An MLP written the way TorchSharp users write one: fields typed <c>Linear</c> (sealed: masked path only).</summary>
internal sealed class SealedMlp : nn.Module<Tensor, Tensor>
{
    public readonly Linear fc1, fc2;

    public SealedMlp(int inF = 12, int hidden = 40, int outF = 6, bool bias = true) : base(nameof(SealedMlp))
    {
        fc1 = nn.Linear(inF, hidden, hasBias: bias);
        fc2 = nn.Linear(hidden, outF, hasBias: bias);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => fc2.call(nn.functional.gelu(fc1.call(x)));
}

/// <summary>The same MLP with swappable fields (typed <c>Module&lt;Tensor, Tensor&gt;</c>), a <c>Sequential</c> and a <c>ModuleList</c>.</summary>
internal sealed class SwappableNet : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> fc1;
    public readonly Sequential seq;
    public readonly ModuleList<nn.Module<Tensor, Tensor>> blocks;
    public readonly Linear head;

    public SwappableNet(int inF = 12, int hidden = 40, int outF = 6) : base(nameof(SwappableNet))
    {
        fc1 = nn.Linear(inF, hidden);
        seq = nn.Sequential(("0", nn.Linear(hidden, hidden)), ("1", nn.GELU()));
        blocks = nn.ModuleList<nn.Module<Tensor, Tensor>>(nn.Linear(hidden, hidden, hasBias: false));
        head = nn.Linear(hidden, outF);
        RegisterComponents();
    }

    public nn.Module<Tensor, Tensor> Fc1 => fc1;

    public override Tensor forward(Tensor x)
    {
        var h = nn.functional.gelu(fc1.call(x));
        h = seq.call(h);
        foreach (var b in blocks) h = b.call(h);
        return head.call(h);
    }
}

internal static class TorchTestUtil
{
    /// <summary>Float values of a CPU tensor.</summary>
    public static float[] F(Tensor t) => t.detach().contiguous().data<float>().ToArray();

    /// <summary>
    /// Asserts |actual − expected| ≤ atol + rtol·|expected| element by element (NaN fails), naming the first element that
    /// is not, with <paramref name="what"/> (e.g. "grad.h.0.mlp.c_fc.weight").
    /// </summary>
    public static void Close(float[] actual, float[] expected, double rtol, double atol, string what = "values")
    {
        actual.Length.Should().Be(expected.Length, what);
        for (int i = 0; i < actual.Length; i++)
            if (!(Math.Abs(actual[i] - expected[i]) <= atol + rtol * Math.Abs(expected[i])))
                throw new Xunit.Sdk.XunitException($"{what}[{i}]: {actual[i]} vs {expected[i]} (rtol {rtol}, atol {atol})");
    }

    /// <summary><see cref="Close(float[], float[], double, double, string)"/> with rtol = atol = <paramref name="tol"/>.</summary>
    public static void Close(float[] actual, float[] expected, double tol) => Close(actual, expected, tol, tol);

    /// <summary>Copies every parameter and buffer of <paramref name="from"/> into <paramref name="to"/> (same names).</summary>
    public static void CopyState(nn.Module from, nn.Module to)
    {
        var src = from.state_dict();
        using var _ = no_grad();
        foreach (var (name, t) in to.state_dict()) t.copy_(src[name]);
    }
}
