using System.Collections;

namespace Spdf.Tensors.Nn;

/// <summary>Applies modules in order (<c>torch.nn.Sequential</c>); children are named "0", "1", ….</summary>
public sealed class Sequential : Module<Tensor, Tensor>
{
    private readonly List<Module<Tensor, Tensor>> _layers = [];

    /// <summary>Creates the chain.</summary>
    public Sequential(params Module<Tensor, Tensor>[] layers)
    {
        ArgumentNullException.ThrowIfNull(layers);
        foreach (var l in layers) Append(l);
    }

    /// <summary>Adds a layer at the end.</summary>
    public void Append(Module<Tensor, Tensor> layer)
    {
        ArgumentNullException.ThrowIfNull(layer);
        RegisterModule(_layers.Count.ToString(System.Globalization.CultureInfo.InvariantCulture), layer);
        _layers.Add(layer);
    }

    /// <summary>The layer at <paramref name="index"/>.</summary>
    public Module<Tensor, Tensor> this[int index] => _layers[index];

    /// <summary>The number of layers.</summary>
    public int Count => _layers.Count;

    /// <inheritdoc />
    public override Tensor Forward(Tensor input)
    {
        foreach (var l in _layers) input = l.Forward(input);
        return input;
    }

    /// <inheritdoc />
    public override void ReplaceModule(string name, Module replacement)
    {
        if (replacement is not Module<Tensor, Tensor> typed)
            throw new ArgumentException($"Sequential can only hold Module<Tensor, Tensor>; got {replacement?.GetType().Name}.", nameof(replacement));
        base.ReplaceModule(name, replacement);
        _layers[int.Parse(name, System.Globalization.CultureInfo.InvariantCulture)] = typed;
    }
}

/// <summary>A list of modules whose children are named "0", "1", … (<c>torch.nn.ModuleList</c>).</summary>
/// <typeparam name="T">The module type.</typeparam>
public sealed class ModuleList<T> : Module, IReadOnlyList<T> where T : Module
{
    private readonly List<T> _items = [];

    /// <summary>Creates the list.</summary>
    public ModuleList(params IEnumerable<T> items)
    {
        ArgumentNullException.ThrowIfNull(items);
        foreach (var m in items) Add(m);
    }

    /// <summary>Appends a module.</summary>
    public void Add(T module)
    {
        ArgumentNullException.ThrowIfNull(module);
        RegisterModule(_items.Count.ToString(System.Globalization.CultureInfo.InvariantCulture), module);
        _items.Add(module);
    }

    /// <inheritdoc />
    public T this[int index] => _items[index];

    /// <inheritdoc />
    public int Count => _items.Count;

    /// <inheritdoc />
    public IEnumerator<T> GetEnumerator() => _items.GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// <inheritdoc />
    public override void ReplaceModule(string name, Module replacement)
    {
        if (replacement is not T typed)
            throw new ArgumentException($"ModuleList<{typeof(T).Name}> cannot hold a {replacement?.GetType().Name}.", nameof(replacement));
        base.ReplaceModule(name, replacement);
        _items[int.Parse(name, System.Globalization.CultureInfo.InvariantCulture)] = typed;
    }
}
