using System.Buffers.Binary;
using System.Text.Json;

namespace Spdf.Shared;

/// <summary>
/// The safetensors format (https://huggingface.co/docs/safetensors), engine-free: an 8-byte little-endian header
/// length, a JSON header mapping names to <c>{dtype, shape, data_offsets}</c> (plus optional string
/// <c>__metadata__</c>), then the raw little-endian data. Writes F32; reads F32, F16 and BF16 (converted to float32).
/// Written once and compiled into each engine's assembly (it is internal), which supplies <see cref="FormatError"/>:
/// a checkpoint moves between Spdf.Tensors, TorchSharp and PyTorch's <c>safetensors.torch</c>.
/// </summary>
internal static partial class SafeTensorsFormat
{
    /// <summary>Largest header accepted (100 MB, as the reference implementation).</summary>
    public const int MaxHeaderBytes = 100_000_000;

    /// <summary>The assembly's exception for a malformed file (its message names the file and the place).</summary>
    private static partial Exception FormatError(string message, Exception? inner);

    /// <summary>Serialises tensors (sorted by name) and optional metadata.</summary>
    public static byte[] Serialize(IEnumerable<(string Name, int[] Shape, ReadOnlyMemory<float> Data)> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        var list = tensors.OrderBy(t => t.Name, StringComparer.Ordinal).ToList();
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (k, shape, data) in list)
        {
            if (string.IsNullOrEmpty(k) || k == "__metadata__")
                throw new ArgumentException($"Tensor name '{k}' is not allowed in a safetensors file.", nameof(tensors));
            if (!names.Add(k)) throw new ArgumentException($"Tensor name '{k}' appears twice.", nameof(tensors));
            long numel = 1;
            foreach (int d in shape) numel *= d;
            if (numel != data.Length) throw new ArgumentException($"Tensor '{k}' has shape [{string.Join(", ", shape)}] but {data.Length} values.", nameof(tensors));
        }
        using var headerStream = new MemoryStream();
        using (var w = new Utf8JsonWriter(headerStream))
        {
            w.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                w.WriteStartObject("__metadata__");
                foreach (var (k, v) in metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal)) w.WriteString(k, v);
                w.WriteEndObject();
            }
            long offset = 0;
            foreach (var (name, shape, data) in list)
            {
                w.WriteStartObject(name);
                w.WriteString("dtype", "F32");
                w.WriteStartArray("shape");
                foreach (int d in shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                offset += (long)data.Length * 4;
                w.WriteNumberValue(offset);
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndObject();
        }
        var header = headerStream.ToArray();
        int padded = (header.Length + 7) / 8 * 8;
        long dataBytes = list.Sum(t => (long)t.Data.Length * 4);
        var bytes = new byte[8 + padded + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)padded);
        header.CopyTo(bytes, 8);
        for (int i = 8 + header.Length; i < 8 + padded; i++) bytes[i] = (byte)' ';
        long at = 8 + padded;
        foreach (var (_, _, data) in list)
        {
            var values = data.Span;
            var span = bytes.AsSpan((int)at, values.Length * 4);
            if (BitConverter.IsLittleEndian) System.Runtime.InteropServices.MemoryMarshal.AsBytes(values).CopyTo(span);
            else for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(span[(i * 4)..], values[i]);
            at += values.Length * 4L;
        }
        return bytes;
    }

    /// <summary>Parses safetensors bytes; <paramref name="source"/> names them in error messages.</summary>
    /// <exception cref="Exception">The bytes are malformed (the assembly's format exception, see <see cref="FormatError"/>).</exception>
    public static (List<(string Name, int[] Shape, float[] Data)> Tensors, Dictionary<string, string> Metadata) Deserialize(ReadOnlySpan<byte> bytes, string source = "<bytes>")
    {
        if (bytes.Length < 8) throw Bad(source, 0, $"the file has {bytes.Length} bytes; a safetensors file starts with an 8-byte header length");
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        if (n > MaxHeaderBytes) throw Bad(source, 0, $"header length {n} exceeds the limit of {MaxHeaderBytes} bytes");
        if (n > (ulong)(bytes.Length - 8)) throw Bad(source, 0, $"header length {n} is larger than the {bytes.Length - 8} bytes after it");
        var headerBytes = bytes.Slice(8, (int)n);
        if (!System.Text.Unicode.Utf8.IsValid(headerBytes)) throw Bad(source, 8, "the JSON header is not valid UTF-8");
        var dataStart = 8 + (int)n;
        long dataLen = bytes.Length - dataStart;
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(headerBytes.ToArray(), new JsonDocumentOptions { MaxDepth = 8 });
        }
        catch (JsonException e)
        {
            throw FormatError($"{source}: the JSON header (bytes 8–{8 + (long)n}) is invalid: {e.Message}", e);
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw Bad(source, 8, "the header is not a JSON object");
            var tensors = new List<(string Name, int[] Shape, float[] Data)>();
            var metadata = new Dictionary<string, string>();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            var ranges = new List<(long Begin, long End, string Name)>();
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (!seen.Add(prop.Name)) throw Bad(source, 8, $"name '{prop.Name}' appears twice in the header");
                if (prop.Name == "__metadata__")
                {
                    if (prop.Value.ValueKind != JsonValueKind.Object) throw Bad(source, 8, "__metadata__ is not an object");
                    foreach (var m in prop.Value.EnumerateObject())
                    {
                        if (m.Value.ValueKind != JsonValueKind.String) throw Bad(source, 8, $"__metadata__ value '{m.Name}' is not a string");
                        metadata[m.Name] = m.Value.GetString()!;
                    }
                    continue;
                }
                var (shape, data, begin, end) = ReadEntry(prop, bytes, dataStart, dataLen, source);
                ranges.Add((begin, end, prop.Name));
                tensors.Add((prop.Name, shape, data));
            }
            ranges.Sort((a, b) => a.Begin.CompareTo(b.Begin));
            for (int i = 1; i < ranges.Count; i++)
                if (ranges[i].Begin < ranges[i - 1].End)
                    throw Bad(source, 8, $"tensors '{ranges[i - 1].Name}' and '{ranges[i].Name}' overlap in the data section (bytes {ranges[i].Begin} < {ranges[i - 1].End})");
            return (tensors, metadata);
        }
    }

    private static (int[] Shape, float[] Data, long Begin, long End) ReadEntry(JsonProperty prop, ReadOnlySpan<byte> bytes, int dataStart, long dataLen, string source)
    {
        string name = prop.Name;
        var e = prop.Value;
        if (e.ValueKind != JsonValueKind.Object) throw Bad(source, 8, $"entry '{name}' is not an object");
        if (!e.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String) throw Bad(source, 8, $"entry '{name}' has no string dtype");
        string dtype = dt.GetString()!;
        int size = dtype switch { "F32" => 4, "F16" => 2, "BF16" => 2, _ => 0 };
        if (size == 0) throw Bad(source, 8, $"entry '{name}' has dtype {dtype}; expected F32, F16 or BF16");
        if (!e.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array) throw Bad(source, 8, $"entry '{name}' has no shape array");
        var dims = new List<int>();
        long numel = 1;
        foreach (var d in sh.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt32(out int v) || v < 0)
                throw Bad(source, 8, $"entry '{name}' has a shape entry {d} that is not a non-negative 32-bit integer");
            dims.Add(v);
            numel *= v;
            if (numel > int.MaxValue) throw Bad(source, 8, $"entry '{name}' has {numel}+ elements; at most {int.MaxValue} are supported");
        }
        if (!e.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
            throw Bad(source, 8, $"entry '{name}' has no [begin, end] data_offsets");
        if (off[0].ValueKind != JsonValueKind.Number || off[1].ValueKind != JsonValueKind.Number
            || !off[0].TryGetInt64(out long begin) || !off[1].TryGetInt64(out long end) || begin < 0 || end < begin)
            throw Bad(source, 8, $"entry '{name}' has data_offsets [{off[0]}, {off[1]}]; expected 0 ≤ begin ≤ end");
        if (end > dataLen) throw Bad(source, dataStart + begin, $"entry '{name}' ends at data offset {end}, past the data section's {dataLen} bytes");
        if (end - begin != numel * size)
            throw Bad(source, dataStart + begin, $"entry '{name}' spans {end - begin} bytes but {dtype} shape [{string.Join(", ", dims)}] needs {numel * size}");
        var src = bytes.Slice(dataStart + (int)begin, (int)(end - begin));
        var data = new float[numel];
        for (int i = 0; i < numel; i++)
        {
            data[i] = dtype switch
            {
                "F32" => BinaryPrimitives.ReadSingleLittleEndian(src[(i * 4)..]),
                "F16" => (float)BinaryPrimitives.ReadHalfLittleEndian(src[(i * 2)..]),
                _ => BitConverter.UInt32BitsToSingle((uint)BinaryPrimitives.ReadUInt16LittleEndian(src[(i * 2)..]) << 16),
            };
        }
        return (dims.ToArray(), data, begin, end);
    }

    private static Exception Bad(string source, long offset, string what) =>
        FormatError($"{source}: malformed safetensors file at byte {offset}: {what}.", null);
}
