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
    private bool _disposed;

    private TensorScope(TensorScope? outer) => _outer = outer;

    /// <summary>Opens a scope on this thread.</summary>
    public static TensorScope Enter() => _current = new TensorScope(_current);

    /// <summary>Excludes <paramref name="tensor"/>'s storage from recycling (it outlives the scope).</summary>
    public T Keep<T>(T tensor) where T : Tensor
    {
        ArgumentNullException.ThrowIfNull(tensor);
        Escape(tensor.Storage);
        return tensor;
    }

    /// <summary>Number of arrays the scope will give back.</summary>
    public int OwnedArrays => _owned.Count;

    internal static void OnRent(float[] a) => _current?._owned.Add(a);

    /// <summary>The engine gave <paramref name="a"/> back to the pool; returns whether a scope is open.</summary>
    internal static bool OnReturn(float[] a)
    {
        Escape(a); // now the pool's, not any scope's
        return _current is not null;
    }

    /// <summary>Storage that must survive every open scope (a leaf's gradient, a kept tensor).</summary>
    internal static void Escape(float[] a)
    {
        for (var s = _current; s is not null; s = s._outer) s._owned.Remove(a);
    }

    /// <summary>Ends the scope and gives its tensors' storage back to the pool.</summary>
    /// <exception cref="InvalidOperationException">An inner scope is still open.</exception>
    public void Dispose()
    {
        if (_disposed) return;
        if (!ReferenceEquals(_current, this))
            throw new InvalidOperationException("TensorScope.Dispose: an inner scope is still open (or the scope was disposed on another thread); dispose scopes innermost first.");
        _disposed = true;
        _current = _outer;
        GradientPool.ReturnScope(_owned);
        _owned.Clear();
    }
}
