using System.Text;
using Spdf.Gpt.Data;
using Spdf.Tensors;

namespace Spdf.Demo;

/// <summary>
/// The demo's built-in data, made by a seeded generator so that nothing is downloaded: restaurant meaning
/// representations in the E2E challenge's attribute set (name, eatType, food, priceRange, customer rating, area,
/// familyFriendly, near) and a grammar that realises them with paraphrases, varied word orders, aggregation into one
/// to three sentences and several openings. The pre-training corpus is restaurant descriptions and short reviews;
/// the fine-tuning task is MR → sentence with several references per MR.
/// </summary>
public sealed class RestaurantData
{
    private static readonly string[] Names =
    [
        "The Eagle", "The Mill", "Alimentum", "Aromi", "Bibimbap House", "Blue Spice", "Browns Cambridge", "Clowns", "Cocum",
        "Cotto", "Fitzbillies", "Giraffe", "Green Man", "Loch Fyne", "Midsummer House", "Strada", "Taste of Cambridge",
        "The Cambridge Blue", "The Cricketers", "The Dumpling Tree", "The Golden Curry", "The Golden Palace", "The Olive Grove",
        "The Phoenix", "The Plough", "The Punter", "The Rice Boat", "The Twenty Two", "The Vaults", "The Waterman", "Wildwood", "Zizzi",
    ];
    private static readonly string[] Landmarks =
    [
        "Burger King", "Café Rouge", "Crowne Plaza Hotel", "Express by Holiday Inn", "Rainbow Vegetarian Café", "Raja Indian Cuisine",
        "The Bakers", "The Portland Arms", "The Sorrento", "Yippee Noodle Bar", "All Bar One", "Avalon", "Café Adriatic",
        "Café Brazil", "Café Sicilia", "Clare Hall", "Ranch", "The Six Bells",
    ];
    private static readonly string[] EatTypes = ["restaurant", "coffee shop", "pub"];
    private static readonly string[] Foods = ["French", "Italian", "Chinese", "English", "Indian", "Japanese", "Fast food"];
    private static readonly string[] Prices = ["cheap", "moderate", "high", "less than £20", "£20-25", "more than £30"];
    private static readonly string[] Ratings = ["low", "average", "high", "1 out of 5", "3 out of 5", "5 out of 5"];
    private static readonly string[] Areas = ["city centre", "riverside"];

    private readonly Generator _g;

    /// <summary>Creates a generator.</summary>
    public RestaurantData(ulong seed) => _g = new Generator(seed);

    private T Pick<T>(IReadOnlyList<T> xs) => xs[_g.NextInt(xs.Count)];
    private bool Coin(double p) => _g.NextDouble() < p;

    /// <summary>A random meaning representation (name always; at least three attributes).</summary>
    public Dictionary<string, string> RandomMr()
    {
        while (true)
        {
            var mr = new Dictionary<string, string> { ["name"] = Pick(Names) };
            if (Coin(0.8)) mr["eatType"] = Pick(EatTypes);
            if (Coin(0.6)) mr["food"] = Pick(Foods);
            if (Coin(0.5)) mr["priceRange"] = Pick(Prices);
            if (Coin(0.5)) mr["customer rating"] = Pick(Ratings);
            if (Coin(0.55)) mr["area"] = Pick(Areas);
            if (Coin(0.5)) mr["familyFriendly"] = Coin(0.5) ? "yes" : "no";
            if (Coin(0.45)) mr["near"] = Pick(Landmarks);
            if (mr.Count >= 3) return mr;
        }
    }

    /// <summary>The E2E string of an MR, attributes in the challenge's order.</summary>
    public static string Format(Dictionary<string, string> mr)
    {
        string[] order = ["name", "eatType", "food", "priceRange", "customer rating", "area", "familyFriendly", "near"];
        return string.Join(", ", order.Where(mr.ContainsKey).Select(k => $"{k}[{mr[k]}]"));
    }

    private string Fragment(string key, string v, bool foodInType) => key switch
    {
        "eatType" => foodInType && v != "pub" ? "" : Pick(new[] { $"is a {v}", $"is a {v}", $"is a nice {v}" }),
        "food" => foodInType ? "" : v == "Fast food"
            ? Pick(new[] { "serves fast food", "offers fast food", "sells fast food" })
            : Pick(new[] { $"serves {v} food", $"offers {v} cuisine", $"provides {v} food", $"specialises in {v} food", $"serves {v} dishes" }),
        "priceRange" => v switch
        {
            "cheap" or "moderate" or "high" => Pick(new[] { $"has a {v} price range", $"is in the {v} price range", $"has {v} prices", v == "cheap" ? "is cheap" : v == "high" ? "is expensive" : "is moderately priced" }),
            _ => Pick(new[] { $"has a price range of {v}", $"has prices of {v}", $"costs {v} per person" }),
        },
        "customer rating" => v.Contains("out of", StringComparison.Ordinal)
            ? Pick(new[] { $"has a customer rating of {v}", $"is rated {v} by customers", $"has a rating of {v}" })
            : Pick(new[] { $"has a {v} customer rating", $"is rated {v} by customers", $"has a {v} rating" }),
        "area" => v == "riverside"
            ? Pick(new[] { "is located by the riverside", "is in the riverside area", "can be found by the river", "is on the riverside" })
            : Pick(new[] { "is located in the city centre", "is in the city centre", "can be found in the centre of the city", "is in the centre of town" }),
        "familyFriendly" => v == "yes"
            ? Pick(new[] { "is family friendly", "is kid friendly", "welcomes families", "is child friendly" })
            : Pick(new[] { "is not family friendly", "is not kid friendly", "does not welcome children", "is for adults only" }),
        "near" => Pick(new[] { $"is near {v}", $"is located near {v}", $"is close to {v}", $"can be found near {v}" }),
        _ => "",
    };

    private static string JoinAnd(IReadOnlyList<string> parts) => parts.Count switch
    {
        0 => "",
        1 => parts[0],
        _ => string.Join(", ", parts.Take(parts.Count - 1)) + " and " + parts[^1],
    };

    /// <summary>One realisation of an MR: one to three sentences in a random order and style.</summary>
    public string Realise(Dictionary<string, string> mr)
    {
        string name = mr["name"];
        bool foodInType = mr.ContainsKey("food") && mr.ContainsKey("eatType") && mr["eatType"] != "pub" && Coin(0.5);
        var keys = mr.Keys.Where(k => k != "name").ToList();
        for (int i = keys.Count - 1; i > 0; i--) { int j = _g.NextInt(i + 1); (keys[i], keys[j]) = (keys[j], keys[i]); }
        var frags = new List<string>();
        string opening = "";
        int style = _g.NextInt(4);
        string kind = mr.TryGetValue("eatType", out var et) ? et : "place";
        string food = mr.TryGetValue("food", out var f) ? (f == "Fast food" ? "fast food" : f) + " " : "";
        if (style == 1 && mr.ContainsKey("eatType"))
        {
            opening = $"There is a {(foodInType ? food : "")}{kind} called {name} that ";
            keys.Remove("eatType");
            if (foodInType) keys.Remove("food");
        }
        else if (style == 2 && mr.TryGetValue("area", out var area))
        {
            opening = area == "riverside" ? $"By the riverside, {name} " : $"In the city centre, {name} ";
            keys.Remove("area");
        }
        else if (foodInType)
        {
            opening = $"{name} is a {food}{kind} that ";
            keys.Remove("eatType");
            keys.Remove("food");
        }
        else opening = $"{name} ";
        foreach (var k in keys)
        {
            var frag = Fragment(k, mr[k], foodInType);
            if (frag.Length > 0) frags.Add(frag);
        }
        var sb = new StringBuilder();
        int split = frags.Count <= 2 ? frags.Count : Math.Max(1, frags.Count - _g.NextInt(Math.Min(3, frags.Count)));
        var first = frags.Take(split).ToList();
        var rest = frags.Skip(split).ToList();
        if (first.Count > 0) sb.Append(opening).Append(JoinAnd(first)).Append('.');
        else if (opening.EndsWith("that ", StringComparison.Ordinal)) sb.Append(opening[..^"that ".Length].TrimEnd()).Append('.');
        else sb.Append(opening.TrimEnd().TrimEnd(',')).Append(" is a place to eat.");
        while (rest.Count > 0)
        {
            int take = Math.Min(rest.Count, 1 + _g.NextInt(2));
            sb.Append(Coin(0.5) ? " It " : $" {Pick(new[] { "It", "The " + (kind == "place" ? "venue" : kind) })} ").Append(JoinAnd(rest.Take(take).ToList())).Append('.');
            rest = rest.Skip(take).ToList();
        }
        var s = sb.ToString();
        return char.ToUpperInvariant(s[0]) + s[1..];
    }

    /// <summary>A short review sentence or two (extra variety for pre-training).</summary>
    public string Review()
    {
        string name = Pick(Names);
        string[] meals = ["lunch", "dinner", "breakfast", "a quick coffee", "a family meal", "drinks with friends"];
        string[] good = ["excellent", "lovely", "good", "decent", "fantastic", "tasty"];
        string[] bad = ["disappointing", "cold", "bland", "overpriced", "slow", "average"];
        bool positive = Coin(0.6);
        var adj = positive ? good : bad;
        return Pick(new[]
        {
            $"We went to {name} for {Pick(meals)}. The {Pick(Foods).ToLowerInvariant()} dishes were {Pick(adj)} and the staff were {(positive ? "friendly" : "rude")}.",
            $"I visited {name} last {Pick(new[] { "week", "month", "Friday", "weekend" })}. {(positive ? "I would recommend it." : "I would not go back.")}",
            $"{name} was {Pick(adj)} for {Pick(meals)}, and the prices were {Pick(new[] { "fair", "high", "low", "reasonable" })}.",
        });
    }

    /// <summary>Pre-training documents: descriptions of a few restaurants and reviews, separated into documents.</summary>
    public List<string> Corpus(int documents)
    {
        var docs = new List<string>(documents);
        for (int d = 0; d < documents; d++)
        {
            var sb = new StringBuilder();
            int n = 2 + _g.NextInt(4);
            for (int i = 0; i < n; i++)
            {
                if (i > 0) sb.Append(' ');
                sb.Append(Coin(0.75) ? Realise(RandomMr()) : Review());
            }
            docs.Add(sb.ToString());
        }
        return docs;
    }

    /// <summary>Data-to-text examples with distinct MRs, each with 2–4 references; MRs in <paramref name="exclude"/> are skipped.</summary>
    public List<E2EExample> Task(int examples, ISet<string>? exclude = null)
    {
        var seen = new HashSet<string>(exclude ?? new HashSet<string>(), StringComparer.Ordinal);
        var list = new List<E2EExample>(examples);
        while (list.Count < examples)
        {
            var mr = RandomMr();
            var key = Format(mr);
            if (!seen.Add(key)) continue;
            int refs = 2 + _g.NextInt(3);
            var r = new List<string>(refs);
            for (int i = 0; i < refs; i++)
            {
                var s = Realise(mr);
                if (!r.Contains(s)) r.Add(s);
            }
            list.Add(new E2EExample(key, r));
        }
        return list;
    }
}
