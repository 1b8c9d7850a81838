using TorchSharp;
using static TorchSharp.torch;

namespace Spdf.Sparsity.TorchSharp;

/// <summary>
/// SquareHead distillation for TorchSharp models (Kurtic et al. 2023, "Sparse Fine-tuning for Inference Acceleration of
/// Large Language Models"): for each chosen layer, the mean squared error between the student's and the teacher's hidden
/// states, normalised by the teacher's mean square, summed over layers:
/// <c>L = Σ_l mean((h_s − h_t)²) / (mean(h_t²) + ε)</c>. The teacher's states are constants (detached). The same loss as
/// Spdf.Gpt's <c>SquareHead</c> for Spdf.Tensors models.
/// </summary>
public static class TorchSquareHead
{
    /// <summary>The SquareHead loss: a scalar tensor with gradients for the student's states.</summary>
    /// <exception cref="ArgumentException">The lists are empty or of different lengths, or a pair's shapes differ.</exception>
    public static Tensor Loss(IReadOnlyList<Tensor> student, IReadOnlyList<Tensor> teacher, double epsilon = 1e-6)
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
            var t = teacher[l].detach();
            if (!s.shape.SequenceEqual(t.shape))
                throw new ArgumentException($"SquareHead layer {l}: student shape [{string.Join(", ", s.shape)}] differs from teacher shape [{string.Join(", ", t.shape)}].", nameof(teacher));
            double meanSq = t.square().mean().item<float>();
            var term = (s - t).square().mean() * (1.0 / (meanSq + epsilon));
            total = total is null ? term : total + term;
        }
        return total!;
    }
}
