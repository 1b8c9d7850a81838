namespace Spdf.Tensors;

/// <summary>NumPy/PyTorch broadcasting rules (https://pytorch.org/docs/stable/notes/broadcasting.html).</summary>
internal static class Broadcast
{
    /// <summary>The broadcast shape of two shapes, or an exception naming both.</summary>
    public static Shape Shapes(Shape a, Shape b, string op)
    {
        int r = Math.Max(a.Rank, b.Rank);
        var dims = new int[r];
        for (int i = 0; i < r; i++)
        {
            int da = i < r - a.Rank ? 1 : a.Dims[i - (r - a.Rank)];
            int db = i < r - b.Rank ? 1 : b.Dims[i - (r - b.Rank)];
            if (da != db && da != 1 && db != 1)
                throw new ArgumentException($"{op}: shapes {a} and {b} cannot be broadcast together (dimension {i}: {da} vs {db}).");
            dims[i] = da == 1 ? db : da;
        }
        return new Shape(dims);
    }

    /// <summary>Strides of <paramref name="s"/> seen from an output of shape <paramref name="outShape"/> (0 on broadcast dimensions).</summary>
    public static int[] Strides(Shape s, Shape outShape)
    {
        int r = outShape.Rank;
        var st = new int[r];
        var own = s.Strides();
        for (int i = 0; i < r; i++)
        {
            int j = i - (r - s.Rank);
            st[i] = j < 0 || s.Dims[j] == 1 ? 0 : own[j];
        }
        return st;
    }

    /// <summary>Maps each output element to the offset of the broadcast input element.</summary>
    public static int[] OffsetMap(Shape s, Shape outShape)
    {
        int n = outShape.Numel, r = outShape.Rank;
        var st = Strides(s, outShape);
        var map = new int[n];
        var idx = new int[r];
        int off = 0;
        for (int i = 0; i < n; i++)
        {
            map[i] = off;
            for (int d = r - 1; d >= 0; d--)
            {
                idx[d]++; off += st[d];
                if (idx[d] < outShape.Dims[d]) break;
                off -= st[d] * idx[d]; idx[d] = 0;
            }
        }
        return map;
    }

    /// <summary>True when <paramref name="s"/> equals the trailing dimensions of <paramref name="outShape"/> (a row broadcast, like a bias).</summary>
    public static bool IsSuffix(Shape s, Shape outShape)
    {
        if (s.Rank > outShape.Rank) return false;
        int off = outShape.Rank - s.Rank;
        for (int i = 0; i < s.Rank; i++) if (s.Dims[i] != outShape.Dims[off + i]) return false;
        return true;
    }

    /// <summary>Sums a gradient of shape <paramref name="g"/>.Shape down to <paramref name="target"/> (the reverse of broadcasting).</summary>
    public static Tensor SumTo(Tensor g, Shape target)
    {
        if (g.Shape == target) return g;
        var result = new Tensor(target);
        var dst = result.Storage;
        var src = g.Storage;
        if (IsSuffix(target, g.Shape))
        {
            int row = target.Numel;
            if (row == 0) return result;
            for (int o = 0; o < src.Length; o += row)
                System.Numerics.Tensors.TensorPrimitives.Add(dst, src.AsSpan(o, row), dst);
            return result;
        }
        var map = OffsetMap(target, g.Shape);
        for (int i = 0; i < src.Length; i++) dst[map[i]] += src[i];
        return result;
    }
}
