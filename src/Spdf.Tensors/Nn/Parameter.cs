namespace Spdf.Tensors.Nn;

/// <summary>
/// A trainable tensor owned by a <see cref="Module"/> (<c>torch.nn.Parameter</c>). It shares storage with the
/// tensor it was made from and requires grad unless told otherwise.
/// </summary>
public sealed class Parameter : Tensor
{
    /// <summary>Wraps <paramref name="data"/>'s storage as a parameter.</summary>
    public Parameter(Tensor data, bool requiresGrad = true) : base((data ?? throw new ArgumentNullException(nameof(data))).Storage, data.Shape)
    {
        RequiresGrad = requiresGrad;
    }

    /// <summary>A zero-initialised parameter of the given shape.</summary>
    public Parameter(Shape shape, bool requiresGrad = true) : this(new Tensor(shape), requiresGrad) { }
}
