using System.Diagnostics;

namespace Spdf.Sparsity.Kernels;

/// <summary>How <see cref="SparseKernelMode.Auto"/> decides, in every binding (the faster of the two kernels on the
/// layer's first input), and how <see cref="SparseKernelMode.Heuristic"/> does (a fixed rule: <see cref="ByRule"/>).</summary>
public static class KernelChoice
{
    /// <summary>
    /// Times a forward pass of each kernel and returns the faster mode. After one warm-up call each, the two run in turns
    /// until each has run at least three times and for at least <see cref="MinimumMilliseconds"/> in all (at most 64
    /// turns), and each is judged by its fastest call: short passes (one token, small layers) take 0.1 ms or less, where
    /// a single wake-up of a thread is as long as the difference, so a best of three flipped the choice (docs/benchmarks.md,
    /// the kernel sweep). Taking turns keeps a change of the machine's state from favouring one side. The actions run one
    /// forward pass with gradients off.
    /// </summary>
    public static SparseKernelMode Faster(Action maskedDense, Action compressed)
    {
        ArgumentNullException.ThrowIfNull(maskedDense);
        ArgumentNullException.ThrowIfNull(compressed);
        maskedDense(); // warm
        compressed();
        double dense = double.MaxValue, sparse = double.MaxValue, spent = 0;
        for (int turn = 0; turn < 64 && (turn < 3 || spent < 2 * MinimumMilliseconds); turn++)
        {
            double a = Time(maskedDense), b = Time(compressed);
            dense = Math.Min(dense, a);
            sparse = Math.Min(sparse, b);
            spent += a + b;
        }
        return sparse < dense ? SparseKernelMode.Compressed : SparseKernelMode.MaskedDense;

        static double Time(Action pass)
        {
            long t0 = Stopwatch.GetTimestamp();
            pass();
            return Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        }
    }

    /// <summary>The least time, in milliseconds, each kernel is timed for before the choice (2 ms).</summary>
    public const double MinimumMilliseconds = 2.0;

    /// <summary>
    /// The choice of <see cref="SparseKernelMode.Heuristic"/>: the compressed kernels where the layer's density
    /// (<paramref name="kept"/> of <paramref name="inFeatures"/> × <paramref name="outFeatures"/>) is at most
    /// <see cref="CrossoverDensity"/>, otherwise the masked-dense GEMM. It reads no clock, so the same layer, tokens and
    /// mask always give the same kernel.
    /// </summary>
    /// <param name="tokens">Rows of the pass's input (tokens per pass).</param>
    /// <param name="inFeatures">The layer's input size.</param>
    /// <param name="outFeatures">The layer's output size.</param>
    /// <param name="kept">Weights the mask keeps.</param>
    /// <param name="training">Whether the pass records a backward pass for the weight (training) or not (inference).</param>
    /// <exception cref="ArgumentOutOfRangeException">A size is not positive, or <paramref name="kept"/> is outside [0, in × out].</exception>
    public static SparseKernelMode ByRule(long tokens, int inFeatures, int outFeatures, long kept, bool training)
    {
        long numel = (long)inFeatures * outFeatures;
        if (kept < 0 || kept > numel)
            throw new ArgumentOutOfRangeException(nameof(kept), kept, $"The kept count {kept} must lie in [0, {numel}] (in {inFeatures} × out {outFeatures}).");
        double crossover = CrossoverDensity(tokens, inFeatures, outFeatures, training);
        return (double)kept / numel <= crossover ? SparseKernelMode.Compressed : SparseKernelMode.MaskedDense;
    }

    /// <summary>
    /// The density at and below which <see cref="ByRule"/> picks the compressed kernels. Fitted to where a whole
    /// <c>SparseLinear</c> (dense weight storage) hands over from one kernel to the other on the machine the kernels
    /// are tuned on (2 cores of a Zen 5 EPYC, AVX-512; <c>quick crossover</c>, docs/benchmarks.md): the masked-dense
    /// path copies and masks the whole weight every pass, so the compressed kernels pay up to high densities when the
    /// pass is short, and more so for small layers, where the dense GEMM is least efficient. Training (forward, input
    /// and weight gradient): 0.97 up to 256 tokens, then 0.06 less per doubling (0.85 at 1,024 tokens, 0.79 at 2,048),
    /// not below 0.75, or 0.85 for a layer of at most 65,536 weights (128 × 512). Inference (forward only): 1 up to 512
    /// tokens, then 0.07 less per doubling (0.86 at 2,048), not below 0.8, or 0.9 for such a small layer.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A size is not positive.</exception>
    public static double CrossoverDensity(long tokens, int inFeatures, int outFeatures, bool training)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(tokens);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(inFeatures);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(outFeatures);
        bool small = (long)inFeatures * outFeatures <= SmallLayerWeights;
        return training
            ? Math.Clamp(0.97 - 0.06 * Math.Log2(tokens / 256.0), small ? 0.85 : 0.75, 0.97)
            : Math.Clamp(1.0 - 0.07 * Math.Log2(tokens / 512.0), small ? 0.9 : 0.8, 1.0);
    }

    /// <summary>Layers of at most this many weights (128 × 512) keep the compressed kernels to higher densities in
    /// <see cref="CrossoverDensity"/>.</summary>
    public const long SmallLayerWeights = 65_536;
}
