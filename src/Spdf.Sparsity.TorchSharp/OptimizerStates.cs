using System.Reflection;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Spdf.Sparsity.TorchSharp;

/// <summary>
/// A TorchSharp optimizer's per-parameter state, reached the way TorchSharp exposes it: <c>state_dict().State[i]</c> is
/// the live state of the i-th parameter of <c>parameters()</c>; its tensor fields are the moments (Adam, AdamW, RMSprop,
/// ...) or the momentum buffer (SGD). <c>Initialize(options)</c> resets a state, step count included.
/// </summary>
internal static class OptimizerStates
{
    private static (OptimizerState? State, OptimizerOptions? Options) Find(optim.Optimizer optimizer, Parameter p)
    {
        if (optimizer is not OptimizerHelper helper) return default;
        int i = 0, index = -1;
        foreach (var q in optimizer.parameters())
        {
            if (q.Handle == p.Handle) { index = i; break; }
            i++;
        }
        if (index < 0) return default;
        var states = helper.state_dict().State;
        if (index >= states.Count) return default;
        OptimizerOptions? options = null;
        foreach (var g in optimizer.ParamGroups)
            if (g is ParamGroup pg && pg.Parameters.Any(q => q.Handle == p.Handle)) { options = pg.Options; break; }
        return (states[index], options);
    }

    /// <summary>Whether the optimizer trains <paramref name="p"/>.</summary>
    public static bool Trains(optim.Optimizer optimizer, Parameter p) => optimizer.parameters().Any(q => q.Handle == p.Handle);

    /// <summary>The state tensors the optimizer keeps for <paramref name="p"/> (none before its first step, for some optimizers).</summary>
    public static IEnumerable<Tensor> Tensors(optim.Optimizer optimizer, Parameter p)
    {
        var (state, _) = Find(optimizer, p);
        if (state is null) yield break;
        foreach (var f in state.GetType().GetFields(BindingFlags.Public | BindingFlags.Instance))
            if (f.FieldType == typeof(Tensor) && f.GetValue(state) is Tensor t && !t.IsInvalid) yield return t;
    }

    /// <summary>The live state of every parameter the optimizer trains, by the parameter's handle, read in one pass
    /// (for a hook that visits every sparse weight each step; <see cref="Find"/> reads them all for one parameter).</summary>
    public static Dictionary<IntPtr, OptimizerState> ByParameter(optim.Optimizer optimizer)
    {
        var map = new Dictionary<IntPtr, OptimizerState>();
        if (optimizer is not OptimizerHelper helper) return map;
        var states = helper.state_dict().State;
        int i = 0;
        foreach (var q in optimizer.parameters())
            if (i < states.Count) map.TryAdd(q.Handle, states[i++]);
        return map;
    }

    /// <summary>The second moments (<c>exp_avg_sq</c>, and <c>max_exp_avg_sq</c> when present) of an Adam or AdamW state; none for other states.</summary>
    public static IEnumerable<Tensor> SecondMoments(OptimizerState? state)
    {
        var (v, max) = state switch
        {
            AdamW.State s => (s.exp_avg_sq, s.max_exp_avg_sq),
            Adam.State s => (s.exp_avg_sq, s.max_exp_avg_sq),
            _ => (null, null),
        };
        if (v is { IsInvalid: false }) yield return v;
        if (max is { IsInvalid: false }) yield return max;
    }

    /// <summary>The second moments the optimizer keeps for <paramref name="p"/> (see <see cref="SecondMoments(OptimizerState?)"/>).</summary>
    public static IEnumerable<Tensor> SecondMoments(optim.Optimizer optimizer, Parameter p) => SecondMoments(Find(optimizer, p).State);

    /// <summary>Restarts <paramref name="p"/>'s state: moments at 0 and the step count of bias correction at 0, as a fresh optimizer has.</summary>
    /// <exception cref="NotSupportedException">The optimizer does not expose per-parameter state.</exception>
    public static void Reset(optim.Optimizer optimizer, Parameter p)
    {
        var (state, options) = Find(optimizer, p);
        if (state is null || options is null)
        {
            if (!Trains(optimizer, p)) return;
            throw new NotSupportedException($"Optimizer {optimizer.GetType().Name} does not expose per-parameter state; Densify with reset needs a TorchSharp optimizer (SGD, Adam, AdamW, ...).");
        }
        state.Initialize(options);
    }
}
