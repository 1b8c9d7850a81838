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
    /// <summary>Indices of kept weights ordered by |w| ascending (ties by index).</summary>
    public static int[] KeptByMagnitude(ISparseWeight layer)
    {
        var w = layer.Weight;
        var m = layer.Mask.Values;
        var kept = new List<int>(layer.KeptCount);
        for (int i = 0; i < m.Length; i++) if (m[i] != 0) kept.Add(i);
        var keys = new float[kept.Count];
        for (int j = 0; j < keys.Length; j++) keys[j] = MathF.Abs(w[kept[j]]);
        var idx = kept.ToArray();
        Array.Sort(keys, idx); // stable enough: ties are broken below
        // Array.Sort is not stable: re-sort equal-key runs by index for determinism.
        for (int a = 0; a < idx.Length;)
        {
            int b = a + 1;
            while (b < idx.Length && keys[b] == keys[a]) b++;
            if (b - a > 1) Array.Sort(idx, a, b - a);
            a = b;
        }
        return idx;
    }

    public static void Apply(ISparseWeight layer, IEnumerable<int> keep) => layer.SetMask(SparsityMask.FromKept(keep, layer.Rows, layer.Cols));

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
                changed += GlobalMagnitude.KeepLargest([l], keep); // the same linear-time selection, one layer at a time
            }
            return changed;
        }
        foreach (var l in model.Weights) MaskOps.CheckChangeable(l, Name);
        long total = model.Weights.Sum(l => (long)l.Rows * l.Cols);
        long keepTotal = (long)Math.Round((1 - target) * total);
        return GlobalMagnitude.KeepLargest(model.Weights, keepTotal);
    }
}

/// <summary>
/// Global magnitude selection in linear time and bounded memory: the <c>keep</c> largest |w| among the kept weights of
/// all layers, ties kept in layer order, then index order. A radix select over a 32-bit key that orders magnitudes as
/// <see cref="float.CompareTo(float)"/> does (NaN below 0): a histogram of the key's upper 16 bits finds the bin that
/// holds the threshold, a second histogram of the lower 16 bits within that bin finds the threshold itself, and a third
/// pass writes the masks. Three passes over the weights, two 65,536-bin histograms and one layer's mask at a time,
/// instead of a sort of every kept weight (over a gigabyte of tuples at GPT-2 Small's 85 million sparse weights).
/// </summary>
internal static class GlobalMagnitude
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
        var high = new long[1 << 16];
        foreach (var l in layers)
        {
            var w = l.Weight; var m = l.Mask.Values;
            for (int i = 0; i < m.Length; i++) if (m[i] != 0) high[Key(w[i]) >> 16]++;
        }
        // The threshold's bin: the fewest top bins that hold at least `keep` weights.
        uint bin = 0; long above = 0, need = keep;
        if (keep > 0)
            for (int b = high.Length - 1; b >= 0; b--)
            {
                if (above + high[b] >= keep) { bin = (uint)b; need = keep - above; break; }
                above += high[b];
            }
        uint threshold = uint.MaxValue; long ties = 0; // keep: key > threshold, and the first `ties` weights with key == threshold
        if (keep > 0)
        {
            var low = high; // reused: the upper histogram is no longer needed
            Array.Clear(low);
            foreach (var l in layers)
            {
                var w = l.Weight; var m = l.Mask.Values;
                for (int i = 0; i < m.Length; i++)
                    if (m[i] != 0) { uint k = Key(w[i]); if (k >> 16 == bin) low[k & 0xFFFF]++; }
            }
            long lowAbove = 0;
            for (int b = low.Length - 1; b >= 0; b--)
            {
                if (lowAbove + low[b] >= need) { threshold = bin << 16 | (uint)b; ties = need - lowAbove; break; }
                lowAbove += low[b];
            }
        }
        int changed = 0;
        foreach (var l in layers)
        {
            var w = l.Weight; var m = l.Mask.Values;
            var values = new float[m.Length];
            int kept = 0;
            for (int i = 0; i < m.Length; i++)
            {
                if (m[i] == 0) continue;
                uint k = Key(w[i]);
                if (keep > 0 && (k > threshold || (k == threshold && ties-- > 0))) { values[i] = 1f; kept++; }
            }
            if (kept == l.KeptCount) continue;
            l.SetMask(new SparsityMask(values, l.Rows, l.Cols));
            changed++;
        }
        return changed;
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
            if (DropAndGrow.Run(layer, frac, candidates => Shuffle(candidates, g))) changed++;
        }
        return changed;
    }

    private static IEnumerable<int> Shuffle(List<int> xs, SparsityRandom g)
    {
        for (int i = xs.Count - 1; i > 0; i--)
        {
            int j = g.NextInt(i + 1);
            (xs[i], xs[j]) = (xs[j], xs[i]);
        }
        return xs;
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
            var gs = layer.DenseGradient.ToArray();
            bool did = DropAndGrow.Run(layer, frac, candidates =>
                candidates.OrderByDescending(i => MathF.Abs(gs[i])).ThenBy(i => i));
            layer.ClearDenseGradient();
            if (did) changed++;
        }
        return changed;
    }
}

internal static class DropAndGrow
{
    /// <summary>Drops round(frac·kept) smallest-magnitude kept weights and grows as many from the ordered candidates (positions not kept before).</summary>
    public static bool Run(ISparseWeight layer, double frac, Func<List<int>, IEnumerable<int>> orderCandidates)
    {
        int kept = layer.KeptCount;
        int k = (int)Math.Round(frac * kept);
        if (k == 0) return false;
        MaskOps.CheckChangeable(layer, "drop-and-grow");
        var byMag = MaskOps.KeptByMagnitude(layer);
        var m = layer.Mask.Values;
        var candidates = new List<int>();
        for (int i = 0; i < m.Length; i++) if (m[i] == 0) candidates.Add(i);
        k = Math.Min(k, candidates.Count); // a nearly dense layer has few places to grow into
        if (k == 0) return false;
        var grow = orderCandidates(candidates).Take(k);
        MaskOps.Apply(layer, byMag.Skip(k).Concat(grow));
        return true;
    }
}
