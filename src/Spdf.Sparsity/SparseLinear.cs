using Spdf.Sparsity.Masks;
using Spdf.Tensors;
using Spdf.Tensors.Autograd;
using Spdf.Tensors.Nn;

namespace Spdf.Sparsity;

/// <summary>
/// A linear layer <c>y = x·(W ⊙ M)ᵀ + b</c> whose weight is held at zero outside its <see cref="Mask"/>: x
/// <c>[..., in]</c>, W and M <c>[out, in]</c>, y <c>[..., out]</c>. The reference path computes with the masked dense
/// weight, and the weight's gradient is set to exactly 0 at dropped positions (also where it would be NaN), so no
/// optimizer can move a dropped weight (SPDF, Thangarasa et al. 2023, §3: static unstructured sparsity).
/// Derives from <see cref="Linear"/> so that a model's <c>Linear</c> fields can hold it.
/// </summary>
public sealed class SparseLinear : Linear
{
    /// <summary>Makes a sparse layer that shares <paramref name="weight"/> and <paramref name="bias"/> and zeroes the dropped weights.</summary>
    /// <exception cref="ArgumentException">The mask's shape differs from the weight's.</exception>
    public SparseLinear(Parameter weight, Parameter? bias, SparsityMask mask) : base(weight, bias)
    {
        ArgumentNullException.ThrowIfNull(mask);
        mask.CheckShape(weight.Shape, nameof(mask));
        Mask = mask;
        RegisterBuffer("weight_mask", mask.Values);
        ApplyMask();
    }

    /// <summary>Makes a sparse layer from a dense one (sharing its parameters) with a new mask.</summary>
    public static SparseLinear FromLinear(Linear dense, SparsityMask mask)
    {
        ArgumentNullException.ThrowIfNull(dense);
        return new SparseLinear(dense.Weight, dense.Bias, mask);
    }

    /// <summary>The mask: 1 where a weight is kept, 0 where it is held at zero.</summary>
    public SparsityMask Mask { get; private set; }

    /// <summary>The name of the kernel in use, for reports.</summary>
    public string Kernel => "masked-dense";

    /// <summary>Replaces the mask (a dynamic-sparsity update) and zeroes newly dropped weights.</summary>
    /// <exception cref="ArgumentException">The mask's shape differs from the weight's.</exception>
    public void SetMask(SparsityMask mask)
    {
        ArgumentNullException.ThrowIfNull(mask);
        mask.CheckShape(Weight.Shape, nameof(mask));
        Mask.Values.CopyFrom(mask.Values);
        ApplyMask();
    }

    /// <summary>Sets dropped weights to exactly 0 (the invariant every step keeps).</summary>
    public void ApplyMask() => Mask.Apply(Weight.AsSpan());

    /// <inheritdoc />
    public override Tensor Forward(Tensor input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var w = Weight.AsReadOnlySpan();
        var m = Mask.Values.AsReadOnlySpan();
        var masked = new float[w.Length];
        for (int i = 0; i < masked.Length; i++) masked[i] = m[i] != 0 ? w[i] : 0f;
        var maskedWeight = CustomOp.Record(new Tensor(masked, Weight.Shape), "MaskWeight", [Weight], g =>
        {
            var dw = g.ToArray();
            Mask.Apply(dw);
            return [new Tensor(dw, Weight.Shape)];
        });
        return Functional.Linear(input, maskedWeight, Bias);
    }

    /// <inheritdoc />
    public override string ToString() => $"SparseLinear(in={InFeatures}, out={OutFeatures}, sparsity={Mask.Sparsity:P1}, kernel={Kernel})";
}
