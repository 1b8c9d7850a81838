using System.Diagnostics;

namespace Spdf.Sparsity.Kernels;

/// <summary>How <see cref="SparseKernelMode.Auto"/> decides, in every binding: the faster of the two kernels on the layer's first input.</summary>
public static class KernelChoice
{
    /// <summary>
    /// Times a forward pass of each kernel (after one warm-up call each, the best of three: the machine's noise easily
    /// exceeds the difference) and returns the faster mode. The actions run one forward pass with gradients off.
    /// </summary>
    public static SparseKernelMode Faster(Action maskedDense, Action compressed)
    {
        ArgumentNullException.ThrowIfNull(maskedDense);
        ArgumentNullException.ThrowIfNull(compressed);
        static double Best(Action pass)
        {
            pass(); // warm
            double best = double.MaxValue;
            for (int i = 0; i < 3; i++)
            {
                var sw = Stopwatch.StartNew();
                pass();
                best = Math.Min(best, sw.Elapsed.TotalMilliseconds);
            }
            return best;
        }
        double dense = Best(maskedDense), sparse = Best(compressed);
        return sparse < dense ? SparseKernelMode.Compressed : SparseKernelMode.MaskedDense;
    }
}
