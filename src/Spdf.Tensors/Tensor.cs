using System.Globalization;
using System.Text;
using Spdf.Tensors.Autograd;

namespace Spdf.Tensors;

/// <summary>
/// A float32 tensor of any rank with row-major contiguous storage owned by the engine, and
/// define-by-run autograd (<see cref="Backward(Tensor?, bool)"/>). Follows <c>torch.Tensor</c>.
/// </summary>
/// <remarks>
/// Ownership model: storage is a managed <c>float[]</c> reclaimed by the garbage collector.
/// The autograd graph hangs off the tensors it produced and is released by
/// <see cref="Backward(Tensor?, bool)"/>, so a training loop that drops its loss tensor each
/// step keeps a flat working set with no dispose scopes. <see cref="Reshape"/> returns a view that
/// shares storage; every other op returns fresh, contiguous storage.
/// </remarks>
public partial class Tensor
{
    internal float[] Storage;
    private bool _requiresGrad;

    /// <summary>Wraps <paramref name="data"/> (not copied) as a tensor of the given shape.</summary>
    /// <exception cref="ArgumentException">The data length differs from the shape's element count.</exception>
    public Tensor(float[] data, Shape shape)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (data.Length != shape.Numel)
            throw new ArgumentException($"Data has {data.Length} elements but shape {shape} needs {shape.Numel}.", nameof(data));
        Storage = data;
        Shape = shape;
    }

    /// <summary>Creates a zero-filled tensor of the given shape.</summary>
    public Tensor(Shape shape) : this(new float[shape.Numel], shape) { }

    /// <summary>The shape, outermost dimension first.</summary>
    public Shape Shape { get; }

    /// <summary>The element type (always <see cref="DType.Float32"/>).</summary>
    public DType DType => DType.Float32;

    /// <summary>The number of dimensions.</summary>
    public int Rank => Shape.Rank;

    /// <summary>The number of elements.</summary>
    public int Numel => Storage.Length;

    /// <summary>The size of one dimension (negative values count from the end).</summary>
    public int Size(int dim) => Shape[dim];

    /// <summary>Whether gradients are recorded for this tensor. Only leaf tensors may be switched on by hand.</summary>
    /// <exception cref="InvalidOperationException">Switching off on a tensor produced by a recorded op.</exception>
    public bool RequiresGrad
    {
        get => _requiresGrad;
        set
        {
            if (!value && GradFn is not null)
                throw new InvalidOperationException("RequiresGrad cannot be switched off on a non-leaf tensor; use Detach().");
            _requiresGrad = value;
        }
    }

    /// <summary>The accumulated gradient after <see cref="Backward(Tensor?, bool)"/> (leaf tensors only), or null.</summary>
    public Tensor? Grad { get; set; }

    /// <summary>The recorded operation that produced this tensor, or null for a leaf.</summary>
    internal Node? GradFn { get; set; }

    /// <summary>True when the tensor was not produced by a recorded op.</summary>
    public bool IsLeaf => GradFn is null;

    /// <summary>
    /// The elements as a mutable span (row-major). Writing to it bypasses autograd; call <see cref="MarkModified"/>
    /// afterwards so that caches derived from the values (e.g. a sparse layer's compressed copy) are refreshed.
    /// </summary>
    public Span<float> AsSpan() => Storage;

    /// <summary>Counts in-place modifications (PyTorch's <c>_version</c>); derived caches compare it to know when to refresh.</summary>
    public long Version => _version;

    private long _version;

    /// <summary>Records an in-place modification made through <see cref="AsSpan"/>.</summary>
    public void MarkModified() => Interlocked.Increment(ref _version);

    /// <summary>The elements as a read-only span (row-major).</summary>
    public ReadOnlySpan<float> AsReadOnlySpan() => Storage;

    /// <summary>Copies the elements into a new array.</summary>
    public float[] ToArray() => (float[])Storage.Clone();

    /// <summary>The single value of a one-element tensor.</summary>
    /// <exception cref="InvalidOperationException">The tensor has more than one element.</exception>
    public float Item()
    {
        if (Numel != 1) throw new InvalidOperationException($"Item() needs a one-element tensor; this one has shape {Shape}.");
        return Storage[0];
    }

    /// <summary>The element at the given indices.</summary>
    [System.Runtime.CompilerServices.IndexerName("Element")]
    public float this[params int[] index]
    {
        get => Storage[FlatIndex(index)];
        set { Storage[FlatIndex(index)] = value; MarkModified(); }
    }

    private int FlatIndex(int[] index)
    {
        if (index.Length != Rank)
            throw new ArgumentException($"Got {index.Length} indices for a tensor of shape {Shape}; expected {Rank}.", nameof(index));
        int flat = 0;
        for (int d = 0; d < Rank; d++)
        {
            int i = index[d] < 0 ? index[d] + Shape[d] : index[d];
            if ((uint)i >= (uint)Shape[d])
                throw new ArgumentOutOfRangeException(nameof(index), $"Index {index[d]} is out of range for dimension {d} of size {Shape[d]} (shape {Shape}).");
            flat = flat * Shape[d] + i;
        }
        return flat;
    }

    /// <summary>A new leaf tensor sharing this one's storage, cut from the graph (<c>torch.Tensor.detach</c>).</summary>
    public Tensor Detach() => new(Storage, Shape);

    /// <summary>A deep copy as a new leaf tensor (<c>torch.Tensor.clone().detach()</c>).</summary>
    public Tensor CloneDetached() => new(ToArray(), Shape);

    /// <summary>Copies values from <paramref name="source"/> (same element count) in place, without autograd.</summary>
    /// <exception cref="ArgumentException">Element counts differ.</exception>
    public void CopyFrom(Tensor source)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (source.Numel != Numel)
            throw new ArgumentException($"Cannot copy a tensor of shape {source.Shape} into one of shape {Shape}.", nameof(source));
        source.Storage.AsSpan().CopyTo(Storage);
        MarkModified();
    }

    /// <summary>Sets every element to zero in place.</summary>
    public void Zero() { Array.Clear(Storage); MarkModified(); }

    /// <summary>Sets every element to <paramref name="value"/> in place.</summary>
    public void Fill(float value) { Storage.AsSpan().Fill(value); MarkModified(); }

    /// <summary>Computes gradients of this tensor with respect to every leaf that requires them,
    /// accumulating into their <see cref="Grad"/> (<c>torch.Tensor.backward</c>).</summary>
    /// <param name="gradient">The gradient of the final objective with respect to this tensor; may be omitted for a one-element tensor (then 1).</param>
    /// <param name="retainGraph">Keep the recorded graph so that Backward can run again.</param>
    public void Backward(Tensor? gradient = null, bool retainGraph = false) => AutogradEngine.Backward(this, gradient, retainGraph);

    /// <summary>Formats the tensor with its shape and (up to 6 per dimension) values.</summary>
    public override string ToString()
    {
        var sb = new StringBuilder();
        sb.Append("Tensor").Append(Shape);
        if (RequiresGrad) sb.Append(", requires_grad");
        sb.Append('\n');
        Format(sb, 0, 0);
        return sb.ToString();
    }

    private void Format(StringBuilder sb, int dim, int offset)
    {
        if (Rank == 0) { sb.Append(Storage[0].ToString("G6", CultureInfo.InvariantCulture)); return; }
        int n = Shape[dim];
        int stride = Shape.Product(dim + 1, Rank);
        sb.Append('[');
        for (int i = 0; i < n; i++)
        {
            if (n > 6 && i == 3) { sb.Append("..., "); i = n - 3; }
            if (dim == Rank - 1) sb.Append(Storage[offset + i].ToString("G6", CultureInfo.InvariantCulture));
            else Format(sb, dim + 1, offset + i * stride);
            if (i < n - 1) sb.Append(dim == Rank - 1 ? ", " : ",\n" + new string(' ', dim + 1));
        }
        sb.Append(']');
    }
}

public partial class Tensor
{
    internal void RequiresGradInternal() => _requiresGrad = true;
}
