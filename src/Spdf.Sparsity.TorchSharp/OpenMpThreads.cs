using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;

namespace Spdf.Sparsity.TorchSharp;

/// <summary>
/// Runs the core's kernel loops (<see cref="Kernels.KernelThreads"/>) on LibTorch's OpenMP threads. LibTorch's CPU build
/// parallelises its ops with GNU OpenMP (libgomp, loaded with it), whose worker threads spin for a while after each op
/// before they sleep. A Spdf kernel that runs right after a LibTorch op on .NET's thread pool then shares the cores with
/// a spinning thread (on two cores, a 384×384 layer's forward and backward took twice as long); run as an OpenMP
/// parallel region, the kernel's pieces go to those very threads instead. Where libgomp is not loaded (another
/// OpenMP runtime, another platform) <see cref="Available"/> is false and the kernels keep .NET's thread pool.
/// </summary>
internal static unsafe class OpenMpThreads
{
    private static readonly delegate* unmanaged<delegate* unmanaged<void*, void>, void*, uint, uint, void> Parallel;
    private static readonly delegate* unmanaged<int> MaxThreads;

    static OpenMpThreads()
    {
        try
        {
            if (!OperatingSystem.IsLinux() || FindLoadedLibgomp() is not { } path) return;
            var handle = NativeLibrary.Load(path); // already loaded by LibTorch: the same library
            if (NativeLibrary.TryGetExport(handle, "GOMP_parallel", out var parallel) && NativeLibrary.TryGetExport(handle, "omp_get_max_threads", out var max))
            {
                Parallel = (delegate* unmanaged<delegate* unmanaged<void*, void>, void*, uint, uint, void>)parallel;
                MaxThreads = (delegate* unmanaged<int>)max;
            }
        }
        catch (Exception e) when (e is IOException or DllNotFoundException or BadImageFormatException or UnauthorizedAccessException)
        {
            // No libgomp to use: the kernels keep .NET's thread pool.
        }
    }

    /// <summary>Whether LibTorch's libgomp was found (LibTorch must be loaded: any tensor created before is enough).</summary>
    public static bool Available => Parallel != null;

    /// <summary>A scope in which the calling thread's kernel loops run on LibTorch's OpenMP threads, when available.</summary>
    public static Kernels.KernelThreads.Scope Use() => Available ? Kernels.KernelThreads.Use(For) : default;

    /// <summary>The path of the libgomp that this process has loaded (LibTorch's), from <c>/proc/self/maps</c>.</summary>
    private static string? FindLoadedLibgomp()
    {
        foreach (var line in File.ReadLines("/proc/self/maps"))
        {
            int slash = line.IndexOf('/');
            if (slash < 0) continue;
            var path = line[slash..];
            if (Path.GetFileName(path).StartsWith("libgomp", StringComparison.Ordinal)) return path;
        }
        return null;
    }

    private sealed class Work(int count, Action<int> body)
    {
        public readonly int Count = count;
        public readonly Action<int> Body = body;
        public int Next;
        public Exception? Error;
    }

    /// <summary>Every index in [0, count) once, taken in turn by the team's threads; the first exception is rethrown here.</summary>
    private static void For(int count, Action<int> body)
    {
        if (count <= 0) return;
        var work = new Work(count, body);
        var handle = GCHandle.Alloc(work);
        try
        {
            int threads = Math.Max(1, Math.Min(count, MaxThreads()));
            Parallel(&Run, (void*)GCHandle.ToIntPtr(handle), (uint)threads, 0);
        }
        finally { handle.Free(); }
        if (work.Error is { } error) ExceptionDispatchInfo.Throw(error);
    }

    [UnmanagedCallersOnly]
    private static void Run(void* data)
    {
        var work = (Work)GCHandle.FromIntPtr((IntPtr)data).Target!;
        try
        {
            for (int i = Interlocked.Increment(ref work.Next) - 1; i < work.Count; i = Interlocked.Increment(ref work.Next) - 1)
                work.Body(i);
        }
        catch (Exception e)
        {
            Interlocked.CompareExchange(ref work.Error, e, null);
            Volatile.Write(ref work.Next, work.Count); // the other threads stop taking pieces
        }
    }
}
