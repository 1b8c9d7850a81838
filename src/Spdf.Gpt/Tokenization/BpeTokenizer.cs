using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Spdf.Tensors.Serialization;

namespace Spdf.Gpt.Tokenization;

/// <summary>
/// GPT-2's byte-level byte-pair-encoding tokenizer. Text is split by GPT-2's pre-tokenisation pattern, each piece is
/// turned into bytes, each byte into one printable character (GPT-2's <c>bytes_to_unicode</c> table), and merges
/// are applied lowest rank first. Every UTF-8 string round-trips exactly, since every byte has a token.
/// Train one from a corpus (<see cref="Train"/>), load and save Hugging Face <c>tokenizer.json</c>
/// (<see cref="Load"/>, <see cref="Save"/>), or load GPT-2's <c>vocab.json</c> + <c>merges.txt</c>
/// (<see cref="LoadGpt2"/>).
/// </summary>
public sealed partial class BpeTokenizer
{
    /// <summary>GPT-2's end-of-text token.</summary>
    public const string EndOfText = "<|endoftext|>";

    [GeneratedRegex(@"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+", RegexOptions.CultureInvariant)]
    private static partial Regex PreTokenizer();

    private static readonly char[] ByteToChar = BuildByteToChar();
    private static readonly Dictionary<char, byte> CharToByte = ByteToChar.Select((c, b) => (c, b)).ToDictionary(x => x.c, x => (byte)x.b);

    private readonly Dictionary<string, int> _vocab;
    private readonly string[] _idToToken;
    private readonly Dictionary<(string, string), int> _ranks;
    private readonly Dictionary<string, int> _special;
    private readonly Regex? _specialSplitter;
    private readonly Dictionary<string, int[]> _cache = new(StringComparer.Ordinal);
    private readonly Lock _cacheLock = new();

    /// <summary>Builds a tokenizer from a vocabulary, ranked merges and special tokens.</summary>
    /// <param name="vocab">Token string (in byte-level characters) to id; ids must be 0..n−1 without gaps together with the special tokens.</param>
    /// <param name="merges">Merges, highest priority first; both halves and their concatenation must be in the vocabulary.</param>
    /// <param name="specialTokens">Special token content to id (matched literally in text, never split).</param>
    /// <exception cref="ArgumentException">The vocabulary and merges are inconsistent.</exception>
    public BpeTokenizer(IReadOnlyDictionary<string, int> vocab, IReadOnlyList<(string Left, string Right)> merges,
        IReadOnlyDictionary<string, int>? specialTokens = null)
    {
        ArgumentNullException.ThrowIfNull(vocab);
        ArgumentNullException.ThrowIfNull(merges);
        _vocab = new Dictionary<string, int>(vocab, StringComparer.Ordinal);
        _special = new Dictionary<string, int>(specialTokens ?? new Dictionary<string, int>(), StringComparer.Ordinal);
        int n = _vocab.Count + _special.Count(kv => !_vocab.ContainsKey(kv.Key));
        _idToToken = new string[n];
        foreach (var (tok, id) in _vocab.Concat(_special))
        {
            if (id < 0 || id >= n)
                throw new ArgumentException($"Token '{tok}' has id {id}; expected ids 0..{n - 1} without gaps.", nameof(vocab));
            if (_idToToken[id] is { } other && other != tok)
                throw new ArgumentException($"Id {id} is used by both '{other}' and '{tok}'.", nameof(vocab));
            _idToToken[id] = tok;
        }
        for (int i = 0; i < n; i++)
            if (_idToToken[i] is null) throw new ArgumentException($"No token has id {i}; expected ids 0..{n - 1} without gaps.", nameof(vocab));
        foreach (char c in ByteToChar)
            if (!_vocab.ContainsKey(c.ToString()))
                throw new ArgumentException($"The vocabulary lacks the byte token '{c}' (byte {CharToByte[c]}); a byte-level BPE needs all 256.", nameof(vocab));
        _ranks = new Dictionary<(string, string), int>(merges.Count);
        for (int i = 0; i < merges.Count; i++)
        {
            var (l, r) = merges[i];
            if (!_vocab.ContainsKey(l) || !_vocab.ContainsKey(r) || !_vocab.ContainsKey(l + r))
                throw new ArgumentException($"Merge {i} ('{l}' '{r}') refers to a token outside the vocabulary.", nameof(merges));
            _ranks.TryAdd((l, r), i);
        }
        Merges = merges.ToArray();
        if (_special.Count > 0)
            _specialSplitter = new Regex(string.Join('|', _special.Keys.OrderByDescending(k => k.Length).Select(Regex.Escape)), RegexOptions.CultureInvariant);
    }

    /// <summary>Number of ids (byte tokens, merged tokens and special tokens).</summary>
    public int VocabSize => _idToToken.Length;

    /// <summary>The merges in priority order.</summary>
    public IReadOnlyList<(string Left, string Right)> Merges { get; }

    /// <summary>Special tokens and their ids.</summary>
    public IReadOnlyDictionary<string, int> SpecialTokens => _special;

    /// <summary>The id of <see cref="EndOfText"/>, or −1 when the tokenizer has none.</summary>
    public int EndOfTextId => _special.TryGetValue(EndOfText, out int id) ? id : -1;

    /// <summary>The id of a special token.</summary>
    /// <exception cref="KeyNotFoundException">The tokenizer has no such special token.</exception>
    public int SpecialTokenId(string token) => _special.TryGetValue(token, out int id) ? id
        : throw new KeyNotFoundException($"The tokenizer has no special token '{token}'; it has: {string.Join(", ", _special.Keys)}.");

    /// <summary>The token string (in byte-level characters) of an id.</summary>
    public string IdToToken(int id) => (uint)id < (uint)_idToToken.Length ? _idToToken[id]
        : throw new ArgumentOutOfRangeException(nameof(id), id, $"Expected an id in [0, {_idToToken.Length}).");

    /// <summary>Encodes text. Special tokens written in the text become their ids when <paramref name="allowSpecial"/> is true (the default); otherwise they are encoded as ordinary text.</summary>
    public int[] Encode(string text, bool allowSpecial = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 4);
        if (allowSpecial && _specialSplitter is not null)
        {
            int at = 0;
            foreach (Match m in _specialSplitter.Matches(text))
            {
                EncodeOrdinary(text.AsSpan(at, m.Index - at), ids);
                ids.Add(_special[m.Value]);
                at = m.Index + m.Length;
            }
            EncodeOrdinary(text.AsSpan(at), ids);
        }
        else EncodeOrdinary(text, ids);
        return ids.ToArray();
    }

    /// <summary>Decodes ids to text (invalid UTF-8 from a partial sequence becomes U+FFFD, as in GPT-2).</summary>
    public string Decode(ReadOnlySpan<int> ids) => Encoding.UTF8.GetString(DecodeBytes(ids));

    /// <summary>Decodes ids to the raw bytes they stand for (special tokens as their UTF-8 content).</summary>
    public byte[] DecodeBytes(ReadOnlySpan<int> ids)
    {
        var bytes = new List<byte>(ids.Length * 4);
        foreach (int id in ids)
        {
            string tok = IdToToken(id);
            if (_special.ContainsKey(tok)) { bytes.AddRange(Encoding.UTF8.GetBytes(tok)); continue; }
            foreach (char c in tok) bytes.Add(CharToByte[c]);
        }
        return bytes.ToArray();
    }

    private void EncodeOrdinary(ReadOnlySpan<char> text, List<int> ids)
    {
        if (text.IsEmpty) return;
        foreach (var m in PreTokenizer().EnumerateMatches(text))
        {
            var piece = text.Slice(m.Index, m.Length).ToString();
            int[]? cached;
            lock (_cacheLock) _cache.TryGetValue(piece, out cached);
            if (cached is null)
            {
                cached = EncodePiece(piece);
                lock (_cacheLock)
                {
                    if (_cache.Count > 100_000) _cache.Clear();
                    _cache[piece] = cached;
                }
            }
            ids.AddRange(cached);
        }
    }

    private int[] EncodePiece(string piece)
    {
        var bytes = Encoding.UTF8.GetBytes(piece);
        var parts = new List<string>(bytes.Length);
        foreach (byte b in bytes) parts.Add(ByteToChar[b].ToString());
        while (parts.Count > 1)
        {
            int best = -1, bestRank = int.MaxValue;
            for (int i = 0; i + 1 < parts.Count; i++)
                if (_ranks.TryGetValue((parts[i], parts[i + 1]), out int r) && r < bestRank) { bestRank = r; best = i; }
            if (best < 0) break;
            var (l, rr) = (parts[best], parts[best + 1]);
            var merged = new List<string>(parts.Count);
            for (int i = 0; i < parts.Count; i++)
            {
                if (i + 1 < parts.Count && parts[i] == l && parts[i + 1] == rr) { merged.Add(l + rr); i++; }
                else merged.Add(parts[i]);
            }
            parts = merged;
        }
        var ids = new int[parts.Count];
        for (int i = 0; i < ids.Length; i++) ids[i] = _vocab[parts[i]];
        return ids;
    }

    /// <summary>
    /// Trains a byte-level BPE on a corpus: starting from the 256 byte tokens, repeatedly merges the most frequent
    /// adjacent pair within pre-tokenised pieces (ties broken by the pair's ordinal order, so training is
    /// deterministic) until <paramref name="vocabSize"/> ids exist, special tokens included.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The vocabulary size cannot hold the bytes and the special tokens.</exception>
    /// <exception cref="ArgumentException">The corpus is empty.</exception>
    public static BpeTokenizer Train(IEnumerable<string> corpus, int vocabSize, IReadOnlyList<string>? specialTokens = null,
        IProgress<double>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(corpus);
        specialTokens ??= [EndOfText];
        if (specialTokens.Distinct().Count() != specialTokens.Count || specialTokens.Any(string.IsNullOrEmpty))
            throw new ArgumentException("Special tokens must be non-empty and distinct.", nameof(specialTokens));
        if (vocabSize < 256 + specialTokens.Count)
            throw new ArgumentOutOfRangeException(nameof(vocabSize), vocabSize, $"Expected at least 256 byte tokens + {specialTokens.Count} special tokens = {256 + specialTokens.Count}.");

        // Count pre-tokenised pieces (special tokens are never part of a piece).
        var splitter = specialTokens.Count > 0
            ? new Regex(string.Join('|', specialTokens.OrderByDescending(s => s.Length).Select(Regex.Escape)), RegexOptions.CultureInvariant) : null;
        var counts = new Dictionary<string, long>(StringComparer.Ordinal);
        bool any = false;
        foreach (var doc in corpus)
        {
            if (string.IsNullOrEmpty(doc)) continue;
            foreach (var part in splitter is null ? [doc] : splitter.Split(doc))
                foreach (var m in PreTokenizer().EnumerateMatches(part))
                {
                    var piece = part.Substring(m.Index, m.Length);
                    counts[piece] = counts.GetValueOrDefault(piece) + 1;
                    any = true;
                }
        }
        if (!any) throw new ArgumentException("The corpus is empty: there is no text to train a tokenizer on.", nameof(corpus));

        // Words as symbol-id sequences; symbols are token strings interned to ints.
        var symbols = new List<string>(vocabSize);
        var symbolId = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int b = 0; b < 256; b++) { symbols.Add(ByteToChar[b].ToString()); symbolId[symbols[b]] = b; }
        var words = new List<int[]>(counts.Count);
        var freq = new List<long>(counts.Count);
        foreach (var (piece, c) in counts.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            var bytes = Encoding.UTF8.GetBytes(piece);
            words.Add(bytes.Select(b => (int)b).ToArray());
            freq.Add(c);
        }
        var pairCount = new Dictionary<(int, int), long>();
        var pairWords = new Dictionary<(int, int), HashSet<int>>();
        for (int w = 0; w < words.Count; w++) AddWord(w, +1);

        var merges = new List<(string, string)>();
        int target = vocabSize - specialTokens.Count;
        while (symbols.Count < target && pairCount.Count > 0)
        {
            (int, int) best = default;
            long bestCount = 0;
            foreach (var (pair, c) in pairCount)
            {
                if (c > bestCount || (c == bestCount && ComparePairs(pair, best) < 0)) { best = pair; bestCount = c; }
            }
            if (bestCount <= 0) break;
            string merged = symbols[best.Item1] + symbols[best.Item2];
            int newId = symbols.Count;
            symbols.Add(merged);
            symbolId[merged] = newId;
            merges.Add((symbols[best.Item1], symbols[best.Item2]));
            foreach (int w in pairWords[best].ToArray())
            {
                var word = words[w];
                AddWord(w, -1);
                var next = new List<int>(word.Length);
                for (int i = 0; i < word.Length; i++)
                {
                    if (i + 1 < word.Length && word[i] == best.Item1 && word[i + 1] == best.Item2) { next.Add(newId); i++; }
                    else next.Add(word[i]);
                }
                words[w] = next.ToArray();
                AddWord(w, +1);
            }
            progress?.Report((double)symbols.Count / target);
        }

        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < symbols.Count; i++) vocab[symbols[i]] = i;
        var special = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var s in specialTokens) special[s] = vocab.Count + special.Count;
        return new BpeTokenizer(vocab, merges, special);

        int ComparePairs((int, int) a, (int, int) b)
        {
            int c = string.CompareOrdinal(symbols[a.Item1], symbols[b.Item1]);
            return c != 0 ? c : string.CompareOrdinal(symbols[a.Item2], symbols[b.Item2]);
        }

        void AddWord(int w, int sign)
        {
            var word = words[w];
            for (int i = 0; i + 1 < word.Length; i++)
            {
                var p = (word[i], word[i + 1]);
                long c = pairCount.GetValueOrDefault(p) + sign * freq[w];
                if (c == 0) pairCount.Remove(p); else pairCount[p] = c;
                if (sign > 0)
                {
                    if (!pairWords.TryGetValue(p, out var set)) pairWords[p] = set = [];
                    set.Add(w);
                }
                else if (pairWords.TryGetValue(p, out var set))
                {
                    set.Remove(w);
                    if (set.Count == 0) pairWords.Remove(p);
                }
            }
        }
    }

    /// <summary>Writes the tokenizer in Hugging Face's <c>tokenizer.json</c> format (ByteLevel pre-tokenizer and decoder, BPE model), atomically.</summary>
    public void Save(string path) => AtomicFile.WriteAllText(path, ToJson());

    /// <summary>The Hugging Face <c>tokenizer.json</c> text.</summary>
    public string ToJson()
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            w.WriteString("version", "1.0");
            w.WriteNull("truncation");
            w.WriteNull("padding");
            w.WriteStartArray("added_tokens");
            foreach (var (tok, id) in _special.OrderBy(kv => kv.Value))
            {
                w.WriteStartObject();
                w.WriteNumber("id", id);
                w.WriteString("content", tok);
                w.WriteBoolean("single_word", false);
                w.WriteBoolean("lstrip", false);
                w.WriteBoolean("rstrip", false);
                w.WriteBoolean("normalized", false);
                w.WriteBoolean("special", true);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteNull("normalizer");
            w.WriteStartObject("pre_tokenizer");
            w.WriteString("type", "ByteLevel");
            w.WriteBoolean("add_prefix_space", false);
            w.WriteBoolean("trim_offsets", true);
            w.WriteBoolean("use_regex", true);
            w.WriteEndObject();
            w.WriteNull("post_processor");
            w.WriteStartObject("decoder");
            w.WriteString("type", "ByteLevel");
            w.WriteBoolean("add_prefix_space", true);
            w.WriteBoolean("trim_offsets", true);
            w.WriteBoolean("use_regex", true);
            w.WriteEndObject();
            w.WriteStartObject("model");
            w.WriteString("type", "BPE");
            w.WriteNull("dropout");
            w.WriteNull("unk_token");
            w.WriteString("continuing_subword_prefix", "");
            w.WriteString("end_of_word_suffix", "");
            w.WriteBoolean("fuse_unk", false);
            w.WriteBoolean("byte_fallback", false);
            w.WriteStartObject("vocab");
            foreach (var (tok, id) in _vocab.OrderBy(kv => kv.Value)) w.WriteNumber(tok, id);
            w.WriteEndObject();
            w.WriteStartArray("merges");
            foreach (var (l, r) in Merges) { w.WriteStartArray(); w.WriteStringValue(l); w.WriteStringValue(r); w.WriteEndArray(); }
            w.WriteEndArray();
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(ms.ToArray());
    }

    /// <summary>Loads a Hugging Face <c>tokenizer.json</c> with a byte-level BPE model (merges as <c>"a b"</c> strings or <c>["a","b"]</c> pairs).</summary>
    /// <exception cref="SpdfFormatException">The file is not valid JSON or not a byte-level BPE tokenizer; the message says where.</exception>
    public static BpeTokenizer Load(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        return FromJson(TextFiles.ReadUtf8(path), path);
    }

    /// <summary>Parses Hugging Face <c>tokenizer.json</c> text (see <see cref="Load"/>).</summary>
    public static BpeTokenizer FromJson(string json, string source = "tokenizer.json")
    {
        ArgumentNullException.ThrowIfNull(json);
        try
        {
            using var doc = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 16 });
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw Bad(source, "$", "expected a JSON object");
            if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
                throw Bad(source, "$.model", "missing the model object");
            if (model.TryGetProperty("type", out var type) && type.ValueKind == JsonValueKind.String && type.GetString() != "BPE")
                throw Bad(source, "$.model.type", $"expected \"BPE\", found \"{type.GetString()}\"");
            var vocab = ReadVocab(model.TryGetProperty("vocab", out var v) ? v : default, source, "$.model.vocab");
            if (!model.TryGetProperty("merges", out var mergesEl) || mergesEl.ValueKind != JsonValueKind.Array)
                throw Bad(source, "$.model.merges", "missing the merges array");
            var merges = new List<(string, string)>();
            int i = 0;
            foreach (var m in mergesEl.EnumerateArray())
            {
                string where = $"$.model.merges[{i++}]";
                if (m.ValueKind == JsonValueKind.String) merges.Add(SplitMerge(m.GetString()!, source, where));
                else if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2
                         && m[0].ValueKind == JsonValueKind.String && m[1].ValueKind == JsonValueKind.String)
                    merges.Add((m[0].GetString()!, m[1].GetString()!));
                else throw Bad(source, where, "expected \"a b\" or [\"a\", \"b\"]");
            }
            var special = new Dictionary<string, int>(StringComparer.Ordinal);
            if (root.TryGetProperty("added_tokens", out var added) && added.ValueKind == JsonValueKind.Array)
            {
                int k = 0;
                foreach (var t in added.EnumerateArray())
                {
                    string where = $"$.added_tokens[{k++}]";
                    if (t.ValueKind != JsonValueKind.Object || !t.TryGetProperty("id", out var idEl) || idEl.ValueKind != JsonValueKind.Number || !idEl.TryGetInt32(out int id)
                        || !t.TryGetProperty("content", out var c) || c.ValueKind != JsonValueKind.String || string.IsNullOrEmpty(c.GetString()))
                        throw Bad(source, where, "expected {\"id\": int, \"content\": non-empty string}");
                    special[c.GetString()!] = id;
                }
            }
            foreach (var (tok, id) in special)
                if (vocab.TryGetValue(tok, out int vid) && vid != id)
                    throw Bad(source, "$.added_tokens", $"'{tok}' has id {id} but the vocabulary gives it {vid}");
            return Build(vocab, merges, special, source);
        }
        catch (JsonException e)
        {
            throw new SpdfFormatException($"{source}: invalid JSON at line {e.LineNumber + 1}, byte {e.BytePositionInLine}: {e.Message}", e);
        }
    }

    /// <summary>Loads GPT-2's own <c>vocab.json</c> and <c>merges.txt</c> (with <c>&lt;|endoftext|&gt;</c> as the special token when the vocabulary has it).</summary>
    /// <exception cref="SpdfFormatException">A file is malformed; the message names the file and the line or entry.</exception>
    public static BpeTokenizer LoadGpt2(string vocabJsonPath, string mergesTxtPath)
    {
        ArgumentException.ThrowIfNullOrEmpty(vocabJsonPath);
        ArgumentException.ThrowIfNullOrEmpty(mergesTxtPath);
        Dictionary<string, int> vocab;
        try
        {
            using var doc = JsonDocument.Parse(TextFiles.ReadUtf8(vocabJsonPath), new JsonDocumentOptions { MaxDepth = 4 });
            vocab = ReadVocab(doc.RootElement, vocabJsonPath, "$");
        }
        catch (JsonException e)
        {
            throw new SpdfFormatException($"{vocabJsonPath}: invalid JSON at line {e.LineNumber + 1}, byte {e.BytePositionInLine}: {e.Message}", e);
        }
        var merges = new List<(string, string)>();
        var lines = TextFiles.ReadUtf8(mergesTxtPath).Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            var line = lines[i].TrimEnd('\r');
            if (line.Length == 0 || (i == 0 && line.StartsWith("#version", StringComparison.Ordinal))) continue;
            merges.Add(SplitMerge(line, mergesTxtPath, $"line {i + 1}"));
        }
        var special = new Dictionary<string, int>(StringComparer.Ordinal);
        if (vocab.TryGetValue(EndOfText, out int eot)) { special[EndOfText] = eot; vocab.Remove(EndOfText); }
        return Build(vocab, merges, special, vocabJsonPath);
    }

    private static BpeTokenizer Build(Dictionary<string, int> vocab, List<(string, string)> merges, Dictionary<string, int> special, string source)
    {
        foreach (var s in special.Keys) vocab.Remove(s);
        try { return new BpeTokenizer(vocab, merges, special); }
        catch (ArgumentException e) { throw new SpdfFormatException($"{source}: {e.Message}", e); }
    }

    private static Dictionary<string, int> ReadVocab(JsonElement el, string source, string where)
    {
        if (el.ValueKind != JsonValueKind.Object) throw Bad(source, where, "expected an object mapping tokens to ids");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in el.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetInt32(out int id) || id < 0)
                throw Bad(source, $"{where}[\"{p.Name}\"]", $"expected a non-negative integer id, found {p.Value.GetRawText()}");
            if (!vocab.TryAdd(p.Name, id)) throw Bad(source, $"{where}[\"{p.Name}\"]", "the token appears twice");
        }
        return vocab;
    }

    private static (string, string) SplitMerge(string s, string source, string where)
    {
        int sp = s.IndexOf(' ', StringComparison.Ordinal);
        if (sp <= 0 || sp == s.Length - 1 || s.IndexOf(' ', sp + 1) >= 0) throw Bad(source, where, $"expected two tokens separated by one space, found \"{s}\"");
        return (s[..sp], s[(sp + 1)..]);
    }

    private static SpdfFormatException Bad(string source, string where, string what) => new($"{source}: {where}: {what}.");

    private static char[] BuildByteToChar()
    {
        // GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the rest to U+0100 onwards.
        var map = new char[256];
        var direct = new bool[256];
        for (int b = '!'; b <= '~'; b++) direct[b] = true;
        for (int b = '¡'; b <= '¬'; b++) direct[b] = true;
        for (int b = '®'; b <= 'ÿ'; b++) direct[b] = true;
        int next = 0;
        for (int b = 0; b < 256; b++) map[b] = direct[b] ? (char)b : (char)(256 + next++);
        return map;
    }
}
