using System.Runtime.InteropServices;
using Spdf.Sparsity.Algorithms;
using Spdf.Sparsity.Distributed;
using Spdf.Sparsity.Omission;

namespace Spdf.Sparsity;

/// <summary>What <see cref="SparsityController.AfterOptimizerStep"/> did.</summary>
/// <param name="MasksChanged">Layers whose mask the algorithm changed this step.</param>
/// <param name="Transition">A scheduled transition taken this step ("densify", "freeze-mask"), or null.</param>
public readonly record struct SparsityStepResult(int MasksChanged, string? Transition);

/// <summary>
/// The one per-step driver of mask updates, phase transitions and unit omission (SAT), engine-free: any training loop,
/// in any engine, calls it around its optimizer step.
/// <code>
/// controller.BeginStep(step);            // before forward: RigL's update steps record dense gradients; SAT's rate for the step
/// loss = model(x); loss.backward();
/// controller.BeforeOptimizerStep(step);  // dropped gradients exactly 0 (engines without masked layers)
/// optimizer.step();
/// controller.AfterOptimizerStep(step);   // dropped weights and moments 0; GMP / SET / RigL; Densify or FreezeMask at a step
/// </code>
/// Steps are 1-based and counted by the caller (the Spdf.Gpt trainer counts them per stage). The algorithm in force is
/// <see cref="Algorithm"/> when set, otherwise the config's while the model is in sparse pre-training; none once the
/// model was densified or its mask frozen (unless set explicitly for sparse fine-tuning).
/// </summary>
public sealed class SparsityController
{
    /// <summary>Creates a controller over a sparsified model's handle.</summary>
    public SparsityController(SparseModelHandle model) => Model = model ?? throw new ArgumentNullException(nameof(model));

    /// <summary>Creates a controller for a model without weight masks (a dense model), which drives <see cref="Omission"/> only.</summary>
    public SparsityController() { }

    /// <summary>The model's sparsity handle; null for a dense model.</summary>
    public SparseModelHandle? Model { get; }

    /// <summary>SAT's omission of MLP channels and attention heads, or null. It composes with the masks: an omitted unit
    /// of a sparse layer skips its kept weights.</summary>
    public IUnitOmission? Omission { get; set; }

    /// <summary>An algorithm that overrides the config's (e.g. GMP for one stage), or null.</summary>
    public ISparsityAlgorithm? Algorithm { get; set; }

    /// <summary>When set, the model is densified after the optimizer step of this step.</summary>
    public long? DensifyAtStep { get; set; }

    /// <summary>Keep or reset optimizer state at a scheduled Densify.</summary>
    public OptimizerStateOnDensify DensifyState { get; set; } = OptimizerStateOnDensify.Keep;

    /// <summary>When set, the masks are frozen (sparse fine-tuning) after the optimizer step of this step.</summary>
    public long? FreezeMaskAtStep { get; set; }

    /// <summary>
    /// The data-parallel group, or null for one process. Mask updates are decided on every rank from the same weights,
    /// seeds and steps; RigL's dense gradients are averaged across the ranks before it decides, so every rank grows the
    /// same places.
    /// </summary>
    public ICommunicator? Communicator { get; set; }

    /// <summary>The algorithm that updates masks now, or null.</summary>
    public ISparsityAlgorithm? ActiveAlgorithm => Model is null || Model.Phase == SparsityPhase.DenseFinetune ? null
        : Algorithm ?? (Model.Phase == SparsityPhase.SparsePretrain ? Model.Algorithm : null);

    /// <summary>Whether step <paramref name="step"/> records the weights' dense gradients (RigL's update steps).</summary>
    public bool NeedsDenseGradient(long step) => ActiveAlgorithm?.NeedsDenseGradient(step) == true;

    /// <summary>Before the forward pass of step <paramref name="step"/>: <see cref="Omission"/>'s rate for the step, and
    /// the layers record dense gradients where the algorithm needs them.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The step is not positive.</exception>
    public void BeginStep(long step)
    {
        CheckStep(step);
        Omission?.BeginStep(step);
        if (!NeedsDenseGradient(step)) return;
        foreach (var w in Model!.Weights) { w.ClearDenseGradient(); w.CaptureDenseGradient = true; }
    }

    /// <summary>After backward, before the optimizer step: gradients at dropped places become exactly 0.</summary>
    public void BeforeOptimizerStep(long step)
    {
        CheckStep(step);
        if (Model is null || Model.Phase == SparsityPhase.DenseFinetune) return;
        Model.BeforeOptimizerStep(); // an engine that masks gradients here records the dense ones first
        bool average = Communicator is { Size: > 1 } && NeedsDenseGradient(step);
        foreach (var w in Model.Weights)
        {
            w.CaptureDenseGradient = false;
            // The span is the binding's own buffer (ISparseWeight.DenseGradient): averaged in place.
            if (average && !w.DenseGradient.IsEmpty)
                GradientReducer.Average(Communicator!, MemoryMarshal.CreateSpan(ref MemoryMarshal.GetReference(w.DenseGradient), w.DenseGradient.Length));
        }
    }

    /// <summary>After the optimizer step: the masks' invariants, the algorithm's mask update, and a scheduled transition.</summary>
    public SparsityStepResult AfterOptimizerStep(long step)
    {
        CheckStep(step);
        if (Model is null || Model.Phase == SparsityPhase.DenseFinetune) return default;
        Model.AfterOptimizerStep();
        int changed = ActiveAlgorithm?.Update(Model, step) ?? 0;
        string? transition = null;
        if (DensifyAtStep == step) { Model.Densify(DensifyState, step); transition = "densify"; }
        else if (FreezeMaskAtStep == step && Model.Phase == SparsityPhase.SparsePretrain) { Model.FreezeMask(step); transition = "freeze-mask"; }
        return new SparsityStepResult(changed, transition);
    }

    private static void CheckStep(long step)
    {
        if (step <= 0) throw new ArgumentOutOfRangeException(nameof(step), step, "Steps are counted from 1.");
    }
}
