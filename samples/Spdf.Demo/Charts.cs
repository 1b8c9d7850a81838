using ScottPlot;
using Spdf.Tensors.Serialization;

/// <summary>
/// The report's charts, drawn with ScottPlot and written as SVG and PNG: round tick values, and series told apart by
/// colour and marker shape, so curves that overlap stay readable. (Lines stay solid: Skia's SVG canvas draws no dashes.)
/// </summary>
internal static class Charts
{
    public const int Width = 960, Height = 540;

    private static readonly MarkerShape[] Markers =
        [MarkerShape.FilledCircle, MarkerShape.FilledSquare, MarkerShape.FilledTriangleUp, MarkerShape.FilledDiamond, MarkerShape.OpenCircle,
         MarkerShape.OpenSquare, MarkerShape.OpenTriangleUp, MarkerShape.OpenDiamond, MarkerShape.Cross, MarkerShape.Eks];
    private static readonly IPalette Palette = new ScottPlot.Palettes.Category10();

    /// <summary>Round values (1, 2 and 5 times a power of ten) from <paramref name="lo"/> to <paramref name="hi"/>; at least two.</summary>
    internal static List<double> RoundTicks(double lo, double hi)
    {
        var ticks = new List<double>();
        for (int e = (int)Math.Floor(Math.Log10(lo)) - 1; e <= (int)Math.Ceiling(Math.Log10(hi)); e++)
            foreach (double m in new[] { 1.0, 2.0, 5.0 })
            {
                double t = m * Math.Pow(10, e);
                if (t >= lo * 0.999 && t <= hi * 1.001) ticks.Add(t);
            }
        if (ticks.Count < 2) // a narrow range: the linear steps of 1, 2 or 5 × 10^k that split it in about five
        {
            double step = Math.Pow(10, Math.Floor(Math.Log10((hi - lo) / 5)));
            foreach (double m in new[] { 1.0, 2.0, 5.0 }) if ((hi - lo) / (step * m) <= 6) { step *= m; break; }
            ticks.Clear();
            for (double t = Math.Ceiling(lo / step) * step; t <= hi * 1.0001; t += step) ticks.Add(Math.Round(t / step) * step);
        }
        return ticks;
    }

    private static string Label(double v) => v.ToString(v >= 10 ? "0" : v >= 1 ? "0.#" : "0.0##", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Curves on a log-scale y axis with round ticks; each series gets its own colour and marker.</summary>
    public static Plot LogLines(string title, string xLabel, string yLabel, IReadOnlyList<(string Name, IReadOnlyList<(double X, double Y)> Points)> series)
    {
        var plot = new Plot();
        double lo = double.PositiveInfinity, hi = double.NegativeInfinity;
        for (int i = 0; i < series.Count; i++)
        {
            var points = series[i].Points.Where(p => p.Y > 0 && double.IsFinite(p.Y)).ToList();
            if (points.Count == 0) continue;
            lo = Math.Min(lo, points.Min(p => p.Y));
            hi = Math.Max(hi, points.Max(p => p.Y));
            var line = plot.Add.ScatterLine(points.Select(p => p.X).ToArray(), points.Select(p => Math.Log10(p.Y)).ToArray(), Palette.GetColor(i));
            line.LineWidth = 2;
            line.LegendText = series[i].Name;
            // markers on about a dozen points per curve, at offsets that differ between series so they do not cover each other
            int every = Math.Max(1, points.Count / 12);
            var marks = points.Where((_, j) => j % every == (i * every / Math.Max(1, series.Count)) % every).ToList();
            var m = plot.Add.Markers(marks.Select(p => p.X).ToArray(), marks.Select(p => Math.Log10(p.Y)).ToArray(), Markers[i % Markers.Length], 7, Palette.GetColor(i));
            m.LegendText = "";
        }
        if (double.IsFinite(lo))
        {
            var ticks = RoundTicks(lo, hi);
            plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericManual(ticks.Select(Math.Log10).ToArray(), ticks.Select(Label).ToArray());
            double pad = (Math.Log10(hi) - Math.Log10(lo)) * 0.05 + 0.01;
            plot.Axes.SetLimitsY(Math.Log10(lo) - pad, Math.Log10(hi) + pad);
        }
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel + " (log scale)");
        plot.ShowLegend(Alignment.UpperRight);
        return plot;
    }

    /// <summary>Grouped bars, one group per category, one colour per series, from 0 to <paramref name="max"/>.</summary>
    public static Plot GroupedBars(string title, string yLabel, IReadOnlyList<string> categories, IReadOnlyList<(string Name, IReadOnlyList<double> Values)> series, double max)
    {
        var plot = new Plot();
        int k = Math.Max(1, series.Count);
        double width = 0.8 / k;
        for (int i = 0; i < series.Count; i++)
        {
            var bars = series[i].Values.Select((v, j) => new Bar
            {
                Position = j + (i - (k - 1) / 2.0) * width,
                Value = v,
                Size = width,
                FillColor = Palette.GetColor(i),
                LineWidth = 0,
            }).ToList();
            var plottable = plot.Add.Bars(bars);
            plottable.LegendText = series[i].Name;
        }
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(Enumerable.Range(0, categories.Count).Select(j => (double)j).ToArray(), categories.ToArray());
        plot.Axes.Bottom.TickLabelStyle.Rotation = 45;
        plot.Axes.Bottom.TickLabelStyle.Alignment = Alignment.MiddleLeft;
        plot.Axes.Bottom.MinimumSize = 110;
        plot.Axes.SetLimitsY(0, max * 1.05);
        plot.Axes.SetLimitsX(-0.6, categories.Count - 0.4);
        plot.Title(title);
        plot.YLabel(yLabel);
        plot.ShowLegend(Alignment.UpperRight);
        return plot;
    }

    /// <summary>Writes <paramref name="name"/>.svg and <paramref name="name"/>.png in <paramref name="dir"/>, each atomically.</summary>
    public static void Save(Plot plot, string dir, string name)
    {
        AtomicFile.WriteAllText(Path.Combine(dir, name + ".svg"), plot.GetSvgXml(Width, Height));
        AtomicFile.WriteAllBytes(Path.Combine(dir, name + ".png"), plot.GetImage(Width, Height).GetImageBytes(ImageFormat.Png));
    }
}
