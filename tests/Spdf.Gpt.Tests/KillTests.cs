using System.Diagnostics;
using Spdf.Gpt.CheckpointWorker;
using Spdf.Gpt.Training;
using Xunit.Abstractions;

namespace Spdf.Gpt.Tests;

/// <summary>
/// Checkpoint fault test: a child process (tests/Spdf.CheckpointWorker) trains a sparse GPT through pre-training,
/// Densify and fine-tuning with a checkpoint after every step; the test kills it with SIGKILL at random moments, checks
/// after every kill that the newest checkpoint loads and resumes, then lets the run finish and compares its whole loss
/// history with an uninterrupted run's: they must be identical. SPDF_KILLS sets the number of kills (default 20).
/// </summary>
public class KillTests(ITestOutputHelper output)
{
    private static readonly int Kills = int.TryParse(Environment.GetEnvironmentVariable("SPDF_KILLS"), out int n) && n > 0 ? n : 20;

    private static Process Start(string dir)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "Spdf.CheckpointWorker.dll"));
        psi.ArgumentList.Add(dir);
        return Process.Start(psi)!;
    }

    private static void RunToEnd(string dir)
    {
        using var p = Start(dir);
        string err = p.StandardError.ReadToEnd();
        p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        p.ExitCode.Should().Be(0, err);
    }

    private static List<LossPoint> History(string dir)
    {
        var run = WorkerRun.Create(null);
        run.Trainer.Resume(Trainer.LatestCheckpoint(dir)!);
        return run.Trainer.TrainLoss.ToList();
    }

    [Fact]
    public void KilledRunsAlwaysResumeAndEndWithTheUninterruptedLosses()
    {
        var root = Directory.CreateTempSubdirectory("spdf-kill").FullName;
        try
        {
            string reference = Path.Combine(root, "reference"), killed = Path.Combine(root, "killed");
            var sw = Stopwatch.StartNew();
            RunToEnd(reference);
            double fullMs = sw.Elapsed.TotalMilliseconds;
            var expected = History(reference);
            expected.Should().HaveCount(WorkerRun.PretrainSteps + WorkerRun.FinetuneSteps);

            var rng = new Random(42);
            int loaded = 0, empty = 0, completedEarly = 0;
            for (int k = 0; k < Kills; k++)
            {
                using (var p = Start(killed))
                {
                    // Between start-up and well into training: some kills land mid-write.
                    Thread.Sleep(rng.Next(100, Math.Max(300, (int)(fullMs * 0.5))));
                    if (!p.HasExited) p.Kill(entireProcessTree: true); // SIGKILL
                    else
                    {
                        // The run finished before the kill: check it and start a new one, so later kills hit training.
                        p.WaitForExit();
                        History(killed).Should().Equal(expected);
                        Directory.Delete(killed, true);
                        completedEarly++;
                        continue;
                    }
                    p.WaitForExit();
                }
                var latest = Trainer.LatestCheckpoint(killed);
                if (latest is null) { empty++; continue; }
                var probe = WorkerRun.Create(null);
                probe.Trainer.Resume(latest);                      // must load
                var history = probe.Trainer.TrainLoss.ToList();
                history.Should().Equal(expected.Take(history.Count), "every checkpoint holds a prefix of the uninterrupted run");
                loaded++;
            }
            RunToEnd(killed);
            History(killed).Should().Equal(expected, "the resumed run's losses are the uninterrupted run's, bit for bit");
            Directory.GetDirectories(killed, ".ckpt-*").Should().BeEmpty("temporary folders of killed writes are cleaned up");
            output.WriteLine($"kills: {Kills} (SIGKILL), checkpoints loaded after a kill: {loaded}, killed before the first checkpoint: {empty}, runs that finished between kills (checked, then restarted): {completedEarly}; uninterrupted run {fullMs:F0} ms; final losses identical to the uninterrupted run over {expected.Count} steps");
        }
        finally { Directory.Delete(root, true); }
    }
}
