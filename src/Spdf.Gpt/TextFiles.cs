using System.Text;
using Spdf.Tensors.Serialization;

namespace Spdf.Gpt;

/// <summary>Reading the text formats Spdf.Gpt loads (tokenizer files, E2E CSV).</summary>
internal static class TextFiles
{
    /// <summary>The file as strict UTF-8 text.</summary>
    /// <exception cref="SpdfFormatException">The file is not valid UTF-8; the message gives the byte.</exception>
    public static string ReadUtf8(string path)
    {
        var bytes = File.ReadAllBytes(path);
        try { return new UTF8Encoding(false, true).GetString(bytes); }
        catch (DecoderFallbackException e) { throw new SpdfFormatException($"{path}: invalid UTF-8 at byte {e.Index}.", e); }
    }
}
