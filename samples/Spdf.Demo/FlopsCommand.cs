using System.Globalization;
using System.Text.Json;
using Spdf.Gpt;
using Spdf.Sparsity.Flops;

/// <summary>
/// <c>flops --preset gpt3-xl --sparsity 0.75 [--ctx T] [--json]</c>: training FLOPs per token, dense vs sparse
/// (the SPDF paper's FLOP accounting), as JSON or a per-layer table.
/// </summary>
internal static class FlopsCommand
{
    public static int Run(string[] args)
    {
        string preset = "gpt3-xl";
        double sparsity = 0.75;
        int? ctx = null;
        bool json = false;
        for (int i = 0; i < args.Length; i++)
        {
            string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"Option {args[i]} needs a value.");
            switch (args[i])
            {
                case "--preset": preset = Value(); break;
                case "--sparsity":
                    string s = Value();
                    if (!double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out sparsity))
                        throw new ArgumentException($"--sparsity '{s}' is not a number; expected a value in [0, 1).");
                    break;
                case "--ctx":
                    string c = Value();
                    if (!int.TryParse(c, NumberStyles.Integer, CultureInfo.InvariantCulture, out int t) || t <= 0)
                        throw new ArgumentException($"--ctx '{c}' is not a positive integer.");
                    ctx = t;
                    break;
                case "--json": json = true; break;
                default: throw new ArgumentException($"Unknown option '{args[i]}' for flops; expected --preset, --sparsity, --ctx or --json.");
            }
        }
        var config = GptConfig.FromPreset(preset);
        var report = FlopCounter.ForTransformer(config.ToTransformerShape(ctx), sparsity);
        if (json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["preset"] = preset, ["sparsity"] = sparsity, ["ctx"] = ctx ?? config.ContextLength,
                ["train_flops_per_token_dense"] = report.TrainPerTokenDense, ["train_flops_per_token_sparse"] = report.TrainPerTokenSparse,
                ["reduction"] = Math.Round(report.Reduction, 4),
            }));
        }
        else
        {
            Console.WriteLine($"{preset} (L={config.Layers}, C={config.EmbeddingSize}, T={ctx ?? config.ContextLength}, V={config.VocabSize}) at {sparsity:P0} sparsity");
            Console.Write(report);
        }
        return 0;
    }
}
