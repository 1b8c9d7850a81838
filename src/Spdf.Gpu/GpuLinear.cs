using ILGPU;

namespace Spdf.Gpu;

/// <summary>
/// AdamW's hyper-parameters (PyTorch's <c>torch.optim.AdamW</c> defaults, as Spdf.Tensors' <c>AdamW</c>).
/// </summary>
/// <param name="LearningRate">Step size lr.</param>
/// <param name="Beta1">First-moment decay.</param>
/// <param name="Beta2">Second-moment decay.</param>
/// <param name="Epsilon">Added to the root of the second moment.</param>
/// <param name="WeightDecay">Decoupled decay: each step multiplies the weights by <c>1 − lr·wd</c>.</param>
public sealed record GpuAdamWOptions(double LearningRate = 1e-3, double Beta1 = 0.9, double Beta2 = 0.999, double Epsilon = 1e-8, double WeightDecay = 0.01)
{
    internal AdamWScalars Scalars(long step)
    {
        if (!(LearningRate >= 0) || !double.IsFinite(LearningRate))
            throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "Expected a finite learning rate ≥ 0.");
        if (!(Beta1 >= 0 && Beta1 < 1)) throw new ArgumentOutOfRangeException(nameof(Beta1), Beta1, "Expected β1 in [0, 1).");
        if (!(Beta2 >= 0 && Beta2 < 1)) throw new ArgumentOutOfRangeException(nameof(Beta2), Beta2, "Expected β2 in [0, 1).");
        if (!(Epsilon > 0)) throw new ArgumentOutOfRangeException(nameof(Epsilon), Epsilon, "Expected ε > 0.");
        if (!(WeightDecay >= 0) || !double.IsFinite(WeightDecay))
            throw new ArgumentOutOfRangeException(nameof(WeightDecay), WeightDecay, "Expected a finite weight decay ≥ 0.");
        double bc1 = 1 - Math.Pow(Beta1, step), bc2 = 1 - Math.Pow(Beta2, step);
        return new((float)(1 - LearningRate * WeightDecay), (float)Beta1, (float)Beta2, (float)(LearningRate / bc1),
            (float)(1 / Math.Sqrt(bc2)), (float)Epsilon);
    }
}

/// <summary>
/// A linear layer <c>Y = X·Wᵀ + b</c> on a GPU, with its backward pass and an AdamW step, over device buffers allocated
/// once at construction (weights, gradients, moments and the workspace for <see cref="MaxTokens"/> tokens): a training
/// loop allocates nothing per call. X is <c>[tokens, in]</c>, Y and dY <c>[tokens, out]</c>, row-major device views.
/// </summary>
public abstract class GpuLinear : IDisposable
{
    private readonly List<IDisposable> _owned = [];
    private GpuBuffer<float>? _bm, _bv;

    /// <summary>Checks the shapes and keeps the device.</summary>
    /// <exception cref="ArgumentException">A size is not positive, or the bias's length is not <paramref name="outFeatures"/>.</exception>
    private protected GpuLinear(GpuDevice device, int inFeatures, int outFeatures, ReadOnlySpan<float> bias, bool hasBias, int maxTokens)
    {
        ArgumentNullException.ThrowIfNull(device);
        if (inFeatures <= 0) throw new ArgumentException($"inFeatures is {inFeatures}; expected a positive size.", nameof(inFeatures));
        if (outFeatures <= 0) throw new ArgumentException($"outFeatures is {outFeatures}; expected a positive size.", nameof(outFeatures));
        if (maxTokens <= 0) throw new ArgumentException($"maxTokens is {maxTokens}; expected a positive count.", nameof(maxTokens));
        if (hasBias && bias.Length != outFeatures)
            throw new ArgumentException($"The bias has {bias.Length} elements; expected outFeatures = {outFeatures}.", nameof(bias));
        Device = device;
        InFeatures = inFeatures; OutFeatures = outFeatures; MaxTokens = maxTokens;
        if (hasBias)
        {
            Bias = Own(device.Upload(bias, "bias"));
            BiasGrad = Own(device.Allocate<float>(outFeatures, "bias gradient"));
        }
    }

    /// <summary>The device.</summary>
    public GpuDevice Device { get; }

    /// <summary>Input features.</summary>
    public int InFeatures { get; }

    /// <summary>Output features.</summary>
    public int OutFeatures { get; }

    /// <summary>The most tokens one call may carry (the workspace was sized for it).</summary>
    public int MaxTokens { get; }

    /// <summary>The bias <c>[out]</c>, or null.</summary>
    public GpuBuffer<float>? Bias { get; }

    /// <summary>The bias gradient of the last <see cref="Backward"/>, or null without a bias.</summary>
    public GpuBuffer<float>? BiasGrad { get; }

    /// <summary>AdamW steps taken.</summary>
    public long Steps { get; private set; }

    /// <summary>Multiply-adds of one token's forward pass (kept weights only for a sparse layer).</summary>
    public abstract long MacsPerToken { get; }

    /// <summary>Queues <c>y = x·Wᵀ + b</c> for <paramref name="tokens"/> rows.</summary>
    /// <exception cref="ArgumentException">The token count is outside [0, <see cref="MaxTokens"/>] or a view is too short.</exception>
    public void Forward(ArrayView<float> x, ArrayView<float> y, int tokens)
    {
        CheckTokens(tokens);
        CheckView(x, (long)tokens * InFeatures, nameof(x));
        CheckView(y, (long)tokens * OutFeatures, nameof(y));
        if (tokens > 0) ForwardCore(x, y, tokens);
    }

    /// <summary>
    /// Queues the backward pass of <see cref="Forward"/> on the same <paramref name="x"/>: the weight gradient (and
    /// <see cref="BiasGrad"/>) always, <paramref name="dx"/> <c>[tokens, in]</c> unless it is an empty view.
    /// </summary>
    /// <exception cref="ArgumentException">The token count is outside [0, <see cref="MaxTokens"/>] or a view is too short.</exception>
    public void Backward(ArrayView<float> dy, ArrayView<float> x, ArrayView<float> dx, int tokens)
    {
        CheckTokens(tokens);
        CheckView(dy, (long)tokens * OutFeatures, nameof(dy));
        CheckView(x, (long)tokens * InFeatures, nameof(x));
        bool wantDx = dx.Length > 0;
        if (wantDx) CheckView(dx, (long)tokens * InFeatures, nameof(dx));
        if (tokens == 0)
        {
            ClearGradients();
            return;
        }
        BackwardCore(dy, x, dx, wantDx, tokens);
        if (BiasGrad is not null) BiasGradient(dy, BiasGrad.View, tokens);
    }

    /// <summary>Queues one AdamW step on the weights (and the bias) from the last <see cref="Backward"/>'s gradients.
    /// The moments are allocated on the first step (for a sparse layer: for kept weights only).</summary>
    /// <exception cref="ArgumentOutOfRangeException">A hyper-parameter is out of its range.</exception>
    public void AdamWStep(GpuAdamWOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var a = options.Scalars(Steps + 1);
        Steps++;
        AdamWWeights(a);
        if (Bias is not null)
        {
            _bm ??= Zeroed(OutFeatures, "bias first moment");
            _bv ??= Zeroed(OutFeatures, "bias second moment");
            Device.Kernels.AdamW(Bias.View, BiasGrad!.View, _bm.View, _bv.View, OutFeatures, a);
        }
    }

    /// <summary>The weight <c>[out, in]</c> on the host, row-major (zeros where a mask drops weights); waits for the stream.</summary>
    public abstract float[] DownloadWeight();

    /// <summary>The weight gradient of the last <see cref="Backward"/> as a dense <c>[out, in]</c> host array (zeros
    /// where a mask drops weights); waits for the stream.</summary>
    public abstract float[] DownloadWeightGrad();

    /// <summary>Bytes of device memory this layer holds.</summary>
    public long Bytes { get; private set; }

    private protected abstract void ForwardCore(ArrayView<float> x, ArrayView<float> y, int tokens);
    private protected abstract void BackwardCore(ArrayView<float> dy, ArrayView<float> x, ArrayView<float> dx, bool wantDx, int tokens);
    private protected abstract void BiasGradient(ArrayView<float> dy, ArrayView<float> db, int tokens);
    private protected abstract void AdamWWeights(AdamWScalars a);
    private protected abstract void ClearWeightGrad();

    private void ClearGradients()
    {
        ClearWeightGrad();
        BiasGrad?.Clear();
    }

    private protected T Own<T>(T buffer) where T : IDeviceMemory
    {
        _owned.Add(buffer);
        Bytes += buffer.Bytes;
        return buffer;
    }

    private protected GpuBuffer<float> Zeroed(long length, string what)
    {
        var b = Own(Device.Allocate<float>(length, what));
        b.Clear();
        return b;
    }

    private void CheckTokens(int tokens)
    {
        if (tokens < 0 || tokens > MaxTokens)
            throw new ArgumentException($"tokens is {tokens}; expected 0 to MaxTokens = {MaxTokens} (the workspace's size).", nameof(tokens));
    }

    private static void CheckView(ArrayView<float> v, long needed, string name)
    {
        if (v.Length < needed) throw new ArgumentException($"The view {name} has {v.Length} elements; expected at least {needed}.", name);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var b in _owned) b.Dispose();
        _owned.Clear();
        GC.SuppressFinalize(this);
    }
}
