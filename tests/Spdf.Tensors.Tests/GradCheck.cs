using Spdf.Tensors;

namespace Spdf.Tensors.Tests;

/// <summary>
/// Finite-difference gradient checks. The objective is Σ wᵢ·yᵢ with fixed random weights w, summed in double;
/// central differences with step h. The engine is float32, so the tolerance is relative to the gradient's scale.
/// </summary>
internal static class GradCheck
{
    public static Tensor RandomInput(Generator g, params int[] shape)
    {
        var t = Tensor.Randn(new Shape(shape), g);
        t.RequiresGrad = true;
        return t;
    }

    public static void Check(Func<Tensor[], Tensor> f, Tensor[] inputs, float h = 1e-2f, double rtol = 2e-2, double atol = 2e-3, int seed = 1)
    {
        var y0 = f(inputs);
        var g = new Generator((ulong)seed);
        var w = Tensor.Randn(y0.Shape, g);
        foreach (var x in inputs) x.Grad = null;
        y0.Backward(w);

        double Objective()
        {
            var y = f(inputs);
            var ys = y.AsReadOnlySpan(); var ws = w.AsReadOnlySpan();
            double s = 0;
            for (int i = 0; i < ys.Length; i++) s += (double)ys[i] * ws[i];
            return s;
        }

        using var _ = Autograd.GradMode.NoGrad();
        for (int k = 0; k < inputs.Length; k++)
        {
            var x = inputs[k];
            if (!x.RequiresGrad) continue;
            x.Grad.Should().NotBeNull($"input {k} requires grad");
            var analytic = x.Grad!.ToArray();
            double scale = analytic.Length == 0 ? 0 : analytic.Max(a => Math.Abs(a));
            var xs = x.AsSpan();
            // Check every element of small inputs, a sample of large ones.
            int stride = Math.Max(1, xs.Length / 64);
            for (int i = 0; i < xs.Length; i += stride)
            {
                float orig = xs[i];
                x.AsSpan()[i] = orig + h; double up = Objective();
                x.AsSpan()[i] = orig - h; double down = Objective();
                x.AsSpan()[i] = orig;
                double numeric = (up - down) / (2 * h);
                double err = Math.Abs(numeric - analytic[i]);
                err.Should().BeLessThanOrEqualTo(atol + rtol * Math.Max(Math.Abs(numeric), scale * 0.1),
                    $"input {k} element {i}: analytic {analytic[i]} vs numeric {numeric}");
            }
        }
    }
}
