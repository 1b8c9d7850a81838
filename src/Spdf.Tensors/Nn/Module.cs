using System.Reflection;

namespace Spdf.Tensors.Nn;

/// <summary>
/// The base of every layer and model (<c>torch.nn.Module</c>). A module owns named parameters, buffers and
/// child modules; names join with dots (<c>h.0.attn.c_attn.weight</c>) in <see cref="NamedParameters"/> and
/// <see cref="StateDict"/>. Subclasses register their parts in the constructor with <see cref="RegisterModule"/>,
/// <see cref="RegisterParameter"/> and <see cref="RegisterBuffer"/>, or all at once with <see cref="RegisterComponents"/>.
/// </summary>
public abstract class Module
{
    private readonly List<(string Name, Parameter? Value)> _parameters = [];
    private readonly List<(string Name, Tensor Value, bool Persistent)> _buffers = [];
    private readonly List<(string Name, Module Value)> _modules = [];

    /// <summary>True in training mode (dropout active), false after <see cref="Eval"/>.</summary>
    public bool Training { get; private set; } = true;

    /// <summary>Registers (or replaces) a parameter under <paramref name="name"/>; null registers an absent optional parameter.</summary>
    /// <exception cref="ArgumentException">The name is empty or contains a dot.</exception>
    protected void RegisterParameter(string name, Parameter? parameter)
    {
        CheckName(name);
        int i = _parameters.FindIndex(p => p.Name == name);
        if (i >= 0) _parameters[i] = (name, parameter); else _parameters.Add((name, parameter));
    }

    /// <summary>Registers (or replaces) a buffer: state saved in the state dict (when persistent) but not trained.</summary>
    protected void RegisterBuffer(string name, Tensor buffer, bool persistent = true)
    {
        CheckName(name);
        ArgumentNullException.ThrowIfNull(buffer);
        int i = _buffers.FindIndex(p => p.Name == name);
        if (i >= 0) _buffers[i] = (name, buffer, persistent); else _buffers.Add((name, buffer, persistent));
    }

    /// <summary>Registers a child module under <paramref name="name"/>.</summary>
    protected internal void RegisterModule(string name, Module module)
    {
        CheckName(name);
        ArgumentNullException.ThrowIfNull(module);
        int i = _modules.FindIndex(p => p.Name == name);
        if (i >= 0) _modules[i] = (name, module); else _modules.Add((name, module));
    }

    /// <summary>
    /// Registers every field of this object that holds a <see cref="Module"/> or <see cref="Parameter"/>, named after the
    /// field without a leading underscore (TorchSharp's <c>RegisterComponents</c>), or after its
    /// <see cref="ComponentNameAttribute"/>: <c>[field: ComponentName("ln_1")] public LayerNorm AttentionNorm { get; }</c>
    /// gives a property a .NET name and keeps the checkpoint's name. Properties without the attribute are not registered.
    /// </summary>
    protected void RegisterComponents()
    {
        foreach (var f in InstanceFields(GetType()))
        {
            var value = f.GetValue(this);
            var named = f.GetCustomAttribute<ComponentNameAttribute>();
            string name = named?.Name ?? f.Name.TrimStart('_');
            if (named is null && f.Name.Contains('<')) continue; // other compiler-generated backing fields carry their own names
            if (value is Module m && !ReferenceEquals(m, this)) RegisterModule(name, m);
            else if (value is Parameter p) RegisterParameter(name, p);
        }
    }

    private static IEnumerable<FieldInfo> InstanceFields(Type? t)
    {
        for (; t is not null && t != typeof(Module) && t != typeof(object); t = t.BaseType)
            foreach (var f in t.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
                yield return f;
    }

    private static void CheckName(string name)
    {
        if (string.IsNullOrEmpty(name) || name.Contains('.'))
            throw new ArgumentException($"Module member name '{name}' is invalid; expected a non-empty name without dots.", nameof(name));
    }

    /// <summary>The direct children with their names.</summary>
    public virtual IEnumerable<(string Name, Module Module)> NamedChildren() => _modules.Select(m => (m.Name, m.Value));

    /// <summary>The direct children.</summary>
    public IEnumerable<Module> Children() => NamedChildren().Select(c => c.Module);

    /// <summary>This module (named "") and every descendant, depth first, with dotted names.</summary>
    public IEnumerable<(string Name, Module Module)> NamedModules()
    {
        yield return ("", this);
        foreach (var (name, child) in NamedChildren())
            foreach (var (sub, m) in child.NamedModules())
                yield return (sub.Length == 0 ? name : name + "." + sub, m);
    }

    /// <summary>This module's own parameters (not its children's), skipping absent optional ones.</summary>
    protected IEnumerable<(string Name, Parameter Parameter)> OwnParameters() =>
        _parameters.Where(p => p.Value is not null).Select(p => (p.Name, p.Value!));

    /// <summary>All parameters with dotted names, each once (tied parameters appear under their first name).</summary>
    public IEnumerable<(string Name, Parameter Parameter)> NamedParameters(bool recurse = true)
    {
        var seen = new HashSet<Parameter>(ReferenceEqualityComparer.Instance);
        foreach (var (prefix, m) in recurse ? NamedModules() : [("", this)])
            foreach (var (name, p) in m.OwnParameters())
                if (seen.Add(p)) yield return (prefix.Length == 0 ? name : prefix + "." + name, p);
    }

    /// <summary>All parameters, each once.</summary>
    public IEnumerable<Parameter> Parameters(bool recurse = true) => NamedParameters(recurse).Select(p => p.Parameter);

    /// <summary>All buffers with dotted names.</summary>
    public IEnumerable<(string Name, Tensor Buffer)> NamedBuffers(bool persistentOnly = false)
    {
        foreach (var (prefix, m) in NamedModules())
            foreach (var (name, b, persistent) in m._buffers)
                if (persistent || !persistentOnly) yield return (prefix.Length == 0 ? name : prefix + "." + name, b);
    }

    /// <summary>Sets training mode on this module and every descendant.</summary>
    public Module Train(bool on = true)
    {
        foreach (var (_, m) in NamedModules()) m.Training = on;
        return this;
    }

    /// <summary>Sets evaluation mode (<c>Train(false)</c>).</summary>
    public Module Eval() => Train(false);

    /// <summary>Clears the gradient of every parameter.</summary>
    public void ZeroGrad()
    {
        foreach (var p in Parameters()) p.Grad = null;
    }

    /// <summary>The number of trainable elements.</summary>
    public long ParameterCount() => Parameters().Sum(p => (long)p.Numel);

    /// <summary>
    /// Every parameter and persistent buffer by dotted name, in registration order (<c>state_dict()</c>). The tensors
    /// share storage with the module: copy them to keep a snapshot.
    /// </summary>
    public OrderedDictionary<string, Tensor> StateDict()
    {
        var sd = new OrderedDictionary<string, Tensor>();
        foreach (var (name, p) in NamedParameters()) sd[name] = p;
        foreach (var (name, b) in NamedBuffers(persistentOnly: true)) sd[name] = b;
        return sd;
    }

    /// <summary>
    /// Copies values from <paramref name="stateDict"/> into this module's parameters and buffers (<c>load_state_dict</c>).
    /// With <paramref name="strict"/>, unknown and missing keys are errors.
    /// </summary>
    /// <returns>The keys of this module that were not in the dictionary, and the dictionary's keys this module does not have.</returns>
    /// <exception cref="ArgumentException">A shape differs, or (strict) a key is unknown or missing; the message names them.</exception>
    public (IReadOnlyList<string> Missing, IReadOnlyList<string> Unexpected) LoadStateDict(IReadOnlyDictionary<string, Tensor> stateDict, bool strict = true)
    {
        ArgumentNullException.ThrowIfNull(stateDict);
        var own = StateDict();
        var unexpected = stateDict.Keys.Where(k => !own.ContainsKey(k)).ToList();
        var missing = own.Keys.Where(k => !stateDict.ContainsKey(k)).ToList();
        if (strict && unexpected.Count > 0)
            throw new ArgumentException($"LoadStateDict: unknown key(s) {string.Join(", ", unexpected.Select(k => $"'{k}'"))}; this {GetType().Name} has {string.Join(", ", own.Keys.Take(8))}{(own.Count > 8 ? ", …" : "")}.", nameof(stateDict));
        if (strict && missing.Count > 0)
            throw new ArgumentException($"LoadStateDict: missing key(s) {string.Join(", ", missing.Select(k => $"'{k}'"))}.", nameof(stateDict));
        foreach (var (name, target) in own)
        {
            if (!stateDict.TryGetValue(name, out var src)) continue;
            if (src.Shape != target.Shape)
                throw new ArgumentException($"LoadStateDict: '{name}' has shape {src.Shape} in the state dict but {target.Shape} in the module.", nameof(stateDict));
            target.CopyFrom(src);
        }
        foreach (var (_, m) in NamedModules()) m.OnStateLoaded();
        return (missing, unexpected);
    }

    /// <summary>Called on every module after <see cref="LoadStateDict"/> copied values in, so that derived state (e.g. a
    /// compressed copy of a masked weight) can be rebuilt.</summary>
    protected virtual void OnStateLoaded() { }

    /// <summary>
    /// Replaces the child registered as <paramref name="name"/> by <paramref name="replacement"/>, and updates every field
    /// of this module that referenced the old child (the Sparsifier uses this to swap layers in any model).
    /// </summary>
    /// <exception cref="ArgumentException">No child has that name, or a field that held the old child cannot hold the new one.</exception>
    public virtual void ReplaceModule(string name, Module replacement)
    {
        ArgumentNullException.ThrowIfNull(replacement);
        int i = _modules.FindIndex(p => p.Name == name);
        if (i < 0)
            throw new ArgumentException($"ReplaceModule: {GetType().Name} has no child '{name}'; children are {string.Join(", ", _modules.Select(m => m.Name))}.", nameof(name));
        var old = _modules[i].Value;
        foreach (var f in InstanceFields(GetType()))
        {
            if (!ReferenceEquals(f.GetValue(this), old)) continue;
            if (!f.FieldType.IsInstanceOfType(replacement))
                throw new ArgumentException($"ReplaceModule: field '{f.Name}' of {GetType().Name} has type {f.FieldType.Name} and cannot hold a {replacement.GetType().Name}.", nameof(replacement));
            f.SetValue(this, replacement);
        }
        _modules[i] = (name, replacement);
    }

    /// <summary>Finds a descendant by dotted name (<c>get_submodule</c>).</summary>
    /// <exception cref="ArgumentException">No module has that name.</exception>
    public Module GetSubmodule(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        foreach (var (name, m) in NamedModules()) if (name == path) return m;
        throw new ArgumentException($"GetSubmodule: no module named '{path}' in this {GetType().Name}.", nameof(path));
    }

    /// <summary>A one-line summary: type and parameter count.</summary>
    public override string ToString() => $"{GetType().Name}({ParameterCount():N0} parameters)";
}

/// <summary>A module with a typed forward pass (TorchSharp's <c>Module&lt;T, TResult&gt;</c>).</summary>
/// <typeparam name="TInput">The input type.</typeparam>
/// <typeparam name="TOutput">The output type.</typeparam>
public abstract class Module<TInput, TOutput> : Module
{
    /// <summary>Computes the module's output.</summary>
    public abstract TOutput Forward(TInput input);

    /// <summary>Alias of <see cref="Forward"/>, so that a module can be called like a function.</summary>
    public TOutput Call(TInput input) => Forward(input);
}

/// <summary>
/// The name a field (or, with <c>[field: ...]</c>, an auto-property) registers under in <c>RegisterComponents</c>, and so
/// in parameter names and checkpoints (TorchSharp's <c>ComponentName</c>): .NET names in the API, Hugging Face's in files.
/// </summary>
[AttributeUsage(AttributeTargets.Field | AttributeTargets.Property, AllowMultiple = false)]
public sealed class ComponentNameAttribute(string name) : Attribute
{
    /// <summary>The registered name (no dots).</summary>
    public string Name { get; } = name;
}
