using System.Numerics.Tensors;
using Spdf.Sparsity;
using Spdf.Sparsity.Omission;
using Spdf.Tensors;
using Tensor = Spdf.Tensors.Tensor;
using Spdf.Tensors.Nn;

namespace Spdf.Gpt.Training;

/// <summary>
/// How sparsity-accelerated training (SAT; Ma et al., ACL Findings 2024) omits units: the schedule of the omission rate,
/// the importance score, how kept units are chosen, and which units take part.
/// </summary>
/// <param name="Schedule">The rate per step (<see cref="OmissionSchedule.Constant"/>, <see cref="OmissionSchedule.Ladder"/>).</param>
public sealed record SatOptions(OmissionSchedule Schedule)
{
    /// <summary>The importance score (default weight magnitude; the paper also compares random, Wanda-style input norm
    /// times weight and activations).</summary>
    public IUnitScorer Scorer { get; init; } = UnitScorers.WeightMagnitude;

    /// <summary>Top-k (default) or sampling in proportion to the score.</summary>
    public UnitSelection Selection { get; init; } = UnitSelection.TopK;

    /// <summary>Seed of the random score and of sampling.</summary>
    public ulong Seed { get; init; }

    /// <summary>Omit MLP channels (default true).</summary>
    public bool Channels { get; init; } = true;

    /// <summary>Omit attention heads (default true).</summary>
    public bool Heads { get; init; } = true;

    /// <summary>
    /// When true, omitted units' weights and moments take the optimizer's step with a zero gradient (moments and weights
    /// decay); by default (false) they are left exactly as they are (<see cref="Parameter.StepPositions"/>).
    /// </summary>
    public bool DecayOmitted { get; init; }
}

/// <summary>
/// Drives SAT's omission over a <see cref="GptModel"/> step by step: <see cref="BeginStep"/> sets the rate in force;
/// each block, on its first training forward pass of the step, scores its MLP channels and attention heads (from its
/// weights, the batch's input to the block, or the previous step's activations), keeps <c>ceil((1 − rate)·n)</c> of
/// each, and computes only those (<see cref="Mlp.KeptChannels"/>, <see cref="CausalSelfAttention.KeptHeads"/>);
/// omitted units get no gradient and, unless <see cref="SatOptions.DecayOmitted"/>, no optimizer update. At rate 0 the
/// blocks run their dense paths. Evaluation (a module in eval mode) always runs the whole model. The
/// <see cref="Trainer"/> creates one per stage that sets <see cref="TrainingStage.Omission"/>.
/// </summary>
public sealed class SatOmission : IUnitOmission, IDisposable
{
    private readonly GptModel _model;
    private readonly int[]?[] _heads, _channels;       // this step's choice per block (null: all units)
    private readonly bool[] _headsChosen, _channelsChosen;
    private long _step;

    /// <summary>Attaches the omission to every block of <paramref name="model"/>.</summary>
    public SatOmission(GptModel model, SatOptions options)
    {
        _model = model ?? throw new ArgumentNullException(nameof(model));
        Options = options ?? throw new ArgumentNullException(nameof(options));
        ArgumentNullException.ThrowIfNull(options.Schedule);
        ArgumentNullException.ThrowIfNull(options.Scorer);
        int layers = model.Blocks.Count;
        _heads = new int[layers][];
        _channels = new int[layers][];
        _headsChosen = new bool[layers];
        _channelsChosen = new bool[layers];
        KeptChannels = new int[layers];
        KeptHeads = new int[layers];
        for (int l = 0; l < layers; l++)
        {
            var b = model.Blocks[l];
            b.Planner = this;
            b.Index = l;
            b.Mlp.RecordActivations = options.Scorer.NeedsActivations;
            b.Attention.RecordActivations = options.Scorer.NeedsActivations;
        }
    }

    /// <summary>The options.</summary>
    public SatOptions Options { get; }

    /// <inheritdoc />
    public OmissionSchedule Schedule => Options.Schedule;

    /// <summary>The rate in force this step.</summary>
    public double Rate { get; private set; }

    /// <summary>MLP channels each block computed in its last planned step (4C when not omitted).</summary>
    public int[] KeptChannels { get; }

    /// <summary>Attention heads each block computed in its last planned step.</summary>
    public int[] KeptHeads { get; }

    /// <summary>
    /// The training FLOPs of the last planned step over <paramref name="tokens"/> tokens: what it computed, with the kept
    /// channels and heads averaged over the blocks (<see cref="Spdf.Sparsity.Flops.FlopCounter.ForTransformer(Spdf.Sparsity.Flops.TransformerShape, double, double, double)"/>).
    /// </summary>
    public double StepFlops(long tokens, double sparsity = 0)
    {
        var cfg = _model.Config;
        double channels = KeptChannels.Average(k => k == 0 ? 1.0 : (double)k / (cfg.EmbeddingSize * 4));
        double heads = KeptHeads.Average(k => k == 0 ? 1.0 : (double)k / cfg.Heads);
        var report = Spdf.Sparsity.Flops.FlopCounter.ForTransformer(cfg.ToTransformerShape(cfg.ContextLength), sparsity, channels, heads);
        return report.TrainPerStep(tokens, sparse: true);
    }

    /// <summary>Starts step <paramref name="step"/> (1-based): the rate in force; the blocks choose their units on their next
    /// training forward pass. The <see cref="SparsityController"/> calls it (<see cref="SparsityController.Omission"/>).</summary>
    public void BeginStep(long step)
    {
        if (step <= 0) throw new ArgumentOutOfRangeException(nameof(step), step, "Steps are counted from 1.");
        _step = step;
        Rate = Options.Schedule.RateAt(step);
        Array.Clear(_headsChosen);
        Array.Clear(_channelsChosen);
        foreach (var b in _model.Blocks)
        {
            b.Mlp.KeptChannels = null;
            b.Attention.KeptHeads = null;
            ClearStepPositions(b);
        }
    }

    internal int[]? Heads(Block block, Tensor normed) => Plan(block, normed, heads: true);

    internal int[]? Channels(Block block, Tensor normed) => Plan(block, normed, heads: false);

    private int[]? Plan(Block block, Tensor normed, bool heads)
    {
        if (!block.Training || _step == 0) return null;                         // evaluation: the whole model
        int l = block.Index;
        var chosen = heads ? _headsChosen : _channelsChosen;
        var choice = heads ? _heads : _channels;
        if (chosen[l]) return choice[l];                                        // later micro-batches of the step: the same units
        chosen[l] = true;
        int units = heads ? block.Attention.Heads : block.Mlp.UpProjection.OutFeatures;
        choice[l] = Choose(block, normed, heads, units);
        if (heads) KeptHeads[l] = choice[l]?.Length ?? units; else KeptChannels[l] = choice[l]?.Length ?? units;
        return choice[l];
    }

    private int[]? Choose(Block block, Tensor normed, bool heads, int units)
    {
        if (heads ? !Options.Heads : !Options.Channels) return null;
        if (Rate == 0) return null;                                             // dense: exactly the dense step
        int keep = UnitSelector.KeptCount(units, Rate);
        if (keep == units) return null;
        var inputs = Inputs(block, normed, heads, units);
        var scores = new float[units];
        Options.Scorer.Score(inputs, scores);
        var kept = new int[keep];
        UnitSelector.Select(scores, Options.Selection, inputs.Seed, kept);
        if (!Options.DecayOmitted) SetStepPositions(block, kept, heads);
        return kept;
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    private UnitScoreInputs Inputs(Block block, Tensor normed, bool heads, int units)
    {
        int c = normed.Shape[-1], l = block.Index;
        // the same buffers every step (the scorer reads them at once): no large allocation per step
        if (!_buffers.TryGetValue((l, heads), out var buf) || buf.In.Length != units * c)
            _buffers[(l, heads)] = buf = (new float[units * c], new float[units]);
        var (inAbs, outAbs) = buf;
        Array.Clear(inAbs);
        Array.Clear(outAbs);
        var act = heads ? block.Attention.ActivationStats : block.Mlp.ActivationStats;
        if (Options.Scorer.NeedsWeightMagnitudes(act is not null))
        {
            // |w| (times the mask of a masked sparse layer), summed per unit: vectorised, one pass over each weight
            var scratch = new float[Math.Max(c, units)];
            if (heads)
            {
                var qkv = block.Attention.QkvProjection; var proj = block.Attention.OutputProjection;
                ReadOnlySpan<float> w = Weight(qkv, out var m), wo = Weight(proj, out var mo);
                int e = c / units;
                for (int h = 0; h < units; h++)
                {
                    var acc = inAbs.AsSpan(h * c, c);
                    for (int part = 0; part < 3; part++)
                        for (int i = 0; i < e; i++) AddAbs(w, m, (part * c + h * e + i) * c, acc, scratch);
                }
                var colAbs = new float[c];
                for (int r = 0; r < c; r++) AddAbs(wo, mo, r * c, colAbs, scratch);   // Σ_r |w_o[r, col]|
                for (int h = 0; h < units; h++) outAbs[h] = TensorPrimitives.Sum(colAbs.AsSpan(h * e, e));
            }
            else
            {
                var up = block.Mlp.UpProjection; var down = block.Mlp.DownProjection;
                ReadOnlySpan<float> w = Weight(up, out var m), wd = Weight(down, out var md);
                for (int u = 0; u < units; u++) AddAbs(w, m, u * c, inAbs.AsSpan(u * c, c), scratch);
                for (int r = 0; r < c; r++) AddAbs(wd, md, r * units, outAbs, scratch);  // Σ_r |w_down[r, u]|
            }
        }
        float[] norms = [];
        if (Options.Scorer.NeedsInputNorms)
        {
            norms = new float[c];
            var x = normed.AsReadOnlySpan();
            for (int t = 0; t < x.Length / c; t++)
                for (int j = 0; j < c; j++) norms[j] += x[t * c + j] * x[t * c + j];
            for (int j = 0; j < c; j++) norms[j] = MathF.Sqrt(norms[j]);
        }
        return new UnitScoreInputs
        {
            Layer = $"h.{l}.{(heads ? "attn" : "mlp")}", Units = units, InFeatures = c, InputWeightAbs = inAbs, OutputWeightAbs = outAbs,
            InputNorms = norms, PreviousActivations = act is null ? default : act,
            Step = _step, Seed = UnitSelector.SeedFor(Options.Seed, _step, 2 * l + (heads ? 1 : 0)),
        };

        static void AddAbs(ReadOnlySpan<float> w, ReadOnlySpan<float> m, int at, Span<float> acc, float[] scratch)
        {
            var t = scratch.AsSpan(0, acc.Length);
            if (m.IsEmpty) TensorPrimitives.Abs(w.Slice(at, acc.Length), t);
            else { TensorPrimitives.Multiply(w.Slice(at, acc.Length), m.Slice(at, acc.Length), t); TensorPrimitives.Abs(t, t); }
            TensorPrimitives.Add(acc, t, acc);
        }
    }

    /// <summary>The layer's dense weight and, for a masked sparse layer, its <paramref name="mask"/> (empty otherwise).</summary>
    private static ReadOnlySpan<float> Weight(Linear layer, out ReadOnlySpan<float> mask)
    {
        var (w, m) = UnitOmission.Dense(layer);
        mask = m is null ? default : m.AsReadOnlySpan();
        return w.AsReadOnlySpan();
    }

    private readonly Dictionary<(int Layer, bool Heads), (int[] Kept, int[]?[] Positions)> _positions = [];
    private readonly Dictionary<(int Layer, bool Heads), (float[] In, float[] Out)> _buffers = [];

    /// <summary>The places of the kept units in each projection's weight and bias: only these take the optimizer step.
    /// Reused while a block keeps the same units (the arrays are large: a kept row is C places).</summary>
    private void SetStepPositions(Block block, int[] kept, bool heads)
    {
        var layers = heads
            ? new[] { block.Attention.QkvProjection, block.Attention.OutputProjection }
            : new[] { block.Mlp.UpProjection, block.Mlp.DownProjection };
        if (_positions.TryGetValue((block.Index, heads), out var cached) && cached.Kept.AsSpan().SequenceEqual(kept))
        {
            layers[0].Weight.StepPositions = cached.Positions[0];
            if (layers[0].Bias is { } cb) cb.StepPositions = cached.Positions[1];
            layers[1].Weight.StepPositions = cached.Positions[2];
            return;
        }
        Compute(block, kept, heads, cached.Positions); // fills the last step's arrays again when the sizes match
        _positions[(block.Index, heads)] = (kept, [layers[0].Weight.StepPositions, layers[0].Bias?.StepPositions, layers[1].Weight.StepPositions]);
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    private static void Compute(Block block, int[] kept, bool heads, int[]?[]? reuse)
    {
        if (heads)
        {
            var a = block.Attention;
            var rows = a.QkvRows(kept);
            a.QkvProjection.Weight.StepPositions = RowsOf(rows, a.QkvProjection.InFeatures, reuse?[0]);
            if (a.QkvProjection.Bias is { } b) b.StepPositions = rows;
            a.OutputProjection.Weight.StepPositions = ColumnsOf(a.OutputColumns(kept), a.OutputProjection.OutFeatures, a.OutputProjection.InFeatures, reuse?[2]);
        }
        else
        {
            var m = block.Mlp;
            m.UpProjection.Weight.StepPositions = RowsOf(kept, m.UpProjection.InFeatures, reuse?[0]);
            if (m.UpProjection.Bias is { } b) b.StepPositions = kept;
            m.DownProjection.Weight.StepPositions = ColumnsOf(kept, m.DownProjection.OutFeatures, m.DownProjection.InFeatures, reuse?[2]);
        }

        static int[] RowsOf(int[] rows, int cols, int[]? reuse)
        {
            var p = reuse?.Length == rows.Length * cols ? reuse : new int[rows.Length * cols];
            for (int i = 0; i < rows.Length; i++)
                for (int j = 0; j < cols; j++) p[i * cols + j] = rows[i] * cols + j;
            return p;
        }

        static int[] ColumnsOf(int[] columns, int rowsN, int cols, int[]? reuse)
        {
            var p = reuse?.Length == rowsN * columns.Length ? reuse : new int[rowsN * columns.Length];
            for (int r = 0, at = 0; r < rowsN; r++)
                foreach (int c in columns) p[at++] = r * cols + c;
            return p;
        }
    }

    private static void ClearStepPositions(Block b)
    {
        foreach (var layer in new[] { b.Attention.QkvProjection, b.Attention.OutputProjection, b.Mlp.UpProjection, b.Mlp.DownProjection })
        {
            if (layer is SparseLinear { Storage: SparseWeightStorage.Compressed }) continue;
            layer.Weight.StepPositions = null;
            if (layer.Bias is { } bias) bias.StepPositions = null;
        }
    }

    /// <summary>Detaches from the model: every block computes all its units again and every parameter takes full steps.</summary>
    public void Dispose()
    {
        foreach (var b in _model.Blocks)
        {
            b.Planner = null;
            b.Mlp.KeptChannels = null;
            b.Attention.KeptHeads = null;
            b.Mlp.RecordActivations = false;
            b.Attention.RecordActivations = false;
            ClearStepPositions(b);
        }
    }
}
