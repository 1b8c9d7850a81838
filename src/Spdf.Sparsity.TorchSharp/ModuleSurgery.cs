using System.Collections;
using System.Reflection;
using TorchSharp;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace Spdf.Sparsity.TorchSharp;

/// <summary>
/// Swapping a child module of a TorchSharp model, where the model allows it: the parent's registry of submodules (what
/// <c>named_modules</c> and <c>state_dict</c> walk) and the place its <c>forward</c> reads the child from (a field whose
/// type can hold the replacement, a <c>Sequential</c>'s list, a <c>ModuleList</c>). TorchSharp keeps these private; this
/// is the one place that reaches into them.
/// </summary>
internal static class ModuleSurgery
{
    private const BindingFlags Instance = BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly;

    /// <summary>Replaces <paramref name="current"/> (registered as <paramref name="key"/> in <paramref name="parent"/>) by
    /// <paramref name="replacement"/>; returns null on success, or why it cannot be done (nothing is changed then).</summary>
    public static string? TrySwap(nn.Module parent, string key, nn.Module current, nn.Module replacement)
    {
        var registry = Registry(parent);
        bool registered = registry is not null && registry.ContainsKey(key) && ReferenceEquals(registry[key], current);
        Action? commit = null;
        if (parent is global::TorchSharp.Modules.Sequential)
        {
            // A Sequential names its children from its own lists (_names, _modules), which its forward walks.
            var list = parent.GetType().GetField("_modules", Instance)?.GetValue(parent) as IList;
            int at = list is null ? -1 : IndexOf(list, current);
            if (at < 0) return "the Sequential does not list it";
            commit = () => list![at] = replacement;
        }
        else if (!registered) return $"'{key}' is not a registered child of {parent.GetType().Name}";
        else if (ListField(parent) is { } moduleList)
        {
            int at = IndexOf(moduleList, current);
            if (at < 0) return $"the {parent.GetType().Name} does not list it";
            var elementType = moduleList.GetType().GetGenericArguments().FirstOrDefault();
            if (elementType is not null && !elementType.IsInstanceOfType(replacement))
                return $"the {parent.GetType().Name} holds {elementType.Name}s";
            commit = () => moduleList[at] = replacement;
        }
        else
        {
            var fields = new List<FieldInfo>();
            for (var t = parent.GetType(); t is not null && t != typeof(nn.Module); t = t.BaseType)
                foreach (var f in t.GetFields(Instance))
                    if (!f.FieldType.IsValueType && ReferenceEquals(f.GetValue(parent), current)) fields.Add(f);
            if (fields.Count == 0) return $"no field of {parent.GetType().Name} holds it (its forward reaches it another way)";
            var typed = fields.FirstOrDefault(f => !f.FieldType.IsInstanceOfType(replacement) && !f.FieldType.IsAssignableFrom(replacement.GetType()));
            if (typed is not null) return $"field '{typed.Name}' of {parent.GetType().Name} is typed {typed.FieldType.Name}";
            commit = () => { foreach (var f in fields) f.SetValue(parent, replacement); };
        }
        commit();
        if (registered) registry![key] = replacement;
        return null;
    }

    /// <summary>Removes a buffer registered on <paramref name="module"/> (e.g. the mask, once a layer is dense again).</summary>
    public static void RemoveBuffer(nn.Module module, string name)
    {
        var field = typeof(nn.Module).GetField("_internal_buffers", Instance);
        if (field?.GetValue(module) is OrderedDict<string, (Tensor, bool)> buffers) buffers.Remove(name);
    }

    private static OrderedDict<string, nn.Module>? Registry(nn.Module module) =>
        typeof(nn.Module).GetField("_internal_submodules", Instance)?.GetValue(module) as OrderedDict<string, nn.Module>;

    private static IList? ListField(nn.Module parent)
    {
        var t = parent.GetType();
        if (!t.IsGenericType || t.GetGenericTypeDefinition() != typeof(global::TorchSharp.Modules.ModuleList<>)) return null;
        return t.GetField("_list", Instance)?.GetValue(parent) as IList;
    }

    private static int IndexOf(IList list, object item)
    {
        for (int i = 0; i < list.Count; i++) if (ReferenceEquals(list[i], item)) return i;
        return -1;
    }
}
