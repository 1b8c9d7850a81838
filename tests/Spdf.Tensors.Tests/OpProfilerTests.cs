using Spdf.Tensors.Autograd;
using Spdf.Tensors.Optim;

namespace Spdf.Tensors.Tests;

/// <summary>The op profiler times recorded ops and regions on its own thread only (one class: the profiler is process-wide).</summary>
public class OpProfilerTests
{
    [Fact]
    public void TimesEachOpsForwardAndBackwardAndNamedRegions()
    {
        var g = new Generator(1);
        var w = new Spdf.Tensors.Nn.Parameter(Tensor.Randn(new Shape(64, 32), g));
        var x = Tensor.Randn(new Shape(16, 64), g);
        var opt = new Sgd([w], 0.1);
        OpTiming[] results;
        using (var profiler = OpProfiler.Start())
        {
            for (int i = 0; i < 2; i++)
            {
                profiler.Mark();
                var loss = x.MatMul(w).Sum();
                loss.Backward();
                opt.Step();
            }
            using (OpProfiler.Region("mine")) { }
            results = profiler.Results.ToArray();
            var table = profiler.Format(steps: 2);
            table.Should().Contain("MatMul").And.Contain("[Sgd.step]").And.Contain("[mine]");
        }
        var matmul = results.Single(r => r.Name == "MatMul");
        matmul.IsRegion.Should().BeFalse();
        matmul.ForwardCalls.Should().Be(2);
        matmul.BackwardCalls.Should().Be(2);
        matmul.ForwardMs.Should().BeGreaterThan(0);
        matmul.TotalMs.Should().Be(matmul.ForwardMs + matmul.BackwardMs);
        results.Single(r => r.Name == "Sum").BackwardCalls.Should().Be(2);
        results.Single(r => r.Name == "(accumulate grad)").BackwardCalls.Should().Be(2, "w's gradient reaches the leaf once per step");
        var step = results.Single(r => r.Name == "Sgd.step");
        step.IsRegion.Should().BeTrue();
        step.ForwardCalls.Should().Be(2);
        results.Should().BeInDescendingOrder(r => r.TotalMs);
    }

    [Fact]
    public void StopsWhenDisposedAndRunsOneAtATime()
    {
        var profiler = OpProfiler.Start();
        try
        {
            
            ((Action)(() => OpProfiler.Start())).Should().Throw<InvalidOperationException>().WithMessage("*already running*");
            OpProfiler.TryStart().Should().BeNull();
            ((Action)(() => profiler.Format(0))).Should().Throw<ArgumentOutOfRangeException>();
            // Another thread's ops are not this profiler's.
            var other = new Thread(() => Tensor.Ones(3, 3).MatMul(Tensor.Ones(3, 3)));
            other.Start();
            other.Join();
            profiler.Results.Should().BeEmpty();
        }
        finally { profiler.Dispose(); }
        Tensor.Ones(3, 3).MatMul(Tensor.Ones(3, 3));
        using (OpProfiler.Region("after")) { }
        profiler.Results.Should().BeEmpty();
        using var next = OpProfiler.Start(); // the slot is free again
    }
}
