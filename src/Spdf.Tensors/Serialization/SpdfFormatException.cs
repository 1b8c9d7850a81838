namespace Spdf.Tensors.Serialization;

/// <summary>A file Spdf reads is malformed; the message says which file and where in it.</summary>
public sealed class SpdfFormatException : Exception
{
    /// <summary>Creates the exception.</summary>
    public SpdfFormatException(string message) : base(message) { }

    /// <summary>Creates the exception with a cause.</summary>
    public SpdfFormatException(string message, Exception inner) : base(message, inner) { }

    /// <summary>Creates the exception with no message.</summary>
    public SpdfFormatException() : base("The file is malformed.") { }
}
