using System.Text;
using Spdf.Gpt.Data;
using Spdf.Gpt.Tokenization;
using Spdf.Gpt.Training;
using Spdf.Tensors;
using Spdf.Tensors.Serialization;
using Xunit.Abstractions;

namespace Spdf.Gpt.Tests;

/// <summary>
/// A seeded mutation fuzzer for every file reader: each case mutates a valid file (bit flips, interesting bytes,
/// truncation, insertions, deletions, duplicated ranges, huge numbers) and the reader must either load it or throw
/// <see cref="SpdfFormatException"/> — never another exception, a hang or a crash. 10,000 cases per reader by default;
/// set SPDF_FUZZ_CASES for more.
/// </summary>
public class FuzzTests(ITestOutputHelper output)
{
    private static readonly int Cases = int.TryParse(Environment.GetEnvironmentVariable("SPDF_FUZZ_CASES"), out int n) && n > 0 ? n : 10_000;

    private static readonly byte[] Interesting = "\0\xff\"{}[],:.-0123456789 \n\\eE"u8.ToArray().Concat(new byte[] { 0x80, 0xC3, 0xED, 0xF0, 0x7F }).ToArray();

    internal static byte[] Mutate(byte[] seed, Random r)
    {
        var b = new List<byte>(seed);
        int edits = 1 + r.Next(4);
        for (int e = 0; e < edits && b.Count > 0; e++)
        {
            int at = r.Next(b.Count);
            switch (r.Next(8))
            {
                case 0: b[at] ^= (byte)(1 << r.Next(8)); break;
                case 1: b[at] = Interesting[r.Next(Interesting.Length)]; break;
                case 2: b.RemoveRange(at, b.Count - at); break;
                case 3: b.InsertRange(at, Enumerable.Range(0, 1 + r.Next(8)).Select(_ => (byte)r.Next(256))); break;
                case 4: b.RemoveRange(at, Math.Min(b.Count - at, 1 + r.Next(16))); break;
                case 5: { int len = Math.Min(b.Count - at, 1 + r.Next(32)); b.InsertRange(r.Next(b.Count), b.GetRange(at, len)); break; }
                case 6: b.InsertRange(at, "99999999999999"u8.ToArray()); break;
                default: b.InsertRange(at, "-1"u8.ToArray()); break;
            }
        }
        return b.ToArray();
    }

    private void Run(string reader, byte[] seed, string fileName, Action<string> read, int seedValue)
    {
        var dir = Directory.CreateTempSubdirectory("spdf-fuzz").FullName;
        try
        {
            string path = Path.Combine(dir, fileName);
            var r = new Random(seedValue);
            int accepted = 0, rejected = 0;
            File.WriteAllBytes(path, seed);
            read(path); // the seed itself is valid
            for (int i = 0; i < Cases; i++)
            {
                var bytes = Mutate(seed, r);
                File.WriteAllBytes(path, bytes);
                try { read(path); accepted++; }
                catch (SpdfFormatException) { rejected++; }
                catch (Exception e)
                {
                    File.WriteAllBytes(Path.Combine(Path.GetTempPath(), $"spdf-fuzz-{reader}-{i}.bin"), bytes);
                    throw new Xunit.Sdk.XunitException($"{reader}: case {i} threw {e.GetType().Name} instead of SpdfFormatException: {e.Message} (input saved to the temp folder)");
                }
            }
            output.WriteLine($"fuzz {reader}: {Cases} mutated files, {accepted} loaded, {rejected} rejected with SpdfFormatException");
            (accepted + rejected).Should().Be(Cases);
            rejected.Should().BePositive();
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void SafeTensorsReader()
    {
        var g = new Generator(1);
        var seed = SafeTensors.Serialize([new("a.weight", Tensor.Randn(new Shape(3, 4), g)), new("b", Tensor.Randn(new Shape(5), g)), new("c", Tensor.Zeros(2, 1, 2))],
            new Dictionary<string, string> { ["k"] = "v" });
        Run("safetensors", seed, "x.safetensors", p => SafeTensors.Load(p), 11);
    }

    [Fact]
    public void TokenizerJsonReader()
    {
        var tok = BpeTokenizer.Train(TokenizerTests.Corpus, 290);
        Run("tokenizer.json", Encoding.UTF8.GetBytes(tok.ToJson()), "tokenizer.json", p => BpeTokenizer.Load(p).Encode("The Eagle 3 £"), 12);
    }

    [Fact]
    public void Gpt2VocabAndMergesReader()
    {
        var tok = BpeTokenizer.Train(TokenizerTests.Corpus, 290);
        var dir = Directory.CreateTempSubdirectory("spdf-gpt2").FullName;
        try
        {
            var vocab = Encoding.UTF8.GetBytes(System.Text.Json.JsonSerializer.Serialize(Enumerable.Range(0, tok.VocabSize).ToDictionary(tok.IdToToken, i => i)));
            var merges = Encoding.UTF8.GetBytes("#version: 0.2\n" + string.Join("\n", tok.Merges.Select(m => m.Left + " " + m.Right)) + "\n");
            string vocabPath = Path.Combine(dir, "vocab.json"), mergesPath = Path.Combine(dir, "merges.txt");
            File.WriteAllBytes(vocabPath, vocab);
            Run("gpt2-merges.txt", merges, "merges.txt", p => BpeTokenizer.LoadGpt2(vocabPath, p), 13);
            File.WriteAllBytes(mergesPath, merges);
            Run("gpt2-vocab.json", vocab, "vocab.json", p => BpeTokenizer.LoadGpt2(p, mergesPath), 14);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void E2ECsvReader()
    {
        var csv = "mr,ref\n\"name[The Eagle], eatType[coffee shop]\",\"The Eagle is a coffee shop, \"\"near\"\" the river.\"\n" +
                  "\"name[Mill], food[French]\",Mill serves French food.\n\"name[Mill], food[French]\",French food at Mill.\n";
        Run("e2e.csv", Encoding.UTF8.GetBytes(csv), "e2e.csv", p => E2EDataset.Load(p), 15);
    }

    [Fact]
    public void TokenFileReader()
    {
        var dir = Directory.CreateTempSubdirectory("spdf-tok").FullName;
        try
        {
            var seedPath = Path.Combine(dir, "seed.tokens");
            TokenFile.Write(seedPath, Enumerable.Range(0, 64).Select(i => i * 5 % 300).ToArray(), 300);
            var buf = new int[64];
            Run("token file", File.ReadAllBytes(seedPath), "x.tokens", p =>
            {
                using var s = TokenFile.Open(p);
                int n = (int)Math.Min(s.Length, buf.Length);
                s.Read(0, buf.AsSpan(0, n));
            }, 16);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void TrainerStateReader()
    {
        var cfg = new GptConfig(1, 16, 2, 8, 20);
        var dir = Directory.CreateTempSubdirectory("spdf-ckpt").FullName;
        try
        {
            var model = new GptModel(cfg, new Generator(1));
            var data = new WindowSampler(TokenStream.FromArray(Enumerable.Range(0, 200).Select(i => i % 20).ToArray(), 20), 2, 8, 1);
            var trainer = new Trainer(model, new TrainerOptions { CheckpointDirectory = dir });
            trainer.Run(new TrainingStage { Name = "pretrain", Data = data, Steps = 3, Validation = null });
            var ckpt = Trainer.LatestCheckpoint(dir)!;
            var seed = File.ReadAllBytes(Path.Combine(ckpt, "trainer.json"));
            var fuzzDir = Path.Combine(dir, "fuzz");
            Directory.CreateDirectory(fuzzDir);
            File.Copy(Path.Combine(ckpt, "model.safetensors"), Path.Combine(fuzzDir, "model.safetensors"));
            File.Copy(Path.Combine(ckpt, "optimizer.safetensors"), Path.Combine(fuzzDir, "optimizer.safetensors"));
            var fresh = new Trainer(new GptModel(cfg, new Generator(1)));
            Run("trainer.json", seed, "trainer.json", p =>
            {
                File.Copy(p, Path.Combine(fuzzDir, "trainer.json"), overwrite: true);
                fresh.Resume(fuzzDir);
            }, 17);
        }
        finally { Directory.Delete(dir, true); }
    }
}
