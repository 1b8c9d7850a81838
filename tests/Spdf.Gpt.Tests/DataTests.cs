using Spdf.Gpt.Data;
using Spdf.Tensors.Serialization;

namespace Spdf.Gpt.Tests;

public class DataTests
{
    [Fact]
    public void TokenFilesRoundTripThroughAMemoryMap()
    {
        var path = Path.Combine(Path.GetTempPath(), $"tok-{Guid.NewGuid():N}.bin");
        try
        {
            var tokens = Enumerable.Range(0, 1000).Select(i => i * 7 % 500).ToArray();
            TokenFile.Write(path, tokens, 500);
            new FileInfo(path).Length.Should().Be(TokenFile.HeaderBytes + 2000, "16-bit ids for a vocabulary ≤ 65536");
            using var s = TokenFile.Open(path);
            s.Length.Should().Be(1000);
            s.VocabSize.Should().Be(500);
            var buf = new int[10];
            s.Read(990, buf);
            buf.Should().Equal(tokens[990..]);
            var (train, val) = s.Split(0.1);
            train.Length.Should().Be(900);
            val.Length.Should().Be(100);
            val.Read(0, buf);
            buf.Should().Equal(tokens[900..910]);
            FluentActions.Invoking(() => val.Read(95, buf)).Should().Throw<ArgumentOutOfRangeException>();
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void WideVocabulariesUse32BitIds()
    {
        var path = Path.Combine(Path.GetTempPath(), $"tok-{Guid.NewGuid():N}.bin");
        try
        {
            TokenFile.Write(path, [0, 70000, 99999], 100000);
            using var s = TokenFile.Open(path);
            var buf = new int[3];
            s.Read(0, buf);
            buf.Should().Equal(0, 70000, 99999);
        }
        finally { File.Delete(path); }
    }

    [Theory]
    [InlineData(0, "shorter than")]
    [InlineData(1, "magic")]
    [InlineData(2, "token width")]
    [InlineData(3, "header says")]
    public void CorruptTokenFilesAreRejected(int corruption, string expected)
    {
        var path = Path.Combine(Path.GetTempPath(), $"tok-{Guid.NewGuid():N}.bin");
        try
        {
            TokenFile.Write(path, [1, 2, 3], 10);
            var bytes = File.ReadAllBytes(path);
            bytes = corruption switch
            {
                0 => bytes[..20],
                1 => [(byte)'X', .. bytes[1..]],
                2 => [.. bytes[..8], 3, .. bytes[9..]],
                _ => bytes[..^2],
            };
            File.WriteAllBytes(path, bytes);
            FluentActions.Invoking(() => TokenFile.Open(path)).Should().Throw<SpdfFormatException>().WithMessage($"*{expected}*");
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void WindowsAreShiftedByOneAndTheSamplerResumes()
    {
        var tokens = Enumerable.Range(0, 200).ToArray();
        var s = TokenStream.FromArray(tokens, 200);
        var sampler = new WindowSampler(s, 4, 8, seed: 3);
        var (x, y) = sampler.Next();
        x.Shape.Should().Be(new Tensors.Shape(4, 8));
        for (int i = 0; i < 32; i++) y.Data[i].Should().Be(x.Data[i] + 1);
        var state = sampler.GetState();
        var (x2, _) = sampler.Next();
        sampler.SetState(state);
        sampler.Next().Inputs.Data.Should().Equal(x2.Data);
        FluentActions.Invoking(() => new WindowSampler(TokenStream.FromArray([1, 2], 5), 1, 8, 0)).Should().Throw<ArgumentException>().WithMessage("*2 tokens*");
        WindowSampler.Sequential(s, 3, 10).Sum(b => b.Inputs.Shape[0]).Should().Be(19);
    }

    [Fact]
    public void EachRankSamplesItsOwnShardOfTheStream()
    {
        var s = TokenStream.FromArray(Enumerable.Range(0, 303).ToArray(), 303);
        var seen = new List<HashSet<int>>();
        for (int r = 0; r < 3; r++)
        {
            var sampler = WindowSampler.ForRank(s, 4, 8, seed: 3, r, 3);
            var tokens = new HashSet<int>();
            for (int b = 0; b < 20; b++)
            {
                var (x, y) = sampler.Next();
                tokens.UnionWith(x.Data); tokens.UnionWith(y.Data);
            }
            tokens.Should().OnlyContain(t => t >= r * 101 && t < (r + 1) * 101, $"rank {r} reads only its shard [{r * 101}, {(r + 1) * 101})");
            seen.Add(tokens);
        }
        WindowSampler.ForRank(s, 4, 8, 3, 0, 1).Next().Inputs.Data.Should().Equal(new WindowSampler(s, 4, 8, 3).Next().Inputs.Data, "rank 0 of 1 is the plain sampler");
        FluentActions.Invoking(() => WindowSampler.ForRank(s, 4, 8, 3, 3, 3)).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*[0, 3)*");
        FluentActions.Invoking(() => WindowSampler.ForRank(TokenStream.FromArray(new int[20], 5), 1, 8, 0, 0, 4)).Should().Throw<ArgumentException>().WithMessage("*20 tokens*4 shards*36*");
    }

    private const string Csv = "mr,ref\n" +
        "\"name[The Eagle], eatType[coffee shop]\",\"The Eagle is a coffee shop.\"\n" +
        "\"name[The Eagle], eatType[coffee shop]\",\"A coffee shop, \"\"The Eagle\"\".\"\n" +
        "\"name[Mill], food[French]\",Mill serves French food.\r\n";

    [Fact]
    public void E2ECsvGroupsReferencesByMeaningRepresentation()
    {
        var ex = E2EDataset.Parse(Csv);
        ex.Should().HaveCount(2);
        ex[0].MeaningRepresentation.Should().Be("name[The Eagle], eatType[coffee shop]");
        ex[0].References.Should().Equal("The Eagle is a coffee shop.", "A coffee shop, \"The Eagle\".");
        ex[1].References.Should().Equal("Mill serves French food.");
        var path = Path.Combine(Path.GetTempPath(), $"e2e-{Guid.NewGuid():N}.csv");
        try
        {
            E2EDataset.Save(path, ex);
            E2EDataset.Load(path).Should().BeEquivalentTo(ex);
        }
        finally { File.Delete(path); }
    }

    [Theory]
    [InlineData("", "empty")]
    [InlineData("a,b\n1,2\n", "expected columns 'mr' and 'ref'")]
    [InlineData("mr,ref\n\"x,y\n", "line 2: a quoted field is not closed")]
    [InlineData("mr,ref\nx,y,z\n", "line 2: 3 fields")]
    [InlineData("mr,ref\n,y\n", "line 2: empty meaning")]
    [InlineData("mr,ref\nx\"y,z\n", "line 2: a quote inside an unquoted field")]
    [InlineData("mr,ref\n", "no data rows")]
    public void MalformedE2ECsvIsRejectedWithTheLine(string csv, string expected)
    {
        FluentActions.Invoking(() => E2EDataset.Parse(csv)).Should().Throw<SpdfFormatException>().WithMessage($"*{expected}*");
    }

    [Fact]
    public void E2EBatchesTakeTheLossOnTargetTokensOnly()
    {
        var tok = TokenizerTests.Trained();
        var ex = E2EDataset.Parse(Csv);
        var batcher = new E2EBatcher(tok, ex, batchSize: 3, contextLength: 64, seed: 1);
        batcher.Count.Should().Be(3);
        var (x, y) = batcher.Next();
        int t = x.Shape[1];
        for (int b = 0; b < 3; b++)
        {
            var row = x.Data.AsSpan(b * t, t).ToArray();
            var tgt = y.Data.AsSpan(b * t, t).ToArray();
            // Recover the sequence: targets are -100 on the prompt, then the reference and end-of-text, then padding.
            int first = Array.FindIndex(tgt, v => v != -100);
            int last = Array.FindLastIndex(tgt, v => v != -100);
            tgt[last].Should().Be(tok.EndOfTextId);
            tok.Decode(row.AsSpan(0, first + 1)).Should().EndWith(E2EDataset.PromptSeparator);
            var target = tok.Decode(tgt.AsSpan(first, last - first));
            ex.SelectMany(e => e.References).Should().Contain(target);
            for (int j = first; j < last; j++) tgt[j].Should().Be(row[j + 1]);
        }
        // Padded to the longest sequence rounded up to 16 tokens (1: exactly the longest).
        int longest = Enumerable.Range(0, 3).Max(b => Array.FindLastIndex(y.Data.AsSpan(b * t, t).ToArray(), v => v != -100) + 1);
        t.Should().Be((longest + 15) / 16 * 16);
        var exact = new E2EBatcher(tok, ex, batchSize: 3, contextLength: 64, seed: 1) { LengthMultiple = 1 };
        exact.Next().Inputs.Shape[1].Should().Be(longest);
        FluentActions.Invoking(() => new E2EBatcher(tok, ex, 1, 64, 0) { LengthMultiple = 0 }).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*positive*");
        var state = batcher.GetState();
        var next = batcher.Next();
        batcher.SetState(state);
        batcher.Next().Inputs.Data.Should().Equal(next.Inputs.Data);
        FluentActions.Invoking(() => new E2EBatcher(tok, ex, 1, 4, 0)).Should().Throw<ArgumentException>().WithMessage("*context of 4*");
    }
}
