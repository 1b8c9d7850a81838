using System.Text;
using Spdf.Gpt.Tokenization;
using Spdf.Tensors.Serialization;

namespace Spdf.Gpt.Tests;

public class TokenizerTests
{
    internal static readonly string[] Corpus =
    [
        "The Eagle is a coffee shop that serves French food.",
        "The Eagle serves French food in the city centre. It is a coffee shop.",
        "There is a cheap restaurant called The Mill near the river.",
        "The Mill is a cheap restaurant near the river, and it is family friendly.",
        "Prices are moderate; customers rate it 3 out of 5.",
    ];

    internal static BpeTokenizer Trained(int vocab = 320) => BpeTokenizer.Train(Enumerable.Repeat(Corpus, 4).SelectMany(c => c), vocab);

    [Fact]
    public void TrainingReachesTheRequestedVocabularyAndIsDeterministic()
    {
        var a = Trained();
        var b = Trained();
        a.VocabSize.Should().Be(320);
        a.Merges.Should().Equal(b.Merges);
        a.SpecialTokens.Should().ContainKey(BpeTokenizer.EndOfText).WhoseValue.Should().Be(319);
        // Common words become single tokens.
        a.Encode(" the").Should().HaveCount(1);
        a.Encode("The Eagle").Length.Should().BeLessThan("The Eagle".Length);
    }

    [Fact]
    public void FirstMergeIsTheMostFrequentPair()
    {
        var t = BpeTokenizer.Train(["ab ab ab cd cd xy"], 258, []);
        t.Merges[0].Should().Be(("a", "b"));
        // Then three pairs tie at 2 ("Ġ ab", "Ġ c", "c d"): the ordinal order picks "c d" ('c' < 'Ġ').
        t.Merges[1].Should().Be(("c", "d"));
    }

    [Theory]
    [InlineData("")]
    [InlineData("hello world")]
    [InlineData("  leading and trailing spaces  \n\n\ttabs")]
    [InlineData("Ünïcödé — “quotes” 日本語のテキスト 🎉👍🏽 emoji")]
    [InlineData("control \u0001\u0002 chars and \r\n newlines")]
    [InlineData("numbers 12345 3.14 and punctuation!?;:'s 're")]
    public void EncodeDecodeRoundTripsAnyText(string text)
    {
        var t = Trained();
        t.Decode(t.Encode(text)).Should().Be(text);
    }

    [Fact]
    public void RandomUtf8RoundTrips()
    {
        var t = Trained();
        var rng = new Random(5);
        for (int i = 0; i < 200; i++)
        {
            var sb = new StringBuilder();
            int n = rng.Next(0, 40);
            for (int j = 0; j < n; j++)
            {
                int cp = rng.Next(4) switch { 0 => rng.Next(0x20, 0x7F), 1 => rng.Next(0xA0, 0x800), 2 => rng.Next(0x3000, 0xD7FF), _ => rng.Next(0x10000, 0x1FFFF) };
                sb.Append(char.ConvertFromUtf32(cp));
            }
            var s = sb.ToString();
            t.Decode(t.Encode(s)).Should().Be(s);
        }
    }

    [Fact]
    public void ByteTokensFollowGpt2sTable()
    {
        var t = Trained();
        t.IdToToken(' ').Should().Be("Ġ");
        t.IdToToken('\n').Should().Be("Ċ");
        t.IdToToken('A').Should().Be("A");
        var untrained = BpeTokenizer.Train(["x"], 257);
        untrained.Encode("Hi!").Should().Equal('H', 'i', '!');
    }

    [Fact]
    public void SpecialTokensAreMatchedOnlyWhenAllowed()
    {
        var t = Trained();
        int eot = t.EndOfTextId;
        t.Encode("a<|endoftext|>b").Should().Contain(eot);
        t.Encode("a<|endoftext|>b", allowSpecial: false).Should().NotContain(eot);
        t.Decode(t.Encode("a<|endoftext|>b")).Should().Be("a<|endoftext|>b");
    }

    [Fact]
    public void SaveAndLoadTokenizerJsonRoundTrips()
    {
        var t = Trained();
        var path = Path.Combine(Path.GetTempPath(), $"tok-{Guid.NewGuid():N}.json");
        try
        {
            t.Save(path);
            var u = BpeTokenizer.Load(path);
            u.VocabSize.Should().Be(t.VocabSize);
            u.Merges.Should().Equal(t.Merges);
            foreach (var s in Corpus) u.Encode(s).Should().Equal(t.Encode(s));
            var json = File.ReadAllText(path);
            json.Should().Contain("\"type\": \"BPE\"").And.Contain("\"type\": \"ByteLevel\"").And.Contain("<|endoftext|>");
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void LoadsMergesWrittenAsStrings()
    {
        var t = Trained();
        var json = t.ToJson();
        // Older tokenizer.json files write merges as "a b" strings.
        var node = System.Text.Json.Nodes.JsonNode.Parse(json)!;
        var merges = new System.Text.Json.Nodes.JsonArray(t.Merges.Select(m => (System.Text.Json.Nodes.JsonNode)(m.Left + " " + m.Right)).ToArray());
        node["model"]!["merges"] = merges;
        var u = BpeTokenizer.FromJson(node.ToJsonString());
        u.Encode(Corpus[2]).Should().Equal(t.Encode(Corpus[2]));
    }

    [Fact]
    public void LoadsGpt2VocabAndMergesFiles()
    {
        var t = Trained();
        var dir = Directory.CreateTempSubdirectory("gpt2tok").FullName;
        try
        {
            var vocab = Enumerable.Range(0, t.VocabSize).ToDictionary(t.IdToToken, i => i);
            File.WriteAllText(Path.Combine(dir, "vocab.json"), System.Text.Json.JsonSerializer.Serialize(vocab));
            File.WriteAllLines(Path.Combine(dir, "merges.txt"), ["#version: 0.2", .. t.Merges.Select(m => m.Left + " " + m.Right)]);
            var u = BpeTokenizer.LoadGpt2(Path.Combine(dir, "vocab.json"), Path.Combine(dir, "merges.txt"));
            u.EndOfTextId.Should().Be(t.EndOfTextId);
            foreach (var s in Corpus) u.Encode(s).Should().Equal(t.Encode(s));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Theory]
    [InlineData("{", "invalid JSON")]
    [InlineData("[]", "expected a JSON object")]
    [InlineData("{\"model\":{\"type\":\"WordPiece\"}}", "$.model.type")]
    [InlineData("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1},\"merges\":[]}}", "non-negative integer id")]
    [InlineData("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}", "lacks the byte token")]
    [InlineData("{\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[\"abc\"]}}", "$.model.merges[0]")]
    public void MalformedTokenizerJsonIsRejectedWithItsLocation(string json, string expected)
    {
        var act = () => BpeTokenizer.FromJson(json);
        act.Should().Throw<SpdfFormatException>().WithMessage($"*{expected}*");
    }

    [Fact]
    public void BadTrainingInputIsRejected()
    {
        FluentActions.Invoking(() => BpeTokenizer.Train(["", "  "], 300)).Should().NotThrow("whitespace is text");
        FluentActions.Invoking(() => BpeTokenizer.Train(["", ""], 300)).Should().Throw<ArgumentException>().WithMessage("*corpus is empty*");
        FluentActions.Invoking(() => BpeTokenizer.Train(["abc"], 100)).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*at least 256*");
    }
}
