namespace Spdf.Tensors.Serialization;

/// <summary>
/// Writes files so that a crash, a full disk or an exception mid-write never leaves a torn file: the content goes
/// to a temporary file in the same folder, is flushed to disk, and is then renamed over the target.
/// </summary>
public static class AtomicFile
{
    /// <summary>Writes a file atomically through <paramref name="write"/>.</summary>
    /// <exception cref="ArgumentException">The path is empty.</exception>
    public static void Write(string path, Action<Stream> write) => Spdf.Shared.AtomicWrite.Write(path, write);

    /// <summary>Writes all bytes atomically.</summary>
    public static void WriteAllBytes(string path, ReadOnlySpan<byte> bytes)
    {
        var copy = bytes.ToArray();
        Write(path, s => s.Write(copy));
    }

    /// <summary>Writes text (UTF-8, no BOM) atomically.</summary>
    public static void WriteAllText(string path, string text) =>
        WriteAllBytes(path, new System.Text.UTF8Encoding(false).GetBytes(text ?? throw new ArgumentNullException(nameof(text))));
}
