namespace Spdf.Tensors.Nn;

/// <summary>Parameter initialisers, in place (<c>torch.nn.init</c>).</summary>
public static class Init
{
    /// <summary>Fills with samples of N(mean, std²).</summary>
    public static void Normal(Tensor t, float mean = 0f, float std = 1f, Generator? generator = null)
    {
        ArgumentNullException.ThrowIfNull(t);
        if (!(std >= 0)) throw new ArgumentOutOfRangeException(nameof(std), std, "Standard deviation must be non-negative.");
        var g = generator ?? Generator.Default;
        var s = t.AsSpan();
        for (int i = 0; i < s.Length; i++) s[i] = mean + std * g.NextNormal();
        t.MarkModified();
    }

    /// <summary>Fills with samples of U(low, high).</summary>
    public static void Uniform(Tensor t, float low = 0f, float high = 1f, Generator? generator = null)
    {
        ArgumentNullException.ThrowIfNull(t);
        if (!(high >= low)) throw new ArgumentException($"Uniform: high {high} must be ≥ low {low}.", nameof(high));
        var g = generator ?? Generator.Default;
        var s = t.AsSpan();
        for (int i = 0; i < s.Length; i++) s[i] = low + (high - low) * g.NextFloat();
        t.MarkModified();
    }

    /// <summary>Fills with a constant.</summary>
    public static void Constant(Tensor t, float value) => (t ?? throw new ArgumentNullException(nameof(t))).Fill(value);

    /// <summary>Fan-in and fan-out as PyTorch computes them: <c>[out, in, *receptive]</c>.</summary>
    /// <exception cref="ArgumentException">The tensor has fewer than 2 dimensions.</exception>
    public static (int FanIn, int FanOut) Fans(Tensor t)
    {
        ArgumentNullException.ThrowIfNull(t);
        if (t.Rank < 2) throw new ArgumentException($"Fan in/out need a tensor of rank ≥ 2; got shape {t.Shape}.", nameof(t));
        int receptive = t.Shape.Product(2, t.Rank);
        return (t.Shape[1] * receptive, t.Shape[0] * receptive);
    }

    private static float Gain(float negativeSlope) => MathF.Sqrt(2f / (1f + negativeSlope * negativeSlope));

    /// <summary>He/Kaiming uniform: U(−b, b) with <c>b = gain·√(3/fan_in)</c>, gain for leaky ReLU with slope <paramref name="a"/>.</summary>
    public static void KaimingUniform(Tensor t, float a = 0f, Generator? generator = null)
    {
        float bound = Gain(a) * MathF.Sqrt(3f / Fans(t).FanIn);
        Uniform(t, -bound, bound, generator);
    }

    /// <summary>He/Kaiming normal: N(0, (gain/√fan_in)²).</summary>
    public static void KaimingNormal(Tensor t, float a = 0f, Generator? generator = null) =>
        Normal(t, 0f, Gain(a) / MathF.Sqrt(Fans(t).FanIn), generator);

    /// <summary>Glorot/Xavier uniform: U(−b, b) with <c>b = gain·√(6/(fan_in+fan_out))</c>.</summary>
    public static void XavierUniform(Tensor t, float gain = 1f, Generator? generator = null)
    {
        var (fi, fo) = Fans(t);
        float bound = gain * MathF.Sqrt(6f / (fi + fo));
        Uniform(t, -bound, bound, generator);
    }

    /// <summary>Glorot/Xavier normal: N(0, gain²·2/(fan_in+fan_out)).</summary>
    public static void XavierNormal(Tensor t, float gain = 1f, Generator? generator = null)
    {
        var (fi, fo) = Fans(t);
        Normal(t, 0f, gain * MathF.Sqrt(2f / (fi + fo)), generator);
    }
}
