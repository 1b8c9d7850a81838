namespace Spdf.Sparsity.Schedules;

/// <summary>A value (a sparsity, or a drop fraction for SET/RigL) as a function of the training step.</summary>
public interface ISparsitySchedule
{
    /// <summary>The value at <paramref name="step"/>.</summary>
    double ValueAt(long step);
}

/// <summary>
/// Sparsity schedules: constant, linear, power (cubic by default: Zhu &amp; Gupta 2017, "To prune, or not to prune",
/// eq. 1), cosine and cycling. Each goes from an initial to a final value between a start and an end step and holds
/// the end value after (and the initial value before).
/// </summary>
public static class SparsitySchedules
{
    /// <summary>The same value at every step.</summary>
    public static ISparsitySchedule Constant(double value)
    {
        CheckValue(value, nameof(value));
        return new Shaped(value, value, 0, 1, _ => 0);
    }

    /// <summary>Linear from <paramref name="initial"/> to <paramref name="final"/> over [start, end].</summary>
    public static ISparsitySchedule Linear(double initial, double final, long startStep, long endStep) =>
        Create(initial, final, startStep, endStep, f => f);

    /// <summary>
    /// Zhu &amp; Gupta's gradual pruning: <c>s_t = s_f + (s_i − s_f)·(1 − (t − t₀)/(t₁ − t₀))^p</c> (p = 3 in the paper):
    /// prunes fast early, when redundant weights abound, and slowly near the end.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The exponent is not positive.</exception>
    public static ISparsitySchedule Power(double initial, double final, long startStep, long endStep, double exponent = 3)
    {
        if (!(exponent > 0) || double.IsInfinity(exponent)) throw new ArgumentOutOfRangeException(nameof(exponent), exponent, "The exponent must be positive and finite.");
        return Create(initial, final, startStep, endStep, f => 1 - Math.Pow(1 - f, exponent));
    }

    /// <summary>The cubic schedule of Zhu &amp; Gupta (2017).</summary>
    public static ISparsitySchedule Cubic(double initial, double final, long startStep, long endStep) => Power(initial, final, startStep, endStep, 3);

    /// <summary>Cosine from <paramref name="initial"/> to <paramref name="final"/>: <c>final + (initial − final)·(1 + cos(πf))/2</c> (RigL's drop-fraction decay).</summary>
    public static ISparsitySchedule Cosine(double initial, double final, long startStep, long endStep) =>
        Create(initial, final, startStep, endStep, f => (1 - Math.Cos(Math.PI * f)) / 2);

    /// <summary>Repeats <paramref name="cycle"/>'s first <paramref name="period"/> steps from <paramref name="startStep"/> on.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The period is not positive.</exception>
    public static ISparsitySchedule Cycling(ISparsitySchedule cycle, long period, long startStep = 0)
    {
        ArgumentNullException.ThrowIfNull(cycle);
        if (period <= 0) throw new ArgumentOutOfRangeException(nameof(period), period, "The period must be positive.");
        return new Cyclic(cycle, period, startStep);
    }

    private static ISparsitySchedule Create(double initial, double final, long startStep, long endStep, Func<double, double> shape)
    {
        CheckValue(initial, nameof(initial));
        CheckValue(final, nameof(final));
        if (startStep < 0) throw new ArgumentOutOfRangeException(nameof(startStep), startStep, "The start step must be ≥ 0.");
        if (endStep <= startStep) throw new ArgumentOutOfRangeException(nameof(endStep), endStep, $"The end step must be after the start step {startStep}.");
        return new Shaped(initial, final, startStep, endStep, shape);
    }

    private static void CheckValue(double v, string name) => SparsityGuard.Sparsity(v, name);

    private sealed class Shaped(double initial, double final, long start, long end, Func<double, double> shape) : ISparsitySchedule
    {
        public double ValueAt(long step)
        {
            if (step <= start) return initial;
            if (step >= end) return final;
            double f = (double)(step - start) / (end - start);
            return initial + (final - initial) * shape(f);
        }
    }

    private sealed class Cyclic(ISparsitySchedule cycle, long period, long start) : ISparsitySchedule
    {
        public double ValueAt(long step) => step < start ? cycle.ValueAt(0) : cycle.ValueAt((step - start) % period);
    }
}

/// <summary>
/// When masks change: every <see cref="Every"/> steps from <see cref="StartStep"/> up to and including
/// <see cref="EndStep"/> (Zhu &amp; Gupta's Δt; RigL's ΔT and stop step).
/// </summary>
public sealed record UpdateSchedule
{
    /// <summary>Creates the schedule.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A step is negative, the interval is not positive, or end precedes start.</exception>
    public UpdateSchedule(long every, long startStep, long endStep)
    {
        if (every <= 0) throw new ArgumentOutOfRangeException(nameof(every), every, "The update interval must be positive.");
        if (startStep < 0) throw new ArgumentOutOfRangeException(nameof(startStep), startStep, "The start step must be ≥ 0.");
        if (endStep < startStep) throw new ArgumentOutOfRangeException(nameof(endStep), endStep, $"The end step must not precede the start step {startStep}.");
        (Every, StartStep, EndStep) = (every, startStep, endStep);
    }

    /// <summary>Steps between updates.</summary>
    public long Every { get; }

    /// <summary>First update step.</summary>
    public long StartStep { get; }

    /// <summary>Last step at which an update may happen.</summary>
    public long EndStep { get; }

    /// <summary>Whether the mask is updated at <paramref name="step"/>.</summary>
    public bool IsUpdateStep(long step) => step >= StartStep && step <= EndStep && (step - StartStep) % Every == 0;

    /// <summary>All update steps, in order.</summary>
    public IEnumerable<long> Steps()
    {
        for (long s = StartStep; s <= EndStep; s += Every) yield return s;
    }
}
