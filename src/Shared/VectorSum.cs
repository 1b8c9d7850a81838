using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Spdf.Shared;

/// <summary>
/// The sum of a vector's lanes for the kernels' inner loops; written once and compiled into the engine and the
/// engine-free core (it is internal).
/// </summary>
internal static class VectorSum
{
    /// <summary>
    /// The sum of a vector's lanes by halving (512 → 256 → 128 bits, then two in-register shuffles): 8 instructions,
    /// where <c>Vector512.Sum</c> reduces each 128-bit quarter on its own in 26 (two shuffles and two adds per quarter,
    /// then three scalar adds), a chain that a short loop per row (a layer norm's at width 128, a softmax row of
    /// attention) waits on. The lanes are added in another order than <c>Vector512.Sum</c>'s.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Of(Vector512<float> v)
    {
        var h = v.GetLower() + v.GetUpper();
        var q = h.GetLower() + h.GetUpper();
        q += Vector128.Shuffle(q, Vector128.Create(2, 3, 0, 1));
        q += Vector128.Shuffle(q, Vector128.Create(1, 0, 3, 2));
        return q.ToScalar();
    }
}
