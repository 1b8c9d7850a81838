namespace Spdf.Tensors.Autograd;

/// <summary>Gradient recording switches, after <c>torch.no_grad</c>.</summary>
public static class GradMode
{
    [ThreadStatic] private static int _disabledDepth;

    /// <summary>True unless inside a <see cref="NoGrad"/> scope on this thread.</summary>
    public static bool IsEnabled => _disabledDepth == 0;

    /// <summary>Disables gradient recording on this thread until the returned scope is disposed.</summary>
    /// <example><code>using (GradMode.NoGrad()) { var y = model.Forward(x); }</code></example>
    public static IDisposable NoGrad()
    {
        _disabledDepth++;
        return new Scope();
    }

    private sealed class Scope : IDisposable
    {
        private bool _disposed;
        public void Dispose()
        {
            if (_disposed) return;
            _disposed = true;
            _disabledDepth--;
        }
    }
}

/// <summary>Runs the backward pass over the recorded graph.</summary>
internal static class AutogradEngine
{
    /// <summary>Wraps a freshly computed result and records it on the tape when any input requires grad.</summary>
    public static Tensor Record(Tensor result, string name, Tensor[] inputs, Func<Tensor, Tensor?[]> backward)
    {
        OpProfiler.OnForward(name);
        if (!GradMode.IsEnabled) return result;
        foreach (var t in inputs)
        {
            if (t.RequiresGrad)
            {
                result.GradFn = new Node(name, inputs, backward);
                result.RequiresGradInternal();
                return result;
            }
        }
        return result;
    }

    private static bool SharesStorage(Tensor g, Tensor?[] grads)
    {
        foreach (var x in grads) if (x is not null && ReferenceEquals(x.Storage, g.Storage)) return true;
        return false;
    }

    private static bool IsFresh(Tensor grad, Tensor incoming, Tensor?[] siblings, int index)
    {
        if (ReferenceEquals(grad.Storage, incoming.Storage)) return false;
        for (int i = 0; i < siblings.Length; i++)
            if (i != index && siblings[i] is { } s && ReferenceEquals(s.Storage, grad.Storage)) return false;
        return true;
    }

    public static void Backward(Tensor root, Tensor? gradient, bool retainGraph)
    {
        if (!root.RequiresGrad)
            throw new InvalidOperationException($"Backward() called on a tensor of shape {root.Shape} that does not require grad; no recorded op leads to it.");
        if (gradient is null)
        {
            if (root.Numel != 1)
                throw new ArgumentException($"Backward() without a gradient needs a one-element tensor; this one has shape {root.Shape}.", nameof(gradient));
            gradient = Tensor.Full(root.Shape, 1f);
        }
        else if (gradient.Shape != root.Shape)
        {
            throw new ArgumentException($"Gradient shape {gradient.Shape} does not match tensor shape {root.Shape}.", nameof(gradient));
        }

        // Topological order by iterative DFS (graphs can be deep: 1000s of nodes).
        var order = new List<Tensor>();
        var visited = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        var stack = new Stack<(Tensor t, bool expanded)>();
        stack.Push((root, false));
        while (stack.Count > 0)
        {
            var (t, expanded) = stack.Pop();
            if (expanded) { order.Add(t); continue; }
            if (!visited.Add(t)) continue;
            stack.Push((t, true));
            if (t.GradFn is { } fn)
            {
                foreach (var input in fn.Inputs)
                    if (input.RequiresGrad && !visited.Contains(input)) stack.Push((input, false));
            }
        }

        var grads = new Dictionary<Tensor, Tensor>(ReferenceEqualityComparer.Instance) { [root] = gradient };
        var owned = new HashSet<Tensor>(ReferenceEqualityComparer.Instance); // grad buffers we may add into
        using var _ = GradMode.NoGrad();
        for (int i = order.Count - 1; i >= 0; i--)
        {
            var t = order[i];
            if (!grads.Remove(t, out var g)) continue;
            if (t.GradFn is null)
            {
                long leafStart = OpProfiler.BackwardStart();
                if (t.Grad is null)
                {
                    t.Grad = owned.Contains(g) ? g : g.CloneDetached();
                    TensorScope.Escape(t.Grad.Storage); // a leaf's gradient outlives any step scope
                }
                else
                {
                    Tensor.AddParallel(t.Grad.AsReadOnlySpan(), g.AsReadOnlySpan(), t.Grad.AsSpan());
                    if (owned.Remove(g)) GradientPool.Return(g.Storage); // added into the leaf's gradient: dead now
                }
                OpProfiler.OnBackward("(accumulate grad)", leafStart);
                continue;
            }
            var fn = t.GradFn;
            var bw = fn.BackwardFn ?? throw new InvalidOperationException(
                $"The graph through '{fn.Name}' was already freed by an earlier Backward(); pass retainGraph: true to backward twice.");
            long start = OpProfiler.BackwardStart();
            var inputGrads = bw(g);
            for (int k = 0; k < fn.Inputs.Length; k++)
            {
                var input = fn.Inputs[k];
                var ig = inputGrads[k];
                if (ig is null || !input.RequiresGrad) continue;
                if (ig.Shape != input.Shape)
                    throw new InvalidOperationException($"Op '{fn.Name}' produced a gradient of shape {ig.Shape} for an input of shape {input.Shape}.");
                if (grads.TryGetValue(input, out var acc))
                {
                    if (owned.Contains(acc)) Tensor.AddParallel(acc.AsReadOnlySpan(), ig.AsReadOnlySpan(), acc.AsSpan());
                    else
                    {
                        // The first gradient is not ours to write into: the sum goes to pooled storage (a fresh array
                        // here was a large-object allocation per residual branch per step).
                        var sum = new Tensor(GradientPool.Rent(acc.Numel, clear: false), acc.Shape);
                        Tensor.AddParallel(acc.AsReadOnlySpan(), ig.AsReadOnlySpan(), sum.AsSpan());
                        owned.Add(sum);
                        grads[input] = sum;
                    }
                }
                else
                {
                    grads[input] = ig;
                    // A gradient with storage of its own (not the incoming one, not shared with a sibling) may be
                    // accumulated into and handed to a leaf without a copy.
                    if (IsFresh(ig, g, inputGrads, k)) owned.Add(ig);
                }
            }
            if (!retainGraph) fn.Release();
            // g is dead now unless an input's gradient shares its storage (a pass-through) or it was never ours.
            if (owned.Remove(g) && !SharesStorage(g, inputGrads)) GradientPool.Return(g.Storage);
            OpProfiler.OnBackward(fn.Name, start);
        }
    }
}
