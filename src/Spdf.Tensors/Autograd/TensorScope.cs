namespace Spdf.Tensors.Autograd;

/// <summary>
/// Opt-in recycling of a training step's activations (TorchSharp's <c>DisposeScope</c>, for managed memory): every
/// tensor an op creates on this thread while the scope is open gives its storage back to the engine's pool when the
/// scope is disposed, so the next step reuses it instead of allocating (no garbage, no page faults, a flat working set).
/// Parameters' gradients and optimizer state are never recycled; tensors you still need after the scope — read them
/// inside it (<c>loss.Item()</c>) or pass them to <see cref="Keep"/>. A tensor created in the scope must not be used
/// after it ends. Scopes nest; a tensor belongs to the innermost one.
/// </summary>
/// <example><code>
/// using (TensorScope.Enter())
/// {
///     var loss = model.Loss(x, y);
///     loss.Backward();
///     lossValue = loss.Item();
/// }
/// optimizer.Step();
/// </code></example>
public sealed class TensorScope : IDisposable
{
    [ThreadStatic] private static TensorScope? _current;
    private readonly TensorScope? _outer;
    private readonly HashSet<float[]> _owned = new(ReferenceEqualityComparer.Instance);
    private readonly int _thread = Environment.CurrentManagedThreadId;
    private volatile bool _disposed;

    private TensorScope(TensorScope? outer) => _outer = outer;

    /// <summary>The innermost open scope of this thread (scopes disposed from another thread are skipped and left).</summary>
    private static TensorScope? Current
    {
        get
        {
            while (_current is { _disposed: true } gone) _current = gone._outer;
            return _current;
        }
    }

    /// <summary>Opens a scope on this thread.</summary>
    public static TensorScope Enter() => _current = new TensorScope(Current);

    /// <summary>Excludes <paramref name="tensor"/>'s storage from recycling (it outlives the scope).</summary>
    public T Keep<T>(T tensor) where T : Tensor
    {
        ArgumentNullException.ThrowIfNull(tensor);
        Escape(tensor.Storage);
        return tensor;
    }

    /// <summary>Number of arrays the scope will give back.</summary>
    public int OwnedArrays => _owned.Count;

    internal static void OnRent(float[] a) => Current?._owned.Add(a);

    /// <summary>The engine gave <paramref name="a"/> back to the pool; returns whether a scope is open.</summary>
    internal static bool OnReturn(float[] a)
    {
        Escape(a); // now the pool's, not any scope's
        return Current is not null;
    }

    /// <summary>Storage that must survive every open scope (a leaf's gradient, a kept tensor).</summary>
    internal static void Escape(float[] a)
    {
        for (var s = Current; s is not null; s = s._outer) s._owned.Remove(a);
    }

    /// <summary>
    /// Ends the scope and gives its tensors' storage back to the pool. Scopes opened inside it and still open end first
    /// (innermost first), as a <c>using</c> block's would. Disposed from another thread, the scope only ends: its storage
    /// is left to the garbage collector rather than recycled, since the owning thread may still be using the pool. Never
    /// throws; a second call does nothing.
    /// </summary>
    public void Dispose()
    {
        if (_disposed) return;
        if (_thread != Environment.CurrentManagedThreadId) { _disposed = true; return; }
        while (Current is { } inner && !ReferenceEquals(inner, this))
        {
            if (!IsOuterOf(inner)) { _disposed = true; return; } // not on this thread's chain: nothing of ours to recycle
            inner.Dispose();
        }
        _disposed = true;
        _current = _outer;
        GradientPool.ReturnScope(_owned);
        _owned.Clear();
    }

    private bool IsOuterOf(TensorScope scope)
    {
        for (var s = scope._outer; s is not null; s = s._outer) if (ReferenceEquals(s, this)) return true;
        return false;
    }
}
