namespace Spdf.Sparsity.Masks;

/// <summary>
/// Which weights of a 2-D weight <c>[rows, cols]</c> (a linear layer's <c>[out, in]</c>) are kept (1) and which are held
/// at zero (0), as a row-major float32 0/1 array. Engine-free: each engine binding wraps <see cref="Values"/> in its own
/// tensor without copying (saved with the model as <c>weight_mask</c>, the name <c>torch.nn.utils.prune</c> uses), so
/// changes made by loading a checkpoint are seen at once.
/// </summary>
public sealed class SparsityMask
{
    /// <summary>Wraps a row-major 0/1 array of <paramref name="rows"/> × <paramref name="cols"/> elements (not copied).</summary>
    /// <exception cref="ArgumentException">The length is not rows × cols, a size is negative, or an element is neither 0 nor 1.</exception>
    public SparsityMask(float[] values, int rows, int cols)
    {
        ArgumentNullException.ThrowIfNull(values);
        if (rows < 0 || cols < 0 || (long)rows * cols != values.Length)
            throw new ArgumentException($"A mask of shape [{rows}, {cols}] needs {(long)rows * cols} elements; got {values.Length}.", nameof(values));
        for (int i = 0; i < values.Length; i++)
            if (values[i] != 0f && values[i] != 1f)
                throw new ArgumentException($"Mask element {i} is {values[i]}; a mask holds only 0 (dropped) and 1 (kept).", nameof(values));
        Values = values;
        Rows = rows;
        Cols = cols;
    }

    /// <summary>A mask of the given shape with every weight kept.</summary>
    public static SparsityMask Dense(int rows, int cols)
    {
        var v = new float[(long)rows * cols];
        Array.Fill(v, 1f);
        return new SparsityMask(v, rows, cols);
    }

    /// <summary>The 0/1 values, row-major <c>[rows, cols]</c>.</summary>
    public float[] Values { get; }

    /// <summary>Rows (a linear layer's output features).</summary>
    public int Rows { get; }

    /// <summary>Columns (a linear layer's input features).</summary>
    public int Cols { get; }

    /// <summary>The shape as text, <c>[rows, cols]</c>.</summary>
    public string ShapeText => $"[{Rows}, {Cols}]";

    /// <summary>The number of weights.</summary>
    public int Numel => Values.Length;

    /// <summary>The number of kept weights.</summary>
    public int KeptCount
    {
        get
        {
            int k = 0;
            foreach (float v in Values) if (v != 0) k++;
            return k;
        }
    }

    /// <summary>Fraction of weights held at zero.</summary>
    public double Sparsity => Numel == 0 ? 0 : 1.0 - (double)KeptCount / Numel;

    /// <summary>Fraction of weights kept.</summary>
    public double Density => 1.0 - Sparsity;

    /// <summary>Whether the weight at a flat (row-major) index is kept.</summary>
    public bool IsKept(int flatIndex) => Values[flatIndex] != 0;

    /// <summary>Sets dropped positions of <paramref name="values"/> to exactly 0 (also NaN or ∞ there).</summary>
    /// <exception cref="ArgumentException">The length differs from the mask's.</exception>
    public void Apply(Span<float> values)
    {
        var m = Values;
        if (values.Length != m.Length)
            throw new ArgumentException($"Cannot apply a mask of shape {ShapeText} ({m.Length} elements) to {values.Length} values.", nameof(values));
        for (int i = 0; i < m.Length; i++) if (m[i] == 0) values[i] = 0f;
    }

    /// <summary>The flat (row-major) indices of the kept positions, ascending; a fresh array per call.</summary>
    public int[] KeptIndices()
    {
        var m = Values;
        var kept = new int[KeptCount];
        for (int i = 0, j = 0; i < m.Length; i++) if (m[i] != 0) kept[j++] = i;
        return kept;
    }

    /// <summary>A mask of <paramref name="rows"/> × <paramref name="cols"/> that keeps exactly the given flat positions.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A position is outside the shape.</exception>
    public static SparsityMask FromKept(IEnumerable<int> kept, int rows, int cols)
    {
        ArgumentNullException.ThrowIfNull(kept);
        var v = new float[(long)rows * cols];
        foreach (int i in kept)
        {
            if ((uint)i >= (uint)v.Length) throw new ArgumentOutOfRangeException(nameof(kept), i, $"Kept position {i} is outside a mask of shape [{rows}, {cols}].");
            v[i] = 1f;
        }
        return new SparsityMask(v, rows, cols);
    }

    private const int BitsPerFloat = 16;

    /// <summary>
    /// The mask packed 16 positions per float (bit b of element i is position 16·i + b; whole numbers below 2^16 are
    /// exact in a float): 0.25 bytes per weight instead of 4, for layers that keep only their kept weights.
    /// </summary>
    public float[] ToPackedBits()
    {
        var m = Values;
        var bits = new float[(m.Length + BitsPerFloat - 1) / BitsPerFloat];
        for (int i = 0; i < bits.Length; i++)
        {
            int word = 0;
            for (int b = 0, at = i * BitsPerFloat; b < BitsPerFloat && at + b < m.Length; b++) if (m[at + b] != 0) word |= 1 << b;
            bits[i] = word;
        }
        return bits;
    }

    /// <summary>The number of floats <see cref="ToPackedBits"/> gives for <paramref name="numel"/> positions.</summary>
    public static int PackedLength(int numel) => (numel + BitsPerFloat - 1) / BitsPerFloat;

    /// <summary>Unpacks <see cref="ToPackedBits"/> into a mask of <paramref name="rows"/> × <paramref name="cols"/>.</summary>
    /// <exception cref="ArgumentException">The length does not fit the shape, a word is not a whole number in [0, 2^16), or
    /// it keeps a position past the end.</exception>
    public static SparsityMask FromPackedBits(ReadOnlySpan<float> bits, int rows, int cols)
    {
        int numel = rows * cols;
        if (bits.Length != PackedLength(numel))
            throw new ArgumentException($"{bits.Length} packed mask words cannot hold a mask of shape [{rows}, {cols}]; expected {PackedLength(numel)}.", nameof(bits));
        var m = new float[numel];
        for (int i = 0; i < bits.Length; i++)
        {
            float f = bits[i];
            if (!(f >= 0 && f < 1 << BitsPerFloat) || f != MathF.Floor(f))
                throw new ArgumentException($"weight_mask_bits[{i}] is {f}; expected a whole number in [0, {1 << BitsPerFloat}) (16 mask positions).", nameof(bits));
            int word = (int)f;
            for (int b = 0, at = i * BitsPerFloat; b < BitsPerFloat; b++)
            {
                if ((word >> b & 1) == 0) continue;
                if (at + b >= numel) throw new ArgumentException($"weight_mask_bits[{i}] keeps position {at + b}, past the weight's {numel} elements.", nameof(bits));
                m[at + b] = 1f;
            }
        }
        return new SparsityMask(m, rows, cols);
    }

    /// <summary>Checks that a weight of <paramref name="rows"/> × <paramref name="cols"/> matches the mask, naming both otherwise.</summary>
    /// <exception cref="ArgumentException">The shapes differ.</exception>
    public void CheckShape(int rows, int cols, string paramName)
    {
        if (rows != Rows || cols != Cols)
            throw new ArgumentException($"The mask has shape {ShapeText} but the weight has shape [{rows}, {cols}].", paramName);
    }

    /// <inheritdoc />
    public override string ToString() => $"SparsityMask{ShapeText}: {KeptCount}/{Numel} kept, sparsity {Sparsity:P1}";
}
