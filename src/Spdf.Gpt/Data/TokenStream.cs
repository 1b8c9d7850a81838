using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using Spdf.Gpt.Tokenization;
using Spdf.Tensors;
using Spdf.Tensors.Serialization;

namespace Spdf.Gpt.Data;

/// <summary>A read-only sequence of token ids: in memory, memory-mapped from a token file, or a range of another stream.</summary>
public abstract class TokenStream : IDisposable
{
    /// <summary>Number of tokens.</summary>
    public abstract long Length { get; }

    /// <summary>Size of the vocabulary the ids come from (every id is below it).</summary>
    public abstract int VocabSize { get; }

    /// <summary>Copies <c>destination.Length</c> tokens starting at <paramref name="start"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is outside the stream.</exception>
    public abstract void Read(long start, Span<int> destination);

    /// <summary>A view of tokens [<paramref name="start"/>, <paramref name="start"/> + <paramref name="length"/>).</summary>
    public TokenStream Slice(long start, long length)
    {
        if (start < 0 || length < 0 || start + length > Length)
            throw new ArgumentOutOfRangeException(nameof(start), start, $"Slice [{start}, {start + length}) is outside the stream of {Length} tokens.");
        return new SliceStream(this, start, length);
    }

    /// <summary>
    /// Splits into a training stream (the first 1 − <paramref name="validationFraction"/> of the tokens) and a
    /// validation stream (the rest), as nanoGPT's <c>prepare.py</c> does.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The fraction is not in (0, 1).</exception>
    public (TokenStream Train, TokenStream Validation) Split(double validationFraction)
    {
        if (!(validationFraction > 0 && validationFraction < 1))
            throw new ArgumentOutOfRangeException(nameof(validationFraction), validationFraction, "Expected a validation fraction in (0, 1).");
        long val = (long)Math.Round(Length * validationFraction);
        return (Slice(0, Length - val), Slice(Length - val, val));
    }

    /// <summary>Creates an in-memory stream.</summary>
    /// <exception cref="ArgumentException">An id is outside [0, <paramref name="vocabSize"/>).</exception>
    public static TokenStream FromArray(int[] tokens, int vocabSize)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(vocabSize);
        for (int i = 0; i < tokens.Length; i++)
            if ((uint)tokens[i] >= (uint)vocabSize)
                throw new ArgumentException($"Token {i} is {tokens[i]}; expected an id in [0, {vocabSize}).", nameof(tokens));
        return new ArrayStream(tokens, vocabSize);
    }

    /// <summary>Releases a mapped file.</summary>
    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases resources.</summary>
    protected virtual void Dispose(bool disposing) { }

    private protected void CheckRange(long start, int count)
    {
        if (start < 0 || count < 0 || start + count > Length)
            throw new ArgumentOutOfRangeException(nameof(start), start, $"Tokens [{start}, {start + count}) are outside the stream of {Length}.");
    }

    private sealed class ArrayStream(int[] tokens, int vocab) : TokenStream
    {
        public override long Length => tokens.Length;
        public override int VocabSize => vocab;
        public override void Read(long start, Span<int> destination)
        {
            CheckRange(start, destination.Length);
            tokens.AsSpan((int)start, destination.Length).CopyTo(destination);
        }
    }

    private sealed class SliceStream(TokenStream inner, long offset, long length) : TokenStream
    {
        public override long Length => length;
        public override int VocabSize => inner.VocabSize;
        public override void Read(long start, Span<int> destination)
        {
            CheckRange(start, destination.Length);
            inner.Read(offset + start, destination);
        }
    }

    internal sealed class MappedStream : TokenStream
    {
        private readonly MemoryMappedFile _file;
        private readonly MemoryMappedViewAccessor _view;
        private readonly int _width;

        internal MappedStream(MemoryMappedFile file, MemoryMappedViewAccessor view, int width, long count, int vocab)
        {
            _file = file;
            _view = view;
            _width = width;
            Length = count;
            VocabSize = vocab;
        }

        public override long Length { get; }
        public override int VocabSize { get; }

        public override void Read(long start, Span<int> destination)
        {
            CheckRange(start, destination.Length);
            long at = TokenFile.HeaderBytes + start * _width;
            if (_width == 2)
            {
                var buf = new ushort[destination.Length];
                _view.ReadArray(at, buf, 0, buf.Length);
                for (int i = 0; i < buf.Length; i++) destination[i] = buf[i];
            }
            else
            {
                var buf = new int[destination.Length];
                _view.ReadArray(at, buf, 0, buf.Length);
                buf.CopyTo(destination);
            }
            for (int i = 0; i < destination.Length; i++)
                if ((uint)destination[i] >= (uint)VocabSize)
                    throw new SpdfFormatException($"Token file: token {start + i} is {destination[i]}, outside the vocabulary of {VocabSize}.");
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing) { _view.Dispose(); _file.Dispose(); }
        }
    }
}

/// <summary>
/// Token files: text encoded once and stored as a 32-byte header (<c>SPDFTOK1</c>, token width 2 or 4 bytes, count,
/// vocabulary size) followed by little-endian ids, then memory-mapped for training (nanoGPT's <c>train.bin</c> with a header).
/// </summary>
public static class TokenFile
{
    /// <summary>Header size in bytes.</summary>
    public const int HeaderBytes = 32;
    private static ReadOnlySpan<byte> Magic => "SPDFTOK1"u8;

    /// <summary>Writes tokens to <paramref name="path"/> atomically (16-bit ids when the vocabulary fits).</summary>
    /// <exception cref="ArgumentException">An id is outside the vocabulary.</exception>
    public static void Write(string path, ReadOnlySpan<int> tokens, int vocabSize)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(vocabSize);
        int width = vocabSize <= 65536 ? 2 : 4;
        var bytes = new byte[HeaderBytes + (long)tokens.Length * width];
        Magic.CopyTo(bytes);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(8), width);
        BinaryPrimitives.WriteInt64LittleEndian(bytes.AsSpan(12), tokens.Length);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(20), vocabSize);
        for (int i = 0; i < tokens.Length; i++)
        {
            if ((uint)tokens[i] >= (uint)vocabSize)
                throw new ArgumentException($"Token {i} is {tokens[i]}; expected an id in [0, {vocabSize}).", nameof(tokens));
            if (width == 2) BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(HeaderBytes + i * 2), (ushort)tokens[i]);
            else BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(HeaderBytes + i * 4), tokens[i]);
        }
        AtomicFile.WriteAllBytes(path, bytes);
    }

    /// <summary>A corpus file's text: strict UTF-8 (a binary file is refused, not trained on) and not blank.</summary>
    /// <exception cref="SpdfFormatException">The file is not valid UTF-8; the message gives the byte.</exception>
    /// <exception cref="ArgumentException">The file holds no text.</exception>
    public static string ReadCorpus(string textPath)
    {
        ArgumentException.ThrowIfNullOrEmpty(textPath);
        var text = TextFiles.ReadUtf8(textPath);
        if (string.IsNullOrWhiteSpace(text)) throw new ArgumentException($"The corpus '{textPath}' is empty; expected UTF-8 text.", nameof(textPath));
        return text;
    }

    /// <summary>Encodes a UTF-8 text file (documents separated by blank lines are joined with end-of-text tokens) and writes a token file.</summary>
    /// <returns>The number of tokens written.</returns>
    /// <exception cref="ArgumentException">The text file is empty.</exception>
    /// <exception cref="SpdfFormatException">The text file is not valid UTF-8.</exception>
    public static long EncodeText(BpeTokenizer tokenizer, string textPath, string tokenPath)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        var ids = EncodeDocuments(tokenizer, SplitDocuments(ReadCorpus(textPath)));
        Write(tokenPath, ids, tokenizer.VocabSize);
        return ids.Length;
    }

    /// <summary>Encodes documents, each followed by the end-of-text token when the tokenizer has one.</summary>
    public static int[] EncodeDocuments(BpeTokenizer tokenizer, IEnumerable<string> documents)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(documents);
        var ids = new List<int>();
        foreach (var doc in documents)
        {
            ids.AddRange(tokenizer.Encode(doc, allowSpecial: false));
            if (tokenizer.EndOfTextId >= 0) ids.Add(tokenizer.EndOfTextId);
        }
        return ids.ToArray();
    }

    /// <summary>Splits text into documents at blank lines.</summary>
    public static IEnumerable<string> SplitDocuments(string text) =>
        text.Replace("\r\n", "\n", StringComparison.Ordinal).Split("\n\n", StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    /// <summary>Memory-maps a token file.</summary>
    /// <exception cref="SpdfFormatException">The header is malformed or the size does not match it.</exception>
    public static TokenStream Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        long size = new FileInfo(path).Length;
        if (size < HeaderBytes) throw new SpdfFormatException($"{path}: {size} bytes is shorter than the {HeaderBytes}-byte token-file header.");
        var header = new byte[HeaderBytes];
        using (var fs = File.OpenRead(path)) fs.ReadExactly(header);
        if (!header.AsSpan(0, 8).SequenceEqual(Magic)) throw new SpdfFormatException($"{path}: byte 0: expected the magic 'SPDFTOK1'.");
        int width = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(8));
        long count = BinaryPrimitives.ReadInt64LittleEndian(header.AsSpan(12));
        int vocab = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(20));
        if (width is not (2 or 4)) throw new SpdfFormatException($"{path}: byte 8: token width {width}; expected 2 or 4.");
        if (vocab <= 0 || (width == 2 && vocab > 65536)) throw new SpdfFormatException($"{path}: byte 20: vocabulary size {vocab} does not fit {width}-byte ids.");
        if (count < 0 || count > (size - HeaderBytes) / width || HeaderBytes + count * width != size)
            throw new SpdfFormatException($"{path}: byte 12: the header says {count} tokens of {width} bytes but the file holds {size - HeaderBytes} data bytes.");
        if (count == 0) return TokenStream.FromArray([], vocab);
        var file = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        var view = file.CreateViewAccessor(0, size, MemoryMappedFileAccess.Read);
        return new TokenStream.MappedStream(file, view, width, count, vocab);
    }
}

/// <summary>
/// Draws random context windows <c>(x, y = x shifted by one)</c> from a token stream, as nanoGPT's <c>get_batch</c>.
/// The sampler's position is its generator state, saved in trainer checkpoints so that a resumed run draws the
/// same batches.
/// </summary>
public sealed class WindowSampler : IBatchSource
{
    private readonly TokenStream _stream;
    private readonly Generator _rng;

    /// <summary>Creates a sampler.</summary>
    /// <exception cref="ArgumentException">The stream is shorter than one window of <paramref name="contextLength"/> + 1 tokens.</exception>
    public WindowSampler(TokenStream stream, int batchSize, int contextLength, ulong seed)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(contextLength);
        if (stream.Length < contextLength + 1)
            throw new ArgumentException($"The token stream has {stream.Length} tokens; a context of {contextLength} needs at least {contextLength + 1}.", nameof(stream));
        _stream = stream;
        BatchSize = batchSize;
        ContextLength = contextLength;
        _rng = new Generator(seed);
    }

    /// <summary>
    /// The sampler of rank <paramref name="rank"/> of <paramref name="ranks"/> in data-parallel training: the stream is cut
    /// into <paramref name="ranks"/> contiguous shards of equal length (a remainder of fewer than <paramref name="ranks"/>
    /// tokens is left out) and this rank draws its windows from its own shard, with its own generator, so that no two
    /// ranks read the same tokens. Rank 0 of 1 is <c>new WindowSampler(stream, batchSize, contextLength, seed)</c>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The rank is not in [0, ranks).</exception>
    /// <exception cref="ArgumentException">A shard is shorter than one window.</exception>
    public static WindowSampler ForRank(TokenStream stream, int batchSize, int contextLength, ulong seed, int rank, int ranks)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(ranks);
        if ((uint)rank >= (uint)ranks) throw new ArgumentOutOfRangeException(nameof(rank), rank, $"Expected a rank in [0, {ranks}).");
        if (ranks == 1) return new WindowSampler(stream, batchSize, contextLength, seed);
        long shard = stream.Length / ranks;
        if (shard < contextLength + 1)
            throw new ArgumentException($"The token stream has {stream.Length} tokens; {ranks} shards of a context of {contextLength} need at least {(long)ranks * (contextLength + 1)}.", nameof(stream));
        return new WindowSampler(stream.Slice(rank * shard, shard), batchSize, contextLength, seed + (ulong)rank * 0x9E3779B97F4A7C15UL);
    }

    /// <summary>Windows per batch.</summary>
    public int BatchSize { get; }

    /// <summary>Tokens per window.</summary>
    public int ContextLength { get; }

    /// <inheritdoc />
    public int VocabSize => _stream.VocabSize;

    /// <inheritdoc />
    public (IntTensor Inputs, IntTensor Targets) Next()
    {
        int b = BatchSize, t = ContextLength;
        var x = new int[b * t];
        var y = new int[b * t];
        var window = new int[t + 1];
        long starts = _stream.Length - t;
        for (int i = 0; i < b; i++)
        {
            long s = (long)(_rng.NextDouble() * starts);
            _stream.Read(s, window);
            window.AsSpan(0, t).CopyTo(x.AsSpan(i * t));
            window.AsSpan(1, t).CopyTo(y.AsSpan(i * t));
        }
        return (new IntTensor(x, new Shape(b, t)), new IntTensor(y, new Shape(b, t)));
    }

    /// <inheritdoc />
    public ulong[] GetState() => _rng.GetState();

    /// <inheritdoc />
    public void SetState(ulong[] state) => _rng.SetState(state);

    /// <summary>
    /// Consecutive non-overlapping windows covering the stream (at most <paramref name="maxBatches"/> batches), for a
    /// deterministic validation loss.
    /// </summary>
    public static IEnumerable<(IntTensor Inputs, IntTensor Targets)> Sequential(TokenStream stream, int batchSize, int contextLength, int maxBatches = int.MaxValue)
    {
        ArgumentNullException.ThrowIfNull(stream);
        long windows = (stream.Length - 1) / contextLength;
        if (windows == 0)
            throw new ArgumentException($"The token stream has {stream.Length} tokens; a context of {contextLength} needs at least {contextLength + 1}.", nameof(stream));
        var window = new int[contextLength + 1];
        for (long w = 0, batch = 0; w < windows && batch < maxBatches; batch++)
        {
            int n = (int)Math.Min(batchSize, windows - w);
            var x = new int[n * contextLength];
            var y = new int[n * contextLength];
            for (int i = 0; i < n; i++, w++)
            {
                stream.Read(w * contextLength, window);
                window.AsSpan(0, contextLength).CopyTo(x.AsSpan(i * contextLength));
                window.AsSpan(1, contextLength).CopyTo(y.AsSpan(i * contextLength));
            }
            yield return (new IntTensor(x, new Shape(n, contextLength)), new IntTensor(y, new Shape(n, contextLength)));
        }
    }
}

/// <summary>A source of training batches whose position can be saved and restored.</summary>
public interface IBatchSource
{
    /// <summary>The longest input a batch can have (tokens per row).</summary>
    int ContextLength { get; }

    /// <summary>The vocabulary the ids come from (every id is below it).</summary>
    int VocabSize { get; }

    /// <summary>The next batch: inputs and targets <c>[B, T]</c> (targets −100 where no loss is taken).</summary>
    (IntTensor Inputs, IntTensor Targets) Next();

    /// <summary>The position, for checkpoints.</summary>
    ulong[] GetState();

    /// <summary>Restores a position from <see cref="GetState"/>.</summary>
    void SetState(ulong[] state);
}
