using Spdf.Sparsity.Kernels;

namespace Spdf.Sparsity.Tests;

/// <summary>How <see cref="KernelChoice.Faster"/> decides: the kernels take turns, each judged by its fastest call, and
/// short passes are repeated until each kernel has run <see cref="KernelChoice.MinimumMilliseconds"/>.</summary>
public class KernelChoiceTests
{
    [Fact]
    public void TheClearlyFasterKernelIsChosenEitherWay()
    {
        static void Slow() => Thread.Sleep(2);
        static void Quick() { }
        KernelChoice.Faster(Slow, Quick).Should().Be(SparseKernelMode.Compressed);
        KernelChoice.Faster(Quick, Slow).Should().Be(SparseKernelMode.MaskedDense);
    }

    [Fact]
    public void LongPassesRunThreeTurnsAfterAWarmUpAndShortOnesRunLonger()
    {
        int a = 0, b = 0;
        KernelChoice.Faster(() => { a++; Thread.Sleep(3); }, () => { b++; Thread.Sleep(3); });
        (a, b).Should().Be((4, 4), "one warm-up call and three turns each, as before, when each pass is longer than the minimum time");
        a = b = 0;
        KernelChoice.Faster(() => a++, () => b++);
        a.Should().Be(b).And.BeGreaterThan(4, "passes far shorter than the minimum time are repeated").And.BeLessThanOrEqualTo(65);
    }
}
