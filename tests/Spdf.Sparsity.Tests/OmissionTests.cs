using Spdf.Sparsity.Omission;

namespace Spdf.Sparsity.Tests;

/// <summary>SAT's engine-free parts: the ladder and constant schedules (and their checkpoint form), how many units a
/// rate keeps and which, and the importance scores.</summary>
public class OmissionTests
{
    [Fact]
    public void TheLadderHoldsItsRateThenStepsDownToADenseEnd()
    {
        var ladder = OmissionSchedule.Ladder(0.5, firstPhaseSteps: 40, rungs: 3, totalSteps: 100, denseFinalSteps: 24);
        var rates = Enumerable.Range(1, 100).Select(s => ladder.RateAt(s)).ToList();
        rates.Take(40).Should().OnlyContain(r => r == 0.5);
        rates.Skip(40).Take(12).Should().OnlyContain(r => r == 0.375); // 36 rung steps in three rungs of 12
        rates.Skip(52).Take(12).Should().OnlyContain(r => r == 0.25);
        rates.Skip(64).Take(12).Should().OnlyContain(r => r == 0.125);
        rates.Skip(76).Should().OnlyContain(r => r == 0);
        rates.Should().BeInDescendingOrder();
        OmissionSchedule.Ladder(0.5, 10, 0, 20, 5).RateAt(11).Should().Be(0, "no rungs: dense after the first phase");
        OmissionSchedule.Constant(0.25).RateAt(1_000_000).Should().Be(0.25);
    }

    [Fact]
    public void SchedulesRoundTripThroughTheirCheckpointForm()
    {
        var ladder = OmissionSchedule.Ladder(0.6, 7, 4, 53, 3);
        var back = OmissionSchedule.Parse(ladder.ToJson().ToJsonString());
        Enumerable.Range(1, 60).Select(s => back.RateAt(s)).Should().Equal(Enumerable.Range(1, 60).Select(s => ladder.RateAt(s)));
        OmissionSchedule.Parse(OmissionSchedule.Constant(0.3).ToJson().ToJsonString()).RateAt(5).Should().Be(0.3);
        FluentActions.Invoking(() => OmissionSchedule.Parse("{\"kind\":\"spiral\"}")).Should().Throw<FormatException>().WithMessage("*$.kind*spiral*");
        FluentActions.Invoking(() => OmissionSchedule.Parse("{\"kind\":\"ladder\",\"initial_rate\":0.5}")).Should().Throw<FormatException>().WithMessage("*$.first_phase_steps*");
        FluentActions.Invoking(() => OmissionSchedule.Parse("{\"kind\":\"constant\",\"rate\":1.5}")).Should().Throw<FormatException>().WithMessage("*1.5*[0, 1)*");
    }

    [Fact]
    public void BadSchedulesAreNamed()
    {
        FluentActions.Invoking(() => OmissionSchedule.Constant(1.0)).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*[0, 1)*");
        FluentActions.Invoking(() => OmissionSchedule.Ladder(0.5, 60, 2, 100, 50)).Should().Throw<ArgumentOutOfRangeException>()
            .WithMessage("*first phase (60 steps)*dense final stretch (50)*100 steps*");
        FluentActions.Invoking(() => OmissionSchedule.Ladder(0.5, 10, -1, 100, 5)).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*rungs*");
    }

    [Theory]
    [InlineData(3072, 0.5, 1536)]
    [InlineData(6, 0.5, 3)]
    [InlineData(7, 0.5, 4)]   // ceil(3.5)
    [InlineData(12, 0.75, 3)]
    [InlineData(5, 0.99, 1)]
    [InlineData(5, 0, 5)]
    public void ARateKeepsTheCeilingOfTheRest(int units, double rate, int kept) => UnitSelector.KeptCount(units, rate).Should().Be(kept);

    [Fact]
    public void TopKKeepsTheLargestScoresWithTiesToTheLowerIndex()
    {
        var kept = new int[3];
        UnitSelector.Select([0.1f, 5f, 2f, 5f, 2f, 0f], UnitSelection.TopK, 1, kept);
        kept.Should().Equal(1, 2, 3);
    }

    [Fact]
    public void SamplingIsSeededFollowsTheScoresAndNeverPrefersAZeroScore()
    {
        float[] scores = [0f, 1f, 1f, 8f, 0f, 1f];
        var a = new int[3]; var b = new int[3];
        UnitSelector.Select(scores, UnitSelection.Sampled, 42, a);
        UnitSelector.Select(scores, UnitSelection.Sampled, 42, b);
        a.Should().Equal(b, "the same seed draws the same units");
        a.Should().NotContain(0).And.NotContain(4);
        int heavy = 0;
        var one = new int[1];
        for (ulong s = 0; s < 2000; s++)
        {
            UnitSelector.Select(scores, UnitSelection.Sampled, UnitSelector.SeedFor(7, (long)s, 0), one);
            if (one[0] == 3) heavy++;
            one[0].Should().NotBe(0).And.NotBe(4);
        }
        (heavy / 2000.0).Should().BeApproximately(8.0 / 11, 0.04, "unit 3 holds 8 of the 11 score");
        var five = new int[5];
        UnitSelector.Select(scores, UnitSelection.Sampled, 3, five);
        five.Should().HaveCount(5).And.OnlyHaveUniqueItems().And.BeInAscendingOrder();
    }

    [Fact]
    public void BadSelectionsAreNamed()
    {
        FluentActions.Invoking(() => UnitSelector.Select([1f, 2f], UnitSelection.TopK, 0, new int[3])).Should().Throw<ArgumentException>().WithMessage("*keep 3 of 2*");
        FluentActions.Invoking(() => UnitSelector.Select([1f, float.NaN], UnitSelection.TopK, 0, new int[1])).Should().Throw<ArgumentException>().WithMessage("*Unit 1*NaN*");
        FluentActions.Invoking(() => UnitSelector.KeptCount(4, 1.0)).Should().Throw<ArgumentOutOfRangeException>();
    }

    private static UnitScoreInputs Inputs(float[]? norms = null, float[]? activations = null) => new()
    {
        Layer = "h.0.mlp", Units = 3, InFeatures = 2,
        InputWeightAbs = new float[] { 1, 1, 4, 0, 0, 3 },   // unit 0: 1,1; unit 1: 4,0; unit 2: 0,3
        OutputWeightAbs = new float[] { 1, 0, 0.5f },
        InputNorms = norms ?? [], PreviousActivations = activations ?? [], Step = 3, Seed = 9,
    };

    [Fact]
    public void TheScoresAreThePapersAndAUserCanAddOne()
    {
        var s = new float[3];
        UnitScorers.WeightMagnitude.Score(Inputs(), s);
        s.Should().Equal(3f, 4f, 3.5f);
        UnitScorers.InputNormTimesWeight.Score(Inputs(norms: [0.5f, 2f]), s);
        s.Should().Equal(2.5f, 2f, 6f); // the batch's second feature is large: unit 2 reads it
        UnitScorers.Activation.Score(Inputs(activations: [0.2f, 0.9f, 0.1f]), s);
        s.Should().Equal(0.2f, 0.9f, 0.1f);
        UnitScorers.Activation.Score(Inputs(), s);
        s.Should().Equal([3f, 4f, 3.5f], "before the first step: weight magnitude");
        var r1 = new float[3]; var r2 = new float[3];
        UnitScorers.Random.Score(Inputs(), r1); UnitScorers.Random.Score(Inputs(), r2);
        r1.Should().Equal(r2).And.OnlyContain(v => v > 0 && v <= 1);
        UnitScorers.FromName("wanda").Should().BeSameAs(UnitScorers.InputNormTimesWeight);
        FluentActions.Invoking(() => UnitScorers.FromName("entropy")).Should().Throw<ArgumentException>().WithMessage("*entropy*random, magnitude, wanda or activation*");
        FluentActions.Invoking(() => UnitScorers.InputNormTimesWeight.Score(Inputs(), s)).Should().Throw<ArgumentException>().WithMessage("*h.0.mlp*2 input norms*");
        IUnitScorer own = new LastUnitFirst();
        own.Score(Inputs(), s);
        var kept = new int[1];
        UnitSelector.Select(s, UnitSelection.TopK, 0, kept);
        kept.Should().Equal(2);
        // which scores need the pass over the weights: the activation score only before activations exist
        UnitScorers.Activation.NeedsWeightMagnitudes(activationsRecorded: true).Should().BeFalse();
        UnitScorers.Activation.NeedsWeightMagnitudes(activationsRecorded: false).Should().BeTrue();
        UnitScorers.Random.NeedsWeightMagnitudes(false).Should().BeFalse();
        UnitScorers.WeightMagnitude.NeedsWeightMagnitudes(true).Should().BeTrue();
        own.NeedsWeightMagnitudes(true).Should().BeTrue("a scorer of one's own gets the weights unless it says otherwise");
    }

    private sealed class LastUnitFirst : IUnitScorer
    {
        public string Name => "last-first";
        public bool NeedsInputNorms => false;
        public bool NeedsActivations => false;
        public void Score(UnitScoreInputs inputs, Span<float> scores) { for (int u = 0; u < scores.Length; u++) scores[u] = u; }
    }
}
