using System.Text.RegularExpressions;
using Spdf.Sparsity.Masks;

namespace Spdf.Sparsity;

/// <summary>
/// One rule of a <see cref="SparsityConfig"/>: weights whose parameter name matches <see cref="Pattern"/> get
/// <see cref="Sparsity"/> with masks from <see cref="Initializer"/>. A pattern is a glob (<c>*</c> matches any run of
/// characters, dots included; <c>?</c> one character) or, prefixed with <c>re:</c>, a .NET regular expression that must
/// match the whole name.
/// </summary>
public sealed record SparsityGroup
{
    /// <summary>Creates a rule.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The sparsity is outside [0, 1).</exception>
    /// <exception cref="ArgumentException">The pattern is empty or an invalid regular expression.</exception>
    public SparsityGroup(string pattern, double sparsity, IMaskInitializer? initializer = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(pattern);
        SparsityGuard.Sparsity(sparsity, nameof(sparsity));
        Pattern = pattern;
        Sparsity = sparsity;
        Initializer = initializer ?? MaskInitializers.Random;
        try
        {
            _regex = new Regex(pattern.StartsWith("re:", StringComparison.Ordinal)
                ? "^(?:" + pattern[3..] + ")$"
                : "^" + Regex.Escape(pattern).Replace("\\*", ".*").Replace("\\?", ".") + "$", RegexOptions.CultureInvariant);
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"Sparsity pattern '{pattern}' is not a valid regular expression: {e.Message}", nameof(pattern), e);
        }
    }

    private readonly Regex _regex;

    /// <summary>The glob or <c>re:</c> pattern over parameter names (e.g. <c>h.*.mlp.c_fc.weight</c>).</summary>
    public string Pattern { get; }

    /// <summary>Fraction of the matching weights held at zero.</summary>
    public double Sparsity { get; }

    /// <summary>How masks are drawn.</summary>
    public IMaskInitializer Initializer { get; }

    /// <summary>Whether the rule selects the parameter <paramref name="name"/>.</summary>
    public bool Matches(string name) => _regex.IsMatch(name);
}

/// <summary>
/// Which weights of a model are sparse and how: an ordered list of <see cref="SparsityGroup"/>s; the first group that
/// matches a parameter name wins. Only 2-D weights of linear layers are eligible (each engine binding says which modules are).
/// </summary>
public sealed class SparsityConfig
{
    /// <summary>Creates a config from groups, with the seed for random masks.</summary>
    /// <exception cref="ArgumentException">There are no groups.</exception>
    public SparsityConfig(IEnumerable<SparsityGroup> groups, ulong seed = 0, ISparsityDistribution? distribution = null, bool requireEveryGroupToMatch = true)
    {
        ArgumentNullException.ThrowIfNull(groups);
        Groups = groups.ToList();
        if (Groups.Count == 0) throw new ArgumentException("A sparsity config needs at least one group.", nameof(groups));
        Seed = seed;
        Distribution = distribution;
        RequireEveryGroupToMatch = requireEveryGroupToMatch;
    }

    /// <summary>
    /// The default: every <c>Linear</c> weight at <paramref name="sparsity"/> with uniform random masks, except layers named
    /// <c>lm_head</c> (the output head stays dense). Embeddings and norms are not <c>Linear</c>s and are never selected.
    /// For the GPT this is Q/K/V (<c>c_attn</c>), the attention output projection and both MLP matrices — the paper's choice.
    /// </summary>
    public static SparsityConfig Default(double sparsity, ulong seed = 0, IMaskInitializer? initializer = null) =>
        new([new SparsityGroup("re:(?!(.*\\.)?lm_head\\.).*weight", sparsity, initializer)], seed);

    /// <summary>The same rule for every matching layer, but per-layer sparsities chosen by <paramref name="distribution"/> for a global target.</summary>
    public static SparsityConfig Distributed(double globalSparsity, ISparsityDistribution distribution, ulong seed = 0, IMaskInitializer? initializer = null) =>
        new([new SparsityGroup("re:(?!(.*\\.)?lm_head\\.).*weight", globalSparsity, initializer)], seed, distribution);

    /// <summary>The rules, first match wins.</summary>
    public IReadOnlyList<SparsityGroup> Groups { get; }

    /// <summary>Seed of the generator that draws random masks (layer by layer, in name order).</summary>
    public ulong Seed { get; }

    /// <summary>When set, the per-layer sparsities come from this distribution of each group's sparsity as a global target.</summary>
    public ISparsityDistribution? Distribution { get; }

    /// <summary>
    /// How masks change during training (gradual magnitude pruning, SET, RigL), or null for static masks (SPDF). The
    /// <see cref="SparsityController"/> calls it after every optimizer step of sparse pre-training.
    /// </summary>
    public Algorithms.ISparsityAlgorithm? Algorithm { get; init; }

    /// <summary>
    /// Where the sparse layers keep their weights: <see cref="SparseWeightStorage.Dense"/> (default; masks may change) or
    /// <see cref="SparseWeightStorage.Compressed"/> (only kept weights, their gradients and optimizer moments: training
    /// memory falls with density; static masks only, so not with an <see cref="Algorithm"/>).
    /// </summary>
    public SparseWeightStorage Storage { get; init; } = SparseWeightStorage.Dense;

    /// <summary>
    /// Which kernel the sparse layers use (<see cref="SparseKernelMode.Auto"/> by default: timed at first use).
    /// <see cref="SparseKernelMode.Heuristic"/> chooses without timing, so that runs with the same seed repeat bit for
    /// bit also where masks change during training.
    /// </summary>
    public SparseKernelMode KernelMode { get; init; } = SparseKernelMode.Auto;

    /// <summary>When true (default), a group that matches no weight is an error: a typo in a pattern is caught early.</summary>
    public bool RequireEveryGroupToMatch { get; }

    /// <summary>
    /// Which of a model's linear layers this config makes sparse, and how sparse: each layer's weight name
    /// (<c>{module}.weight</c>) takes the first group that matches it, and with a <see cref="Distribution"/> each group's
    /// sparsity is spread over its layers by their shapes. Each engine binding lists its model's linear layers in model
    /// order (the order random masks are drawn in) and draws the masks of the selected ones.
    /// </summary>
    /// <param name="layers">The model's linear layers: module name, weight rows (out) and columns (in).</param>
    /// <returns>The selected layers, in the given order, as indices into <paramref name="layers"/>.</returns>
    /// <exception cref="ArgumentException">A group matches no layer (when <see cref="RequireEveryGroupToMatch"/>).</exception>
    public IReadOnlyList<SelectedLayer> Select(IReadOnlyList<(string Name, int Rows, int Cols)> layers)
    {
        ArgumentNullException.ThrowIfNull(layers);
        static string WeightName(string module) => module.Length == 0 ? "weight" : module + ".weight";
        var chosen = new List<(int Index, SparsityGroup Group)>();
        for (int i = 0; i < layers.Count; i++)
            if (Groups.FirstOrDefault(g => g.Matches(WeightName(layers[i].Name))) is { } group) chosen.Add((i, group));
        if (RequireEveryGroupToMatch)
        {
            var unused = Groups.Where(g => chosen.All(c => c.Group != g)).ToList();
            if (unused.Count > 0)
            {
                var names = layers.Select(l => WeightName(l.Name)).Take(12);
                throw new ArgumentException(
                    $"Sparsity pattern(s) {string.Join(", ", unused.Select(g => $"'{g.Pattern}'"))} match no Linear weight; the model's Linear weights are {(layers.Count == 0 ? "none" : string.Join(", ", names))}{(layers.Count > 12 ? ", …" : "")}.",
                    "config");
            }
        }
        var sparsities = chosen.Select(c => c.Group.Sparsity).ToArray();
        if (Distribution is { } dist)
        {
            foreach (var grp in chosen.Select(c => c.Group).Distinct())
            {
                var idx = Enumerable.Range(0, chosen.Count).Where(i => chosen[i].Group == grp).ToList();
                var per = dist.Distribute(idx.Select(i => (layers[chosen[i].Index].Rows, layers[chosen[i].Index].Cols)).ToList(), grp.Sparsity);
                for (int j = 0; j < idx.Count; j++) sparsities[idx[j]] = per[j];
            }
        }
        return chosen.Select((c, i) => new SelectedLayer(c.Index, c.Group, sparsities[i])).ToList();
    }
}

/// <summary>A layer <see cref="SparsityConfig.Select"/> chose.</summary>
/// <param name="Index">Its index in the list the binding gave.</param>
/// <param name="Group">The group that matched its weight's name.</param>
/// <param name="Sparsity">Its sparsity: the group's, or the distribution's share of it.</param>
public readonly record struct SelectedLayer(int Index, SparsityGroup Group, double Sparsity);
