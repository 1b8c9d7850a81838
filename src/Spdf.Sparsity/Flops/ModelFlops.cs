using Spdf.Tensors.Nn;

namespace Spdf.Sparsity.Flops;

/// <summary>FLOP counts of a Spdf.Tensors model's linear layers (the engine-free counting is <see cref="FlopCounter"/>).</summary>
public static class ModelFlops
{
    /// <summary>
    /// FLOPs of the <c>Linear</c> layers of any module, each at its own density (a <see cref="SparseLinear"/>'s mask, 1 for a
    /// dense layer). Operations that are not linear layers (attention products, a tied head) are not seen here; use
    /// <see cref="FlopCounter.ForTransformer(TransformerShape, double)"/> for a GPT.
    /// </summary>
    public static FlopReport ForModule(Module model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return FlopCounter.ForLinearLayers(model.NamedModules()
            .Where(m => m.Module is Linear)
            .Select(m => (Linear)m.Module switch
            {
                SparseLinear s => new LinearLayerFlops(m.Name, s.InFeatures, s.OutFeatures, 1 - s.Sparsity),
                var lin => new LinearLayerFlops(m.Name, lin.InFeatures, lin.OutFeatures, null),
            }));
    }
}
