using System.Text;
using System.Text.RegularExpressions;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;

namespace Spdf.Sparsity.TorchSharp.Tests;

/// <summary>
/// docs/errors.md quotes example messages; each must be one the code can print: it must match (as a whole, or up to a
/// trailing "…" that marks where the quote stops) a message template of the libraries' source, read with Roslyn: a string
/// literal, an interpolated string (its holes match anything) or a concatenation of them.
/// </summary>
public partial class ErrorCatalogueTests
{
    private static string Root()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Spdf.sln"))) return dir.FullName;
        throw new InvalidOperationException("Spdf.sln not found above " + AppContext.BaseDirectory);
    }

    [GeneratedRegex(@"`\w*Exception`:\s*(?<msg>.+?)\s*$")] private static partial Regex Quoted();

    /// <summary>The example messages of docs/errors.md's tables (the exception column), by line.</summary>
    public static TheoryData<int, string> Messages()
    {
        var data = new TheoryData<int, string>();
        var lines = File.ReadAllLines(Path.Combine(Root(), "docs", "errors.md"));
        for (int i = 0; i < lines.Length; i++)
        {
            if (!lines[i].StartsWith('|')) continue;
            var cells = lines[i].Split('|');
            if (cells.Length < 5) continue;
            var m = Quoted().Match(cells[3]);
            if (m.Success) data.Add(i + 1, m.Groups["msg"].Value);
        }
        return data;
    }

    /// <summary>A template as pieces: literal text, or null for a hole.</summary>
    private static List<List<string?>> Templates()
    {
        var templates = new List<List<string?>>();
        foreach (var file in Directory.GetFiles(Path.Combine(Root(), "src"), "*.cs", SearchOption.AllDirectories))
        {
            if (file.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}") || file.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}")) continue;
            var tree = CSharpSyntaxTree.ParseText(File.ReadAllText(file));
            foreach (var node in tree.GetRoot().DescendantNodes())
            {
                // The outermost string expression: a literal, an interpolation or a + chain of them.
                if (node is not (LiteralExpressionSyntax or InterpolatedStringExpressionSyntax or BinaryExpressionSyntax)) continue;
                if (node is LiteralExpressionSyntax lit && !lit.IsKind(SyntaxKind.StringLiteralExpression)) continue;
                if (node.Parent is BinaryExpressionSyntax { RawKind: (int)SyntaxKind.AddExpression }) continue;
                if (node is BinaryExpressionSyntax b && (!b.IsKind(SyntaxKind.AddExpression) || !HasString(b))) continue;
                var pieces = new List<string?>();
                Flatten((ExpressionSyntax)node, pieces);
                if (pieces.Any(p => p is { Length: > 3 })) templates.Add(pieces);
            }
        }
        return templates;
    }

    private static bool HasString(ExpressionSyntax e) => e switch
    {
        LiteralExpressionSyntax l => l.IsKind(SyntaxKind.StringLiteralExpression),
        InterpolatedStringExpressionSyntax => true,
        BinaryExpressionSyntax b => HasString(b.Left) || HasString(b.Right),
        ParenthesizedExpressionSyntax p => HasString(p.Expression),
        _ => false,
    };

    private static void Flatten(ExpressionSyntax e, List<string?> pieces)
    {
        switch (e)
        {
            case LiteralExpressionSyntax l when l.IsKind(SyntaxKind.StringLiteralExpression): pieces.Add(l.Token.ValueText); break;
            case InterpolatedStringExpressionSyntax s:
                foreach (var c in s.Contents) pieces.Add(c is InterpolatedStringTextSyntax t ? t.TextToken.ValueText : null);
                break;
            case BinaryExpressionSyntax b when b.IsKind(SyntaxKind.AddExpression): Flatten(b.Left, pieces); Flatten(b.Right, pieces); break;
            case ParenthesizedExpressionSyntax p when HasString(p.Expression): Flatten(p.Expression, pieces); break;
            default: pieces.Add(null); break;
        }
    }

    private static readonly Lazy<List<Regex>> Patterns = new(() => Templates().Select(Pattern).ToList());

    /// <summary>Matches the whole message, or any prefix of it (for quotes that stop at "…").</summary>
    private static Regex Pattern(List<string?> pieces)
    {
        var full = new StringBuilder();
        var prefixes = new List<string>();
        foreach (var p in pieces)
        {
            if (p is null) { prefixes.Add(full + ".*"); full.Append(".*?"); continue; }
            // full + any prefix of this literal
            var nested = new StringBuilder();
            for (int i = p.Length - 1; i >= 0; i--) nested.Insert(0, "(?:" + Regex.Escape(p[i].ToString())).Append(")?");
            prefixes.Add(full + nested.ToString());
            full.Append(Regex.Escape(p));
        }
        return new Regex("^(?:" + full + "$|(?<prefix>" + string.Join("|", prefixes) + ")$)", RegexOptions.Singleline);
    }

    [Fact]
    public void TheCatalogueHasMessagesToCheck() => Messages().Count().Should().BeGreaterThan(20);

    [Theory]
    [MemberData(nameof(Messages))]
    public void EachQuotedMessageIsOneTheCodePrints(int line, string message)
    {
        bool truncated = message.EndsWith('…');
        var text = truncated ? message[..^1].TrimEnd() : message;
        bool found = Patterns.Value.Any(r => r.Match(text) is { Success: true } m && (truncated || !m.Groups["prefix"].Success));
        found.Should().BeTrue($"docs/errors.md:{line} quotes \"{message}\", which no message template in src/ produces{(truncated ? " (even as a prefix)" : "")}");
    }
}
