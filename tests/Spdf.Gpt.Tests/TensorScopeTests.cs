using Spdf.Sparsity;
using Spdf.Tensors;
using Spdf.Tensors.Autograd;
using Spdf.Tensors.Optim;

namespace Spdf.Gpt.Tests;

[Collection(nameof(TensorScopeTests))] // counts process-wide allocations: no other test may run beside it
public class TensorScopeTests
{
    private static readonly GptConfig Cfg = new(2, 64, 4, 64, 300);

    private static (List<float> Losses, float[] Weights, float[] Grad) Train(bool scoped, double sparsity, int steps = 6)
    {
        var model = new GptModel(Cfg, new Generator(3));
        if (sparsity > 0)
            foreach (var l in Sparsifier.Apply(model, SparsityConfig.Default(sparsity, seed: 1)).Layers) l.Layer.KernelMode = SparseKernelMode.Compressed;
        var opt = new AdamW(model.Parameters(), 1e-3);
        var g = new Generator(8);
        var losses = new List<float>();
        for (int s = 0; s < steps; s++)
        {
            var idx = new IntTensor(Enumerable.Range(0, 4 * 64).Select(_ => g.NextInt(300)).ToArray(), new Shape(4, 64));
            var tgt = new IntTensor(Enumerable.Range(0, 4 * 64).Select(_ => g.NextInt(300)).ToArray(), new Shape(4, 64));
            opt.ZeroGrad(setToNone: !scoped);
            using (scoped ? TensorScope.Enter() : null)
            {
                var loss = model.Loss(idx, tgt);
                loss.Backward();
                losses.Add(loss.Item());
            }
            opt.Step();
        }
        return (losses, model.Parameters().SelectMany(p => p.AsReadOnlySpan().ToArray()).ToArray(), model.Blocks[0].Mlp.UpProjection.Weight.Grad!.AsReadOnlySpan().ToArray());
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(0.75)]
    public void ScopedStepsEqualUnscopedSteps(double sparsity)
    {
        var plain = Train(false, sparsity);
        var scoped = Train(true, sparsity);
        scoped.Losses.Should().Equal(plain.Losses);
        scoped.Weights.Should().Equal(plain.Weights);
        scoped.Grad.Should().Equal(plain.Grad, "parameters' gradients survive the scope");
    }

    [Fact]
    public void AScopeRecyclesItsTensorsAndKeepsWhatItIsTold()
    {
        var a = Tensor.Randn(new Shape(256, 256), new Generator(1));
        Tensor kept, dropped;
        using (var scope = TensorScope.Enter())
        {
            kept = scope.Keep(a * 2f);
            dropped = a * 3f;
            scope.OwnedArrays.Should().Be(1, "the kept tensor was excluded");
        }
        var expected = a.AsReadOnlySpan().ToArray().Select(v => v * 2f).ToArray();
        using (TensorScope.Enter())
        {
            for (int i = 0; i < 4; i++) _ = a * 5f; // reuses the recycled array, never the kept one
        }
        kept.AsReadOnlySpan().ToArray().Should().Equal(expected);
        _ = dropped;
    }

    [Fact]
    public void DisposingAnOuterScopeEndsTheInnerOnesFirstAndNeverThrows()
    {
        var a = Tensor.Randn(new Shape(256, 256), new Generator(2));
        var outer = TensorScope.Enter();
        _ = a * 2f;
        var inner = TensorScope.Enter();
        _ = a * 3f;
        inner.OwnedArrays.Should().Be(1);
        outer.Dispose(); // inner is still open: it ends first, then outer
        inner.OwnedArrays.Should().Be(0, "the inner scope gave its storage back");
        outer.OwnedArrays.Should().Be(0);
        FluentActions.Invoking(inner.Dispose).Should().NotThrow("a second end does nothing");
        using (var next = TensorScope.Enter())
        {
            _ = a * 4f;
            next.OwnedArrays.Should().Be(1, "a new scope is the innermost again, not a disposed one");
        }

        // Disposed from another thread: it ends without recycling; this thread's next tensors go to no ended scope.
        var mine = TensorScope.Enter();
        var other = new Thread(() => mine.Dispose());
        other.Start(); other.Join();
        _ = a * 5f;
        mine.OwnedArrays.Should().Be(0, "an ended scope collects nothing");
        FluentActions.Invoking(mine.Dispose).Should().NotThrow();
    }

    [Fact]
    public void ScopedTrainingAllocatesAFractionOfUnscopedTraining()
    {
        long PerStep(bool scoped)
        {
            var model = new GptModel(Cfg, new Generator(3));
            var opt = new AdamW(model.Parameters(), 1e-3);
            var idx = new IntTensor(new int[4 * 64], new Shape(4, 64));
            void Step()
            {
                opt.ZeroGrad(setToNone: !scoped);
                using (scoped ? TensorScope.Enter() : null) model.Loss(idx, idx).Backward();
                opt.Step();
            }
            for (int i = 0; i < 3; i++) Step();
            long before = GC.GetTotalAllocatedBytes(precise: true);
            for (int i = 0; i < 20; i++) Step();
            return (GC.GetTotalAllocatedBytes(precise: true) - before) / 20;
        }
        long plain = PerStep(false), scoped = PerStep(true);
        scoped.Should().BeLessThan(plain / 3, $"large arrays come back from the pool (scoped {scoped} vs {plain} bytes per step)");
    }
}

/// <summary>Runs the scope tests alone: concurrent tests in the same process would allocate under their measurement.</summary>
[CollectionDefinition(nameof(TensorScopeTests), DisableParallelization = true)]
public class TensorScopeTestsCollection;
