using Spdf.Sparsity.Distillation;
using TorchSharp;
using static TorchSharp.torch;

namespace Spdf.Sparsity.TorchSharp;

/// <summary>SquareHead distillation for TorchSharp models (Kurtic et al. 2023): the per-layer normalised L2 loss of
/// <see cref="SquareHeadTerms"/> between a student's and a frozen teacher's hidden states; Spdf.Gpt's <c>SquareHead</c>
/// computes the same for Spdf.Tensors models.</summary>
public static class TorchSquareHead
{
    /// <summary>Σ over layers of the student's normalised squared error: a scalar tensor, differentiable in the student's
    /// states only (the teacher's are detached).</summary>
    /// <exception cref="ArgumentException">No states, unequal counts or shapes, or a teacher state that is not float32.</exception>
    public static Tensor Loss(IReadOnlyList<Tensor> student, IReadOnlyList<Tensor> teacher, double epsilon = 1e-6)
    {
        ArgumentNullException.ThrowIfNull(student);
        ArgumentNullException.ThrowIfNull(teacher);
        SquareHeadTerms.CheckLayers(student.Count, teacher.Count, epsilon);
        Tensor? total = null;
        for (int l = 0; l < student.Count; l++)
        {
            var s = student[l];
            SquareHeadTerms.CheckShapes(l, s.shape, teacher[l].shape);
            using var t = teacher[l].detach().cpu().contiguous();
            TorchTensors.CheckCpuFloat32(t, $"Teacher state {l}", nameof(teacher));
            var term = (s - t.to(s.device)).square().mean() * SquareHeadTerms.Normalizer(TorchTensors.Floats(t), epsilon);
            total = total is null ? term : total + term;
        }
        return total!;
    }
}
