using System.Numerics.Tensors;
using Spdf.Tensors.Autograd;

namespace Spdf.Tensors;

public static partial class Functional
{
    /// <summary>
    /// Looks up rows of <paramref name="weight"/> <c>[V, C]</c> for each index of <paramref name="indices"/>
    /// <c>[...]</c>, giving <c>[..., C]</c> (<c>torch.nn.functional.embedding</c>). The weight gradient is scattered back.
    /// </summary>
    /// <exception cref="ArgumentException">The weight is not 2-D or an index is outside <c>[0, V)</c>.</exception>
    public static Tensor Embedding(IntTensor indices, Tensor weight)
    {
        ArgumentNullException.ThrowIfNull(indices);
        ArgumentNullException.ThrowIfNull(weight);
        if (weight.Rank != 2) throw new ArgumentException($"Embedding: weight must be 2-D [vocab, channels]; got {weight.Shape}.", nameof(weight));
        int v = weight.Shape[0], c = weight.Shape[1];
        var ids = indices.Data;
        var y = GradientPool.Rent(ids.Length * c, clear: false); // every row is copied in (or the call throws)
        for (int i = 0; i < ids.Length; i++)
        {
            int id = ids[i];
            if ((uint)id >= (uint)v)
                throw new ArgumentException($"Embedding: index {id} at position {i} is outside [0, {v}) for a weight of shape {weight.Shape}.", nameof(indices));
            weight.Storage.AsSpan(id * c, c).CopyTo(y.AsSpan(i * c, c));
        }
        var outShape = new Shape([.. indices.Shape.Dims, c]);
        return AutogradEngine.Record(new Tensor(y, outShape), "Embedding", [weight], g =>
        {
            var dw = GradientPool.Rent(weight.Numel, clear: true);
            for (int i = 0; i < ids.Length; i++)
            {
                var row = dw.AsSpan(ids[i] * c, c);
                TensorPrimitives.Add(row, g.Storage.AsSpan(i * c, c), row);
            }
            return [new Tensor(dw, weight.Shape)];
        });
    }
}
