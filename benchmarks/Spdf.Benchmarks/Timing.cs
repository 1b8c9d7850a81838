using System.Diagnostics;

namespace Spdf.Benchmarks;

/// <summary>
/// Median wall time of an action over a fixed time budget, after warm-up. Warm-up lasts at least one second (and
/// <c>warmup</c> calls): with both cores busy, the runtime's background tier-up compiles can take seconds to land, and
/// timing earlier measures the JIT instead of the code (seen as a 2.5x slower attention forward).
/// </summary>
internal static class Timing
{
    public static double MedianMs(Action action, double seconds, int warmup = 2, int minRuns = 5, double warmupSeconds = 1.0) =>
        Measure(action, seconds, warmup, minRuns, warmupSeconds).Median;

    /// <summary>
    /// Median and fastest wall time of an action (see <see cref="MedianMs"/>). On a shared machine the fastest run is the
    /// one least disturbed by neighbours: for comparing two builds of a kernel it is steadier than the median.
    /// </summary>
    public static (double Median, double Min) Measure(Action action, double seconds, int warmup = 2, int minRuns = 5, double warmupSeconds = 1.0)
    {
        var times = Samples(action, seconds, warmup, minRuns, warmupSeconds);
        return (Median(times), times.Min());
    }

    /// <summary>Every wall time (ms) of an action run for <paramref name="seconds"/> after warm-up (see <see cref="MedianMs"/>).</summary>
    public static List<double> Samples(Action action, double seconds, int warmup = 2, int minRuns = 3, double warmupSeconds = 1.0)
    {
        var w = Stopwatch.StartNew();
        for (int i = 0; i < warmup || w.Elapsed.TotalSeconds < warmupSeconds; i++) action();
        var times = new List<double>();
        var total = Stopwatch.StartNew();
        while (times.Count < minRuns || total.Elapsed.TotalSeconds < seconds)
        {
            var sw = Stopwatch.StartNew();
            action();
            times.Add(sw.Elapsed.TotalMilliseconds);
            if (times.Count > 100_000) break;
        }
        return times;
    }

    /// <summary>The median of <paramref name="xs"/>.</summary>
    public static double Median(List<double> xs)
    {
        var s = xs.Order().ToList();
        int n = s.Count;
        return n == 0 ? double.NaN : n % 2 == 1 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    }
}
