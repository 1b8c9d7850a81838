namespace Spdf.Shared;

internal static partial class SafeTensorsFormat
{
    private static partial Exception FormatError(string message, Exception? inner) =>
        inner is null ? new Spdf.Tensors.Serialization.SpdfFormatException(message) : new Spdf.Tensors.Serialization.SpdfFormatException(message, inner);
}
