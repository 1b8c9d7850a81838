namespace Spdf.Mpi.Tests;

/// <summary>A test that runs programs under <c>mpiexec</c>: skipped only where no <c>mpiexec</c> is on the PATH
/// (<c>.ci/run</c> installs Debian's mpich, so CI runs every one).</summary>
public sealed class MpiFactAttribute : FactAttribute
{
    public MpiFactAttribute()
    {
        if (!Mpi.Available) Skip = "mpiexec is not on the PATH; install MPICH (Debian: apt-get install mpich).";
    }
}

/// <summary>A theory that needs <c>mpiexec</c> (see <see cref="MpiFactAttribute"/>).</summary>
public sealed class MpiTheoryAttribute : TheoryAttribute
{
    public MpiTheoryAttribute()
    {
        if (!Mpi.Available) Skip = "mpiexec is not on the PATH; install MPICH (Debian: apt-get install mpich).";
    }
}

internal static class Mpi
{
    public static bool Available { get; } = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator)
        .Any(d => d.Length > 0 && File.Exists(Path.Combine(d, "mpiexec")));
}
