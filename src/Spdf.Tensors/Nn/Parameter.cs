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

    private int[]? _sparseSupport;

    /// <summary>
    /// The flat (row-major) indices, ascending, where this parameter may be non-zero, or null when it is dense. A sparsity
    /// library sets it for a masked weight; optimizers then keep their state only at these positions, so optimizer memory
    /// falls with density. The array is not copied and must not be changed afterwards.
    /// </summary>
    /// <exception cref="ArgumentException">The indices are not strictly ascending within <c>[0, Numel)</c>.</exception>
    public int[]? SparseSupport
    {
        get => _sparseSupport;
        set => _sparseSupport = CheckPositions(value, nameof(SparseSupport));
    }

    private int[]? _stepPositions;

    /// <summary>
    /// The flat (row-major) indices, ascending, that the next optimizer steps update, or null (default) for all of them.
    /// Sparsity-accelerated training sets it to the places of the units a step computed: the other weights and their
    /// optimizer moments are left as they are that step (the parameter's step count, which PyTorch keeps per parameter,
    /// still advances). Positions outside <see cref="SparseSupport"/> are never updated. The array is not copied.
    /// </summary>
    /// <exception cref="ArgumentException">The indices are not strictly ascending within <c>[0, Numel)</c>.</exception>
    public int[]? StepPositions
    {
        get => _stepPositions;
        set => _stepPositions = CheckPositions(value, nameof(StepPositions));
    }

    private int[]? CheckPositions(int[]? value, string what)
    {
        if (value is not null)
            for (int i = 0; i < value.Length; i++)
                if (value[i] < 0 || value[i] >= Numel || (i > 0 && value[i] <= value[i - 1]))
                    throw new ArgumentException($"{what} entry {i} is {value[i]}; expected strictly ascending indices in [0, {Numel}).", nameof(value));
        return value;
    }
}
