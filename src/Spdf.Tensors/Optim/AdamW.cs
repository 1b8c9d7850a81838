using System.Runtime.Intrinsics;
using Spdf.Tensors.Nn;

namespace Spdf.Tensors.Optim;

/// <summary>
/// Adam with decoupled weight decay (Loshchilov &amp; Hutter 2019; <c>torch.optim.AdamW</c>), with PyTorch's exact
/// update: <c>p ← p·(1 − lr·wd)</c>; <c>m ← β1·m + (1−β1)·g</c>; <c>v ← β2·v + (1−β2)·g²</c>;
/// <c>p ← p − (lr/(1−β1ᵗ))·m / (√v/√(1−β2ᵗ) + ε)</c>. One fused, vectorised pass per parameter. For a parameter with a
/// <see cref="Parameter.SparseSupport"/>, moments are stored and updated only at the supported positions.
/// </summary>
public sealed class AdamW : Optimizer
{
    /// <summary>Creates the optimizer over one group of parameters.</summary>
    public AdamW(IEnumerable<Parameter> parameters, double learningRate = 1e-3, double beta1 = 0.9, double beta2 = 0.999,
                 double eps = 1e-8, double weightDecay = 1e-2)
        : this([new ParameterGroup(parameters ?? throw new ArgumentNullException(nameof(parameters)))], learningRate, beta1, beta2, eps, weightDecay) { }

    /// <summary>Creates the optimizer over parameter groups (e.g. weight decay on 2-D weights only).</summary>
    /// <exception cref="ArgumentOutOfRangeException">A β is outside [0, 1), or ε is negative or not finite.</exception>
    public AdamW(IEnumerable<ParameterGroup> groups, double learningRate = 1e-3, double beta1 = 0.9, double beta2 = 0.999,
                 double eps = 1e-8, double weightDecay = 1e-2)
        : base(groups, learningRate, weightDecay)
    {
        if (!(beta1 >= 0 && beta1 < 1)) throw new ArgumentOutOfRangeException(nameof(beta1), beta1, "β1 must be in [0, 1).");
        if (!(beta2 >= 0 && beta2 < 1)) throw new ArgumentOutOfRangeException(nameof(beta2), beta2, "β2 must be in [0, 1).");
        if (!double.IsFinite(eps) || eps < 0) throw new ArgumentOutOfRangeException(nameof(eps), eps, "ε must be finite and ≥ 0.");
        (Beta1, Beta2, Eps) = (beta1, beta2, eps);
    }

    /// <summary>First-moment decay.</summary>
    public double Beta1 { get; }

    /// <summary>Second-moment decay.</summary>
    public double Beta2 { get; }

    /// <summary>Denominator term.</summary>
    public double Eps { get; }

    /// <inheritdoc />
    public override void Step()
    {
        using var region = Autograd.OpProfiler.Region("AdamW.step");
        StepCount++;
        float b1 = (float)Beta1, b2 = (float)Beta2, eps = (float)Eps;
        foreach (var g in Groups)
        {
            float decay = (float)(1 - g.LearningRate * g.WeightDecay);
            foreach (var p in g.Parameters)
            {
                if (p.Grad is null) continue;
                ConformState(p);
                var m = StateTensor(p, "exp_avg");
                var v = StateTensor(p, "exp_avg_sq");
                // Bias correction from the parameter's own step count, as PyTorch's state['step']: a parameter whose state
                // was reset (Densify with reset, a new fine-tuning stage) restarts it, as a fresh optimizer would.
                long t = AdvanceStep(p);
                double bc1 = 1 - Math.Pow(Beta1, t), bc2 = 1 - Math.Pow(Beta2, t);
                float stepSize = (float)(g.LearningRate / bc1);
                float invSqrtBc2 = (float)(1 / Math.Sqrt(bc2));
                if (p.SparseSupport is { } support)
                {
                    // Moments exist only for the support: gather, update, scatter back (positions off the support stay 0).
                    // With StepPositions (sparsity-accelerated training) only the support's places this step computed
                    // take the step; the others keep their values and moments.
                    var (pos, stateIndices) = p.StepPositions is { } positions ? InSupport(positions, support) : (support, null);
                    GatherUpdateScatter(p.AsSpan(), p.Grad.AsReadOnlySpan(), m.AsSpan(), v.AsSpan(), pos, stateIndices, decay, b1, b2, stepSize, invSqrtBc2, eps);
                }
                else if (p.StepPositions is { } runs)
                {
                    // Only the places this step computed (sparsity-accelerated training), run by run of consecutive
                    // positions (a kept row is one run): the fused update on each slice, nothing gathered or allocated.
                    var param = p.AsSpan(); var grad = p.Grad.AsReadOnlySpan(); var ms = m.AsSpan(); var vs = v.AsSpan();
                    for (int i = 0; i < runs.Length;)
                    {
                        int start = runs[i], len = 1;
                        while (i + len < runs.Length && runs[i + len] == start + len) len++;
                        Update(param.Slice(start, len), grad.Slice(start, len), ms.Slice(start, len), vs.Slice(start, len), decay, b1, b2, stepSize, invSqrtBc2, eps);
                        i += len;
                    }
                }
                else Update(p.AsSpan(), p.Grad.AsReadOnlySpan(), m.AsSpan(), v.AsSpan(), decay, b1, b2, stepSize, invSqrtBc2, eps);
                p.MarkModified();
            }
        }
    }

    /// <summary>The step positions that lie in the support, and their index in the support (where their moments are).</summary>
    private static (int[] Positions, int[] StateIndices) InSupport(int[] positions, int[] support)
    {
        var pos = new List<int>(Math.Min(positions.Length, support.Length));
        var idx = new List<int>(pos.Capacity);
        for (int i = 0, j = 0; i < positions.Length && j < support.Length;)
        {
            if (positions[i] == support[j]) { pos.Add(positions[i]); idx.Add(j); i++; j++; }
            else if (positions[i] < support[j]) i++;
            else j++;
        }
        return (pos.ToArray(), idx.ToArray());
    }

    /// <summary>
    /// The fused update at <paramref name="positions"/> of the parameter, gathered into pooled buffers and scattered back.
    /// The moments are at <paramref name="stateIndices"/>, or, when null, are exactly the gathered places in order (the
    /// moments of a sparse support) and are updated where they lie.
    /// </summary>
    private static void GatherUpdateScatter(Span<float> param, ReadOnlySpan<float> grad, Span<float> m, Span<float> v, int[] positions, int[]? stateIndices,
                                            float decay, float b1, float b2, float stepSize, float invSqrtBc2, float eps)
    {
        int n = positions.Length;
        var pool = System.Buffers.ArrayPool<float>.Shared;
        float[] pv = pool.Rent(n), gv = pool.Rent(n);
        float[]? mv = stateIndices is null ? null : pool.Rent(n), vv = stateIndices is null ? null : pool.Rent(n);
        for (int i = 0; i < n; i++) { pv[i] = param[positions[i]]; gv[i] = grad[positions[i]]; }
        if (stateIndices is null) Update(pv.AsSpan(0, n), gv.AsSpan(0, n), m, v, decay, b1, b2, stepSize, invSqrtBc2, eps);
        else
        {
            for (int i = 0; i < n; i++) { mv![i] = m[stateIndices[i]]; vv![i] = v[stateIndices[i]]; }
            Update(pv.AsSpan(0, n), gv.AsSpan(0, n), mv.AsSpan(0, n), vv.AsSpan(0, n), decay, b1, b2, stepSize, invSqrtBc2, eps);
            for (int i = 0; i < n; i++) { m[stateIndices[i]] = mv![i]; v[stateIndices[i]] = vv![i]; }
            pool.Return(mv!);
            pool.Return(vv!);
        }
        for (int i = 0; i < n; i++) param[positions[i]] = pv[i];
        pool.Return(pv);
        pool.Return(gv);
    }

    /// <summary>The fused AdamW update over spans: <paramref name="param"/>, <paramref name="m"/> and <paramref name="v"/> in place.</summary>
    public static void Update(Span<float> param, ReadOnlySpan<float> grad, Span<float> m, Span<float> v,
                              float decay, float beta1, float beta2, float stepSize, float invSqrtBc2, float eps)
    {
        if (grad.Length != param.Length || m.Length != param.Length || v.Length != param.Length)
            throw new ArgumentException($"AdamW.Update: lengths differ (param {param.Length}, grad {grad.Length}, m {m.Length}, v {v.Length}).");
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var vDecay = Vector256.Create(decay); var vb1 = Vector256.Create(beta1); var vb1c = Vector256.Create(1 - beta1);
            var vb2 = Vector256.Create(beta2); var vb2c = Vector256.Create(1 - beta2); var vStep = Vector256.Create(stepSize);
            var vInv = Vector256.Create(invSqrtBc2); var vEps = Vector256.Create(eps);
            for (; i <= param.Length - 8; i += 8)
            {
                var gi = Vector256.Create(grad.Slice(i, 8));
                var mi = vb1 * Vector256.Create(m.Slice(i, 8)) + vb1c * gi;
                var vi = vb2 * Vector256.Create(v.Slice(i, 8)) + vb2c * gi * gi;
                var pi = Vector256.Create(param.Slice(i, 8)) * vDecay;
                pi -= vStep * mi / (Vector256.Sqrt(vi) * vInv + vEps);
                mi.CopyTo(m.Slice(i, 8)); vi.CopyTo(v.Slice(i, 8)); pi.CopyTo(param.Slice(i, 8));
            }
        }
        for (; i < param.Length; i++)
        {
            float gi = grad[i];
            float mi = beta1 * m[i] + (1 - beta1) * gi;
            float vi = beta2 * v[i] + (1 - beta2) * gi * gi;
            m[i] = mi; v[i] = vi;
            param[i] = param[i] * decay - stepSize * mi / (MathF.Sqrt(vi) * invSqrtBc2 + eps);
        }
    }
}
