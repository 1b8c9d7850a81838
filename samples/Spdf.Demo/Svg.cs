using System.Globalization;
using System.Net;
using System.Text;

namespace Spdf.Demo;

/// <summary>Small dependency-free SVG charts for the report: line charts (loss curves) and grouped bar charts.</summary>
public static class Svg
{
    private static readonly string[] Palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
    private const int W = 840, H = 420, L = 70, R = 270, T = 40, B = 50;

    private static string F(double v) => v.ToString("0.##", CultureInfo.InvariantCulture);
    private static string E(string s) => WebUtility.HtmlEncode(s);

    /// <summary>A line chart: one polyline per series.</summary>
    /// <param name="logY">A logarithmic y axis (loss curves: the first steps' drop would otherwise hide the rest).</param>
    public static string LineChart(string title, string xLabel, string yLabel, IReadOnlyList<(string Name, IReadOnlyList<(double X, double Y)> Points)> series, bool logY = false)
    {
        if (logY)
        {
            var logged = series.Select(s => (s.Name, (IReadOnlyList<(double X, double Y)>)s.Points.Where(p => p.Y > 0).Select(p => (p.X, Math.Log10(p.Y))).ToList())).ToList();
            return LineChartCore(title, xLabel, yLabel + " (log scale)", logged, v => Math.Pow(10, v));
        }
        return LineChartCore(title, xLabel, yLabel, series, v => v);
    }

    private static string LineChartCore(string title, string xLabel, string yLabel, IReadOnlyList<(string Name, IReadOnlyList<(double X, double Y)> Points)> series, Func<double, double> yTick)
    {
        var all = series.SelectMany(s => s.Points).Where(p => double.IsFinite(p.Y)).ToList();
        double x0 = all.Count > 0 ? all.Min(p => p.X) : 0, x1 = all.Count > 0 ? all.Max(p => p.X) : 1;
        double y0 = all.Count > 0 ? all.Min(p => p.Y) : 0, y1 = all.Count > 0 ? all.Max(p => p.Y) : 1;
        if (x1 <= x0) x1 = x0 + 1;
        if (y1 <= y0) y1 = y0 + 1;
        double pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad;
        double Px(double x) => L + (x - x0) / (x1 - x0) * (W - L - R);
        double Py(double y) => H - B - (y - y0) / (y1 - y0) * (H - T - B);
        var sb = Header(title);
        Axes(sb, xLabel, yLabel, x0, x1, y0, y1, Px, Py, yTick: yTick);
        for (int i = 0; i < series.Count; i++)
        {
            var pts = series[i].Points.Where(p => double.IsFinite(p.Y)).Select(p => $"{F(Px(p.X))},{F(Py(p.Y))}");
            string color = Palette[i % Palette.Length];
            sb.Append(CultureInfo.InvariantCulture, $"<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.8\" points=\"{string.Join(' ', pts)}\"/>\n");
            Legend(sb, i, series[i].Name, color);
        }
        return sb.Append("</svg>\n").ToString();
    }

    /// <summary>A grouped bar chart: one group per category, one bar per series (values in [0, max]).</summary>
    public static string BarChart(string title, string yLabel, IReadOnlyList<string> categories, IReadOnlyList<(string Name, IReadOnlyList<double> Values)> series, double max)
    {
        var sb = Header(title);
        double Py(double y) => H - B - y / max * (H - T - B);
        double groupW = (double)(W - L - R) / Math.Max(1, categories.Count);
        double barW = groupW * 0.8 / Math.Max(1, series.Count);
        Axes(sb, "", yLabel, 0, 1, 0, max, x => L + x * (W - L - R), Py, xTicks: false);
        for (int c = 0; c < categories.Count; c++)
        {
            double gx = L + c * groupW + groupW * 0.1;
            for (int s = 0; s < series.Count; s++)
            {
                double v = series[s].Values[c];
                double y = Py(v);
                sb.Append(CultureInfo.InvariantCulture, $"<rect x=\"{F(gx + s * barW)}\" y=\"{F(y)}\" width=\"{F(barW * 0.95)}\" height=\"{F(H - B - y)}\" fill=\"{Palette[s % Palette.Length]}\"><title>{E(categories[c])}: {F(v)}</title></rect>\n");
            }
            sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{F(gx + groupW * 0.4)}\" y=\"{H - B + 14}\" font-size=\"9\" text-anchor=\"end\" transform=\"rotate(-35 {F(gx + groupW * 0.4)} {H - B + 14})\">{E(categories[c])}</text>\n");
        }
        for (int s = 0; s < series.Count; s++) Legend(sb, s, series[s].Name, Palette[s % Palette.Length]);
        return sb.Append("</svg>\n").ToString();
    }

    private static StringBuilder Header(string title)
    {
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H + 40}\" viewBox=\"0 0 {W} {H + 40}\" font-family=\"sans-serif\">\n");
        sb.Append(CultureInfo.InvariantCulture, $"<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{W / 2}\" y=\"22\" font-size=\"15\" text-anchor=\"middle\">{E(title)}</text>\n");
        return sb;
    }

    private static void Axes(StringBuilder sb, string xLabel, string yLabel, double x0, double x1, double y0, double y1, Func<double, double> px, Func<double, double> py, bool xTicks = true, Func<double, double>? yTick = null)
    {
        sb.Append(CultureInfo.InvariantCulture, $"<line x1=\"{L}\" y1=\"{H - B}\" x2=\"{W - R}\" y2=\"{H - B}\" stroke=\"black\"/>\n<line x1=\"{L}\" y1=\"{T}\" x2=\"{L}\" y2=\"{H - B}\" stroke=\"black\"/>\n");
        for (int i = 0; i <= 5; i++)
        {
            double y = y0 + (y1 - y0) * i / 5;
            sb.Append(CultureInfo.InvariantCulture, $"<line x1=\"{L}\" y1=\"{F(py(y))}\" x2=\"{W - R}\" y2=\"{F(py(y))}\" stroke=\"#ddd\"/><text x=\"{L - 6}\" y=\"{F(py(y) + 4)}\" font-size=\"11\" text-anchor=\"end\">{(yTick ?? (v => v))(y).ToString("0.###", CultureInfo.InvariantCulture)}</text>\n");
            if (xTicks)
            {
                double x = x0 + (x1 - x0) * i / 5;
                sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{F(px(x))}\" y=\"{H - B + 16}\" font-size=\"11\" text-anchor=\"middle\">{x.ToString("0", CultureInfo.InvariantCulture)}</text>\n");
            }
        }
        sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{(L + W - R) / 2}\" y=\"{H - 8}\" font-size=\"12\" text-anchor=\"middle\">{E(xLabel)}</text>\n");
        sb.Append(CultureInfo.InvariantCulture, $"<text x=\"16\" y=\"{(T + H - B) / 2}\" font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 16 {(T + H - B) / 2})\">{E(yLabel)}</text>\n");
    }

    private static void Legend(StringBuilder sb, int i, string name, string color)
    {
        int y = T + 10 + i * 20;
        sb.Append(CultureInfo.InvariantCulture, $"<rect x=\"{W - R + 12}\" y=\"{y - 9}\" width=\"14\" height=\"10\" fill=\"{color}\"/><text x=\"{W - R + 32}\" y=\"{y}\" font-size=\"11\">{E(name)}</text>\n");
    }
}
