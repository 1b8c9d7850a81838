using System.Numerics.Tensors;
using Spdf.Tensors.Autograd;

namespace Spdf.Tensors;

public static partial class Functional
{
    /// <summary>
    /// Inverted dropout (<c>torch.nn.functional.dropout</c>): in training, each element is zeroed with probability
    /// <paramref name="p"/> and the rest are scaled by <c>1/(1−p)</c>; otherwise the input is returned unchanged.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="p"/> is outside [0, 1) or NaN.</exception>
    public static Tensor Dropout(Tensor x, float p, bool training, Generator? generator = null)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (!(p >= 0 && p < 1)) throw new ArgumentOutOfRangeException(nameof(p), p, "Dropout probability must be in [0, 1).");
        if (!training || p == 0) return x;
        var gen = generator ?? Generator.Default;
        var mask = GradientPool.Rent(x.Numel, clear: false); // every element is written
        float scale = 1f / (1f - p);
        for (int i = 0; i < mask.Length; i++) mask[i] = gen.NextFloat() < p ? 0f : scale;
        var y = GradientPool.Rent(x.Numel, clear: false);
        TensorPrimitives.Multiply(x.Storage, mask, y);
        return AutogradEngine.Record(new Tensor(y, x.Shape), "Dropout", [x], g =>
        {
            var dx = GradientPool.Rent(x.Numel, clear: false);
            TensorPrimitives.Multiply(g.Storage, mask, dx);
            return [new Tensor(dx, x.Shape)];
        });
    }
}
