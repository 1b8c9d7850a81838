using System.Reflection;
using System.Runtime.Loader;
using System.Text.RegularExpressions;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Xunit.Abstractions;

namespace Spdf.Sparsity.TorchSharp.Tests;

[CollectionDefinition(nameof(DocumentationSnippetTests), DisableParallelization = true)]
public sealed class DocumentationSnippetCollection;

/// <summary>
/// Every C# block in README.md and docs/*.md compiles as pasted into a new console project that references the Spdf
/// packages (implicit usings, nullable on), and runs, unless an HTML comment <c>&lt;!-- snippet: compile-only (why) --&gt;</c>
/// on the line before the block says why it cannot (data files it reads). This test project references both engines,
/// so blocks for either compile here.
/// </summary>
[Collection(nameof(DocumentationSnippetTests))]
public partial class DocumentationSnippetTests(ITestOutputHelper output)
{
    public sealed record Snippet(string File, int Line, string Code, bool Runs)
    {
        public override string ToString() => $"{File}:{Line}";
    }

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Spdf.sln"))) return dir.FullName;
        throw new InvalidOperationException("Spdf.sln not found above " + AppContext.BaseDirectory);
    }

    [GeneratedRegex(@"^```(csharp|cs|c#)\s*$")] private static partial Regex Fence();
    [GeneratedRegex(@"^<!--\s*snippet:\s*compile-only\b")] private static partial Regex CompileOnly();

    public static IEnumerable<Snippet> All()
    {
        var root = RepoRoot();
        var files = new[] { Path.Combine(root, "README.md") }.Concat(Directory.GetFiles(Path.Combine(root, "docs"), "*.md").Order());
        foreach (var file in files)
        {
            var lines = File.ReadAllLines(file);
            for (int i = 0; i < lines.Length; i++)
            {
                if (!Fence().IsMatch(lines[i])) continue;
                int start = i + 1, end = start;
                while (end < lines.Length && !lines[end].StartsWith("```", StringComparison.Ordinal)) end++;
                int before = i - 1;
                while (before >= 0 && lines[before].Trim().Length == 0) before--;
                bool runs = before < 0 || !CompileOnly().IsMatch(lines[before].Trim());
                yield return new Snippet(Path.GetRelativePath(root, file), start + 1, string.Join('\n', lines[start..end]), runs);
                i = end;
            }
        }
    }

    public static TheoryData<string> Names()
    {
        var data = new TheoryData<string>();
        foreach (var s in All()) data.Add(s.ToString());
        return data;
    }

    [Fact]
    public void TheReadmeHasCodeToCheck() => All().Count(s => s.File == "README.md").Should().BeGreaterThanOrEqualTo(4);

    private static readonly string[] ImplicitUsings =
        ["System", "System.Collections.Generic", "System.IO", "System.Linq", "System.Net.Http", "System.Threading", "System.Threading.Tasks"];

    private static List<MetadataReference> References()
    {
        // The framework, then every managed assembly beside the tests (the Spdf libraries, TorchSharp, their dependencies).
        var byName = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var path in ((string)AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES")!).Split(Path.PathSeparator))
            byName[Path.GetFileNameWithoutExtension(path)] = path;
        foreach (var path in Directory.GetFiles(AppContext.BaseDirectory, "*.dll"))
            byName[Path.GetFileNameWithoutExtension(path)] = path;
        var refs = new List<MetadataReference>();
        foreach (var path in byName.Values)
        {
            try { AssemblyName.GetAssemblyName(path); } catch (BadImageFormatException) { continue; } // native
            refs.Add(MetadataReference.CreateFromFile(path));
        }
        return refs;
    }

    private static readonly Lazy<List<MetadataReference>> Refs = new(References);

    [Theory]
    [MemberData(nameof(Names))]
    public void CompilesAsPastedAndRuns(string name)
    {
        var snippet = All().Single(s => s.ToString() == name);
        var globalUsings = string.Join('\n', ImplicitUsings.Select(u => $"global using {u};"));
        var parse = new CSharpParseOptions(LanguageVersion.Latest);
        var compilation = CSharpCompilation.Create("Snippet_" + Guid.NewGuid().ToString("N"),
            [CSharpSyntaxTree.ParseText(globalUsings, parse), CSharpSyntaxTree.ParseText(snippet.Code, parse, path: name)],
            Refs.Value, new CSharpCompilationOptions(OutputKind.ConsoleApplication, nullableContextOptions: NullableContextOptions.Enable));
        using var pe = new MemoryStream();
        var result = compilation.Emit(pe);
        var errors = result.Diagnostics.Where(d => d.Severity == DiagnosticSeverity.Error).ToList();
        if (errors.Count > 0)
            throw new Xunit.Sdk.XunitException($"{name} does not compile as pasted:\n" + string.Join('\n', errors.Select(e =>
            {
                var at = e.Location.GetLineSpan().StartLinePosition;
                return $"  line {snippet.Line + at.Line}: {e.Id} {e.GetMessage()}";
            })));
        if (!snippet.Runs) { output.WriteLine($"{name}: compiled (compile-only)"); return; }
        pe.Position = 0;
        var context = new AssemblyLoadContext(name, isCollectible: true);
        var previous = Environment.CurrentDirectory;
        var dir = Directory.CreateTempSubdirectory("spdf-snippet-");
        var stdout = Console.Out;
        using var captured = new StringWriter();
        try
        {
            Environment.CurrentDirectory = dir.FullName; // files a snippet writes land in a scratch folder
            Console.SetOut(captured);
            var entry = context.LoadFromStream(pe).EntryPoint!;
            try { entry.Invoke(null, entry.GetParameters().Length == 0 ? null : [Array.Empty<string>()]); }
            catch (TargetInvocationException e) { throw new Xunit.Sdk.XunitException($"{name} threw when run: {e.InnerException}"); }
        }
        finally
        {
            Console.SetOut(stdout);
            Environment.CurrentDirectory = previous;
            context.Unload();
            dir.Delete(recursive: true);
        }
        output.WriteLine($"{name}: compiled and ran; it printed:\n{captured}");
    }
}
