using System.Numerics.Tensors;
using Spdf.Tensors.Nn;

namespace Spdf.Tensors.Optim;

/// <summary>
/// Stochastic gradient descent with momentum, dampening, Nesterov and L2 weight decay (<c>torch.optim.SGD</c>):
/// <c>g ← g + wd·p</c>; <c>b ← μ·b + (1−τ)·g</c> (b = g at the first step); <c>g ← nesterov ? g + μ·b : b</c>; <c>p ← p − lr·g</c>.
/// </summary>
public sealed class Sgd : Optimizer
{
    /// <summary>Creates the optimizer.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Momentum or dampening is negative or not finite.</exception>
    /// <exception cref="ArgumentException">Nesterov without momentum, or with dampening.</exception>
    public Sgd(IEnumerable<Parameter> parameters, double learningRate, double momentum = 0, double dampening = 0,
               double weightDecay = 0, bool nesterov = false)
        : base([new ParameterGroup(parameters ?? throw new ArgumentNullException(nameof(parameters)))], learningRate, weightDecay)
    {
        if (!double.IsFinite(momentum) || momentum < 0) throw new ArgumentOutOfRangeException(nameof(momentum), momentum, "Momentum must be finite and ≥ 0.");
        if (!double.IsFinite(dampening) || dampening < 0) throw new ArgumentOutOfRangeException(nameof(dampening), dampening, "Dampening must be finite and ≥ 0.");
        if (nesterov && (momentum <= 0 || dampening != 0))
            throw new ArgumentException($"Nesterov momentum needs momentum > 0 and zero dampening; got momentum {momentum}, dampening {dampening}.", nameof(nesterov));
        (Momentum, Dampening, Nesterov) = (momentum, dampening, nesterov);
    }

    /// <summary>Momentum factor μ.</summary>
    public double Momentum { get; }

    /// <summary>Dampening τ.</summary>
    public double Dampening { get; }

    /// <summary>Whether Nesterov momentum is used.</summary>
    public bool Nesterov { get; }

    /// <inheritdoc />
    public override void Step()
    {
        using var region = Autograd.OpProfiler.Region("Sgd.step");
        StepCount++;
        foreach (var g in Groups)
            foreach (var p in g.Parameters)
            {
                if (p.Grad is null) continue;
                AdvanceStep(p);
                // Sparsity-accelerated training: the places outside StepPositions keep their values and momentum.
                var frozen = p.StepPositions is { } positions ? Complement(positions, p.Numel) : null;
                float[]? frozenValues = frozen is null ? null : Gather(p.AsReadOnlySpan(), frozen);
                float[]? frozenMomentum = frozen is not null && State(p).TryGetValue("momentum_buffer", out var mb) ? Gather(mb.AsReadOnlySpan(), frozen) : null;
                var d = p.Grad.ToArray();
                if (g.WeightDecay != 0) TensorPrimitives.MultiplyAdd(p.AsReadOnlySpan(), (float)g.WeightDecay, d, d);
                if (Momentum != 0)
                {
                    bool fresh = !State(p).ContainsKey("momentum_buffer");
                    var buf = StateTensor(p, "momentum_buffer", followSupport: false).AsSpan(); // SGD keeps dense momentum
                    if (fresh) d.CopyTo(buf);
                    else
                    {
                        TensorPrimitives.Multiply(buf, (float)Momentum, buf);
                        TensorPrimitives.MultiplyAdd(d, (float)(1 - Dampening), buf, buf);
                    }
                    if (Nesterov) TensorPrimitives.MultiplyAdd(buf, (float)Momentum, d, d);
                    else buf.CopyTo(d);
                }
                TensorPrimitives.MultiplyAdd(d, (float)-g.LearningRate, p.AsReadOnlySpan(), p.AsSpan());
                if (frozen is not null)
                {
                    var ps = p.AsSpan();
                    for (int i = 0; i < frozen.Length; i++) ps[frozen[i]] = frozenValues![i];
                    if (State(p).TryGetValue("momentum_buffer", out var buf))
                    {
                        var bs = buf.AsSpan();
                        for (int i = 0; i < frozen.Length; i++) bs[frozen[i]] = frozenMomentum is null ? 0 : frozenMomentum[i];
                    }
                }
                p.MarkModified();
            }
    }

    private static float[] Gather(ReadOnlySpan<float> values, int[] at)
    {
        var g = new float[at.Length];
        for (int i = 0; i < at.Length; i++) g[i] = values[at[i]];
        return g;
    }

    private static int[] Complement(int[] positions, int numel)
    {
        var rest = new int[numel - positions.Length];
        for (int i = 0, j = 0, k = 0; i < numel; i++)
        {
            if (j < positions.Length && positions[j] == i) { j++; continue; }
            rest[k++] = i;
        }
        return rest;
    }
}
