namespace Spdf.Tensors.Nn;

/// <summary>
/// Fully connected layer <c>y = x·Wᵀ + b</c> (<c>torch.nn.Linear</c>): x <c>[..., in]</c>, weight <c>[out, in]</c>,
/// bias <c>[out]</c>. Initialised as PyTorch does: weight Kaiming-uniform with a = √5, bias U(±1/√in).
/// Not sealed: <c>Spdf.Sparsity.SparseLinear</c> derives from it, so a field typed <c>Linear</c> can hold either.
/// </summary>
public class Linear : Module<Tensor, Tensor>
{
    /// <summary>Creates a layer with PyTorch's default initialisation.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A feature count is not positive.</exception>
    public Linear(int inFeatures, int outFeatures, bool hasBias = true, Generator? generator = null)
    {
        if (inFeatures <= 0) throw new ArgumentOutOfRangeException(nameof(inFeatures), inFeatures, "Linear needs at least one input feature.");
        if (outFeatures <= 0) throw new ArgumentOutOfRangeException(nameof(outFeatures), outFeatures, "Linear needs at least one output feature.");
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        _weight = new Parameter(new Shape(outFeatures, inFeatures));
        Init.KaimingUniform(_weight, MathF.Sqrt(5f), generator);
        RegisterParameter("weight", _weight);
        if (hasBias)
        {
            Bias = new Parameter(new Shape(outFeatures));
            float bound = 1f / MathF.Sqrt(inFeatures);
            Init.Uniform(Bias, -bound, bound, generator);
        }
        RegisterParameter("bias", Bias);
    }

    /// <summary>Wraps existing parameters (used when a layer changes kind, e.g. by Densify).</summary>
    /// <exception cref="ArgumentException">The weight is not 2-D or the bias does not match it.</exception>
    protected Linear(Parameter weight, Parameter? bias)
    {
        ArgumentNullException.ThrowIfNull(weight);
        if (weight.Rank != 2) throw new ArgumentException($"Linear weight must be [out, in]; got {weight.Shape}.", nameof(weight));
        if (bias is not null && (bias.Rank != 1 || bias.Shape[0] != weight.Shape[0]))
            throw new ArgumentException($"Linear bias must be [{weight.Shape[0]}]; got {bias.Shape}.", nameof(bias));
        (OutFeatures, InFeatures) = (weight.Shape[0], weight.Shape[1]);
        _weight = weight;
        Bias = bias;
        RegisterParameter("weight", _weight);
        RegisterParameter("bias", Bias);
    }

    /// <summary>
    /// For a subclass that stores its weight in another form (e.g. only the kept weights of a sparse layer): registers
    /// the bias only, and <see cref="Weight"/> throws.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A feature count is not positive.</exception>
    /// <exception cref="ArgumentException">The bias is not <c>[outFeatures]</c>.</exception>
    protected Linear(int inFeatures, int outFeatures, Parameter? bias)
    {
        if (inFeatures <= 0) throw new ArgumentOutOfRangeException(nameof(inFeatures), inFeatures, "Linear needs at least one input feature.");
        if (outFeatures <= 0) throw new ArgumentOutOfRangeException(nameof(outFeatures), outFeatures, "Linear needs at least one output feature.");
        if (bias is not null && (bias.Rank != 1 || bias.Shape[0] != outFeatures))
            throw new ArgumentException($"Linear bias must be [{outFeatures}]; got {bias.Shape}.", nameof(bias));
        (OutFeatures, InFeatures) = (outFeatures, inFeatures);
        Bias = bias;
        RegisterParameter("bias", Bias);
    }

    /// <summary>Creates a dense layer around existing parameters (shared, not copied).</summary>
    public static Linear FromParameters(Parameter weight, Parameter? bias) => new(weight, bias);

    /// <summary>Input size.</summary>
    public int InFeatures { get; }

    /// <summary>Output size.</summary>
    public int OutFeatures { get; }

    private readonly Parameter? _weight;

    /// <summary>The weight <c>[out, in]</c>.</summary>
    /// <exception cref="InvalidOperationException">The layer keeps no dense weight (a subclass stores it in another form).</exception>
    public Parameter Weight => _weight ?? throw new InvalidOperationException(
        $"{this} keeps no dense [{OutFeatures}, {InFeatures}] weight parameter: it stores its weight in another form (see its own members, e.g. SparseLinear.WeightValues / ToDenseWeight()).");

    /// <summary>Whether the layer holds <see cref="Weight"/> as a dense parameter.</summary>
    public bool HasDenseWeight => _weight is not null;

    /// <summary>The bias <c>[out]</c>, or null.</summary>
    public Parameter? Bias { get; }

    /// <inheritdoc />
    public override Tensor Forward(Tensor input) => Functional.Linear(input, Weight, Bias);

    /// <inheritdoc />
    public override string ToString() => $"{GetType().Name}(in={InFeatures}, out={OutFeatures}, bias={Bias is not null})";
}

/// <summary>A lookup table <c>[num, dim]</c> (<c>torch.nn.Embedding</c>), initialised N(0, 1).</summary>
public sealed class Embedding : Module<IntTensor, Tensor>
{
    /// <summary>Creates the table.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A size is not positive.</exception>
    public Embedding(int numEmbeddings, int embeddingDim, Generator? generator = null)
    {
        if (numEmbeddings <= 0) throw new ArgumentOutOfRangeException(nameof(numEmbeddings), numEmbeddings, "Expected a positive number of embeddings.");
        if (embeddingDim <= 0) throw new ArgumentOutOfRangeException(nameof(embeddingDim), embeddingDim, "Expected a positive embedding size.");
        Weight = new Parameter(new Shape(numEmbeddings, embeddingDim));
        Init.Normal(Weight, 0f, 1f, generator);
        RegisterParameter("weight", Weight);
    }

    /// <summary>The table <c>[num, dim]</c>.</summary>
    public Parameter Weight { get; }

    /// <inheritdoc />
    public override Tensor Forward(IntTensor input) => Functional.Embedding(input, Weight);
}

/// <summary>Layer normalisation over the last dimension (<c>torch.nn.LayerNorm</c>); weight 1, bias 0.</summary>
public sealed class LayerNorm : Module<Tensor, Tensor>
{
    /// <summary>Creates the layer.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The size is not positive or eps is not positive.</exception>
    public LayerNorm(int normalizedShape, float eps = 1e-5f, bool elementwiseAffine = true, bool hasBias = true)
    {
        if (normalizedShape <= 0) throw new ArgumentOutOfRangeException(nameof(normalizedShape), normalizedShape, "Expected a positive size.");
        if (!(eps > 0)) throw new ArgumentOutOfRangeException(nameof(eps), eps, "Expected a positive epsilon.");
        Eps = eps;
        if (elementwiseAffine)
        {
            Weight = new Parameter(Tensor.Ones(normalizedShape));
            if (hasBias) Bias = new Parameter(new Shape(normalizedShape));
        }
        RegisterParameter("weight", Weight);
        RegisterParameter("bias", Bias);
    }

    /// <summary>Added to the variance.</summary>
    public float Eps { get; }

    /// <summary>Scale <c>[C]</c> or null.</summary>
    public Parameter? Weight { get; }

    /// <summary>Shift <c>[C]</c> or null.</summary>
    public Parameter? Bias { get; }

    /// <inheritdoc />
    public override Tensor Forward(Tensor input) => Functional.LayerNorm(input, Weight, Bias, Eps);
}

/// <summary>Inverted dropout (<c>torch.nn.Dropout</c>), active only in training mode.</summary>
public sealed class Dropout : Module<Tensor, Tensor>
{
    private readonly Generator? _generator;

    /// <summary>Creates the layer.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="p"/> is outside [0, 1).</exception>
    public Dropout(float p = 0.5f, Generator? generator = null)
    {
        if (!(p >= 0 && p < 1)) throw new ArgumentOutOfRangeException(nameof(p), p, "Dropout probability must be in [0, 1).");
        P = p;
        _generator = generator;
    }

    /// <summary>Drop probability.</summary>
    public float P { get; }

    /// <inheritdoc />
    public override Tensor Forward(Tensor input) => Functional.Dropout(input, P, Training, _generator);
}

/// <summary>Applies activation functions as modules.</summary>
public sealed class Gelu : Module<Tensor, Tensor>
{
    /// <inheritdoc />
    public override Tensor Forward(Tensor input) => (input ?? throw new ArgumentNullException(nameof(input))).Gelu();
}

/// <summary>ReLU as a module.</summary>
public sealed class Relu : Module<Tensor, Tensor>
{
    /// <inheritdoc />
    public override Tensor Forward(Tensor input) => (input ?? throw new ArgumentNullException(nameof(input))).Relu();
}
