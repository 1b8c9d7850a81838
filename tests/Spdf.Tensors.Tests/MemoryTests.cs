using Spdf.Tensors.Nn;
using Spdf.Tensors.Optim;

namespace Spdf.Tensors.Tests;

/// <summary>
/// The ownership model (GC-owned storage; the tape is released by Backward) must keep a training loop's memory flat:
/// 1,000 steps of a small model, measuring the managed heap after a full collection and the process working set.
/// </summary>
[Collection(nameof(MemoryTests))]
public class MemoryTests
{
    private sealed class Model : Module<Tensor, Tensor>
    {
        public readonly Linear fc1 = new(32, 64);
        public readonly LayerNorm ln = new(64);
        public readonly Linear fc2 = new(64, 10);
        public Model() => RegisterComponents();
        public override Tensor Forward(Tensor x) => fc2.Forward(ln.Forward(fc1.Forward(x).Gelu()));
    }

    [Fact]
    public void ThousandTrainingStepsKeepMemoryFlat()
    {
        var g = new Generator(11);
        var model = new Model();
        var opt = new AdamW(model.Parameters(), 1e-3);
        var x = Tensor.Randn(new Shape(16, 32), g);
        var y = new IntTensor(Enumerable.Range(0, 16).Select(i => i % 10).ToArray(), new Shape(16));
        void Steps(int n)
        {
            for (int i = 0; i < n; i++)
            {
                opt.ZeroGrad();
                var loss = Functional.CrossEntropy(model.Forward(x), y);
                loss.Backward();
                GradClip.ClipGradNorm(model.Parameters(), 1.0);
                opt.Step();
            }
        }
        Steps(100);
        long managed0 = GC.GetTotalMemory(forceFullCollection: true);
        long ws0 = Environment.WorkingSet;
        Steps(1000);
        long managed1 = GC.GetTotalMemory(forceFullCollection: true);
        long ws1 = Environment.WorkingSet;
        (managed1 - managed0).Should().BeLessThan(256 * 1024, $"managed heap went from {managed0} to {managed1} bytes");
        (ws1 - ws0).Should().BeLessThan(64L * 1024 * 1024, $"working set went from {ws0} to {ws1} bytes");
    }

    private sealed class Residual : Module<Tensor, Tensor>
    {
        public readonly Linear fc1 = new(128, 128);
        public readonly Linear fc2 = new(128, 128);
        public Residual() => RegisterComponents();
        public override Tensor Forward(Tensor x)
        {
            var h = fc1.Forward(x);
            return h.Add(fc2.Forward(h)); // h's gradient is the sum of two branches
        }
    }

    [Fact]
    public void ScopedStepsTakeSummedGradientsFromThePool()
    {
        var model = new Residual();
        var opt = new AdamW(model.Parameters(), 1e-3);
        var x = Tensor.Randn(new Shape(256, 128), new Generator(2)); // activations of 128 KiB: pooled sizes
        long Step()
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            opt.ZeroGrad(setToNone: false);
            using (Autograd.TensorScope.Enter()) model.Forward(x).Sum().Backward();
            opt.Step();
            return GC.GetAllocatedBytesForCurrentThread() - before;
        }
        for (int i = 0; i < 3; i++) Step();
        long bytes = Enumerable.Range(0, 3).Min(_ => Step());
        bytes.Should().BeLessThan(64 * 1024, "a warm step reuses pooled storage; one activation-sized array is 128 KiB");
    }

    [Fact]
    public void StepsWhoseLengthsTakeTurnsStillReuseThePool()
    {
        // A fine-tuning batcher pads each batch to its longest sequence (rounded): step shapes come back every few steps.
        // The pool keeps a length it has not served for a few scopes, so such steps allocate no activations either
        // (with two scopes' grace, three lengths in turn allocated every step anew).
        var model = new Residual();
        var opt = new AdamW(model.Parameters(), 1e-3);
        var xs = new[] { 192, 224, 256 }.Select(rows => Tensor.Randn(new Shape(rows, 128), new Generator(3))).ToArray();
        long Step(Tensor x)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            opt.ZeroGrad(setToNone: false);
            using (Autograd.TensorScope.Enter()) model.Forward(x).Sum().Backward();
            opt.Step();
            return GC.GetAllocatedBytesForCurrentThread() - before;
        }
        for (int i = 0; i < 6; i++) Step(xs[i % 3]);
        long bytes = Enumerable.Range(0, 6).Max(i => Step(xs[i % 3]));
        bytes.Should().BeLessThan(64 * 1024, "every length came back within three steps; one activation-sized array is 96 KiB or more");
    }
}

/// <summary>Runs the memory test alone: concurrent tests in the same process would allocate under its measurement.</summary>
[CollectionDefinition(nameof(MemoryTests), DisableParallelization = true)]
public class MemoryTestsCollection;
