namespace Spdf.Sparsity.Omission;

/// <summary>
/// What a scorer sees of one group of units: one block's MLP channels (a channel is a row of the up projection and the
/// matching column of the down projection) or its attention heads (a head is its rows of Q, K and V and its columns of
/// the output projection), as the engine binding presents them.
/// </summary>
public sealed class UnitScoreInputs
{
    /// <summary>The group's name (e.g. <c>h.3.mlp</c>).</summary>
    public required string Layer { get; init; }

    /// <summary>Units in the group.</summary>
    public required int Units { get; init; }

    /// <summary>Features of the block's input (the width C).</summary>
    public required int InFeatures { get; init; }

    /// <summary><c>[Units, InFeatures]</c>: |w| summed, per input feature, over the unit's rows of the projections that
    /// read the block's input (one row of the up projection; a head's rows of Q, K and V).</summary>
    public required ReadOnlyMemory<float> InputWeightAbs { get; init; }

    /// <summary><c>[Units]</c>: |w| summed over the unit's part of the output projection.</summary>
    public required ReadOnlyMemory<float> OutputWeightAbs { get; init; }

    /// <summary><c>[InFeatures]</c>: the L2 norm of each input feature over the current batch's tokens (the block's input
    /// after its layer norm, known before the projection); empty when the scorer does not need it.</summary>
    public ReadOnlyMemory<float> InputNorms { get; init; }

    /// <summary><c>[Units]</c>: each unit's mean |activation| in the previous step (after GELU for a channel, the norm of
    /// the head's output for a head); empty before the first step.</summary>
    public ReadOnlyMemory<float> PreviousActivations { get; init; }

    /// <summary>The step being planned (1-based).</summary>
    public required long Step { get; init; }

    /// <summary>A seed for this group at this step (<see cref="UnitSelector.SeedFor"/>).</summary>
    public required ulong Seed { get; init; }
}

/// <summary>Scores the units of a group: higher is more important. Pluggable: implement it for a score of your own.</summary>
public interface IUnitScorer
{
    /// <summary>The name used in logs and checkpoints.</summary>
    string Name { get; }

    /// <summary>Whether <see cref="UnitScoreInputs.InputNorms"/> must be filled.</summary>
    bool NeedsInputNorms { get; }

    /// <summary>Whether the binding must record <see cref="UnitScoreInputs.PreviousActivations"/>.</summary>
    bool NeedsActivations { get; }

    /// <summary>Writes one score ≥ 0 per unit into <paramref name="scores"/> (<c>[Units]</c>).</summary>
    void Score(UnitScoreInputs inputs, Span<float> scores);

    /// <summary>Whether <see cref="UnitScoreInputs.InputWeightAbs"/> and <see cref="UnitScoreInputs.OutputWeightAbs"/> must
    /// be filled (a pass over the group's weights), given whether previous activations are recorded; true unless a
    /// scorer says otherwise. When false the binding may leave them zero.</summary>
    bool NeedsWeightMagnitudes(bool activationsRecorded) => true;
}

/// <summary>The importance scores the SAT paper compares (Ma et al. 2024), engine-free.</summary>
public static class UnitScorers
{
    /// <summary>Uniformly random scores (seeded): the paper's random omission.</summary>
    public static IUnitScorer Random { get; } = new RandomScorer();

    /// <summary>Weight magnitude: |w| summed over the unit's input rows and output column(s).</summary>
    public static IUnitScorer WeightMagnitude { get; } = new MagnitudeScorer();

    /// <summary>Wanda-style input norm times weight: Σ_j |w_uj| · ‖x_j‖ over the unit's input rows, with ‖x_j‖ the norm
    /// of input feature j over the current batch.</summary>
    public static IUnitScorer InputNormTimesWeight { get; } = new WandaScorer();

    /// <summary>The unit's mean |activation| in the previous step; weight magnitude before the first step.</summary>
    public static IUnitScorer Activation { get; } = new ActivationScorer();

    /// <summary>The built-in scorer of this name (random, magnitude, wanda, activation).</summary>
    /// <exception cref="ArgumentException">No such scorer.</exception>
    public static IUnitScorer FromName(string name) => name switch
    {
        "random" => Random,
        "magnitude" => WeightMagnitude,
        "wanda" => InputNormTimesWeight,
        "activation" => Activation,
        _ => throw new ArgumentException($"Unknown unit scorer '{name}'; expected random, magnitude, wanda or activation.", nameof(name)),
    };

    private static void Check(UnitScoreInputs x, Span<float> scores)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (scores.Length != x.Units) throw new ArgumentException($"{x.Layer}: {scores.Length} scores for {x.Units} units.", nameof(scores));
        if (x.InputWeightAbs.Length != (long)x.Units * x.InFeatures || x.OutputWeightAbs.Length != x.Units)
            throw new ArgumentException($"{x.Layer}: input weights of {x.InputWeightAbs.Length} and output weights of {x.OutputWeightAbs.Length} values; expected {(long)x.Units * x.InFeatures} and {x.Units}.", nameof(x));
    }

    private sealed class RandomScorer : IUnitScorer
    {
        public string Name => "random";
        public bool NeedsInputNorms => false;
        public bool NeedsActivations => false;
        public bool NeedsWeightMagnitudes(bool activationsRecorded) => false;
        public void Score(UnitScoreInputs x, Span<float> scores)
        {
            Check(x, scores);
            var rng = new SparsityRandom(x.Seed ^ 0x5A7UL);
            for (int u = 0; u < scores.Length; u++) scores[u] = (float)rng.NextDouble() + 1e-6f;
        }
    }

    private sealed class MagnitudeScorer : IUnitScorer
    {
        public string Name => "magnitude";
        public bool NeedsInputNorms => false;
        public bool NeedsActivations => false;
        public void Score(UnitScoreInputs x, Span<float> scores)
        {
            Check(x, scores);
            var w = x.InputWeightAbs.Span; var o = x.OutputWeightAbs.Span;
            for (int u = 0; u < x.Units; u++)
                scores[u] = System.Numerics.Tensors.TensorPrimitives.Sum(w.Slice(u * x.InFeatures, x.InFeatures)) + o[u];
        }
    }

    private sealed class WandaScorer : IUnitScorer
    {
        public string Name => "wanda";
        public bool NeedsInputNorms => true;
        public bool NeedsActivations => false;
        public void Score(UnitScoreInputs x, Span<float> scores)
        {
            Check(x, scores);
            if (x.InputNorms.Length != x.InFeatures)
                throw new ArgumentException($"{x.Layer}: the wanda score needs the {x.InFeatures} input norms of the batch; got {x.InputNorms.Length}.", nameof(x));
            var w = x.InputWeightAbs.Span; var n = x.InputNorms.Span;
            for (int u = 0; u < x.Units; u++) scores[u] = System.Numerics.Tensors.TensorPrimitives.Dot(w.Slice(u * x.InFeatures, x.InFeatures), n);
        }
    }

    private sealed class ActivationScorer : IUnitScorer
    {
        public string Name => "activation";
        public bool NeedsInputNorms => false;
        public bool NeedsActivations => true;
        public bool NeedsWeightMagnitudes(bool activationsRecorded) => !activationsRecorded; // the fallback of the first step
        public void Score(UnitScoreInputs x, Span<float> scores)
        {
            Check(x, scores);
            if (x.PreviousActivations.IsEmpty) { WeightMagnitude.Score(x, scores); return; }
            if (x.PreviousActivations.Length != x.Units)
                throw new ArgumentException($"{x.Layer}: {x.PreviousActivations.Length} activations for {x.Units} units.", nameof(x));
            x.PreviousActivations.Span.CopyTo(scores);
        }
    }
}
