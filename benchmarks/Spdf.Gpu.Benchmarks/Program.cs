using BenchmarkDotNet.Running;
using Spdf.Gpu.Benchmarks;

// `quick gpu-linear …` prints JSON lines (docs/benchmarks.md); anything else goes to BenchmarkDotNet, in process (the GPU
// machine has no .NET SDK to build benchmark projects with).
if (args.Length > 0 && args[0] == "quick") return GpuQuick.Run(args[1..]);
BenchmarkSwitcher.FromAssembly(typeof(GpuQuick).Assembly).Run(args, new GpuBenchmarkConfig());
return 0;
