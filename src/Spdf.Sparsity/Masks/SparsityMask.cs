using Spdf.Tensors;

namespace Spdf.Sparsity.Masks;

/// <summary>
/// Which weights of one tensor are kept (1) and which are held at zero (0). It wraps a float32 0/1 tensor with the
/// weight's shape, so that it is saved with the model (as <c>weight_mask</c>, the name <c>torch.nn.utils.prune</c> uses)
/// and changes made by loading a checkpoint are seen at once.
/// </summary>
public sealed class SparsityMask
{
    /// <summary>Wraps a 0/1 tensor (not copied).</summary>
    /// <exception cref="ArgumentException">An element is neither 0 nor 1.</exception>
    public SparsityMask(Tensor values)
    {
        ArgumentNullException.ThrowIfNull(values);
        var s = values.AsReadOnlySpan();
        for (int i = 0; i < s.Length; i++)
            if (s[i] != 0f && s[i] != 1f)
                throw new ArgumentException($"Mask element {i} is {s[i]}; a mask holds only 0 (dropped) and 1 (kept).", nameof(values));
        Values = values;
    }

    /// <summary>A mask of the given shape with every weight kept.</summary>
    public static SparsityMask Dense(Shape shape) => new(Tensor.Full(shape, 1f));

    /// <summary>The 0/1 values, shaped like the weight.</summary>
    public Tensor Values { get; }

    /// <summary>The weight's shape.</summary>
    public Shape Shape => Values.Shape;

    /// <summary>The number of weights.</summary>
    public int Numel => Values.Numel;

    /// <summary>The number of kept weights.</summary>
    public int KeptCount
    {
        get
        {
            int k = 0;
            foreach (float v in Values.AsReadOnlySpan()) if (v != 0) k++;
            return k;
        }
    }

    /// <summary>Fraction of weights held at zero.</summary>
    public double Sparsity => Numel == 0 ? 0 : 1.0 - (double)KeptCount / Numel;

    /// <summary>Fraction of weights kept.</summary>
    public double Density => 1.0 - Sparsity;

    /// <summary>Whether the weight at a flat (row-major) index is kept.</summary>
    public bool IsKept(int flatIndex) => Values.AsReadOnlySpan()[flatIndex] != 0;

    /// <summary>Sets dropped positions of <paramref name="values"/> to exactly 0 (also NaN or ∞ there).</summary>
    /// <exception cref="ArgumentException">The length differs from the mask's.</exception>
    public void Apply(Span<float> values)
    {
        var m = Values.AsReadOnlySpan();
        if (values.Length != m.Length)
            throw new ArgumentException($"Cannot apply a mask of shape {Shape} ({m.Length} elements) to {values.Length} values.", nameof(values));
        for (int i = 0; i < m.Length; i++) if (m[i] == 0) values[i] = 0f;
    }

    /// <summary>The flat (row-major) indices of the kept positions, ascending; a fresh array per call.</summary>
    public int[] KeptIndices()
    {
        var m = Values.AsReadOnlySpan();
        var kept = new int[KeptCount];
        for (int i = 0, j = 0; i < m.Length; i++) if (m[i] != 0) kept[j++] = i;
        return kept;
    }

    private const int BitsPerFloat = 16;

    /// <summary>
    /// The mask packed 16 positions per float (bit b of element i is position 16·i + b; whole numbers below 2^16 are
    /// exact in a float): 0.25 bytes per weight instead of 4, for layers that keep only their kept weights.
    /// </summary>
    public Tensor ToPackedBits()
    {
        var m = Values.AsReadOnlySpan();
        var bits = new float[(m.Length + BitsPerFloat - 1) / BitsPerFloat];
        for (int i = 0; i < bits.Length; i++)
        {
            int word = 0;
            for (int b = 0, at = i * BitsPerFloat; b < BitsPerFloat && at + b < m.Length; b++) if (m[at + b] != 0) word |= 1 << b;
            bits[i] = word;
        }
        return new Tensor(bits, new Shape(bits.Length));
    }

    /// <summary>Unpacks <see cref="ToPackedBits"/> into a mask of <paramref name="shape"/>.</summary>
    /// <exception cref="ArgumentException">The length does not fit the shape, a word is not a whole number in [0, 2^16), or
    /// it keeps a position past the end.</exception>
    public static SparsityMask FromPackedBits(Tensor packed, Shape shape)
    {
        ArgumentNullException.ThrowIfNull(packed);
        var bits = packed.AsReadOnlySpan();
        int numel = shape.Numel;
        if (bits.Length != (numel + BitsPerFloat - 1) / BitsPerFloat)
            throw new ArgumentException($"{bits.Length} packed mask words cannot hold a mask of shape {shape}; expected {(numel + BitsPerFloat - 1) / BitsPerFloat}.", nameof(packed));
        var m = new float[numel];
        for (int i = 0; i < bits.Length; i++)
        {
            float f = bits[i];
            if (!(f >= 0 && f < 1 << BitsPerFloat) || f != MathF.Floor(f))
                throw new ArgumentException($"weight_mask_bits[{i}] is {f}; expected a whole number in [0, {1 << BitsPerFloat}) (16 mask positions).", nameof(packed));
            int word = (int)f;
            for (int b = 0, at = i * BitsPerFloat; b < BitsPerFloat; b++)
            {
                if ((word >> b & 1) == 0) continue;
                if (at + b >= numel) throw new ArgumentException($"weight_mask_bits[{i}] keeps position {at + b}, past the weight's {numel} elements.", nameof(packed));
                m[at + b] = 1f;
            }
        }
        return new SparsityMask(new Tensor(m, shape));
    }

    /// <summary>Checks that <paramref name="shape"/> matches the mask, naming both otherwise.</summary>
    /// <exception cref="ArgumentException">The shapes differ.</exception>
    public void CheckShape(Shape shape, string paramName)
    {
        if (shape != Shape)
            throw new ArgumentException($"The mask has shape {Shape} but the weight has shape {shape}.", paramName);
    }

    /// <inheritdoc />
    public override string ToString() => $"SparsityMask{Shape}: {KeptCount}/{Numel} kept, sparsity {Sparsity:P1}";
}
