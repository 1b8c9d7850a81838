using System.Text;
using Spdf.Gpt.Tokenization;
using Spdf.Tensors;
using Spdf.Tensors.Serialization;

namespace Spdf.Gpt.Data;

/// <summary>One meaning representation with its reference sentences.</summary>
/// <param name="MeaningRepresentation">E.g. <c>name[The Eagle], eatType[coffee shop], food[French]</c>.</param>
/// <param name="References">One or more human references.</param>
public sealed record E2EExample(string MeaningRepresentation, IReadOnlyList<string> References);

/// <summary>
/// The E2E NLG challenge's data-to-text format: a CSV file with <c>mr</c> and <c>ref</c> columns, one row per
/// reference; rows with the same MR are grouped into one <see cref="E2EExample"/> (in first-seen order).
/// </summary>
public static class E2EDataset
{
    /// <summary>Separator between the MR prompt and the target sentence.</summary>
    public const string PromptSeparator = " => ";

    /// <summary>Reads an E2E CSV file.</summary>
    /// <exception cref="SpdfFormatException">The file is not valid UTF-8 CSV, lacks the <c>mr</c>/<c>ref</c> columns, has a row with the wrong number of fields or an empty MR, or has no rows; the message gives the line.</exception>
    public static IReadOnlyList<E2EExample> Load(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        return Parse(TextFiles.ReadUtf8(path), path);
    }

    /// <summary>Parses E2E CSV text (see <see cref="Load"/>).</summary>
    public static IReadOnlyList<E2EExample> Parse(string csv, string source = "E2E CSV")
    {
        ArgumentNullException.ThrowIfNull(csv);
        var rows = ParseCsv(csv, source);
        if (rows.Count == 0) throw new SpdfFormatException($"{source}: the file is empty; expected a header 'mr,ref' and rows.");
        var (header, _) = rows[0];
        int mr = Array.FindIndex(header, h => h.Trim().TrimStart('\uFEFF').Equals("mr", StringComparison.OrdinalIgnoreCase));
        int rf = Array.FindIndex(header, h => h.Trim().Equals("ref", StringComparison.OrdinalIgnoreCase));
        if (mr < 0 || rf < 0)
            throw new SpdfFormatException($"{source}: line 1: expected columns 'mr' and 'ref', found '{string.Join(",", header)}'.");
        var order = new List<string>();
        var refs = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        for (int i = 1; i < rows.Count; i++)
        {
            var (fields, line) = rows[i];
            if (fields.Length == 1 && fields[0].Length == 0) continue;
            if (fields.Length != header.Length)
                throw new SpdfFormatException($"{source}: line {line}: {fields.Length} fields; the header has {header.Length}.");
            string m = fields[mr].Trim();
            if (m.Length == 0) throw new SpdfFormatException($"{source}: line {line}: empty meaning representation.");
            if (!refs.TryGetValue(m, out var list)) { refs[m] = list = []; order.Add(m); }
            string r = fields[rf].Trim();
            if (r.Length > 0) list.Add(r);
        }
        if (order.Count == 0) throw new SpdfFormatException($"{source}: no data rows after the header.");
        return order.Select(m => new E2EExample(m, refs[m])).ToList();
    }

    /// <summary>Writes examples as E2E CSV (one row per reference), atomically.</summary>
    public static void Save(string path, IEnumerable<E2EExample> examples)
    {
        ArgumentNullException.ThrowIfNull(examples);
        var sb = new StringBuilder("mr,ref\n");
        foreach (var e in examples)
            foreach (var r in e.References) sb.Append(Quote(e.MeaningRepresentation)).Append(',').Append(Quote(r)).Append('\n');
        AtomicFile.WriteAllText(path, sb.ToString());
        static string Quote(string s) => "\"" + s.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";
    }

    /// <summary>The prompt a model sees for an MR: the MR followed by <see cref="PromptSeparator"/>.</summary>
    public static string Prompt(string meaningRepresentation) => meaningRepresentation + PromptSeparator;

    /// <summary>
    /// Token ids of one training sequence (prompt, target, end-of-text) and the index where the target starts; the
    /// loss is taken on the target and the end-of-text token only.
    /// </summary>
    public static (int[] Tokens, int TargetStart) Encode(BpeTokenizer tokenizer, string meaningRepresentation, string reference)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (tokenizer.EndOfTextId < 0) throw new ArgumentException("The tokenizer needs an end-of-text token to mark where a target ends.", nameof(tokenizer));
        var prompt = tokenizer.Encode(Prompt(meaningRepresentation), allowSpecial: false);
        var target = tokenizer.Encode(reference, allowSpecial: false);
        return ([.. prompt, .. target, tokenizer.EndOfTextId], prompt.Length);
    }

    private static List<(string[] Fields, int Line)> ParseCsv(string csv, string source)
    {
        var rows = new List<(string[], int)>();
        var fields = new List<string>();
        var field = new StringBuilder();
        int line = 1, rowLine = 1, i = 0;
        bool quoted = false, wasQuoted = false;
        while (i < csv.Length)
        {
            char c = csv[i];
            if (quoted)
            {
                if (c == '"')
                {
                    if (i + 1 < csv.Length && csv[i + 1] == '"') { field.Append('"'); i += 2; continue; }
                    quoted = false; i++; continue;
                }
                if (c == '\n') line++;
                field.Append(c); i++; continue;
            }
            switch (c)
            {
                case '"':
                    if (field.Length > 0 || wasQuoted) throw new SpdfFormatException($"{source}: line {line}: a quote inside an unquoted field.");
                    quoted = wasQuoted = true; i++; break;
                case ',':
                    fields.Add(field.ToString()); field.Clear(); wasQuoted = false; i++; break;
                case '\r':
                    i++; break;
                case '\n':
                    fields.Add(field.ToString()); field.Clear(); wasQuoted = false;
                    rows.Add((fields.ToArray(), rowLine)); fields.Clear();
                    line++; rowLine = line; i++; break;
                default:
                    if (wasQuoted) throw new SpdfFormatException($"{source}: line {line}: text after a closing quote.");
                    field.Append(c); i++; break;
            }
        }
        if (quoted) throw new SpdfFormatException($"{source}: line {rowLine}: a quoted field is not closed before the end of the file.");
        if (field.Length > 0 || fields.Count > 0 || wasQuoted) { fields.Add(field.ToString()); rows.Add((fields.ToArray(), rowLine)); }
        return rows;
    }
}

/// <summary>
/// Batches of E2E training sequences: every (MR, reference) pair is one sequence, shuffled each epoch with a seeded
/// generator; sequences are right-padded and targets are −100 on the prompt and the padding, so the loss is the
/// target tokens' only. A batch is as long as its longest sequence rounded up to <see cref="LengthMultiple"/> tokens.
/// </summary>
public sealed class E2EBatcher : IBatchSource
{
    private readonly List<(int[] Tokens, int TargetStart)> _sequences;
    private readonly Generator _rng;
    private int[] _order;
    private long _position;
    private ulong[] _epochState;

    /// <summary>Encodes the examples.</summary>
    /// <exception cref="ArgumentException">There are no examples, or a sequence is longer than <paramref name="contextLength"/> + 1 tokens.</exception>
    public E2EBatcher(BpeTokenizer tokenizer, IEnumerable<E2EExample> examples, int batchSize, int contextLength, ulong seed)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(examples);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(contextLength);
        _sequences = [];
        foreach (var e in examples)
            foreach (var r in e.References)
            {
                var s = E2EDataset.Encode(tokenizer, e.MeaningRepresentation, r);
                if (s.Tokens.Length > contextLength + 1)
                    throw new ArgumentException($"The sequence for '{e.MeaningRepresentation}' has {s.Tokens.Length} tokens; the context of {contextLength} holds at most {contextLength + 1}.", nameof(examples));
                _sequences.Add(s);
            }
        if (_sequences.Count == 0) throw new ArgumentException("There are no (MR, reference) pairs to train on.", nameof(examples));
        BatchSize = batchSize;
        ContextLength = contextLength;
        PadId = tokenizer.EndOfTextId;
        VocabSize = tokenizer.VocabSize;
        _rng = new Generator(seed);
        _epochState = _rng.GetState();
        _order = Shuffle();
    }

    /// <summary>Sequences per batch.</summary>
    public int BatchSize { get; }

    /// <inheritdoc />
    public int ContextLength { get; }

    /// <inheritdoc />
    public int VocabSize { get; }

    /// <summary>The id used for padding inputs.</summary>
    public int PadId { get; }

    /// <summary>
    /// Batch lengths are rounded up to a multiple of this many tokens (at most the context; default 16, 1 pads to the
    /// longest sequence exactly). Padding is ignored by the loss and, being last, never attended to, so the rounding
    /// changes no result beyond float rounding; it gives a handful of step shapes instead of one per batch, and the
    /// engine's buffer pool then serves each step from memory it already holds. With a length per batch, every step
    /// allocated its activations anew: the demo's fine-tuning steps took twice the time of steps of one fixed length.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The multiple is not positive.</exception>
    public int LengthMultiple
    {
        get => _lengthMultiple;
        init => _lengthMultiple = value > 0 ? value : throw new ArgumentOutOfRangeException(nameof(LengthMultiple), value, "Expected a positive number of tokens.");
    }
    private readonly int _lengthMultiple = 16;

    /// <summary>Number of (MR, reference) sequences.</summary>
    public int Count => _sequences.Count;

    /// <inheritdoc />
    public (IntTensor Inputs, IntTensor Targets) Next()
    {
        var batch = new List<(int[] Tokens, int TargetStart)>(BatchSize);
        for (int i = 0; i < BatchSize; i++)
        {
            if (_position >= _order.Length) { _epochState = _rng.GetState(); _order = Shuffle(); _position = 0; }
            batch.Add(_sequences[_order[_position++]]);
        }
        int longest = batch.Max(s => s.Tokens.Length) - 1;
        int t = Math.Min(ContextLength, (longest + LengthMultiple - 1) / LengthMultiple * LengthMultiple);
        var x = new int[BatchSize * t];
        var y = new int[BatchSize * t];
        Array.Fill(x, PadId);
        Array.Fill(y, Functional.IgnoreIndex);
        for (int i = 0; i < batch.Count; i++)
        {
            var (tok, start) = batch[i];
            for (int j = 0; j + 1 < tok.Length; j++)
            {
                x[i * t + j] = tok[j];
                if (j + 1 >= start) y[i * t + j] = tok[j + 1];
            }
        }
        return (new IntTensor(x, new Shape(BatchSize, t)), new IntTensor(y, new Shape(BatchSize, t)));
    }

    /// <inheritdoc />
    public ulong[] GetState() => [.. _epochState, (ulong)_position];

    /// <inheritdoc />
    public void SetState(ulong[] state)
    {
        ArgumentNullException.ThrowIfNull(state);
        if (state.Length != _epochState.Length + 1) throw new ArgumentException($"Expected a state of {_epochState.Length + 1} words; got {state.Length}.", nameof(state));
        _rng.SetState(state[..^1]);
        _epochState = _rng.GetState();
        _order = Shuffle();
        _position = (long)state[^1];
        if (_position > _order.Length) throw new ArgumentException($"Position {_position} is beyond the {_order.Length} sequences.", nameof(state));
    }

    private int[] Shuffle()
    {
        var order = Enumerable.Range(0, _sequences.Count).ToArray();
        for (int i = order.Length - 1; i > 0; i--)
        {
            int j = _rng.NextInt(i + 1);
            (order[i], order[j]) = (order[j], order[i]);
        }
        return order;
    }
}
