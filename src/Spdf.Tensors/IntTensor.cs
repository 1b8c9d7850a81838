namespace Spdf.Tensors;

/// <summary>
/// A tensor of 32-bit integer indices (token ids, class targets), the engine's counterpart of an
/// integer <c>torch.Tensor</c>. Never differentiable.
/// </summary>
public sealed class IntTensor
{
    /// <summary>Wraps <paramref name="data"/> (not copied) with the given shape.</summary>
    /// <exception cref="ArgumentException">The data length differs from the shape's element count.</exception>
    public IntTensor(int[] data, Shape shape)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (data.Length != shape.Numel)
            throw new ArgumentException($"Index data has {data.Length} elements but shape {shape} needs {shape.Numel}.", nameof(data));
        Data = data;
        Shape = shape;
    }

    /// <summary>Creates a 1-D index tensor from values.</summary>
    public static IntTensor From(params int[] values) => new((int[])values.Clone(), new Shape(values.Length));

    /// <summary>The indices, row-major.</summary>
    public int[] Data { get; }

    /// <summary>The shape.</summary>
    public Shape Shape { get; }

    /// <summary>The number of elements.</summary>
    public int Numel => Data.Length;

    /// <inheritdoc />
    public override string ToString() => $"IntTensor{Shape}";
}
