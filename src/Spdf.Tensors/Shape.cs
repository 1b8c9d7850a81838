namespace Spdf.Tensors;

/// <summary>
/// The dimensions of a tensor, outermost first (row-major), e.g. <c>[batch, tokens, channels]</c>.
/// Immutable; equality is by value. Follows <c>torch.Size</c>.
/// </summary>
public readonly struct Shape : IEquatable<Shape>
{
    private readonly int[]? _dims;

    /// <summary>Creates a shape from its dimensions.</summary>
    /// <param name="dims">Each dimension; all must be non-negative.</param>
    /// <exception cref="ArgumentException">A dimension is negative.</exception>
    public Shape(params int[] dims)
    {
        ArgumentNullException.ThrowIfNull(dims);
        for (int i = 0; i < dims.Length; i++)
        {
            if (dims[i] < 0)
                throw new ArgumentException($"Dimension {i} of shape [{string.Join(", ", dims)}] is {dims[i]}; expected a non-negative size.", nameof(dims));
        }
        _dims = (int[])dims.Clone();
    }

    /// <summary>The number of dimensions (rank).</summary>
    public int Rank => _dims?.Length ?? 0;

    /// <summary>The size of dimension <paramref name="dim"/>; negative values count from the end.</summary>
    public int this[int dim] => Dims[NormalizeDim(dim)];

    /// <summary>The dimensions as a read-only span.</summary>
    public ReadOnlySpan<int> Dims => _dims ?? [];

    /// <summary>The number of elements (product of the dimensions; 1 for a scalar).</summary>
    public int Numel
    {
        get
        {
            long n = 1;
            foreach (int d in Dims) n *= d;
            if (n > int.MaxValue) throw new InvalidOperationException($"Shape {this} has {n} elements; at most {int.MaxValue} are supported.");
            return (int)n;
        }
    }

    /// <summary>Returns the dimensions as a new array.</summary>
    public int[] ToArray() => Dims.ToArray();

    /// <summary>Maps a possibly negative dimension index to <c>[0, Rank)</c>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The dimension is outside <c>[-Rank, Rank)</c>.</exception>
    public int NormalizeDim(int dim)
    {
        int r = Rank;
        int d = dim < 0 ? dim + r : dim;
        if (d < 0 || d >= r)
            throw new ArgumentOutOfRangeException(nameof(dim), dim, $"Dimension {dim} is out of range for shape {this} of rank {r}; expected a value in [{-r}, {r - 1}].");
        return d;
    }

    /// <summary>Row-major strides in elements.</summary>
    public int[] Strides()
    {
        var s = new int[Rank];
        int acc = 1;
        for (int i = Rank - 1; i >= 0; i--) { s[i] = acc; acc *= Dims[i]; }
        return s;
    }

    /// <summary>Product of the dimensions in <c>[start, end)</c>.</summary>
    public int Product(int start, int end)
    {
        int p = 1;
        for (int i = start; i < end; i++) p *= Dims[i];
        return p;
    }

    /// <inheritdoc />
    public bool Equals(Shape other) => Dims.SequenceEqual(other.Dims);

    /// <inheritdoc />
    public override bool Equals(object? obj) => obj is Shape s && Equals(s);

    /// <inheritdoc />
    public override int GetHashCode()
    {
        var h = new HashCode();
        foreach (int d in Dims) h.Add(d);
        return h.ToHashCode();
    }

    /// <summary>Value equality.</summary>
    public static bool operator ==(Shape left, Shape right) => left.Equals(right);

    /// <summary>Value inequality.</summary>
    public static bool operator !=(Shape left, Shape right) => !left.Equals(right);

    /// <summary>Implicit conversion from an array of dimensions.</summary>
    public static implicit operator Shape(int[] dims) => new(dims);

    /// <summary>Formats as <c>[2, 3, 4]</c>.</summary>
    public override string ToString() => "[" + string.Join(", ", _dims ?? []) + "]";
}

/// <summary>The element type of a tensor. The engine is float32 first; indices use <see cref="IntTensor"/>.</summary>
public enum DType
{
    /// <summary>IEEE 754 single precision.</summary>
    Float32,
}
