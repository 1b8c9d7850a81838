using Spdf.Sparsity.Masks;
using Spdf.Sparsity.Schedules;

namespace Spdf.Sparsity.Algorithms;

/// <summary>
/// A rule that changes masks during training, engine-free. The <see cref="SparsityController"/> asks
/// <see cref="NeedsDenseGradient"/> before a step and calls <see cref="Update"/> after the optimizer step. Updates go
/// through <see cref="ISparseWeight.SetMask"/>, whose engine binding keeps the invariants: dropped weights are set to 0, gradients stay 0 outside the mask, and optimizers keep moments
/// for surviving weights while newly grown weights (already 0) start with zero moments; the compressed kernels'
/// structure is rebuilt.
/// </summary>
public interface ISparsityAlgorithm
{
    /// <summary>Name for reports ("gmp", "set", "rigl").</summary>
    string Name { get; }

    /// <summary>Whether step <paramref name="step"/> (1-based within the stage) needs the weights' dense gradients (RigL's update steps).</summary>
    bool NeedsDenseGradient(long step);

    /// <summary>Updates masks after step <paramref name="step"/>; returns the number of layers whose mask changed.</summary>
    int Update(SparseModelHandle model, long step);
}

/// <summary>Helpers shared by the algorithms.</summary>
internal static class MaskOps
{
    /// <summary>Refuses a layer whose mask is fixed (compressed storage), naming it and the algorithm.</summary>
    public static void CheckChangeable(ISparseWeight layer, string algorithm)
    {
        if (layer.Storage == SparseWeightStorage.Compressed)
            throw new NotSupportedException($"Sparsity algorithm '{algorithm}' changes masks, but layer '{layer.Name}' stores only its kept weights (SparseWeightStorage.Compressed, a fixed mask); use SparseWeightStorage.Dense for dynamic sparsity.");
    }
}

/// <summary>
/// Gradual magnitude pruning (Zhu &amp; Gupta 2017): every <see cref="UpdateSchedule.Every"/> steps between its start
/// and end, the smallest-magnitude kept weights are pruned until the sparsity reaches the schedule's value (cubic by
/// default). Per layer, or global (one magnitude threshold over all sparse layers); either way a linear-time selection,
/// ties kept in layer order, then index order. Pruned weights never return.
/// </summary>
public sealed class GradualMagnitudePruning(ISparsitySchedule schedule, UpdateSchedule updates, bool global = false) : ISparsityAlgorithm
{
    /// <summary>Cubic schedule from <paramref name="initial"/> to <paramref name="final"/> sparsity between the steps, pruning every <paramref name="every"/> steps.</summary>
    public static GradualMagnitudePruning Cubic(double initial, double final, long startStep, long endStep, long every, bool global = false) =>
        new(SparsitySchedules.Cubic(initial, final, startStep, endStep), new UpdateSchedule(every, startStep, endStep), global);

    /// <inheritdoc />
    public string Name => global ? "gmp-global" : "gmp";

    /// <summary>The sparsity schedule.</summary>
    public ISparsitySchedule Schedule { get; } = schedule ?? throw new ArgumentNullException(nameof(schedule));

    /// <summary>When masks update.</summary>
    public UpdateSchedule Updates { get; } = updates ?? throw new ArgumentNullException(nameof(updates));

    /// <inheritdoc />
    public bool NeedsDenseGradient(long step) => false;

    /// <inheritdoc />
    public int Update(SparseModelHandle model, long step)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (!Updates.IsUpdateStep(step)) return 0;
        double target = Schedule.ValueAt(step);
        if (!(target >= 0 && target < 1)) throw new InvalidOperationException($"GMP: the schedule gives sparsity {target} at step {step}; expected a value in [0, 1).");
        int changed = 0;
        if (!global)
        {
            foreach (var l in model.Weights)
            {
                int keep = MaskInitializers.KeptCount(l.Rows * l.Cols, target);
                if (keep >= l.KeptCount) continue; // never regrow
                MaskOps.CheckChangeable(l, Name);
                changed += MagnitudeSelection.KeepLargest([l], keep); // the same linear-time selection, one layer at a time
            }
            return changed;
        }
        foreach (var l in model.Weights) MaskOps.CheckChangeable(l, Name);
        long total = model.Weights.Sum(l => (long)l.Rows * l.Cols);
        long keepTotal = (long)Math.Round((1 - target) * total);
        return MagnitudeSelection.KeepLargest(model.Weights, keepTotal);
    }
}

/// <summary>
/// Magnitude selection in linear time and bounded memory: the <c>count</c> largest |values| among the eligible positions
/// of one or more layers (GMP: weights among kept ones, over all layers at once when global; SET and RigL: the weights to
/// keep, and RigL's gradients among dropped places), ties kept in layer order, then index order. A radix select over a 32-bit key that orders magnitudes as
/// <see cref="float.CompareTo(float)"/> does (NaN below 0): a histogram of the key's upper 16 bits finds the bin that
/// holds the threshold, a second histogram of the lower 16 bits within that bin finds the threshold itself, and a third
/// pass writes the masks. Three passes over the weights, two 65,536-bin histograms and one layer's mask at a time,
/// instead of a sort of every kept weight (over a gigabyte of tuples at GPT-2 Small's 85 million sparse weights).
/// </summary>
internal static class MagnitudeSelection
{
    private static uint Key(float w)
    {
        float a = MathF.Abs(w);
        return float.IsNaN(a) ? 0u : BitConverter.SingleToUInt32Bits(a) + 1;
    }

    /// <summary>Keeps the <paramref name="keep"/> largest-magnitude kept weights over all layers; returns the number of layers whose mask changed.</summary>
    public static int KeepLargest(IReadOnlyList<ISparseWeight> layers, long keep)
    {
        long keptNow = layers.Sum(l => (long)l.KeptCount);
        if (keep >= keptNow) return 0; // never regrow
        var current = layers.Select(l => l.Mask.Values).ToArray();
        var masks = layers.Select(l => new float[l.Rows * l.Cols]).ToList();
        var kept = new int[layers.Count];
        SelectLargest(layers.Count, s => layers[s].Weight, s => current[s], keep, (layer, i) => { masks[layer][i] = 1f; kept[layer]++; });
        int changed = 0;
        for (int li = 0; li < layers.Count; li++)
        {
            var l = layers[li];
            if (kept[li] == l.KeptCount) continue;
            l.SetMask(new SparsityMask(masks[li], l.Rows, l.Cols));
            changed++;
        }
        return changed;
    }

    /// <summary>
    /// Calls <paramref name="take"/>(source, index) for the <paramref name="count"/> positions with the largest |value|
    /// among those where the mask <paramref name="eligible"/> gives is non-zero (or, with <paramref name="amongDropped"/>,
    /// zero), over all sources; ties go to the earlier source, then the lower index. Three passes, two 65,536-bin
    /// histograms: no sort and no per-element allocation.
    /// </summary>
    public static void SelectLargest(int sources, Func<int, ReadOnlySpan<float>> values, Func<int, ReadOnlySpan<float>> eligible, long count, Action<int, int> take,
        bool amongDropped = false)
    {
        if (count <= 0) return;
        bool In(float m) => (m != 0) != amongDropped;
        var high = new long[1 << 16];
        for (int s = 0; s < sources; s++)
        {
            var v = values(s); var e = eligible(s);
            for (int i = 0; i < e.Length; i++) if (In(e[i])) high[Key(v[i]) >> 16]++;
        }
        uint bin = 0; long above = 0, need = count, total = high.Sum();
        if (count >= total) // every eligible position
        {
            for (int s = 0; s < sources; s++) { var e = eligible(s); for (int i = 0; i < e.Length; i++) if (In(e[i])) take(s, i); }
            return;
        }
        for (int b = high.Length - 1; b >= 0; b--)
        {
            if (above + high[b] >= count) { bin = (uint)b; need = count - above; break; }
            above += high[b];
        }
        var low = high; // reused: the upper histogram is no longer needed
        Array.Clear(low);
        for (int s = 0; s < sources; s++)
        {
            var v = values(s); var e = eligible(s);
            for (int i = 0; i < e.Length; i++)
                if (In(e[i])) { uint k = Key(v[i]); if (k >> 16 == bin) low[k & 0xFFFF]++; }
        }
        uint threshold = 0; long ties = 0, lowAbove = 0;
        for (int b = low.Length - 1; b >= 0; b--)
        {
            if (lowAbove + low[b] >= need) { threshold = bin << 16 | (uint)b; ties = need - lowAbove; break; }
            lowAbove += low[b];
        }
        for (int s = 0; s < sources; s++)
        {
            var v = values(s); var e = eligible(s);
            for (int i = 0; i < e.Length; i++)
            {
                if (!In(e[i])) continue;
                uint k = Key(v[i]);
                if (k > threshold || (k == threshold && ties-- > 0)) take(s, i);
            }
        }
    }
}

/// <summary>
/// Sparse Evolutionary Training (Mocanu et al. 2018): at each update a fraction of the kept weights with the smallest
/// magnitude is dropped and as many are grown at random positions (not the ones just dropped), so every layer's kept
/// count stays constant. The drop fraction follows a schedule. Regrowth is seeded per step (resumable without state).
/// </summary>
public sealed class SparseEvolutionaryTraining(ISparsitySchedule dropFraction, UpdateSchedule updates, ulong seed = 0) : ISparsityAlgorithm
{
    /// <inheritdoc />
    public string Name => "set";

    /// <summary>The drop fraction's schedule.</summary>
    public ISparsitySchedule DropFraction { get; } = dropFraction ?? throw new ArgumentNullException(nameof(dropFraction));

    /// <summary>When masks update.</summary>
    public UpdateSchedule Updates { get; } = updates ?? throw new ArgumentNullException(nameof(updates));

    /// <inheritdoc />
    public bool NeedsDenseGradient(long step) => false;

    /// <inheritdoc />
    public int Update(SparseModelHandle model, long step)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (!Updates.IsUpdateStep(step)) return 0;
        double frac = DropFraction.ValueAt(step);
        if (!(frac >= 0 && frac <= 1)) throw new InvalidOperationException($"SET: drop fraction {frac} at step {step}; expected a value in [0, 1].");
        int changed = 0;
        for (int li = 0; li < model.Weights.Count; li++)
        {
            var layer = model.Weights[li];
            var g = new SparsityRandom(seed ^ (ulong)step * 0x9E3779B97F4A7C15UL ^ (ulong)li * 0xC2B2AE3D27D4EB4FUL);
            if (DropAndGrow.Run(layer, frac, (old, mask, count) => GrowAtRandom(old, mask, count, g))) changed++;
        }
        return changed;
    }

    /// <summary>Sets <paramref name="count"/> positions that the old mask dropped, drawn uniformly at random, to 1.</summary>
    private static void GrowAtRandom(float[] old, float[] mask, int count, SparsityRandom g)
    {
        int free = 0;
        for (int i = 0; i < old.Length; i++) if (old[i] == 0) free++;
        if (count * 2 > free)
        {
            // Most of the free positions: a partial Fisher–Yates over their list.
            var candidates = new int[free];
            for (int i = 0, j = 0; i < old.Length; i++) if (old[i] == 0) candidates[j++] = i;
            for (int i = 0; i < count; i++)
            {
                int j = i + g.NextInt(free - i);
                (candidates[i], candidates[j]) = (candidates[j], candidates[i]);
                mask[candidates[i]] = 1f;
            }
            return;
        }
        // Fewer than half of them: draw positions and keep those that were dropped and not yet grown (at least half of
        // every draw succeeds), with no list of candidates.
        for (int grown = 0; grown < count;)
        {
            int i = g.NextInt(old.Length);
            if (old[i] != 0 || mask[i] != 0) continue;
            mask[i] = 1f;
            grown++;
        }
    }
}

/// <summary>
/// RigL (Evci et al. 2020): every ΔT steps until <c>T_end</c>, drop the fraction α_t = α/2·(1 + cos(π·t/T_end)) of
/// each layer's kept weights with the smallest magnitude and grow as many where the dense gradient's magnitude is
/// largest (not the ones just dropped). The dense gradient is computed only on update steps
/// (<see cref="ISparseWeight.CaptureDenseGradient"/>, set by the <see cref="SparsityController"/>). Kept counts stay constant.
/// </summary>
public sealed class RigL : ISparsityAlgorithm
{
    /// <summary>Creates RigL with initial drop fraction <paramref name="dropFraction"/>, an update every <paramref name="every"/> steps from <paramref name="startStep"/> until <paramref name="endStep"/> (T_end).</summary>
    /// <exception cref="ArgumentOutOfRangeException">The drop fraction is outside (0, 1].</exception>
    public RigL(double dropFraction, long every, long endStep, long startStep = 0)
    {
        if (!(dropFraction > 0 && dropFraction <= 1)) throw new ArgumentOutOfRangeException(nameof(dropFraction), dropFraction, "Expected a drop fraction in (0, 1].");
        InitialDropFraction = dropFraction;
        Updates = new UpdateSchedule(every, Math.Max(startStep, every), endStep);
        EndStep = endStep;
    }

    /// <inheritdoc />
    public string Name => "rigl";

    /// <summary>α, the drop fraction at step 0.</summary>
    public double InitialDropFraction { get; }

    /// <summary>T_end.</summary>
    public long EndStep { get; }

    /// <summary>When masks update.</summary>
    public UpdateSchedule Updates { get; }

    /// <summary>α_t, the cosine-decayed drop fraction.</summary>
    public double DropFractionAt(long step) => step >= EndStep ? 0 : InitialDropFraction / 2 * (1 + Math.Cos(Math.PI * step / EndStep));

    /// <inheritdoc />
    public bool NeedsDenseGradient(long step) => Updates.IsUpdateStep(step);

    /// <inheritdoc />
    public int Update(SparseModelHandle model, long step)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (!Updates.IsUpdateStep(step)) return 0;
        double frac = DropFractionAt(step);
        int changed = 0;
        foreach (var layer in model.Weights)
        {
            if (layer.DenseGradient.IsEmpty) throw new InvalidOperationException(
                $"RigL: layer '{layer.Name}' has no dense gradient at update step {step}; set CaptureDenseGradient before the step (the SparsityController does).");
            // grow the largest |gradient| among the positions the old mask dropped (ties: the lower index)
            bool did = DropAndGrow.Run(layer, frac, (old, mask, count) =>
                MagnitudeSelection.SelectLargest(1, _ => layer.DenseGradient, _ => old, count, (_, i) => mask[i] = 1f, amongDropped: true));
            layer.ClearDenseGradient();
            if (did) changed++;
        }
        return changed;
    }
}

internal static class DropAndGrow
{
    /// <summary>
    /// Drops round(frac·kept) smallest-magnitude kept weights (ties: the higher index goes first) and grows as many at
    /// positions that were not kept before, chosen by <paramref name="grow"/>(old mask, new mask, count), which sets them
    /// to 1 in the new mask. Linear time: the kept weights are selected, not sorted.
    /// </summary>
    public static bool Run(ISparseWeight layer, double frac, Action<float[], float[], int> grow)
    {
        int kept = layer.KeptCount;
        int k = (int)Math.Round(frac * kept);
        if (k == 0) return false;
        MaskOps.CheckChangeable(layer, "drop-and-grow");
        var old = layer.Mask.Values;
        k = Math.Min(k, old.Length - kept); // a nearly dense layer has few places to grow into
        if (k == 0) return false;
        var mask = new float[old.Length];
        MagnitudeSelection.SelectLargest(1, _ => layer.Weight, _ => old, kept - k, (_, i) => mask[i] = 1f);
        grow(old, mask, k);
        layer.SetMask(new SparsityMask(mask, layer.Rows, layer.Cols));
        return true;
    }
}
