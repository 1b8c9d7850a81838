using System.Globalization;

namespace Spdf.Gpu.Benchmarks;

/// <summary>The quick modes' options: <c>--name value</c> pairs, read with messages that name the option and the value.</summary>
public static class QuickArgs
{
    /// <summary>The options as a name → value map.</summary>
    /// <exception cref="ArgumentException">An argument is not <c>--name value</c>.</exception>
    public static Dictionary<string, string> Parse(string[] a)
    {
        var d = new Dictionary<string, string>();
        for (int i = 0; i < a.Length; i++)
        {
            if (!a[i].StartsWith("--", StringComparison.Ordinal)) throw new ArgumentException($"Unexpected argument '{a[i]}'; expected --name value.");
            if (i + 1 >= a.Length) throw new ArgumentException($"Option {a[i]} needs a value.");
            d[a[i][2..]] = a[++i];
        }
        return d;
    }

    /// <summary>A positive integer option, or <paramref name="dflt"/> when absent.</summary>
    /// <exception cref="ArgumentException">The value is not a positive integer.</exception>
    public static int Int(Dictionary<string, string> o, string name, int dflt)
    {
        if (!o.TryGetValue(name, out var s)) return dflt;
        if (!int.TryParse(s, CultureInfo.InvariantCulture, out int v) || v <= 0) throw new ArgumentException($"--{name} {s}: expected a positive integer.");
        return v;
    }

    /// <summary>A positive number option, or <paramref name="dflt"/> when absent.</summary>
    /// <exception cref="ArgumentException">The value is not a positive number.</exception>
    public static double Real(Dictionary<string, string> o, string name, double dflt)
    {
        if (!o.TryGetValue(name, out var s)) return dflt;
        if (!double.TryParse(s, CultureInfo.InvariantCulture, out double v) || !(v > 0)) throw new ArgumentException($"--{name} {s}: expected a positive number.");
        return v;
    }
}
