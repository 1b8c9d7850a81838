using System.Diagnostics;

namespace Spdf.Sparsity.Kernels;

/// <summary>How <see cref="SparseKernelMode.Auto"/> decides, in every binding: the faster of the two kernels on the layer's first input.</summary>
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
}
