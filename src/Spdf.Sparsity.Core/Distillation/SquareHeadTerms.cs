using System.Numerics.Tensors;

namespace Spdf.Sparsity.Distillation;

/// <summary>
/// The engine-free parts of SquareHead distillation (Kurtic et al. 2023): each layer's term is
/// <c>mean((h_s − h_t)²) / (mean(h_t²) + ε)</c>, summed over layers. The engines compute the squared error with their own
/// ops (it carries the student's gradient); the checks and the teacher's normaliser, a constant, are here.
/// </summary>
public static class SquareHeadTerms
{
    /// <summary>Checks the layer lists and ε.</summary>
    /// <exception cref="ArgumentException">The lists are empty or of different lengths.</exception>
    /// <exception cref="ArgumentOutOfRangeException">ε is negative or NaN.</exception>
    public static void CheckLayers(int studentCount, int teacherCount, double epsilon)
    {
        if (studentCount == 0 || studentCount != teacherCount)
            throw new ArgumentException($"SquareHead needs one teacher state per student state; got {studentCount} and {teacherCount}.", "teacher");
        if (!(epsilon >= 0)) throw new ArgumentOutOfRangeException(nameof(epsilon), epsilon, "Expected ε ≥ 0.");
    }

    /// <summary>Checks that layer <paramref name="layer"/>'s student and teacher states have the same shape.</summary>
    /// <exception cref="ArgumentException">The shapes differ.</exception>
    public static void CheckShapes(int layer, IReadOnlyList<long> student, IReadOnlyList<long> teacher)
    {
        if (!student.SequenceEqual(teacher))
            throw new ArgumentException($"SquareHead layer {layer}: student shape [{string.Join(", ", student)}] differs from teacher shape [{string.Join(", ", teacher)}].", "teacher");
    }

    /// <summary>The factor a layer's mean squared error is scaled by: <c>1 / (mean(h_t²) + ε)</c>.</summary>
    public static double Normalizer(ReadOnlySpan<float> teacher, double epsilon) =>
        1.0 / (TensorPrimitives.Dot(teacher, teacher) / Math.Max(1, teacher.Length) + epsilon);
}
