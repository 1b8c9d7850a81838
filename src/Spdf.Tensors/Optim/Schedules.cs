namespace Spdf.Tensors.Optim;

/// <summary>A learning rate as a function of the step (0-based).</summary>
public interface ILearningRateSchedule
{
    /// <summary>The learning rate for <paramref name="step"/>.</summary>
    double LearningRate(long step);
}

/// <summary>
/// Linear warm-up from 0 to <see cref="MaxLearningRate"/> over <see cref="WarmupSteps"/>, then cosine decay to
/// <see cref="MinLearningRate"/> at <see cref="TotalSteps"/>, constant after (nanoGPT's <c>get_lr</c>).
/// </summary>
public sealed class WarmupCosineSchedule : ILearningRateSchedule
{
    /// <summary>Creates the schedule.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A rate is negative or not finite, warm-up is negative, or total ≤ warm-up.</exception>
    public WarmupCosineSchedule(double maxLearningRate, long warmupSteps, long totalSteps, double minLearningRate = 0)
    {
        if (!double.IsFinite(maxLearningRate) || maxLearningRate < 0) throw new ArgumentOutOfRangeException(nameof(maxLearningRate), maxLearningRate, "Expected a finite rate ≥ 0.");
        if (!double.IsFinite(minLearningRate) || minLearningRate < 0 || minLearningRate > maxLearningRate)
            throw new ArgumentOutOfRangeException(nameof(minLearningRate), minLearningRate, $"Expected a finite rate in [0, {maxLearningRate}].");
        if (warmupSteps < 0) throw new ArgumentOutOfRangeException(nameof(warmupSteps), warmupSteps, "Expected warm-up steps ≥ 0.");
        if (totalSteps <= warmupSteps) throw new ArgumentOutOfRangeException(nameof(totalSteps), totalSteps, $"Expected total steps > warm-up steps ({warmupSteps}).");
        (MaxLearningRate, WarmupSteps, TotalSteps, MinLearningRate) = (maxLearningRate, warmupSteps, totalSteps, minLearningRate);
    }

    /// <summary>Peak rate.</summary>
    public double MaxLearningRate { get; }
    /// <summary>Warm-up length.</summary>
    public long WarmupSteps { get; }
    /// <summary>Step at which the decay ends.</summary>
    public long TotalSteps { get; }
    /// <summary>Floor rate.</summary>
    public double MinLearningRate { get; }

    /// <inheritdoc />
    public double LearningRate(long step)
    {
        if (step < WarmupSteps) return MaxLearningRate * (step + 1) / WarmupSteps;
        if (step >= TotalSteps) return MinLearningRate;
        double ratio = (double)(step - WarmupSteps) / (TotalSteps - WarmupSteps);
        return MinLearningRate + 0.5 * (1 + Math.Cos(Math.PI * ratio)) * (MaxLearningRate - MinLearningRate);
    }
}

/// <summary>Linear warm-up then linear change from <see cref="StartLearningRate"/> to <see cref="EndLearningRate"/>.</summary>
public sealed class LinearSchedule : ILearningRateSchedule
{
    /// <summary>Creates the schedule.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A rate is negative or not finite, or the step counts are inconsistent.</exception>
    public LinearSchedule(double startLearningRate, double endLearningRate, long totalSteps, long warmupSteps = 0)
    {
        if (!double.IsFinite(startLearningRate) || startLearningRate < 0) throw new ArgumentOutOfRangeException(nameof(startLearningRate), startLearningRate, "Expected a finite rate ≥ 0.");
        if (!double.IsFinite(endLearningRate) || endLearningRate < 0) throw new ArgumentOutOfRangeException(nameof(endLearningRate), endLearningRate, "Expected a finite rate ≥ 0.");
        if (warmupSteps < 0) throw new ArgumentOutOfRangeException(nameof(warmupSteps), warmupSteps, "Expected warm-up steps ≥ 0.");
        if (totalSteps <= warmupSteps) throw new ArgumentOutOfRangeException(nameof(totalSteps), totalSteps, $"Expected total steps > warm-up steps ({warmupSteps}).");
        (StartLearningRate, EndLearningRate, TotalSteps, WarmupSteps) = (startLearningRate, endLearningRate, totalSteps, warmupSteps);
    }

    /// <summary>Rate after warm-up.</summary>
    public double StartLearningRate { get; }
    /// <summary>Rate at the last step.</summary>
    public double EndLearningRate { get; }
    /// <summary>Length of the schedule.</summary>
    public long TotalSteps { get; }
    /// <summary>Warm-up length.</summary>
    public long WarmupSteps { get; }

    /// <inheritdoc />
    public double LearningRate(long step)
    {
        if (step < WarmupSteps) return StartLearningRate * (step + 1) / WarmupSteps;
        if (step >= TotalSteps) return EndLearningRate;
        double ratio = (double)(step - WarmupSteps) / (TotalSteps - WarmupSteps);
        return StartLearningRate + ratio * (EndLearningRate - StartLearningRate);
    }
}

/// <summary>Helpers that tie schedules to optimizers.</summary>
public static class ScheduleExtensions
{
    /// <summary>Sets the optimizer's learning rate to the schedule's value at <paramref name="step"/> and returns it.</summary>
    public static double Apply(this ILearningRateSchedule schedule, Optimizer optimizer, long step)
    {
        ArgumentNullException.ThrowIfNull(schedule);
        ArgumentNullException.ThrowIfNull(optimizer);
        double lr = schedule.LearningRate(step);
        optimizer.SetLearningRate(lr);
        return lr;
    }
}
