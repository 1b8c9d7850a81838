namespace Spdf.Sparsity;

/// <summary>Argument checks shared by the sparsity API, with messages that name the value and the expected range.</summary>
internal static class SparsityGuard
{
    public static void Sparsity(double sparsity, string paramName)
    {
        if (!(sparsity >= 0 && sparsity < 1))
            throw new ArgumentOutOfRangeException(paramName, sparsity, $"Sparsity {sparsity} is outside [0, 1); it is the fraction of weights held at zero.");
    }
}
