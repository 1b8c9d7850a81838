using Spdf.Shared;
using TorchSharp;
using static TorchSharp.torch;

namespace Spdf.Sparsity.TorchSharp;

/// <summary>A checkpoint file is malformed or does not fit the model; the message says which file and what.</summary>
public sealed class SpdfFormatException : Exception
{
    /// <summary>Creates the exception.</summary>
    public SpdfFormatException(string message) : base(message) { }

    /// <summary>Creates the exception with a cause.</summary>
    public SpdfFormatException(string message, Exception inner) : base(message, inner) { }

    /// <summary>Creates the exception with no message.</summary>
    public SpdfFormatException() : base("The file is malformed.") { }
}

/// <summary>
/// Checkpoints of TorchSharp models in the safetensors format, with the same names as the Spdf.Tensors path: every
/// parameter and buffer of the model's state dict, masks included (<c>*.weight_mask</c>, as <c>torch.nn.utils.prune</c>
/// names them), plus the sparsity handle's metadata (phase, transitions, per-layer sparsity). A sparse checkpoint thus
/// moves between the two engines, and a model written with Hugging Face GPT-2's names (as the TorchSharp sample's and
/// Spdf.Gpt's are) loads in either. Files are written atomically: a failed write leaves the previous file intact.
/// </summary>
public static class TorchCheckpoint
{
    /// <summary>Writes the model's state dict (float32 tensors) and metadata to <paramref name="path"/>.</summary>
    /// <exception cref="ArgumentException">An entry of the state dict is not a float32 tensor.</exception>
    public static void Save(nn.Module model, string path, TorchSparseModel? sparsity = null, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentException.ThrowIfNullOrEmpty(path);
        var entries = new List<(string Name, int[] Shape, ReadOnlyMemory<float> Data)>();
        foreach (var (name, t) in model.state_dict())
        {
            if (t.dtype != ScalarType.Float32) throw new ArgumentException($"State entry '{name}' has dtype {t.dtype}; checkpoints hold float32 tensors.", nameof(model));
            using var cpu = t.detach().cpu().contiguous();
            entries.Add((name, t.shape.Select(d => (int)d).ToArray(), TorchTensors.Floats(cpu).ToArray()));
        }
        var meta = new Dictionary<string, string>(sparsity?.CheckpointMetadata() ?? []);
        if (metadata is not null) foreach (var (k, v) in metadata) meta[k] = v;
        var bytes = SafeTensorsFormat.Serialize(entries, meta);
        AtomicWrite.Write(path, s => s.Write(bytes));
    }

    /// <summary>
    /// Loads a checkpoint into <paramref name="model"/>: every entry of its state dict must be in the file with the same
    /// shape (with <paramref name="strict"/>, the file may hold nothing else); masks are loaded with the weights, and the
    /// sparsity handle, when given, takes the loaded masks (see <see cref="TorchSparseModel.OnStateLoaded"/>).
    /// Returns the file's metadata.
    /// </summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="SpdfFormatException">The file is malformed, or its names or shapes do not fit the model.</exception>
    public static IReadOnlyDictionary<string, string> Load(nn.Module model, string path, TorchSparseModel? sparsity = null, bool strict = true)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"Checkpoint '{path}' does not exist.", path);
        var (tensors, metadata) = SafeTensorsFormat.Deserialize(File.ReadAllBytes(path), path);
        var byName = tensors.ToDictionary(t => t.Name, t => t);
        var state = model.state_dict();
        var missing = state.Keys.Where(k => !byName.ContainsKey(k)).ToList();
        if (missing.Count > 0)
            throw new SpdfFormatException($"{path}: the model's {string.Join(", ", missing.Take(8).Select(m => $"'{m}'"))}{(missing.Count > 8 ? ", …" : "")} {(missing.Count == 1 ? "is" : "are")} not in the checkpoint{(missing.Any(m => m.EndsWith("weight_mask")) ? " (a dense checkpoint loads into a dense model; sparsify after loading)" : "")}.");
        if (strict)
        {
            var extra = byName.Keys.Where(k => !state.ContainsKey(k)).ToList();
            if (extra.Count > 0)
                throw new SpdfFormatException($"{path}: {string.Join(", ", extra.Take(8).Select(m => $"'{m}'"))}{(extra.Count > 8 ? ", …" : "")} in the checkpoint {(extra.Count == 1 ? "is" : "are")} not in the model{(extra.Any(m => m.EndsWith("weight_mask")) ? " (a sparse checkpoint loads into a model sparsified with the same config)" : "")}.");
        }
        foreach (var (name, t) in state)
        {
            var (_, shape, data) = byName[name];
            if (!shape.Select(d => (long)d).SequenceEqual(t.shape))
                throw new SpdfFormatException($"{path}: '{name}' has shape [{string.Join(", ", shape)}] in the checkpoint but [{string.Join(", ", t.shape)}] in the model.");
        }
        using (no_grad())
            foreach (var (name, t) in state)
                t.copy_(tensor(byName[name].Data, t.shape));
        sparsity?.OnStateLoaded();
        return metadata;
    }
}

