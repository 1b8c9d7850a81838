// The child process of the checkpoint fault test (tests/Spdf.Gpt.Tests/KillTests.cs): trains a small sparse GPT
// through sparse pre-training, Densify and dense fine-tuning, writing a checkpoint after every step and resuming from
// the newest one at start. The test kills it with SIGKILL at random moments and checks that the newest checkpoint
// always loads and that the run, resumed again and again, ends with exactly the uninterrupted run's losses.
//   dotnet Spdf.CheckpointWorker.dll <checkpoint-folder>
using Spdf.Gpt.CheckpointWorker;

if (args.Length != 1) { Console.Error.WriteLine("usage: Spdf.CheckpointWorker <checkpoint-folder>"); return 2; }
var run = WorkerRun.Create(args[0]);
run.Trainer.TryResume();
run.Execute();
Console.WriteLine("done");
return 0;
