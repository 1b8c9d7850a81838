namespace Spdf.Shared;

internal static partial class SafeTensorsFormat
{
    private static partial Exception FormatError(string message, Exception? inner) =>
        inner is null ? new Spdf.Sparsity.TorchSharp.SpdfFormatException(message) : new Spdf.Sparsity.TorchSharp.SpdfFormatException(message, inner);
}
