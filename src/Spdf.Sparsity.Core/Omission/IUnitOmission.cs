namespace Spdf.Sparsity.Omission;

/// <summary>
/// A per-step omission of whole units (sparsity-accelerated training, SAT: MLP channels and attention heads), driven by
/// the <see cref="SparsityController"/> next to the weight masks. The engine's implementation (Spdf.Gpt's
/// <c>SatOmission</c>) attaches to a model; at each <see cref="BeginStep"/> it takes the schedule's rate, and the model
/// chooses and computes only the kept units on the step's first training forward pass.
/// </summary>
public interface IUnitOmission
{
    /// <summary>The omission rate per step.</summary>
    OmissionSchedule Schedule { get; }

    /// <summary>The rate in force since the last <see cref="BeginStep"/> (0 before the first).</summary>
    double Rate { get; }

    /// <summary>Starts step <paramref name="step"/> (1-based): the rate in force; the units are chosen on the step's
    /// first training forward pass, and the last step's choice no longer applies.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The step is not positive.</exception>
    void BeginStep(long step);
}
