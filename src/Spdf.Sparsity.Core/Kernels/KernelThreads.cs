namespace Spdf.Sparsity.Kernels;

/// <summary>
/// The parallel loop the CPU sparse kernels spread their independent pieces over (token blocks, row chunks, panels).
/// By default it is .NET's thread pool (<see cref="Parallel.For(int, int, Action{int})"/>). An engine binding whose engine
/// keeps a thread pool of its own can run the kernels on that pool for the duration of a call (<see cref="Use"/>), so
/// that the two pools do not compete for the cores: the TorchSharp binding runs them on LibTorch's OpenMP threads, which
/// otherwise spin for milliseconds after each LibTorch op while the kernel's threads wait for a core.
/// </summary>
public static class KernelThreads
{
    /// <summary>Runs <paramref name="body"/> for every index in [0, <paramref name="count"/>), in parallel, and returns when all are done.</summary>
    public delegate void Runner(int count, Action<int> body);

    [ThreadStatic] private static Runner? _runner;

    /// <summary>Runs <paramref name="body"/> for every index in [0, <paramref name="count"/>) on the current thread's runner.</summary>
    public static void For(int count, Action<int> body)
    {
        ArgumentNullException.ThrowIfNull(body);
        if (_runner is { } runner) runner(count, body);
        else Parallel.For(0, count, body);
    }

    /// <summary>Makes <paramref name="runner"/> the calling thread's runner until the returned scope is disposed (scopes nest).</summary>
    public static Scope Use(Runner runner)
    {
        ArgumentNullException.ThrowIfNull(runner);
        var previous = _runner;
        _runner = runner;
        return new Scope(previous);
    }

    /// <summary>Restores the previous runner when disposed.</summary>
    public readonly struct Scope : IDisposable
    {
        private readonly Runner? _previous;
        private readonly bool _active;

        internal Scope(Runner? previous) { _previous = previous; _active = true; }

        /// <summary>Restores the runner in force before <see cref="Use"/>.</summary>
        public void Dispose()
        {
            if (_active) _runner = _previous;
        }
    }
}
