using BenchmarkDotNet.Running;
using Spdf.Benchmarks;

// `quick …` prints JSON lines for side-by-side runs (docs/benchmarks.md); anything else goes to BenchmarkDotNet.
if (args.Length > 0 && args[0] == "quick") return Quick.Run(args[1..]);
BenchmarkSwitcher.FromAssembly(typeof(Quick).Assembly).Run(args);
return 0;
