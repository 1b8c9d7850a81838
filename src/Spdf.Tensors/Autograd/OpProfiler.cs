using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Spdf.Tensors.Autograd;

/// <summary>
/// Where a training step's time goes, op by op (the role of <c>torch.profiler</c>'s averaged table). While a profiler is
/// running, the thread that started it sums, per op name, the forward time of every operation that reaches the autograd
/// tape (<see cref="CustomOp.Record"/> and the built-in ops) and the time of every backward closure; named regions
/// (<see cref="Region"/>: an optimizer's step, or the caller's own) are timed whole.
/// </summary>
/// <remarks>
/// An op's forward time is the time since the previous op (or region, or <see cref="Mark"/>) ended on this thread, so
/// work done between ops without being recorded (a view, the model's own bookkeeping) counts towards the next op. Time
/// spent inside a region counts towards the region and towards the ops run inside it. Other threads' ops are ignored.
/// Only one profiler runs at a time; disposing it stops it.
/// </remarks>
/// <example><code>
/// using var profiler = OpProfiler.Start();
/// for (int i = 0; i &lt; 5; i++) { profiler.Mark(); var loss = model.Loss(x, y); loss.Backward(); optimizer.Step(); }
/// Console.WriteLine(profiler.Format(steps: 5));
/// </code></example>
public sealed class OpProfiler : IDisposable
{
    private static OpProfiler? s_active;
    private readonly Dictionary<(string Name, bool Region), Entry> _entries = [];
    private readonly int _thread = Environment.CurrentManagedThreadId;
    private long _mark = Stopwatch.GetTimestamp();

    private sealed class Entry
    {
        public int ForwardCalls, BackwardCalls;
        public long ForwardTicks, BackwardTicks;
    }

    private OpProfiler() { }

    /// <summary>Starts profiling on the calling thread.</summary>
    /// <exception cref="InvalidOperationException">Another profiler is running.</exception>
    public static OpProfiler Start() =>
        TryStart() ?? throw new InvalidOperationException("An OpProfiler is already running; dispose it before starting another.");

    /// <summary>Starts profiling on the calling thread, or returns null when another profiler is running.</summary>
    public static OpProfiler? TryStart()
    {
        var profiler = new OpProfiler();
        return Interlocked.CompareExchange(ref s_active, profiler, null) is null ? profiler : null;
    }

    /// <summary>
    /// Forgets the time since the last op ended, so that it is not counted towards the next op (call it where a step
    /// begins: data loading and logging between steps are then not charged to the first op).
    /// </summary>
    public void Mark() => _mark = Stopwatch.GetTimestamp();

    /// <summary>Times a named region until the returned handle is disposed (a no-op when no profiler runs on this thread).</summary>
    public static IDisposable Region(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return Current is { } p ? new RegionScope(p, name) : NoRegion.Instance;
    }

    private sealed class NoRegion : IDisposable
    {
        public static readonly NoRegion Instance = new();
        public void Dispose() { }
    }

    private sealed class RegionScope(OpProfiler profiler, string name) : IDisposable
    {
        private readonly long _start = Stopwatch.GetTimestamp();
        private bool _done;

        public void Dispose()
        {
            if (_done) return;
            _done = true;
            long now = Stopwatch.GetTimestamp();
            if (!ReferenceEquals(s_active, profiler)) return; // stopped meanwhile
            var e = profiler.Get(name, region: true);
            e.ForwardCalls++; e.ForwardTicks += now - _start;
            profiler._mark = now;
        }
    }

    private Entry Get(string name, bool region)
    {
        if (!_entries.TryGetValue((name, region), out var e)) _entries[(name, region)] = e = new Entry();
        return e;
    }

    /// <summary>The running profiler if it belongs to the calling thread.</summary>
    private static OpProfiler? Current
    {
        get
        {
            var p = s_active;
            return p is not null && p._thread == Environment.CurrentManagedThreadId ? p : null;
        }
    }

    /// <summary>An op named <paramref name="name"/> finished its forward computation (called as it reaches the tape).</summary>
    internal static void OnForward(string name)
    {
        if (Current is not { } p) return;
        long now = Stopwatch.GetTimestamp();
        var e = p.Get(name, region: false);
        e.ForwardCalls++; e.ForwardTicks += now - p._mark;
        p._mark = now;
    }

    /// <summary>A timestamp for <see cref="OnBackward"/>, or 0 when no profiler runs on this thread.</summary>
    internal static long BackwardStart() => Current is null ? 0 : Stopwatch.GetTimestamp();

    /// <summary>A backward step of op <paramref name="name"/> that began at <paramref name="start"/> is done.</summary>
    internal static void OnBackward(string name, long start)
    {
        if (start == 0 || Current is not { } p) return;
        long now = Stopwatch.GetTimestamp();
        var e = p.Get(name, region: false);
        e.BackwardCalls++; e.BackwardTicks += now - start;
        p._mark = now;
    }

    /// <summary>The ops and regions timed so far, the most expensive first.</summary>
    public IReadOnlyList<OpTiming> Results =>
        _entries.Select(kv => new OpTiming(kv.Key.Name, kv.Key.Region, kv.Value.ForwardCalls, Ms(kv.Value.ForwardTicks), kv.Value.BackwardCalls, Ms(kv.Value.BackwardTicks)))
            .OrderByDescending(t => t.TotalMs).ThenBy(t => t.Name, StringComparer.Ordinal).ToList();

    private static double Ms(long ticks) => ticks * 1000.0 / Stopwatch.Frequency;

    /// <summary>
    /// A text table of <see cref="Results"/>: ops first (with their share of all ops' time), then regions; times and
    /// calls divided by <paramref name="steps"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="steps"/> is not positive.</exception>
    public string Format(int steps = 1)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(steps);
        var results = Results;
        var ops = results.Where(r => !r.IsRegion).ToList();
        double opsTotal = ops.Sum(r => r.TotalMs);
        var sb = new StringBuilder();
        var ci = CultureInfo.InvariantCulture;
        sb.AppendLine(string.Create(ci, $"{"op",-24} {"calls",7} {"forward ms",11} {"backward ms",12} {"total ms",10} {"share",6}"));
        foreach (var r in ops)
            sb.AppendLine(string.Create(ci, $"{r.Name,-24} {(double)r.ForwardCalls / steps,7:0.#} {r.ForwardMs / steps,11:F1} {r.BackwardMs / steps,12:F1} {r.TotalMs / steps,10:F1} {(opsTotal > 0 ? r.TotalMs / opsTotal : 0),6:P0}"));
        sb.AppendLine(string.Create(ci, $"{"(all ops)",-24} {"",7} {ops.Sum(r => r.ForwardMs) / steps,11:F1} {ops.Sum(r => r.BackwardMs) / steps,12:F1} {opsTotal / steps,10:F1}"));
        foreach (var r in results.Where(r => r.IsRegion))
            sb.AppendLine(string.Create(ci, $"[{r.Name}]{new string(' ', Math.Max(0, 22 - r.Name.Length))} {(double)r.ForwardCalls / steps,7:0.#} {"",11} {"",12} {r.TotalMs / steps,10:F1}"));
        return sb.ToString();
    }

    /// <summary>Stops the profiler (its results stay readable).</summary>
    public void Dispose()
    {
        Interlocked.CompareExchange(ref s_active, null, this);
    }
}

/// <summary>One op's (or region's) times in an <see cref="OpProfiler"/>.</summary>
/// <param name="Name">The op's name as recorded on the tape (e.g. "MatMul", "SparseLinear"), or the region's.</param>
/// <param name="IsRegion">A named region (<see cref="OpProfiler.Region"/>) rather than an op.</param>
/// <param name="ForwardCalls">Forward calls (for a region: times it was entered).</param>
/// <param name="ForwardMs">Forward milliseconds in all (for a region: its whole time).</param>
/// <param name="BackwardCalls">Backward closures run.</param>
/// <param name="BackwardMs">Backward milliseconds in all.</param>
public sealed record OpTiming(string Name, bool IsRegion, int ForwardCalls, double ForwardMs, int BackwardCalls, double BackwardMs)
{
    /// <summary>Forward and backward milliseconds together.</summary>
    public double TotalMs => ForwardMs + BackwardMs;
}
