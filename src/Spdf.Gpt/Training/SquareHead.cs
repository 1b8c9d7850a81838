using Spdf.Sparsity.Distillation;
using Spdf.Tensors;
using Spdf.Tensors.Autograd;

namespace Spdf.Gpt.Training;

/// <summary>
/// SquareHead distillation (Kurtic et al. 2023, "Sparse Fine-tuning for Inference Acceleration of Large Language
/// Models"): for each chosen layer, the mean squared error between the student's and the teacher's hidden states,
/// normalised by the teacher's mean square, summed over layers:
/// <c>L = Σ_l mean((h_s − h_t)²) / (mean(h_t²) + ε)</c>. The teacher's states are constants (no gradient).
/// </summary>
public static class SquareHead
{
    /// <summary>The SquareHead loss (a scalar tensor with gradients for the student's states).</summary>
    /// <exception cref="ArgumentException">The lists are empty or of different lengths, or a pair's shapes differ.</exception>
    public static Tensor Loss(IReadOnlyList<Tensor> student, IReadOnlyList<Tensor> teacher, float epsilon = 1e-6f)
    {
        ArgumentNullException.ThrowIfNull(student);
        ArgumentNullException.ThrowIfNull(teacher);
        SquareHeadTerms.CheckLayers(student.Count, teacher.Count, epsilon);
        Tensor? total = null;
        for (int l = 0; l < student.Count; l++)
        {
            var s = student[l];
            var t = teacher[l];
            SquareHeadTerms.CheckShapes(l, s.Shape.ToArray().Select(d => (long)d).ToArray(), t.Shape.ToArray().Select(d => (long)d).ToArray());
            var tc = t.RequiresGrad ? t.Detach() : t;
            var d = s - tc;
            var term = (d * d).Mean() * (float)SquareHeadTerms.Normalizer(tc.AsReadOnlySpan(), epsilon);
            total = total is null ? term : total + term;
        }
        return total!;
    }
}

/// <summary>Distil a frozen teacher into the model during a stage with <see cref="SquareHead"/> on every block's output.</summary>
/// <param name="Teacher">The teacher (e.g. the dense fine-tuned model); it is put in eval mode and never updated.</param>
/// <param name="Gain">Weight of the SquareHead term added to the task loss (default 1).</param>
/// <param name="Epsilon">ε of the normalisation.</param>
public sealed record DistillationOptions(GptModel Teacher, double Gain = 1.0, float Epsilon = 1e-6f);
