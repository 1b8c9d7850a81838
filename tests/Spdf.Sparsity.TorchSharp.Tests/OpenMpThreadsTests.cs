using Spdf.Sparsity.Kernels;
using static TorchSharp.torch;

namespace Spdf.Sparsity.TorchSharp.Tests;

/// <summary>The core's kernel loops on LibTorch's OpenMP threads.</summary>
public class OpenMpThreadsTests
{
    [Fact]
    public void LibTorchsOpenMpRunsEveryPieceOnceAndRethrowsTheFirstError()
    {
        using var loaded = ones(2); // LibTorch (and its libgomp) is loaded
        OpenMpThreads.Available.Should().BeTrue("LibTorch's CPU build on Linux brings GNU OpenMP");
        var hits = new int[1000];
        using (OpenMpThreads.Use())
            KernelThreads.For(hits.Length, i => Interlocked.Increment(ref hits[i]));
        hits.Should().OnlyContain(h => h == 1);
        using (OpenMpThreads.Use())
            FluentActions.Invoking(() => KernelThreads.For(100, i => { if (i == 37) throw new InvalidOperationException("piece 37"); }))
                .Should().Throw<InvalidOperationException>().WithMessage("piece 37");
        // Outside the scope the kernels use .NET's thread pool again.
        int sum = 0;
        KernelThreads.For(10, i => Interlocked.Add(ref sum, i));
        sum.Should().Be(45);
    }
}
