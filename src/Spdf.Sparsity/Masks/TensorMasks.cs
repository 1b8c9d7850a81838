using Spdf.Tensors;

namespace Spdf.Sparsity.Masks;

/// <summary>Spdf.Tensors conveniences over the engine-free masks: masks from and to <see cref="Tensor"/>s, initialisers over a weight tensor.</summary>
public static class TensorMasks
{
    /// <summary>Creates the mask for the 2-D weight <paramref name="weight"/> <c>[out, in]</c> at <paramref name="sparsity"/>.</summary>
    /// <exception cref="ArgumentException">The weight is not 2-D.</exception>
    public static SparsityMask Create(this IMaskInitializer initializer, Tensor weight, double sparsity, SparsityRandom random)
    {
        ArgumentNullException.ThrowIfNull(initializer);
        ArgumentNullException.ThrowIfNull(weight);
        if (weight.Rank != 2) throw new ArgumentException($"A mask is drawn for a 2-D weight [out, in]; got shape {weight.Shape}.", nameof(weight));
        return initializer.Create(weight.AsReadOnlySpan(), weight.Shape[0], weight.Shape[1], sparsity, random);
    }

    /// <summary>A mask with a copy of a 2-D 0/1 tensor's values.</summary>
    /// <exception cref="ArgumentException">The tensor is not 2-D or holds a value other than 0 and 1.</exception>
    public static SparsityMask ToMask(this Tensor values)
    {
        ArgumentNullException.ThrowIfNull(values);
        if (values.Rank != 2) throw new ArgumentException($"A mask is 2-D [out, in]; got shape {values.Shape}.", nameof(values));
        return new SparsityMask(values.ToArray(), values.Shape[0], values.Shape[1]);
    }

    /// <summary>A tensor <c>[rows, cols]</c> over the mask's values (not copied).</summary>
    public static Tensor ToTensor(this SparsityMask mask)
    {
        ArgumentNullException.ThrowIfNull(mask);
        return new Tensor(mask.Values, new Shape(mask.Rows, mask.Cols));
    }
}
