using System.Globalization;
using System.Text.Json.Nodes;

namespace Spdf.Sparsity.Omission;

/// <summary>
/// The omission rate of sparsity-accelerated training (SAT; Ma et al., ACL Findings 2024) at each step: the share of a
/// block's MLP channels and attention heads left out of that step's forward and backward passes. Steps are 1-based, as
/// the <see cref="SparsityController"/> counts them. A schedule is written into checkpoints (<see cref="ToJson"/>,
/// <see cref="Parse"/>) so that a resumed run continues on the same rung.
/// </summary>
public abstract class OmissionSchedule
{
    /// <summary>The rate in force at <paramref name="step"/>, in [0, 1).</summary>
    public abstract double RateAt(long step);

    /// <summary>The schedule as JSON (<c>{"kind":"ladder",...}</c>), for checkpoints.</summary>
    public abstract JsonObject ToJson();

    /// <summary>A constant rate.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The rate is outside [0, 1).</exception>
    public static OmissionSchedule Constant(double rate) => new ConstantOmission(rate);

    /// <summary>
    /// SAT's ladder: <paramref name="initialRate"/> for the first <paramref name="firstPhaseSteps"/> steps, then
    /// <paramref name="rungs"/> rungs of equal length, each lower by <c>initialRate / (rungs + 1)</c>, and the last
    /// <paramref name="denseFinalSteps"/> of <paramref name="totalSteps"/> dense (rate 0), so that training ends on the
    /// whole model. With 0.5, 3 rungs: 0.5, 0.375, 0.25, 0.125, then 0. The rungs' equal length and even steps are
    /// this library's choice (the paper's code was not released); both ends are parameters.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A rate outside [0, 1), a negative length or count, or phases longer than the run.</exception>
    public static OmissionSchedule Ladder(double initialRate, long firstPhaseSteps, int rungs, long totalSteps, long denseFinalSteps) =>
        new LadderOmission(initialRate, firstPhaseSteps, rungs, totalSteps, denseFinalSteps);

    /// <summary>Reads a schedule written by <see cref="ToJson"/>.</summary>
    /// <exception cref="FormatException">The JSON is not a schedule; the message names the field.</exception>
    public static OmissionSchedule Parse(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        JsonObject o;
        try { o = JsonNode.Parse(json) as JsonObject ?? throw new FormatException("Omission schedule: expected a JSON object."); }
        catch (System.Text.Json.JsonException e) { throw new FormatException($"Omission schedule: invalid JSON: {e.Message}", e); }
        double D(string k) => (double?)o[k] ?? throw new FormatException($"Omission schedule: $.{k}: missing or not a number.");
        long L(string k) => (long?)o[k] ?? throw new FormatException($"Omission schedule: $.{k}: missing or not an integer.");
        try
        {
            return (string?)o["kind"] switch
            {
                "constant" => Constant(D("rate")),
                "ladder" => Ladder(D("initial_rate"), L("first_phase_steps"), checked((int)L("rungs")), L("total_steps"), L("dense_final_steps")),
                var k => throw new FormatException($"Omission schedule: $.kind: '{k}'; expected \"constant\" or \"ladder\"."),
            };
        }
        catch (ArgumentOutOfRangeException e) { throw new FormatException($"Omission schedule: {e.Message}", e); }
    }

    private protected static double CheckRate(double rate, string name) =>
        rate >= 0 && rate < 1 ? rate : throw new ArgumentOutOfRangeException(name, rate, $"The omission rate is {rate}; expected a rate in [0, 1).");

    private sealed class ConstantOmission : OmissionSchedule
    {
        private readonly double _rate;
        public ConstantOmission(double rate) => _rate = CheckRate(rate, nameof(rate));
        public override double RateAt(long step) => _rate;
        public override JsonObject ToJson() => new() { ["kind"] = "constant", ["rate"] = _rate };
        public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"constant {_rate:0.###}");
    }

    private sealed class LadderOmission : OmissionSchedule
    {
        private readonly double _initial;
        private readonly long _first, _total, _dense;
        private readonly int _rungs;

        public LadderOmission(double initial, long first, int rungs, long total, long dense)
        {
            _initial = CheckRate(initial, nameof(initial));
            if (first < 0) throw new ArgumentOutOfRangeException(nameof(first), first, "Expected a first phase of ≥ 0 steps.");
            if (rungs < 0) throw new ArgumentOutOfRangeException(nameof(rungs), rungs, "Expected ≥ 0 rungs.");
            if (dense < 0) throw new ArgumentOutOfRangeException(nameof(dense), dense, "Expected a dense final stretch of ≥ 0 steps.");
            if (first + dense > total)
                throw new ArgumentOutOfRangeException(nameof(total), total, $"The first phase ({first} steps) and the dense final stretch ({dense}) are longer than the run of {total} steps.");
            (_first, _rungs, _total, _dense) = (first, rungs, total, dense);
        }

        public override double RateAt(long step)
        {
            if (step <= _first) return _initial;
            if (step > _total - _dense || _rungs == 0) return 0;
            long span = _total - _dense - _first;
            int rung = (int)Math.Min(_rungs, (step - _first - 1) * _rungs / Math.Max(1, span) + 1); // 1..rungs
            return _initial * (_rungs + 1 - rung) / (_rungs + 1);
        }

        public override JsonObject ToJson() => new()
        {
            ["kind"] = "ladder", ["initial_rate"] = _initial, ["first_phase_steps"] = _first, ["rungs"] = _rungs,
            ["total_steps"] = _total, ["dense_final_steps"] = _dense,
        };

        public override string ToString() => string.Create(CultureInfo.InvariantCulture,
            $"ladder from {_initial:0.###}: {_first} steps, {_rungs} rungs to step {_total - _dense}, then dense to {_total}");
    }
}
