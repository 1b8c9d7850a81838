using Spdf.Tensors.Nn;

namespace Spdf.Tensors.Optim;

/// <summary>A set of parameters sharing hyper-parameters (<c>param_groups</c> in PyTorch).</summary>
public sealed class ParameterGroup
{
    /// <summary>Creates a group; a null hyper-parameter takes the optimizer's default.</summary>
    public ParameterGroup(IEnumerable<Parameter> parameters, double? learningRate = null, double? weightDecay = null)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        _parameters = parameters.ToList();
        LearningRate = learningRate ?? double.NaN;
        WeightDecay = weightDecay ?? double.NaN;
    }

    private readonly List<Parameter> _parameters;

    /// <summary>The parameters of the group.</summary>
    public IReadOnlyList<Parameter> Parameters => _parameters;

    internal bool Replace(Parameter old, Parameter replacement)
    {
        int i = _parameters.FindIndex(p => ReferenceEquals(p, old));
        if (i < 0) return false;
        _parameters[i] = replacement;
        return true;
    }

    /// <summary>The current learning rate (schedules write it).</summary>
    public double LearningRate { get; set; }

    /// <summary>The weight-decay coefficient.</summary>
    public double WeightDecay { get; set; }

    /// <summary>The learning rate at construction; schedules scale from it.</summary>
    public double InitialLearningRate { get; internal set; }
}

/// <summary>The base of every optimizer (<c>torch.optim.Optimizer</c>).</summary>
public abstract class Optimizer
{
    private readonly Dictionary<Parameter, Dictionary<string, Tensor>> _state = new(ReferenceEqualityComparer.Instance);
    private readonly Dictionary<Parameter, int[]> _support = new(ReferenceEqualityComparer.Instance); // support the state is stored for
    private readonly Dictionary<Parameter, long> _steps = new(ReferenceEqualityComparer.Instance);    // steps since the state began

    /// <summary>Validates and stores the groups, filling defaults.</summary>
    /// <exception cref="ArgumentException">No parameters, a parameter in two groups, or an invalid learning rate or weight decay.</exception>
    protected Optimizer(IEnumerable<ParameterGroup> groups, double learningRate, double weightDecay)
    {
        ArgumentNullException.ThrowIfNull(groups);
        CheckLearningRate(learningRate);
        CheckWeightDecay(weightDecay);
        Groups = groups.ToList();
        if (Groups.Count == 0 || Groups.All(g => g.Parameters.Count == 0))
            throw new ArgumentException("The optimizer got an empty parameter list; expected at least one parameter.", nameof(groups));
        var seen = new HashSet<Parameter>(ReferenceEqualityComparer.Instance);
        foreach (var g in Groups)
        {
            if (double.IsNaN(g.LearningRate)) g.LearningRate = learningRate;
            if (double.IsNaN(g.WeightDecay)) g.WeightDecay = weightDecay;
            CheckLearningRate(g.LearningRate);
            CheckWeightDecay(g.WeightDecay);
            g.InitialLearningRate = g.LearningRate;
            foreach (var p in g.Parameters)
                if (!seen.Add(p)) throw new ArgumentException($"A parameter of shape {p.Shape} appears in more than one parameter group.", nameof(groups));
        }
    }

    /// <summary>Throws unless the learning rate is finite and non-negative.</summary>
    protected static void CheckLearningRate(double lr)
    {
        if (!double.IsFinite(lr) || lr < 0)
            throw new ArgumentOutOfRangeException("learningRate", lr, "The learning rate must be finite and ≥ 0.");
    }

    private static void CheckWeightDecay(double wd)
    {
        if (!double.IsFinite(wd) || wd < 0)
            throw new ArgumentOutOfRangeException("weightDecay", wd, "Weight decay must be finite and ≥ 0.");
    }

    /// <summary>The parameter groups.</summary>
    public IReadOnlyList<ParameterGroup> Groups { get; }

    /// <summary>Every parameter of every group.</summary>
    public IEnumerable<Parameter> Parameters => Groups.SelectMany(g => g.Parameters);

    /// <summary>
    /// Clears every parameter's gradient: by default drops it (<c>zero_grad(set_to_none=True)</c>); with
    /// <paramref name="setToNone"/> false, zeroes it in place, so the next backward pass accumulates into the same
    /// arrays instead of allocating new ones (what a training loop wants for a flat working set).
    /// </summary>
    public void ZeroGrad(bool setToNone = true)
    {
        foreach (var p in Parameters)
        {
            if (setToNone || p.Grad is null) p.Grad = null;
            else p.Grad.AsSpan().Clear();
        }
    }

    /// <summary>Sets the learning rate of every group (a schedule's hook).</summary>
    /// <exception cref="ArgumentOutOfRangeException">The rate is negative or not finite.</exception>
    public void SetLearningRate(double learningRate)
    {
        CheckLearningRate(learningRate);
        foreach (var g in Groups) g.LearningRate = learningRate;
    }

    /// <summary>Updates every parameter that has a gradient.</summary>
    public abstract void Step();

    /// <summary>
    /// The per-parameter state tensors (e.g. <c>exp_avg</c>, <c>exp_avg_sq</c> for AdamW), created on first use. The
    /// sparsity library reads and writes these to keep moments at masked positions at zero.
    /// </summary>
    public IReadOnlyDictionary<string, Tensor> State(Parameter parameter)
    {
        ArgumentNullException.ThrowIfNull(parameter);
        return _state.TryGetValue(parameter, out var s) ? s : new Dictionary<string, Tensor>();
    }

    /// <summary>
    /// Gets or creates one named state tensor: shaped like the parameter when it is dense, or <c>[support length]</c> holding
    /// values only at <see cref="Parameter.SparseSupport"/> when it is sparse and <paramref name="followSupport"/> (call
    /// <see cref="ConformState"/> first). An optimizer that keeps dense state passes <c>followSupport: false</c>.
    /// </summary>
    protected Tensor StateTensor(Parameter parameter, string name, bool followSupport = true)
    {
        ArgumentNullException.ThrowIfNull(parameter);
        if (!_state.TryGetValue(parameter, out var s)) _state[parameter] = s = [];
        if (!s.TryGetValue(name, out var t))
            s[name] = t = followSupport && parameter.SparseSupport is { } sup ? new Tensor(new Shape(sup.Length)) : new Tensor(parameter.Shape);
        return t;
    }

    /// <summary>
    /// Brings a parameter's state to its current <see cref="Parameter.SparseSupport"/>: values at positions in both the old
    /// and the new support are kept, positions new to the support start at 0 (a regrown or densified weight starts with
    /// zero moments), positions that left it are dropped.
    /// </summary>
    protected void ConformState(Parameter parameter)
    {
        ArgumentNullException.ThrowIfNull(parameter);
        var now = parameter.SparseSupport;
        _support.TryGetValue(parameter, out var was);
        if (ReferenceEquals(now, was)) return;
        if (_state.TryGetValue(parameter, out var s))
            foreach (var name in s.Keys.ToList())
            {
                var old = s[name];
                if (old.Rank == 0) continue; // scalar state (e.g. a step count) does not follow the support
                var fresh = now is null ? new Tensor(parameter.Shape) : new Tensor(new Shape(now.Length));
                Remap(old.AsReadOnlySpan(), was, fresh.AsSpan(), now);
                s[name] = fresh;
            }
        if (now is null) _support.Remove(parameter); else _support[parameter] = now;
    }

    private static void Remap(ReadOnlySpan<float> src, int[]? from, Span<float> dst, int[]? to)
    {
        if (from is null) { for (int i = 0; i < to!.Length; i++) dst[i] = src[to[i]]; return; }         // dense → sparse
        if (to is null) { for (int i = 0; i < from.Length; i++) dst[from[i]] = src[i]; return; }         // sparse → dense
        for (int i = 0, j = 0; i < from.Length && j < to.Length;)                                         // sparse → sparse
        {
            if (from[i] == to[j]) dst[j++] = src[i++];
            else if (from[i] < to[j]) i++;
            else j++;
        }
    }

    /// <summary>
    /// Puts <paramref name="replacement"/> in <paramref name="old"/>'s place (same group, same index, so checkpoints keep
    /// their layout) and moves <paramref name="old"/>'s state to it. Without <paramref name="positions"/> the two must have
    /// the same shape and the state moves as it is; with it, <paramref name="old"/> is a compressed form of
    /// <paramref name="replacement"/> (element <c>i</c> of <paramref name="old"/> is flat element <c>positions[i]</c> of
    /// <paramref name="replacement"/>): each state tensor is scattered there and is 0 elsewhere, so a weight that was
    /// held at zero starts with zero moments (what densifying a compressed sparse layer needs).
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="old"/> is not optimized here, <paramref name="replacement"/> already is,
    /// or the shapes or positions do not fit.</exception>
    public void ReplaceParameter(Parameter old, Parameter replacement, ReadOnlySpan<int> positions = default)
    {
        ArgumentNullException.ThrowIfNull(old);
        ArgumentNullException.ThrowIfNull(replacement);
        if (Parameters.Any(p => ReferenceEquals(p, replacement)))
            throw new ArgumentException($"The replacement parameter (shape {replacement.Shape}) is already optimized here.", nameof(replacement));
        if (positions.IsEmpty && old.Shape != replacement.Shape)
            throw new ArgumentException($"Replacing a parameter of shape {old.Shape} by one of shape {replacement.Shape} needs the positions of the old elements in the new one.", nameof(positions));
        if (!positions.IsEmpty && positions.Length != old.Numel)
            throw new ArgumentException($"Got {positions.Length} positions for a parameter of {old.Numel} elements; expected one per element.", nameof(positions));
        if (!positions.IsEmpty && old.SparseSupport is not null)
            throw new ArgumentException("A parameter with a SparseSupport cannot be scattered into a replacement; clear its support first.", nameof(old));
        foreach (int at in positions)
            if ((uint)at >= (uint)replacement.Numel)
                throw new ArgumentException($"Position {at} is outside the replacement's {replacement.Numel} elements.", nameof(positions));
        if (!Groups.Any(g => g.Replace(old, replacement)))
            throw new ArgumentException($"The parameter of shape {old.Shape} is not optimized by this {GetType().Name}.", nameof(old));
        ConformState(old);
        if (_state.Remove(old, out var s))
        {
            if (!positions.IsEmpty)
                foreach (var name in s.Keys.ToList())
                {
                    var t = s[name];
                    if (t.Rank == 0) continue; // scalar state (e.g. a step count) moves as it is
                    var fresh = new Tensor(replacement.Shape);
                    var src = t.AsReadOnlySpan(); var dst = fresh.AsSpan();
                    for (int i = 0; i < positions.Length; i++) dst[positions[i]] = src[i];
                    s[name] = fresh;
                }
            _state[replacement] = s;
            if (positions.IsEmpty && _support.Remove(old, out var sup)) _support[replacement] = sup;
        }
        _support.Remove(old);
        if (_steps.Remove(old, out var steps)) _steps[replacement] = steps; // the state continues: so does its bias correction
    }

    /// <summary>
    /// Forgets the state of one parameter, or of all when null: its moments restart from zero and its step count (which
    /// AdamW's bias correction reads) from 0, as a new PyTorch optimizer's would.
    /// </summary>
    public void ResetState(Parameter? parameter = null)
    {
        if (parameter is null) { _state.Clear(); _support.Clear(); _steps.Clear(); }
        else { _state.Remove(parameter); _support.Remove(parameter); _steps.Remove(parameter); }
    }

    /// <summary>Number of times <see cref="Step"/> ran, over all parameters.</summary>
    public long StepCount { get; protected set; }

    /// <summary>
    /// The steps taken for <paramref name="parameter"/> since its state began (the first step that found a gradient, or
    /// the last <see cref="ResetState"/>): PyTorch's per-parameter <c>state['step']</c>; 0 before any.
    /// </summary>
    public long ParameterStep(Parameter parameter)
    {
        ArgumentNullException.ThrowIfNull(parameter);
        return _steps.TryGetValue(parameter, out var t) ? t : 0;
    }

    /// <summary>Counts one more step for <paramref name="parameter"/> and returns its new count (1 on its first step).</summary>
    protected long AdvanceStep(Parameter parameter)
    {
        ArgumentNullException.ThrowIfNull(parameter);
        _steps.TryGetValue(parameter, out var t);
        _steps[parameter] = ++t;
        return t;
    }

    // A step count in float32 tensors, exactly: [count / 2^24, count mod 2^24] (each part is an integer below 2^24, which
    // float32 holds exactly), for counts up to 2^48. One float32 would lose steps past 16.7 million.
    private const long StepPart = 1L << 24;

    private static Tensor EncodeStep(long count) => Tensor.From([(float)(count / StepPart), (float)(count % StepPart)]);

    private static long DecodeStep(Tensor t, string key)
    {
        var v = t.AsReadOnlySpan();
        if (t.Numel == 1 && v[0] >= 0 && v[0] == MathF.Floor(v[0])) return (long)v[0]; // a single float32 (older checkpoints)
        if (t.Numel == 2 && v[0] >= 0 && v[1] >= 0 && v[1] < StepPart && v[0] == MathF.Floor(v[0]) && v[1] == MathF.Floor(v[1]))
            return (long)v[0] * StepPart + (long)v[1];
        throw new ArgumentException($"Optimizer state '{key}' holds [{string.Join(", ", t.ToArray())}]; expected a step count as [count / 2^24, count mod 2^24] (two non-negative integers, the second below 2^24).", "stateDict");
    }

    /// <summary>
    /// The state as named tensors (<c>state.{index}.{name}</c>, parameters indexed in group order) plus the step
    /// count, for checkpoints.
    /// </summary>
    public OrderedDictionary<string, Tensor> StateDict()
    {
        var sd = new OrderedDictionary<string, Tensor>();
        int i = 0;
        foreach (var p in Parameters)
        {
            ConformState(p); // a mask may have changed since the last step: save state that fits the current support
            if (_state.TryGetValue(p, out var s))
                foreach (var (name, t) in s) sd[$"state.{i}.{name}"] = t;
            if (_steps.TryGetValue(p, out var steps)) sd[$"state.{i}.step"] = EncodeStep(steps);
            i++;
        }
        sd["step"] = EncodeStep(StepCount);
        return sd;
    }

    /// <summary>Restores state written by <see cref="StateDict"/>.</summary>
    /// <exception cref="ArgumentException">An index is out of range, a key is malformed, or a shape differs.</exception>
    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> stateDict)
    {
        ArgumentNullException.ThrowIfNull(stateDict);
        var ps = Parameters.ToList();
        _state.Clear();
        _support.Clear();
        _steps.Clear();
        foreach (var (key, t) in stateDict)
        {
            if (key == "step") { StepCount = DecodeStep(t, key); continue; }
            var parts = key.Split('.');
            if (parts.Length != 3 || parts[0] != "state" || !int.TryParse(parts[1], out int idx) || idx < 0 || idx >= ps.Count)
                throw new ArgumentException($"Optimizer state key '{key}' is not 'state.<index>.<name>' with an index in [0, {ps.Count}).", nameof(stateDict));
            var param = ps[idx];
            if (parts[2] == "step") { _steps[param] = DecodeStep(t, key); continue; }
            var expected = param.SparseSupport is { } sup && t.Numel != param.Numel ? new Shape(sup.Length) : param.Shape;
            if (t.Shape != expected)
                throw new ArgumentException($"Optimizer state '{key}' has shape {t.Shape}; parameter {idx} (shape {param.Shape}{(param.SparseSupport is null ? "" : $", {param.SparseSupport.Length} kept")}) needs {expected}.", nameof(stateDict));
            bool compressed = param.SparseSupport is not null && t.Numel != param.Numel;
            if (compressed) _support[param] = param.SparseSupport!;
            StateTensor(param, parts[2], followSupport: compressed).CopyFrom(t);
        }
        // A checkpoint written before steps were kept per parameter: every parameter with state had taken every step.
        foreach (var p in _state.Keys) _steps.TryAdd(p, StepCount);
    }
}
