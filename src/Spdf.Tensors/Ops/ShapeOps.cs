using Spdf.Tensors.Autograd;

namespace Spdf.Tensors;

public partial class Tensor
{
    /// <summary>A view with a new shape sharing this tensor's storage (<c>torch.Tensor.view</c>/<c>reshape</c>).
    /// One dimension may be -1 and is inferred.</summary>
    /// <exception cref="ArgumentException">The element counts differ or more than one dimension is -1.</exception>
    public Tensor Reshape(params int[] shape)
    {
        var dims = (int[])shape.Clone();
        int infer = -1; long known = 1;
        for (int i = 0; i < dims.Length; i++)
        {
            if (dims[i] == -1)
            {
                if (infer >= 0) throw new ArgumentException($"Reshape [{string.Join(", ", shape)}]: only one dimension may be -1.", nameof(shape));
                infer = i;
            }
            else known *= dims[i];
        }
        if (infer >= 0)
        {
            if (known == 0 || Numel % known != 0)
                throw new ArgumentException($"Reshape: cannot view a tensor of shape {Shape} ({Numel} elements) as [{string.Join(", ", shape)}].", nameof(shape));
            dims[infer] = (int)(Numel / known);
        }
        var s = new Shape(dims);
        if (s.Numel != Numel)
            throw new ArgumentException($"Reshape: cannot view a tensor of shape {Shape} ({Numel} elements) as {s} ({s.Numel} elements).", nameof(shape));
        var original = Shape;
        return AutogradEngine.Record(new Tensor(Storage, s), "Reshape", [this], g => [new Tensor(g.Storage, original)]);
    }

    /// <summary>Alias of <see cref="Reshape"/> (<c>torch.Tensor.view</c>).</summary>
    public Tensor View(params int[] shape) => Reshape(shape);

    /// <summary>Flattens to 1-D.</summary>
    public Tensor Flatten() => Reshape(-1);

    /// <summary>Reorders dimensions (<c>torch.Tensor.permute</c>); the result is a contiguous copy.</summary>
    /// <exception cref="ArgumentException"><paramref name="dims"/> is not a permutation of the dimensions.</exception>
    public Tensor Permute(params int[] dims)
    {
        ArgumentNullException.ThrowIfNull(dims);
        int r = Rank;
        if (dims.Length != r)
            throw new ArgumentException($"Permute [{string.Join(", ", dims)}] has {dims.Length} entries; shape {Shape} has rank {r}.", nameof(dims));
        var perm = new int[r];
        var seen = new bool[r];
        for (int i = 0; i < r; i++)
        {
            int d = Shape.NormalizeDim(dims[i]);
            if (seen[d]) throw new ArgumentException($"Permute [{string.Join(", ", dims)}] repeats dimension {d}.", nameof(dims));
            seen[d] = true; perm[i] = d;
        }
        var result = PermuteCopy(this, perm);
        var inverse = new int[r];
        for (int i = 0; i < r; i++) inverse[perm[i]] = i;
        return AutogradEngine.Record(result, "Permute", [this], g => [PermuteCopy(g, inverse)]);
    }

    private static Tensor PermuteCopy(Tensor x, int[] perm)
    {
        int r = x.Rank;
        var outDims = new int[r];
        var inStrides = x.Shape.Strides();
        var st = new int[r];
        for (int i = 0; i < r; i++) { outDims[i] = x.Shape.Dims[perm[i]]; st[i] = inStrides[perm[i]]; }
        var outShape = new Shape(outDims);
        var d = GradientPool.Rent(x.Numel, clear: true);
        var src = x.Storage;
        if (d.Length == 0) return new Tensor(d, outShape);
        // Copy innermost runs: the last output dimension walks the input with stride st[r-1].
        int inner = r == 0 ? 1 : outDims[r - 1];
        int innerStride = r == 0 ? 1 : st[r - 1];
        var idx = new int[Math.Max(r - 1, 0)];
        int off = 0;
        for (int o = 0; o < d.Length; o += inner)
        {
            if (innerStride == 1) src.AsSpan(off, inner).CopyTo(d.AsSpan(o, inner));
            else for (int j = 0, p = off; j < inner; j++, p += innerStride) d[o + j] = src[p];
            for (int k = r - 2; k >= 0; k--)
            {
                idx[k]++; off += st[k];
                if (idx[k] < outDims[k]) break;
                off -= st[k] * idx[k]; idx[k] = 0;
            }
        }
        return new Tensor(d, outShape);
    }

    /// <summary>Swaps two dimensions (<c>torch.Tensor.transpose</c>); the result is a contiguous copy.</summary>
    public Tensor Transpose(int dim0, int dim1)
    {
        var perm = Enumerable.Range(0, Rank).ToArray();
        int a = Shape.NormalizeDim(dim0), b = Shape.NormalizeDim(dim1);
        (perm[a], perm[b]) = (perm[b], perm[a]);
        return Permute(perm);
    }

    /// <summary>The transpose of a 2-D tensor.</summary>
    public Tensor T() => Rank == 2 ? Transpose(0, 1) : throw new InvalidOperationException($"T() needs a 2-D tensor; this one has shape {Shape}.");

    /// <summary>Elements <c>[start, start+length)</c> along <paramref name="dim"/> (<c>torch.Tensor.narrow</c>), as a copy.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The range lies outside the dimension.</exception>
    public Tensor Narrow(int dim, int start, int length)
    {
        int d = Shape.NormalizeDim(dim);
        int size = Shape[d];
        if (start < 0 || length < 0 || start + length > size)
            throw new ArgumentOutOfRangeException(nameof(start), $"Narrow({dim}, {start}, {length}) is outside dimension {d} of size {size} (shape {Shape}).");
        int outer = Shape.Product(0, d), inner = Shape.Product(d + 1, Rank);
        var outDims = Shape.ToArray(); outDims[d] = length;
        var res = GradientPool.Rent(outer * length * inner, clear: true);
        for (int o = 0; o < outer; o++)
            Storage.AsSpan((o * size + start) * inner, length * inner).CopyTo(res.AsSpan(o * length * inner));
        var inShape = Shape;
        return AutogradEngine.Record(new Tensor(res, new Shape(outDims)), "Narrow", [this], g =>
        {
            var dx = GradientPool.Rent(inShape.Numel, clear: true);
            for (int o = 0; o < outer; o++)
                g.Storage.AsSpan(o * length * inner, length * inner).CopyTo(dx.AsSpan((o * size + start) * inner));
            return [new Tensor(dx, inShape)];
        });
    }

    /// <summary>Selects index <paramref name="index"/> along dimension 0 and drops that dimension.</summary>
    public Tensor Select0(int index)
    {
        var n = Narrow(0, index, 1);
        return n.Reshape(Shape.Dims[1..].ToArray());
    }

    /// <summary>Concatenates tensors along <paramref name="dim"/> (<c>torch.cat</c>).</summary>
    /// <exception cref="ArgumentException">The list is empty, or shapes differ outside <paramref name="dim"/>.</exception>
    public static Tensor Cat(IReadOnlyList<Tensor> tensors, int dim)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        if (tensors.Count == 0) throw new ArgumentException("Cat needs at least one tensor; got none.", nameof(tensors));
        var first = tensors[0].Shape;
        int d = first.NormalizeDim(dim);
        int total = 0;
        foreach (var t in tensors)
        {
            if (t.Rank != first.Rank)
                throw new ArgumentException($"Cat: shapes {first} and {t.Shape} have different ranks.", nameof(tensors));
            for (int i = 0; i < first.Rank; i++)
                if (i != d && t.Shape.Dims[i] != first.Dims[i])
                    throw new ArgumentException($"Cat along dimension {d}: shapes {first} and {t.Shape} differ in dimension {i}.", nameof(tensors));
            total += t.Shape.Dims[d];
        }
        int outer = first.Product(0, d), inner = first.Product(d + 1, first.Rank);
        var outDims = first.ToArray(); outDims[d] = total;
        var res = GradientPool.Rent(outer * total * inner, clear: true);
        int at = 0;
        var sizes = new int[tensors.Count];
        for (int k = 0; k < tensors.Count; k++)
        {
            var t = tensors[k];
            int len = t.Shape.Dims[d]; sizes[k] = len;
            for (int o = 0; o < outer; o++)
                t.Storage.AsSpan(o * len * inner, len * inner).CopyTo(res.AsSpan((o * total + at) * inner));
            at += len;
        }
        var inputs = tensors.ToArray();
        return AutogradEngine.Record(new Tensor(res, new Shape(outDims)), "Cat", inputs, g =>
        {
            var grads = new Tensor?[inputs.Length];
            int pos = 0;
            for (int k = 0; k < inputs.Length; k++)
            {
                int len = sizes[k];
                if (inputs[k].RequiresGrad)
                {
                    var dx = GradientPool.Rent(outer * len * inner, clear: true);
                    for (int o = 0; o < outer; o++)
                        g.Storage.AsSpan((o * total + pos) * inner, len * inner).CopyTo(dx.AsSpan(o * len * inner));
                    grads[k] = new Tensor(dx, inputs[k].Shape);
                }
                pos += len;
            }
            return grads;
        });
    }

    /// <summary>Splits into pieces of <paramref name="size"/> along <paramref name="dim"/> (the last may be smaller), like <c>torch.split</c>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is not positive.</exception>
    public Tensor[] Split(int size, int dim)
    {
        if (size <= 0) throw new ArgumentOutOfRangeException(nameof(size), size, "Split size must be positive.");
        int d = Shape.NormalizeDim(dim);
        var parts = new List<Tensor>();
        for (int s = 0; s < Shape[d]; s += size) parts.Add(Narrow(d, s, Math.Min(size, Shape[d] - s)));
        return parts.ToArray();
    }
}
