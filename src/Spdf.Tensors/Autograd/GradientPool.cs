namespace Spdf.Tensors.Autograd;

/// <summary>
/// Recycles tensor storage. Two sources feed it: (1) gradients that a backward node has consumed — fresh, not aliased
/// by an input's gradient, not a leaf's <c>Grad</c> — which the engine returns as soon as the node's backward is done;
/// (2) every op output created inside a <see cref="TensorScope"/>, returned when the scope ends. Ops rent their outputs
/// here, so the next step reuses memory that is already faulted in (on Linux every fresh large array costs a page fault
/// and a zeroing per 4 KiB) and leaves no garbage behind. Arrays returned by the engine are bounded by
/// <see cref="MaxBytes"/>; arrays returned by a scope are kept whatever their size (the step needed them and will need
/// them again), and lengths no scope has asked for in the last <see cref="KeepScopes"/> scopes (two, once the pool holds
/// more than <see cref="KeepBytes"/>) are dropped, so variable shapes cannot grow the pool without bound.
/// </summary>
internal static class GradientPool
{
    private static readonly Dictionary<int, Stack<float[]>> Free = [];
    private static readonly Dictionary<int, long> LastUse = [];
    private static long _bytes, _generation;
    private static readonly object Gate = new();

    /// <summary>Largest total size kept from the engine's returns (256 MiB).</summary>
    public const long MaxBytes = 256L << 20;

    /// <summary>Smallest array worth pooling (64 KiB); smaller ones are cheap for the GC.</summary>
    private const int MinLength = 16 * 1024;

    /// <summary>Bytes held now.</summary>
    public static long Bytes { get { lock (Gate) return _bytes; } }

    /// <summary>An array of exactly <paramref name="length"/> elements, zeroed when <paramref name="clear"/>.</summary>
    public static float[] Rent(int length, bool clear)
    {
        float[]? a = null;
        if (length >= MinLength)
        {
            lock (Gate)
            {
                LastUse[length] = _generation;
                if (Free.TryGetValue(length, out var stack) && stack.Count > 0)
                {
                    a = stack.Pop();
                    _bytes -= (long)a.Length * 4;
                }
            }
            if (a is not null && clear) Array.Clear(a);
        }
        a ??= clear ? new float[length] : GC.AllocateUninitializedArray<float>(length);
        if (length >= MinLength) TensorScope.OnRent(a);
        return a;
    }

    /// <summary>Gives back an array no one else references (the engine's consumed gradients).</summary>
    public static void Return(float[] array)
    {
        if (array.Length < MinLength) return;
        bool scoped = TensorScope.OnReturn(array); // inside a scope the step needs this memory again: keep it
        lock (Gate)
        {
            if (!scoped && _bytes + (long)array.Length * 4 > MaxBytes) return;
            Push(array);
        }
    }

    /// <summary>Scopes a length may go unused and stay pooled while the pool holds at most <see cref="KeepBytes"/>: steps
    /// whose shapes vary (a fine-tuning batch padded to its longest sequence) come back to a length within a few steps.
    /// Dropped at once, each such step allocated and faulted in its whole working set again (78 MB a step at width 128,
    /// 40% of the step's time).</summary>
    internal const int KeepScopes = 8;

    /// <summary>Above this many bytes held, lengths unused for two scopes are dropped (the pool's bound when shapes vary
    /// more than a few lengths can serve): 1 GiB.</summary>
    internal const long KeepBytes = 1L << 30;

    /// <summary>Takes back the arrays of an ending scope (unbounded), then drops lengths unused for <see cref="KeepScopes"/>
    /// scopes, or for two when the pool holds more than <see cref="KeepBytes"/>.</summary>
    internal static void ReturnScope(IEnumerable<float[]> arrays)
    {
        lock (Gate)
        {
            foreach (var a in arrays) Push(a);
            _generation++;
            Drop(KeepScopes);
            if (_bytes > KeepBytes) Drop(2);
        }
    }

    /// <summary>Drops the free arrays of lengths no rent has asked for in the last <paramref name="scopes"/> scopes.</summary>
    private static void Drop(int scopes)
    {
        foreach (var (len, stack) in Free)
        {
            if (stack.Count == 0 || LastUse.GetValueOrDefault(len) >= _generation - scopes) continue;
            _bytes -= (long)len * 4 * stack.Count;
            stack.Clear();
        }
    }

    private static void Push(float[] array)
    {
        if (!Free.TryGetValue(array.Length, out var stack)) Free[array.Length] = stack = new Stack<float[]>();
        stack.Push(array);
        _bytes += (long)array.Length * 4;
    }
}
