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
        if (student.Count == 0 || student.Count != teacher.Count)
            throw new ArgumentException($"SquareHead needs one teacher state per student state; got {student.Count} and {teacher.Count}.", nameof(teacher));
        if (!(epsilon >= 0)) throw new ArgumentOutOfRangeException(nameof(epsilon), epsilon, "Expected ε ≥ 0.");
        Tensor? total = null;
        for (int l = 0; l < student.Count; l++)
        {
            var s = student[l];
            var t = teacher[l];
            if (s.Shape != t.Shape) throw new ArgumentException($"SquareHead layer {l}: student shape {s.Shape} differs from teacher shape {t.Shape}.", nameof(teacher));
            var tc = t.RequiresGrad ? t.Detach() : t;
            var ts = tc.AsReadOnlySpan();
            double meanSq = System.Numerics.Tensors.TensorPrimitives.Dot(ts, ts) / Math.Max(1, ts.Length);
            var d = s - tc;
            var term = (d * d).Mean() * (float)(1.0 / (meanSq + epsilon));
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
