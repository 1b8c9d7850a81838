using System.Reflection;
using System.Runtime.InteropServices;
using Spdf.Sparsity.Distributed;
using U = MPI.Unsafe;

namespace Spdf.Mpi;

/// <summary>
/// The MPI world as an <see cref="ICommunicator"/>, on MPI.NET. MPI.NET binds Microsoft MPI's library name
/// (<c>msmpi.dll</c>); Microsoft MPI derives from MPICH and shares its handle ABI, so on Linux that name is resolved to
/// MPICH's library (<c>libmpich.so.12</c>, Debian's <c>mpich</c> package; or <c>libmpi.so.12</c> of an MPICH-ABI MPI
/// such as Intel MPI). Open MPI's ABI differs and is not supported. Start the program with
/// <c>mpiexec -n 2 dotnet app.dll</c>; started alone it is a world of one rank.
/// <code>
/// return MpiCommunicator.Run(args, world =>
/// {
///     var trainer = new Trainer(model, new TrainerOptions { Communicator = world }, sparsity);
///     trainer.Run(stage);
///     return 0;
/// });
/// </code>
/// Collectives are called from one thread at a time (MPI_THREAD_SERIALIZED). Buffers are pinned and reduced in place
/// (<c>MPI_IN_PLACE</c>): no copy and no allocation per call.
/// </summary>
public sealed class MpiCommunicator : ICommunicator, IDisposable
{
    private static readonly object Gate = new();
    private static bool _resolverSet;
    private MPI.Environment? _environment;

    private MpiCommunicator(MPI.Environment environment)
    {
        _environment = environment;
        var world = MPI.Communicator.world;
        Rank = world.Rank;
        Size = world.Size;
    }

    /// <summary>
    /// Whether this process was started by an MPI launcher (<c>mpiexec</c> of MPICH, Intel MPI or Microsoft MPI set
    /// <c>PMI_RANK</c> or <c>PMI_SIZE</c>): a program can offer data-parallel training under <c>mpiexec</c> and never load
    /// MPI otherwise.
    /// </summary>
    public static bool LaunchedByMpiexec =>
        Environment.GetEnvironmentVariable("PMI_SIZE") is { Length: > 0 } || Environment.GetEnvironmentVariable("PMI_RANK") is { Length: > 0 };

    /// <summary>The library names tried, in order, for <c>msmpi.dll</c> on Linux.</summary>
    public static IReadOnlyList<string> LinuxLibraryNames { get; } = ["libmpich.so.12", "libmpi.so.12"];

    /// <summary>
    /// Initialises MPI (once per process) and returns the world. <paramref name="args"/> are the program's arguments
    /// (MPI may remove its own).
    /// </summary>
    /// <exception cref="DllNotFoundException">No MPICH-compatible library is installed; the message says what to install.</exception>
    /// <exception cref="InvalidOperationException">MPI was already initialised in this process.</exception>
    public static MpiCommunicator Initialize(ref string[] args)
    {
        ArgumentNullException.ThrowIfNull(args);
        SetResolver();
        lock (Gate)
        {
            if (MPI.Environment.Initialized) throw new InvalidOperationException("MPI is already initialised in this process; create one MpiCommunicator and share it.");
            return new MpiCommunicator(new MPI.Environment(ref args, MPI.Threading.Serialized));
        }
    }

    /// <summary>
    /// Runs <paramref name="body"/> on this rank and finalises MPI. An exception on any rank is written to standard
    /// error with the rank named (<c>rank 1 of 2 failed: ...</c>) and ends every rank through <c>MPI_Abort</c>, so no
    /// rank waits forever in a collective; the exit code is then non-zero on every rank.
    /// </summary>
    /// <returns>The body's exit code.</returns>
    public static int Run(string[] args, Func<MpiCommunicator, int> body)
    {
        ArgumentNullException.ThrowIfNull(body);
        var world = Initialize(ref args);
        AppDomain.CurrentDomain.UnhandledException += (_, e) => world.Fail(e.ExceptionObject as Exception);
        world.WriteRankMap();
        int code;
        try { code = body(world); }
        catch (Exception e)
        {
            world.Fail(e);
            throw; // not reached: Fail aborts
        }
        world.Dispose();
        return code;
    }

    /// <summary>
    /// When a rank dies (killed, out of memory), <c>mpiexec</c> ends the others at once with SIGKILL and reports the
    /// process id that died (<c>BAD TERMINATION … PID 4242</c>). So that the report names a rank, rank 0 writes every
    /// rank's process id and machine to standard error at the start (<c>MPI world of 2 ranks: rank 0 = pid 4241 on vm,
    /// rank 1 = pid 4242 on vm</c>).
    /// </summary>
    private void WriteRankMap()
    {
        if (Size == 1) return;
        var local = new ulong[] { (ulong)Environment.ProcessId };
        var pids = new ulong[Size];
        AllGather(local, pids);
        if (Rank != 0) return;
        Console.Error.WriteLine($"MPI world of {Size} ranks: " + string.Join(", ", pids.Select((p, r) => $"rank {r} = pid {p}")) + $" (rank 0 on {ProcessorName})");
        Console.Error.Flush();
    }

    private void Fail(Exception? e)
    {
        Console.Out.Flush();
        Console.Error.WriteLine($"rank {Rank} of {Size} failed: {e}");
        Console.Error.Flush();
        Abort(1);
    }

    /// <inheritdoc />
    public int Rank { get; }

    /// <inheritdoc />
    public int Size { get; }

    /// <summary>The name of the machine this rank runs on.</summary>
    public static string ProcessorName => MPI.Environment.ProcessorName;

    /// <inheritdoc />
    public unsafe void AllReduceSum(Span<float> values)
    {
        fixed (float* p = values) Chunks((nint)p, values.Length, sizeof(float), (ptr, n) => U.MPI_Allreduce(InPlace, ptr, n, U.MPI_FLOAT, U.MPI_SUM, U.MPI_COMM_WORLD), "MPI_Allreduce");
    }

    /// <inheritdoc />
    public unsafe void AllReduceSum(Span<double> values)
    {
        fixed (double* p = values) Chunks((nint)p, values.Length, sizeof(double), (ptr, n) => U.MPI_Allreduce(InPlace, ptr, n, U.MPI_DOUBLE, U.MPI_SUM, U.MPI_COMM_WORLD), "MPI_Allreduce");
    }

    /// <inheritdoc />
    public unsafe void Broadcast(Span<float> values, int root)
    {
        CheckRoot(root);
        fixed (float* p = values) Chunks((nint)p, values.Length, sizeof(float), (ptr, n) => U.MPI_Bcast(ptr, n, U.MPI_FLOAT, root, U.MPI_COMM_WORLD), "MPI_Bcast");
    }

    /// <inheritdoc />
    public unsafe void Broadcast(Span<ulong> values, int root)
    {
        CheckRoot(root);
        fixed (ulong* p = values) Chunks((nint)p, values.Length, sizeof(ulong), (ptr, n) => U.MPI_Bcast(ptr, n, U.MPI_UNSIGNED_LONG_LONG, root, U.MPI_COMM_WORLD), "MPI_Bcast");
    }

    /// <inheritdoc />
    public unsafe void AllGather(ReadOnlySpan<ulong> local, Span<ulong> all)
    {
        if (all.Length != (long)local.Length * Size)
            throw new ArgumentException($"AllGather: the output holds {all.Length} values; expected {(long)local.Length * Size} ({local.Length} per rank times {Size} ranks).", nameof(all));
        fixed (ulong* s = local)
        fixed (ulong* d = all)
            Check(U.MPI_Allgather((nint)s, local.Length, U.MPI_UNSIGNED_LONG_LONG, (nint)d, local.Length, U.MPI_UNSIGNED_LONG_LONG, U.MPI_COMM_WORLD), "MPI_Allgather");
    }

    /// <inheritdoc />
    public void Barrier() => Check(U.MPI_Barrier(U.MPI_COMM_WORLD), "MPI_Barrier");

    /// <inheritdoc />
    public void Abort(int exitCode)
    {
        U.MPI_Abort(U.MPI_COMM_WORLD, exitCode);
        Environment.Exit(exitCode); // MPI_Abort does not return; in case an implementation does
    }

    /// <summary>Finalises MPI (every rank must; after it no collective may be called).</summary>
    public void Dispose()
    {
        _environment?.Dispose();
        _environment = null;
    }

    private static readonly nint InPlace = -1; // MPI_IN_PLACE in MPICH and Microsoft MPI

    private static void Chunks(nint ptr, int length, int elementSize, Func<nint, int, int> call, string name)
    {
        const int Max = 1 << 30; // MPI counts are ints
        for (int start = 0; start < length; start += Max)
            Check(call(ptr + (nint)start * elementSize, Math.Min(Max, length - start)), name);
    }

    private static void Check(int rc, string name)
    {
        if (rc != 0) throw new InvalidOperationException($"{name} failed with MPI error code {rc}.");
    }

    private void CheckRoot(int root)
    {
        if ((uint)root >= (uint)Size) throw new ArgumentOutOfRangeException(nameof(root), root, $"Expected a root rank in [0, {Size}).");
    }

    private static void SetResolver()
    {
        lock (Gate)
        {
            if (_resolverSet) return;
            _resolverSet = true;
            if (OperatingSystem.IsWindows()) return; // msmpi.dll is Microsoft MPI's own name
            NativeLibrary.SetDllImportResolver(typeof(MPI.Communicator).Assembly, Resolve);
        }
    }

    private static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? path)
    {
        if (!name.StartsWith("msmpi", StringComparison.OrdinalIgnoreCase)) return IntPtr.Zero;
        foreach (var candidate in LinuxLibraryNames)
            if (NativeLibrary.TryLoad(candidate, out var handle)) return handle;
        throw new DllNotFoundException($"MPI.NET needs an MPI library with MPICH's ABI; none of {string.Join(", ", LinuxLibraryNames)} could be loaded. Install MPICH (Debian/Ubuntu: apt-get install mpich) and start the program with mpiexec. Open MPI is not supported (its ABI differs).");
    }
}
