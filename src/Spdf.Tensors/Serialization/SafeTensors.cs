using Spdf.Shared;

namespace Spdf.Tensors.Serialization;

/// <summary>
/// Reads and writes the safetensors format (https://huggingface.co/docs/safetensors): an 8-byte little-endian header
/// length, a JSON header mapping names to <c>{dtype, shape, data_offsets}</c> (plus optional string
/// <c>__metadata__</c>), then the raw little-endian data. Writes F32; reads F32, F16 and BF16 (converted to float32).
/// Files interoperate with PyTorch's <c>safetensors.torch.save_file</c>/<c>load_file</c> and with Spdf's TorchSharp binding.
/// </summary>
public static class SafeTensors
{
    /// <summary>Largest header accepted (100 MB, as the reference implementation).</summary>
    public const int MaxHeaderBytes = SafeTensorsFormat.MaxHeaderBytes;

    /// <summary>Serialises tensors (sorted by name) and optional metadata.</summary>
    /// <exception cref="ArgumentException">A name is empty, reserved or repeated.</exception>
    public static byte[] Serialize(IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        return SafeTensorsFormat.Serialize(tensors.Select(kv => (kv.Key, kv.Value.Shape.ToArray(), (ReadOnlyMemory<float>)kv.Value.Storage)), metadata);
    }

    /// <summary>Writes tensors and metadata to <paramref name="path"/> atomically (see <see cref="AtomicFile"/>).</summary>
    public static void Save(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var bytes = Serialize(tensors, metadata);
        AtomicFile.Write(path, s => s.Write(bytes));
    }

    /// <summary>Reads a safetensors file.</summary>
    /// <exception cref="SpdfFormatException">The file is malformed; the message names the file and the place.</exception>
    public static (OrderedDictionary<string, Tensor> Tensors, Dictionary<string, string> Metadata) Load(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"Safetensors file '{path}' does not exist.", path);
        return Deserialize(File.ReadAllBytes(path), path);
    }

    /// <summary>Parses safetensors bytes; <paramref name="source"/> names them in error messages.</summary>
    /// <exception cref="SpdfFormatException">The bytes are malformed.</exception>
    public static (OrderedDictionary<string, Tensor> Tensors, Dictionary<string, string> Metadata) Deserialize(ReadOnlySpan<byte> bytes, string source = "<bytes>")
    {
        var (list, metadata) = SafeTensorsFormat.Deserialize(bytes, source);
        var tensors = new OrderedDictionary<string, Tensor>();
        foreach (var (name, shape, data) in list) tensors[name] = new Tensor(data, new Shape(shape));
        return (tensors, metadata);
    }
}
