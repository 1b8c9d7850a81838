using System.Text.RegularExpressions;
using Spdf.Sparsity;
using Spdf.Tensors;
using Spdf.Tensors.Serialization;

namespace Spdf.Gpt;

/// <summary>
/// Reads and writes Hugging Face GPT-2 <c>model.safetensors</c> files. GPT-2 stores its projections as
/// <c>Conv1D</c> weights <c>[in, out]</c> (the transpose of a Linear's <c>[out, in]</c>); names come with or without
/// the <c>transformer.</c> prefix; the causal-mask buffers (<c>h.N.attn.bias</c>, <c>h.N.attn.masked_bias</c>) are
/// ignored and <c>lm_head.weight</c>, when present, must equal the tied token embedding.
/// </summary>
public static partial class HuggingFaceGpt2
{
    private static readonly string[] Conv1D = ["attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"];

    [GeneratedRegex(@"^h\.(\d+)\.")] private static partial Regex LayerIndex();

    /// <summary>
    /// Infers a config from a file's shapes (vocabulary, context, width, layers; biases when present). Heads cannot
    /// be read from the weights: pass them (GPT-2 uses width / 64).
    /// </summary>
    /// <exception cref="SpdfFormatException">The file lacks the embeddings or the blocks.</exception>
    public static GptConfig InferConfig(string path, int? heads = null)
    {
        var tensors = ReadNormalised(path);
        if (!tensors.TryGetValue("wte.weight", out var wte) || wte.Rank != 2) throw new SpdfFormatException($"{path}: no 2-D 'wte.weight'; not a GPT-2 checkpoint.");
        if (!tensors.TryGetValue("wpe.weight", out var wpe) || wpe.Rank != 2) throw new SpdfFormatException($"{path}: no 2-D 'wpe.weight'; not a GPT-2 checkpoint.");
        int layers = tensors.Keys.Select(k => LayerIndex().Match(k)).Where(m => m.Success).Select(m => int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) + 1).DefaultIfEmpty(0).Max();
        if (layers == 0) throw new SpdfFormatException($"{path}: no 'h.N.*' blocks.");
        int c = wte.Shape[1];
        var config = new GptConfig(layers, c, heads ?? Math.Max(1, c / 64), wpe.Shape[0], wte.Shape[0], 0f, tensors.ContainsKey("h.0.attn.c_attn.bias"));
        try { config.Validate(); }
        catch (ArgumentException e) { throw new SpdfFormatException($"{path}: the inferred config is invalid: {e.Message}", e); }
        return config;
    }

    /// <summary>Builds a model from a Hugging Face GPT-2 file (config inferred; see <see cref="InferConfig"/>).</summary>
    public static GptModel Load(string path, int? heads = null)
    {
        var model = new GptModel(InferConfig(path, heads));
        LoadInto(model, path);
        return model;
    }

    /// <summary>Loads a Hugging Face GPT-2 file's weights into <paramref name="model"/> (transposing Conv1D weights). Masks of a sparse model are re-applied.</summary>
    /// <exception cref="SpdfFormatException">A weight is missing, unexpected or of the wrong shape; the message names it.</exception>
    public static void LoadInto(GptModel model, string path)
    {
        ArgumentNullException.ThrowIfNull(model);
        var tensors = ReadNormalised(path);
        if (tensors.Remove("lm_head.weight", out var head) && tensors.TryGetValue("wte.weight", out var wte)
            && !head.AsReadOnlySpan().SequenceEqual(wte.AsReadOnlySpan()))
            throw new SpdfFormatException($"{path}: 'lm_head.weight' differs from 'wte.weight'; Spdf's GPT ties them.");
        var state = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (name, t) in tensors)
        {
            if (name.EndsWith(".attn.bias", StringComparison.Ordinal) || name.EndsWith(".attn.masked_bias", StringComparison.Ordinal)) continue;
            state["transformer." + name] = IsConv1D(name) ? Transpose(t, path, name) : t;
        }
        var sd = model.StateDict();
        foreach (var (k, v) in sd)
            if (k.EndsWith("weight_mask", StringComparison.Ordinal) || k.EndsWith("weight_mask_bits", StringComparison.Ordinal)) state[k] = v.CloneDetached();
        foreach (var (name, layer) in CompressedLayers(model))
            if (state.Remove(name + ".weight", out var dense)) // a layer that keeps only its kept weights takes them from the dense one
            {
                try { state[name + ".weight_values"] = layer.GatherKept(dense); }
                catch (ArgumentException e) { throw new SpdfFormatException($"{path}: '{name}.weight': {e.Message}", e); }
            }
        try { model.LoadStateDict(state); }
        catch (ArgumentException e) { throw new SpdfFormatException($"{path}: {e.Message}", e); }
    }

    /// <summary>
    /// Writes <paramref name="model"/> as a Hugging Face GPT-2 <c>model.safetensors</c> (names with the
    /// <c>transformer.</c> prefix, Conv1D layout, masked weights as zeros, masks omitted), atomically.
    /// </summary>
    public static void Save(GptModel model, string path)
    {
        ArgumentNullException.ThrowIfNull(model);
        using var _ = Spdf.Tensors.Autograd.GradMode.NoGrad();
        var outTensors = new List<KeyValuePair<string, Tensor>>();
        var compressed = CompressedLayers(model).ToDictionary(l => l.Name + ".weight_values", l => (l.Name + ".weight", l.Layer));
        foreach (var (key, value) in model.StateDict())
        {
            if (key.EndsWith("weight_mask", StringComparison.Ordinal) || key.EndsWith("weight_mask_bits", StringComparison.Ordinal)) continue;
            var (k, v) = compressed.TryGetValue(key, out var c) ? (c.Item1, c.Layer.ToDenseWeight()) : (key, value);
            string name = k["transformer.".Length..];
            outTensors.Add(new(k, IsConv1D(name) ? v.Transpose(0, 1) : v));
        }
        SafeTensors.Save(path, outTensors, new Dictionary<string, string> { ["format"] = "pt" });
    }

    private static IEnumerable<(string Name, SparseLinear Layer)> CompressedLayers(GptModel model) =>
        model.NamedModules().Where(m => m.Module is SparseLinear { Storage: SparseWeightStorage.Compressed }).Select(m => (m.Name, (SparseLinear)m.Module));

    private static bool IsConv1D(string name) => Conv1D.Any(s => name.EndsWith(s, StringComparison.Ordinal));

    private static Tensor Transpose(Tensor t, string path, string name) =>
        t.Rank == 2 ? t.Transpose(0, 1) : throw new SpdfFormatException($"{path}: '{name}' has shape {t.Shape}; a Conv1D weight is 2-D.");

    private static Dictionary<string, Tensor> ReadNormalised(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var (tensors, _) = SafeTensors.Load(path);
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (k, v) in tensors)
        {
            string name = k.StartsWith("transformer.", StringComparison.Ordinal) ? k["transformer.".Length..] : k;
            if (!result.TryAdd(name, v)) throw new SpdfFormatException($"{path}: '{name}' appears both with and without the 'transformer.' prefix.");
        }
        return result;
    }
}
