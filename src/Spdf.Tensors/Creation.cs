namespace Spdf.Tensors;

public partial class Tensor
{
    /// <summary>A tensor filled with zeros (<c>torch.zeros</c>).</summary>
    public static Tensor Zeros(params int[] shape) => new(new Shape(shape));

    /// <summary>A tensor filled with ones (<c>torch.ones</c>).</summary>
    public static Tensor Ones(params int[] shape) => Full(new Shape(shape), 1f);

    /// <summary>A tensor filled with <paramref name="value"/> (<c>torch.full</c>).</summary>
    public static Tensor Full(Shape shape, float value)
    {
        var t = new Tensor(shape);
        t.Fill(value);
        return t;
    }

    /// <summary>A scalar (rank-0) tensor.</summary>
    public static Tensor Scalar(float value) => new([value], new Shape());

    /// <summary>Values <c>start, start+step, …</c> below <paramref name="end"/> (<c>torch.arange</c>).</summary>
    /// <exception cref="ArgumentException"><paramref name="step"/> is zero or has the wrong sign.</exception>
    public static Tensor Arange(float start, float end, float step = 1f)
    {
        if (step == 0 || float.IsNaN(step) || (end - start) * step < 0)
            throw new ArgumentException($"Arange({start}, {end}, {step}): expected a non-zero step that moves from start towards end.", nameof(step));
        int n = (int)Math.Ceiling((end - start) / step);
        var data = new float[n];
        for (int i = 0; i < n; i++) data[i] = start + i * step;
        return new Tensor(data, new Shape(n));
    }

    /// <summary>A copy of <paramref name="values"/> with the given shape (<c>torch.tensor</c>).</summary>
    public static Tensor From(float[] values, params int[] shape)
    {
        ArgumentNullException.ThrowIfNull(values);
        return new Tensor((float[])values.Clone(), shape.Length == 0 ? new Shape(values.Length) : new Shape(shape));
    }

    /// <summary>A copy of a 2-D array.</summary>
    public static Tensor From(float[,] values)
    {
        ArgumentNullException.ThrowIfNull(values);
        int r = values.GetLength(0), c = values.GetLength(1);
        var data = new float[r * c];
        Buffer.BlockCopy(values, 0, data, 0, data.Length * sizeof(float));
        return new Tensor(data, new Shape(r, c));
    }

    /// <summary>Standard normal samples (<c>torch.randn</c>) from <paramref name="generator"/> or the default one.</summary>
    public static Tensor Randn(Shape shape, Generator? generator = null)
    {
        var g = generator ?? Generator.Default;
        var t = new Tensor(shape);
        var s = t.Storage;
        for (int i = 0; i < s.Length; i++) s[i] = g.NextNormal();
        return t;
    }

    /// <summary>Uniform samples in [0, 1) (<c>torch.rand</c>) from <paramref name="generator"/> or the default one.</summary>
    public static Tensor Rand(Shape shape, Generator? generator = null)
    {
        var g = generator ?? Generator.Default;
        var t = new Tensor(shape);
        var s = t.Storage;
        for (int i = 0; i < s.Length; i++) s[i] = g.NextFloat();
        return t;
    }

    /// <summary>A zero tensor with this tensor's shape.</summary>
    public Tensor ZerosLike() => new(Shape);
}
