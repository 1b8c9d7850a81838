namespace Spdf.Tensors.Autograd;

/// <summary>
/// Recycles gradient buffers within and across backward passes. A gradient that the engine has handed to its node,
/// that was freshly allocated and that no input's gradient shares is dead once the node's backward returns; its array
/// goes back here, and the next backward closure that needs an array of that length reuses it. Reused memory is already
/// faulted in, which matters on Linux, where every fresh large array costs a page fault per 4 KiB. The pool is bounded
/// (<see cref="MaxBytes"/>); beyond it arrays are left to the garbage collector.
/// </summary>
internal static class GradientPool
{
    private static readonly Dictionary<int, Stack<float[]>> Free = [];
    private static long _bytes;
    private static readonly object Gate = new();

    /// <summary>Largest total size kept (256 MiB).</summary>
    public const long MaxBytes = 256L << 20;

    /// <summary>Smallest array worth pooling (64 KiB); smaller ones are cheap for the GC.</summary>
    private const int MinLength = 16 * 1024;

    /// <summary>An array of exactly <paramref name="length"/> elements, zeroed when <paramref name="clear"/>.</summary>
    public static float[] Rent(int length, bool clear)
    {
        if (length >= MinLength)
        {
            lock (Gate)
            {
                if (Free.TryGetValue(length, out var stack) && stack.Count > 0)
                {
                    var a = stack.Pop();
                    _bytes -= (long)a.Length * 4;
                    if (clear) Array.Clear(a);
                    return a;
                }
            }
        }
        return clear ? new float[length] : GC.AllocateUninitializedArray<float>(length);
    }

    /// <summary>Gives back an array no one else references.</summary>
    public static void Return(float[] array)
    {
        if (array.Length < MinLength) return;
        lock (Gate)
        {
            if (_bytes + (long)array.Length * 4 > MaxBytes) return;
            if (!Free.TryGetValue(array.Length, out var stack)) Free[array.Length] = stack = new Stack<float[]>();
            stack.Push(array);
            _bytes += (long)array.Length * 4;
        }
    }
}
