using System.Diagnostics;
using System.Text.Json;
using Spdf.Tensors.Serialization;
using Xunit.Abstractions;

namespace Spdf.Mpi.Tests;

/// <summary>
/// Data-parallel training under real MPI (tests/Spdf.Mpi.Worker under <c>mpiexec -n 2</c>): a 2-rank run with batch B per
/// rank equals one process whose batch is both ranks' batches together (loss at every step, weights after the run),
/// dense and 75% sparse, masked and compressed, with mask updates; sparse layers send at most 0.3x the dense bytes; a rank
/// that throws or is killed stops the group within 30 s; a checkpoint resumes exactly, and only with the same rank count.
/// </summary>
public class DataParallelTrainingTests(ITestOutputHelper output)
{
    private static readonly string Worker = Path.Combine(AppContext.BaseDirectory, "Spdf.Mpi.Worker.dll");

    private sealed record Result(int Ranks, double[] Losses, long Bytes, long Dense, long Sparse_layer_bytes, long Sparse_layer_dense_bytes, long[]? Kept);

    private (int Code, string Output, TimeSpan Took) Run(int ranks, params string[] args)
    {
        var psi = new ProcessStartInfo(ranks > 0 ? "mpiexec" : "dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        if (ranks > 0) { psi.ArgumentList.Add("-n"); psi.ArgumentList.Add(ranks.ToString()); psi.ArgumentList.Add("dotnet"); }
        psi.ArgumentList.Add(Worker);
        foreach (var a in args) psi.ArgumentList.Add(a);
        var text = new System.Text.StringBuilder();
        var sw = Stopwatch.StartNew();
        using var p = new Process { StartInfo = psi };
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (text) text.AppendLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (text) text.AppendLine(e.Data); };
        p.Start();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        if (!p.WaitForExit(120_000))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"mpiexec -n {ranks} {string.Join(' ', args)} did not end in 120 s:\n{text}");
        }
        p.WaitForExit();
        output.WriteLine($"ranks {ranks} [{string.Join(' ', args)}]: exit {p.ExitCode} after {sw.Elapsed.TotalSeconds:F1} s");
        return (p.ExitCode, text.ToString(), sw.Elapsed);
    }

    private static Result Read(string dir) =>
        JsonSerializer.Deserialize<Result>(File.ReadAllText(Path.Combine(dir, "result.json")), new JsonSerializerOptions { PropertyNameCaseInsensitive = true })!;

    private static void WeightsShouldMatch(string a, string b, float tolerance)
    {
        var (x, _) = SafeTensors.Load(Path.Combine(a, "model.safetensors"));
        var (y, _) = SafeTensors.Load(Path.Combine(b, "model.safetensors"));
        x.Keys.Should().BeEquivalentTo(y.Keys);
        foreach (var (name, t) in x)
        {
            var u = t.AsReadOnlySpan(); var v = y[name].AsReadOnlySpan();
            for (int i = 0; i < u.Length; i++)
                Math.Abs(u[i] - v[i]).Should().BeLessThanOrEqualTo(tolerance, $"{name}[{i}]: {u[i]} vs {v[i]}");
        }
    }

    private static string Temp() => Directory.CreateTempSubdirectory("spdf-mpi").FullName;

    [MpiTheory]
    [InlineData("0", "dense", "")]
    [InlineData("0.75", "dense", "")]
    [InlineData("0.75", "compressed", "")]
    [InlineData("0.75", "dense", "rigl")]
    [InlineData("0.75", "dense", "set")]
    public void TwoRanksEqualOneProcessWithBothBatches(string sparsity, string storage, string algorithm)
    {
        string one = Temp(), two = Temp();
        string[] common = ["--sparsity", sparsity, "--storage", storage, "--algorithm", algorithm, "--steps", "6", "--batch", "2"];
        var (c1, o1, _) = Run(0, [.. common, "--out", one, "--emulate", "2"]);
        c1.Should().Be(0, o1);
        var (c2, o2, _) = Run(2, [.. common, "--out", two]);
        c2.Should().Be(0, o2);
        var r1 = Read(one); var r2 = Read(two);
        r2.Ranks.Should().Be(2);
        r2.Losses.Should().HaveCount(6);
        for (int i = 0; i < 6; i++) r2.Losses[i].Should().BeApproximately(r1.Losses[i], 1e-5, $"step {i + 1}");
        WeightsShouldMatch(one, two, 2e-5f);
        if (r1.Kept is not null) r2.Kept.Should().Equal(r1.Kept, "the masks after the updates are the same"); // and every rank's equal (VerifyReplicas)
    }

    [MpiFact]
    public void SparseLayersSendAQuarterOfTheirDenseGradients()
    {
        string dir = Temp();
        var (code, text, _) = Run(2, "--sparsity", "0.75", "--steps", "1", "--out", dir);
        code.Should().Be(0, text);
        var r = Read(dir);
        r.Sparse_layer_dense_bytes.Should().BeGreaterThan(0);
        ((double)r.Sparse_layer_bytes / r.Sparse_layer_dense_bytes).Should().BeLessThanOrEqualTo(0.3).And.BeGreaterThan(0.2);
        r.Dense.Should().BeGreaterThan(r.Bytes);
        output.WriteLine($"sparse layers: {r.Sparse_layer_bytes} of {r.Sparse_layer_dense_bytes} bytes; all: {r.Bytes} of {r.Dense}");
    }

    [MpiFact]
    public void ARankThatThrowsStopsTheGroupNamingIt()
    {
        var (code, text, took) = Run(2, "--steps", "50", "--throw-rank", "1", "--throw-step", "3", "--out", Temp());
        code.Should().NotBe(0);
        text.Should().Contain("rank 1 of 2 failed").And.Contain("injected failure at step 3");
        took.Should().BeLessThan(TimeSpan.FromSeconds(30));
    }

    [MpiFact]
    public void AKilledRankStopsTheGroupAndTheCheckpointResumesExactly()
    {
        string reference = Temp(), killed = Temp();
        string[] common = ["--sparsity", "0.75", "--steps", "8", "--ckpt-every", "2"];
        var (c0, o0, _) = Run(2, [.. common, "--ckpt", Path.Combine(reference, "ckpt"), "--out", reference]);
        c0.Should().Be(0, o0);

        var (c1, o1, took) = Run(2, [.. common, "--ckpt", Path.Combine(killed, "ckpt"), "--out", killed, "--kill-rank", "1", "--kill-step", "5"]);
        c1.Should().NotBe(0, "a rank was killed");
        took.Should().BeLessThan(TimeSpan.FromSeconds(30), o1);
        var pid = System.Text.RegularExpressions.Regex.Match(o1, @"rank 1 = pid (\d+)");
        pid.Success.Should().BeTrue(o1);
        o1.Should().Contain($"PID {pid.Groups[1].Value} ", "mpiexec names the process that died, which the rank map names rank 1");
        File.Exists(Path.Combine(killed, "result.json")).Should().BeFalse();
        Spdf.Gpt.Training.Trainer.LatestCheckpoint(Path.Combine(killed, "ckpt")).Should().EndWith("ckpt-00000004");

        var (c2, o2, _) = Run(2, [.. common, "--ckpt", Path.Combine(killed, "ckpt"), "--out", killed]);
        c2.Should().Be(0, o2);
        Read(killed).Losses.Should().Equal(Read(reference).Losses, "the resumed run continues exactly (same ranks, same machine)");
        WeightsShouldMatch(reference, killed, 0f);
    }

    [MpiFact]
    public void ACheckpointOfTwoRanksRefusesToResumeWithOne()
    {
        string dir = Temp();
        var (c0, o0, _) = Run(2, "--steps", "2", "--ckpt-every", "2", "--ckpt", Path.Combine(dir, "ckpt"), "--out", dir);
        c0.Should().Be(0, o0);
        var (c1, o1, _) = Run(1, "--steps", "4", "--ckpt", Path.Combine(dir, "ckpt"), "--out", dir);
        c1.Should().NotBe(0);
        o1.Should().Contain("written by a data-parallel run of 2 rank(s)").And.Contain("this run has 1").And.Contain("mpiexec -n 2");
    }
}
